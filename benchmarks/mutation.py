"""A small mutation-testing driver for the Python package: single-point changes, the tests that
cover the module, and the score.

    python benchmarks/mutation.py [--module loader] [--max 40] [--seed 0] [--json out.json]

Each mutant changes one thing in one module (a comparison flipped or made strict, an arithmetic
operator swapped, a whole-number constant moved by one, ``and``/``or`` swapped, a ``not``
dropped, a ``raise`` replaced by ``pass``: a deleted check), is written into a temporary copy
of the package, and the module's tests run against it (``pytest -x``, with a timeout).  A mutant
is killed when a test fails or the run times out.  Prints every survivor (module, line, change)
and the score; survivors are read by hand: some are equivalent (the change cannot alter
behaviour), the rest are missing tests.
"""
import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# module -> the tests that exercise it
TARGETS = {
    "loader": ["tests/test_loader.py", "tests/test_loader_security.py"],
    "registry": ["tests/test_registry.py"],
    "preprocessing": ["tests/test_preprocessing.py", "tests/test_preprocessing_hostile.py"],
    "files": ["tests/test_files.py", "tests/test_cli_errors.py"],
    "cli": ["tests/test_cli.py", "tests/test_cli_errors.py"],
    "safetensors": ["tests/test_safetensors.py", "tests/test_untrusted_hf_compare.py", "tests/test_errors.py"],
    "hf_config": ["tests/test_hf_io.py", "tests/test_untrusted_hf_compare.py"],
    "hf": ["tests/test_hf_io.py", "tests/test_untrusted_hf_compare.py", "tests/test_hf.py"],
    "model": ["tests/test_model.py", "tests/test_arguments.py", "tests/test_engine.py", "tests/test_pickle.py"],
}
SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
         ast.NotEq: ast.Eq, ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv,
         ast.FloorDiv: ast.Mult, ast.Div: ast.Mult, ast.And: ast.Or, ast.Or: ast.And,
         ast.In: ast.NotIn, ast.NotIn: ast.In}


def _docstring_nodes(tree):
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def mutation_points(tree):
    """(node index in ast.walk order, kind, description) for every single-point change."""
    docs = _docstring_nodes(tree)
    points = []
    for i, node in enumerate(ast.walk(tree)):
        line = getattr(node, "lineno", None)
        if isinstance(node, ast.Compare):
            for j, op in enumerate(node.ops):
                if type(op) in SWAPS:
                    points.append((i, ("cmp", j), f"line {line}: {type(op).__name__} -> {SWAPS[type(op)].__name__}"))
        elif isinstance(node, ast.BinOp) and type(node.op) in SWAPS:
            points.append((i, ("binop",), f"line {line}: {type(node.op).__name__} -> {SWAPS[type(node.op)].__name__}"))
        elif isinstance(node, ast.BoolOp):
            points.append((i, ("boolop",), f"line {line}: {type(node.op).__name__} -> {SWAPS[type(node.op)].__name__}"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            points.append((i, ("not",), f"line {line}: 'not' dropped"))
        elif (isinstance(node, ast.Constant) and type(node.value) is int and id(node) not in docs):
            points.append((i, ("const",), f"line {line}: {node.value} -> {node.value + 1}"))
        elif isinstance(node, ast.Raise):
            points.append((i, ("raise",), f"line {line}: raise -> pass"))
    return points


class _Mutate(ast.NodeTransformer):
    def __init__(self, index, kind):
        self.index, self.kind, self.count = index, kind, -1
        self.order = {}

    def run(self, tree):
        self.order = {id(n): k for k, n in enumerate(ast.walk(tree))}
        return self.visit(tree)

    def generic_visit(self, node):
        if self.order.get(id(node)) == self.index:
            return self.change(node)
        return super().generic_visit(node)

    def change(self, node):
        kind = self.kind[0]
        if kind == "cmp":
            node.ops[self.kind[1]] = SWAPS[type(node.ops[self.kind[1]])]()
        elif kind in ("binop", "boolop"):
            node.op = SWAPS[type(node.op)]()
        elif kind == "not":
            return node.operand
        elif kind == "const":
            node.value = node.value + 1
        elif kind == "raise":
            return ast.Pass()
        return node


def run_mutant(module, source, index, kind, tests, timeout):
    tree = ast.parse(source)
    mutated = ast.unparse(ast.fix_missing_locations(_Mutate(index, kind).run(tree)))
    work = Path(tempfile.mkdtemp(prefix="mnv2-mut-"))
    try:
        shutil.copytree(REPO / "mobilenetv2", work / "mobilenetv2",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__", "fuzz"))
        shutil.copytree(REPO / "weights", work / "weights")
        (work / "mobilenetv2" / f"{module}.py").write_text(mutated)
        env = dict(os.environ, PYTHONPATH=str(work), MOBILENETV2_SHARED=str(REPO.parent / "shared"),
                   PYTHONDONTWRITEBYTECODE="1")
        try:
            run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                 cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
            return "survived" if run.returncode == 0 else "killed"
        except subprocess.TimeoutExpired:
            return "killed (timeout)"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--module", action="append", choices=sorted(TARGETS))
    p.add_argument("--max", type=int, default=40, help="mutants per module (a seeded sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--json")
    args = p.parse_args(argv)
    results = []
    start = time.monotonic()
    for module in args.module or sorted(TARGETS):
        source = (REPO / "mobilenetv2" / f"{module}.py").read_text()
        points = mutation_points(ast.parse(source))
        sample = random.Random(f"{args.seed}/{module}").sample(points, min(args.max, len(points)))
        for index, kind, what in sorted(sample, key=lambda p: p[0]):
            outcome = run_mutant(module, source, index, kind, TARGETS[module], args.timeout)
            results.append({"module": module, "change": what, "outcome": outcome})
            print(f"{module:<14} {what:<44} {outcome}", flush=True)
    killed = sum(r["outcome"].startswith("killed") for r in results)
    print(f"\n{killed}/{len(results)} mutants killed ({100 * killed / max(len(results), 1):.1f} %) "
          f"in {time.monotonic() - start:.0f} s")
    for r in results:
        if r["outcome"] == "survived":
            print(f"survivor: {r['module']} {r['change']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
