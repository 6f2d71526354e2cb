"""A small mutation-testing driver for the Python package and the C core: single-point changes,
the tests that cover the module, and the score.

    python benchmarks/mutation.py [--module formats/loader] [--max 40] [--seed 0] [--json out.json] [--only MODULE:INDEX]
    python benchmarks/mutation.py --c [--cfile plan.c] [--seed 0] [--json out.json] [--only ID]

Each mutant changes one thing in one module (a comparison flipped or made strict, an arithmetic
operator swapped, a whole-number constant moved by one, ``and``/``or`` swapped, a ``not``
dropped, a ``raise`` replaced by ``pass``: a deleted check), is written into a temporary copy
of the package, and the module's tests run against it (``pytest -x``, with a timeout).  A mutant
is killed when a test fails (or collecting them does: the mutant broke an import) or the run times
out or a signal ends it; a pytest exit of 3-5 (nothing tested) is "not run".  Prints every survivor (its id, line,
change and the mutated line as it reads; ``--only`` reruns it by that id) and the score; survivors are read by hand: some are equivalent (the change cannot alter
behaviour), the rest are missing tests.

``--c`` mutates csrc/ instead (the C half is in ``c_mutation_points`` / ``run_c_mutants``): a
relational operator made strict or not (``<`` ``<=`` ``>`` ``>=``) or negated (``==`` ``!=``), ``+``
and ``-`` swapped (also ``+=``/``-=``), ``&&``/``||`` swapped, a number moved by one (``3`` -> ``4``,
``6.0f`` -> ``7.0f``), ``min`` and ``max`` swapped in a call (``fminf``, ``_mm512_max_ps``), ``add`` and
``sub`` swapped in an intrinsic, or a whole statement replaced by ``;`` (a deleted residual add,
clamp, barrier, tail store or check).  Comments and preprocessor lines are never mutated.  The
sites are every such point of each file, shuffled by ``--seed`` and taken in that order until the
file's quota (C_TARGETS) of mutants has been run: a mutant that does not compile, or whose module
does not load (every C test would skip), is stillborn and not counted; one whose object code (debug
info stripped) is the original's is equivalent by construction (the compiler proved it) and not run.
The package is copied once into a scratch folder and built there with ``setup.py build_ext --inplace``
(the worktree is never written); each mutant recompiles its one file with the build's own compiler
command, relinks the extension, checks that it loads and runs the file's tests (HYPOTHESIS_PROFILE=ci:
derandomised), then the original file and object are put back.  The kernel tests run every ISA this CPU
has through ``scalar=<isa>`` and the plan tests switch ISA with ``mnv2_set_isa``, so AVX2 code runs on
an AVX-512 machine without MNV2_FORCE_ISA; AVX-512 code is only reached on a CPU that has it (the JSON
records the CPU).
"""
import argparse
import ast
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# module -> the tests that exercise it
TARGETS = {
    "formats/loader": ["tests/test_loader.py", "tests/test_loader_security.py", "tests/test_loader_edges.py"],
    "formats/registry": ["tests/test_registry.py", "tests/test_registry_downloads.py"],
    "processing/preprocessing": ["tests/test_preprocessing.py", "tests/test_preprocessing_hostile.py", "tests/test_api_edges.py"],
    "files": ["tests/test_files.py", "tests/test_cli_errors.py"],
    "cli": ["tests/test_cli.py", "tests/test_cli_errors.py", "tests/test_cli_hf.py", "tests/test_cli_hostile.py"],
    "formats/safetensors": ["tests/test_safetensors.py", "tests/test_hf_edges.py", "tests/test_untrusted_hf_compare.py", "tests/test_errors.py"],
    "formats/hf_config": ["tests/test_hf_io.py", "tests/test_hf_edges.py", "tests/test_untrusted_hf_compare.py"],
    "hf": ["tests/test_hf_io.py", "tests/test_hf_edges.py", "tests/test_untrusted_hf_compare.py", "tests/test_hf.py"],
    "model": ["tests/test_model.py", "tests/test_arguments.py", "tests/test_engine.py", "tests/test_pickle.py",
              "tests/test_api_edges.py", "tests/test_engine_edges.py"],
    "engines/plan": ["tests/test_plan.py", "tests/test_plan_pool.py", "tests/test_plan_stem_fused.py", "tests/test_c_kernels_seg.py",
             "tests/test_engine.py", "tests/test_machine.py", "tests/test_slab.py"],
    "engines/pool": ["tests/test_engine_edges.py", "tests/test_plan.py", "tests/test_plan_pool.py", "tests/test_arguments.py", "tests/test_engine.py", "tests/test_service.py"],
    "engines/machine": ["tests/test_engine_edges.py", "tests/test_machine.py", "tests/test_plan_pool.py"],
    "tools/compare/quant": ["tests/test_compare_quant.py", "tests/test_compare_regressions.py"],
    "tools/compare/weight_diff": ["tests/test_compare_edges.py", "tests/test_compare_regressions.py", "tests/test_compare_openvino.py", "tests/test_compare_quant.py",
                                  "tests/test_compare_peers.py"],
    "engines/numpy_kernels": ["tests/test_layers.py", "tests/test_keras_reference.py", "tests/test_engine.py",
                      "tests/test_real_backbone.py", "tests/test_c_kernels.py", "tests/test_c_kernels_seg.py",
                      "tests/test_hf_postprocess.py", "tests/test_hf.py"],
    "network/layers": ["tests/test_layers.py", "tests/test_keras_reference.py", "tests/test_engine.py", "tests/test_model.py",
               "tests/test_real_backbone.py", "tests/test_hf.py", "tests/test_plan_dilated.py", "tests/test_arguments.py"],
    "network/arch": ["tests/test_export_edges.py", "tests/test_model.py", "tests/test_plan.py", "tests/test_hf.py", "tests/test_hf_io.py", "tests/test_loader.py",
             "tests/test_keras_reference.py", "tests/test_onnx_export.py", "tests/test_tflite_export.py"],
    "tools/onnx_export": ["tests/test_export_edges.py", "tests/test_onnx_export.py", "tests/test_onnx_export_hf.py"],
    "tools/tflite_export": ["tests/test_export_edges.py", "tests/test_tflite_export.py"],
    "processing/torch_resize": ["tests/test_hf_torchvision_backend.py"],
    "network/variants": ["tests/test_registry.py", "tests/test_model.py", "tests/test_errors.py", "tests/test_cli_errors.py"],
    "processing/hf_processing": ["tests/test_hf_postprocess.py", "tests/test_hf_torchvision_backend.py", "tests/test_hf.py",
                      "tests/test_hf_io.py", "tests/test_preprocessing.py", "tests/test_arguments.py",
                      "tests/test_hostile_arguments.py"],
    "processing/imagenet": ["tests/test_imagenet.py", "tests/test_model.py", "tests/test_api_edges.py"],
    "engines/c_kernels": ["tests/test_c_kernels.py", "tests/test_c_grids.py", "tests/test_c_kernels_seg.py", "tests/test_arguments.py",
                  "tests/test_hostile_arguments.py", "tests/test_errors.py", "tests/test_backend.py"],
    "batch/job": ["tests/test_batch.py", "tests/test_arguments.py", "tests/test_hostile_arguments.py"],
    "tools/compare/diagnose": ["tests/test_compare_edges.py", "tests/test_compare_reference.py", "tests/test_compare.py", "tests/test_compare_peers.py", "tests/test_compare_regressions.py",
                               "tests/test_compare_hostile.py"],
    "tools/compare/metrics": ["tests/test_compare.py", "tests/test_compare_hostile.py", "tests/test_compare_regressions.py"],
    "tools/compare/mapping": ["tests/test_compare_edges.py", "tests/test_compare.py", "tests/test_compare_tflite_map.py", "tests/test_compare_regressions.py",
                              "tests/test_compare_quant.py", "tests/test_compare_peers.py", "tests/test_compare_reference.py",
                              "tests/test_compare_hostile.py"],
    "tools/compare/api": ["tests/test_compare_edges.py", "tests/test_compare_hostile.py", "tests/test_compare.py", "tests/test_compare_regressions.py",
                          "tests/test_compare_resize.py", "tests/test_compare_keras.py", "tests/test_compare_openvino.py",
                          "tests/test_compare_quant.py"],
    "tools/compare/onnx_reader": ["tests/test_compare_hostile.py", "tests/test_compare.py", "tests/test_compare_resize.py",
                                  "tests/test_compare_regressions.py", "tests/test_compare_quant.py"],
    "tools/compare/tflite_reader": ["tests/test_compare_tflite_map.py", "tests/test_compare_peers.py",
                                    "tests/test_compare_hostile.py", "tests/test_compare_quant.py"],
    "tools/compare/report": ["tests/test_compare_hostile.py", "tests/test_compare.py", "tests/test_cli.py",
                             "tests/test_compare_regressions.py", "tests/test_compare_quant.py"],
    "tools/compare/weights": ["tests/test_compare_edges.py", "tests/test_compare_hostile.py", "tests/test_compare_regressions.py", "tests/test_compare.py",
                              "tests/test_compare_openvino.py", "tests/test_compare_peers.py", "tests/test_compare_quant.py"],
    "batch/inputs": ["tests/test_batch.py", "tests/test_batch_edges.py", "tests/test_hostile_arguments.py", "tests/test_batch_dask.py"],
    "tools/compare/inputs": ["tests/test_compare_hostile.py", "tests/test_compare.py"],
    "tools/compare/dump_reader": ["tests/test_compare_hostile.py", "tests/test_compare.py", "tests/test_compare_regressions.py"],
    "tools/compare/onnx_quant": ["tests/test_compare_quant.py"],
    "tools/compare/graph": ["tests/test_compare.py", "tests/test_compare_hostile.py", "tests/test_compare_quant.py"],
    "batch/dataset": ["tests/test_batch.py", "tests/test_batch_edges.py", "tests/test_batch_dask.py"],
    "tools/compare/openvino_reader": ["tests/test_compare_openvino.py", "tests/test_compare_hostile.py"],
    "tools/compare/object_reader": ["tests/test_compare_hostile.py", "tests/test_compare_torch.py", "tests/test_compare_keras.py",
                                    "tests/test_compare_openvino.py"],
    "tools/compare/reference": ["tests/test_compare_edges.py", "tests/test_compare_reference.py", "tests/test_compare.py", "tests/test_compare_hostile.py", "tests/test_compare_regressions.py"],
    "batch/local": ["tests/test_batch.py", "tests/test_batch_edges.py", "tests/test_hostile_arguments.py", "tests/test_cli.py"],
    "batch/command": ["tests/test_batch.py", "tests/test_batch_edges.py", "tests/test_cli.py", "tests/test_hostile_arguments.py", "tests/test_batch_ray.py"],
    "model_options": ["tests/test_cli_errors.py", "tests/test_cli.py"],
    "engines/native": ["tests/test_backend.py", "tests/test_isa.py", "tests/test_errors.py", "tests/test_arguments.py",
               "tests/test_hide_avx512.py", "tests/test_engine.py"],
    "dask": ["tests/test_batch_dask.py", "tests/test_arguments.py", "tests/test_hostile_arguments.py"],
    "ray": ["tests/test_batch_ray.py", "tests/test_batch_edges.py", "tests/test_errors.py", "tests/test_hostile_arguments.py", "tests/test_batch_dask.py",
            "tests/test_batch.py"],
    "tools/benchmark": ["tests/test_bench_numbers.py", "tests/test_benchmark.py"],
    "tools/benchmark_segmentation": ["tests/test_benchmark.py"],
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


def mutated_source(source, index, kind):
    """The module's source with mutant (index, kind) applied, and the mutant's line as it reads
    then (where the unparsed original and mutant first differ), for reading a survivor by hand."""
    plain = ast.unparse(ast.parse(source))
    mutated = ast.unparse(ast.fix_missing_locations(_Mutate(index, kind).run(ast.parse(source))))
    changed = next((b.strip() for a, b in zip(plain.splitlines(), mutated.splitlines()) if a != b), "")
    return mutated, changed


def run_mutant(module, mutated, tests, timeout):
    """Run ``tests`` against the package with ``module``'s source replaced by ``mutated``."""
    work = Path(tempfile.mkdtemp(prefix="mnv2-mut-"))
    try:
        shutil.copytree(REPO / "mobilenetv2", work / "mobilenetv2",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__", "fuzz"))
        shutil.copytree(REPO / "weights", work / "weights")
        (work / "mobilenetv2" / f"{module}.py").write_text(mutated)
        return run_tests(work, tests, timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)



# ---- the C core ----

_KERNEL_TESTS = ["tests/test_c_kernels.py", "tests/test_c_grids.py", "tests/test_isa.py", "tests/test_plan.py"]
_SEG_TESTS = ["tests/test_c_kernels_seg.py", "tests/test_c_grids.py"]
# csrc file -> (mutants to run, the tests that exercise it: fastest first, pytest -x stops at the first failure)
C_TARGETS = {
    "pointwise.c": (16, _KERNEL_TESTS),
    "pointwise_avx512.c": (14, _KERNEL_TESTS),
    "depthwise.c": (12, _KERNEL_TESTS),
    "depthwise_avx512.c": (10, _KERNEL_TESTS),
    "dwconv_dilated.c": (8, _SEG_TESTS),
    "dwconv_dilated_avx512.c": (8, _SEG_TESTS),
    "stem.c": (6, _KERNEL_TESTS),
    "stem_avx512.c": (8, _KERNEL_TESTS + ["tests/test_plan_stem_fused.py"]),
    "pool.c": (8, _KERNEL_TESTS + _SEG_TESTS),
    "softmax.c": (8, _KERNEL_TESTS),
    "finite.c": (6, _KERNEL_TESTS),
    "relu6.c": (4, _KERNEL_TESTS),
    "resize.c": (6, _SEG_TESTS),
    "batchnorm.c": (4, _KERNEL_TESTS),
    "plan.c": (18, ["tests/test_plan.py", "tests/test_plan_pool.py", "tests/test_c_grids.py", "tests/test_c_kernels_seg.py",
                    "tests/test_isa.py", "tests/test_plan_stem_fused.py"]),
    "dispatch.c": (6, ["tests/test_isa.py", "tests/test_backend.py", "tests/test_machine.py", "tests/test_hide_avx512.py"]),
}
_C_WORD = r"[A-Za-z_0-9\])]"  # what ends an operand: a binary operator follows one
_C_RULES = [  # (kind, pattern, replacement for the match)
    ("rel", re.compile(r"(?<![<>=!\-])<=(?![<>=])"), "<"),
    ("rel", re.compile(r"(?<![<>=!\-])>=(?![<>=])"), ">"),
    ("rel", re.compile(r"(?<![<>=!\-])<(?![<>=])"), "<="),
    ("rel", re.compile(r"(?<![<>=!\-])>(?![<>=])"), ">="),
    ("rel", re.compile(r"(?<![<>=!])==(?!=)"), "!="),
    ("rel", re.compile(r"!=(?!=)"), "=="),
    ("arith", re.compile(r"(?<=" + _C_WORD + r" )\+(?= [^=+])|(?<=" + _C_WORD + r")\+(?=[A-Za-z_0-9(])"), "-"),
    ("arith", re.compile(r"(?<=" + _C_WORD + r" )-(?= [^=\->])|(?<=" + _C_WORD + r")-(?=[A-Za-z_0-9(])"), "+"),
    ("arith", re.compile(r"\+="), "-="),
    ("arith", re.compile(r"-="), "+="),
    ("logic", re.compile(r"&&"), "||"),
    ("logic", re.compile(r"\|\|"), "&&"),
    ("const", re.compile(r"(?<![\w.])\d+\.\d*f?(?![\w.])"), None),  # float: + 1
    ("const", re.compile(r"(?<![\w.])\d+(?![\w.])"), None),  # integer: + 1
    ("minmax", re.compile(r"(?<=[a-z_])max(?=[a-z_]*\()"), "min"),
    ("minmax", re.compile(r"(?<=[a-z_])min(?=[a-z_]*\()"), "max"),
    ("addsub", re.compile(r"(?<=_)add(?=_p[sd]\()"), "sub"),
    ("addsub", re.compile(r"(?<=_)sub(?=_p[sd]\()"), "add"),
]
_C_DECL = re.compile(r"^\s*(const|static|float|double|int|unsigned|signed|long|char|void|size_t|ptrdiff_t|"
                     r"struct|enum|union|typedef|__m\w+|\w+_t|return|break|continue|goto|case|default)\b")


def _c_mask(text):
    """The source with comments and string/char literals blanked (same length, newlines kept)."""
    out, i, n = list(text), 0, len(text)
    while i < n:
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text[i] in "\"'":
            j = i + 1
            while j < n and text[j] != text[i]:
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
        else:
            i += 1
            continue
        for k in range(i, j):
            if out[k] != "\n":
                out[k] = " "
        i = j
    return "".join(out)


def c_mutation_points(text):
    """Every single-point change of a C source: (line, column, kind, original, replacement)."""
    points, source = [], text.split("\n")
    for ln, line in enumerate(_c_mask(text).split("\n"), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        for kind, pattern, repl in _C_RULES:
            for m in pattern.finditer(line):
                new = repl
                if kind == "const":
                    tok = m.group()
                    if "." in tok:
                        num = tok.rstrip("f")
                        new = f"{float(num) + 1:.1f}" + ("f" if tok.endswith("f") else "")
                    else:
                        new = str(int(tok) + 1)
                points.append((ln, m.start(), kind, m.group(), new))
        # a whole one-line statement replaced by the empty statement
        if (stripped.endswith(";") and not _C_DECL.match(line) and "{" not in stripped and "}" not in stripped
                and stripped.count("(") == stripped.count(")") and not stripped.startswith(("for", "if", "while"))):
            original = source[ln - 1].rstrip()
            start = len(original) - len(original.lstrip())
            points.append((ln, start, "delete", original[start:], ";"))
    return points


def apply_c_mutant(text, point):
    ln, col, _, old, new = point
    lines = text.split("\n")
    line = lines[ln - 1]
    assert line[col:col + len(old)] == old, (point, line)
    lines[ln - 1] = line[:col] + new + line[col + len(old):]
    return "\n".join(lines)


def c_mutant_id(cfile, point):
    ln, col, kind, old, new = point
    return f"{cfile}:{ln}:{col}:{kind}"


class CBuild:
    """A scratch copy of the package with its extension built in place, and the build's own
    compile command for each csrc file and its link command, to rebuild one mutated file fast."""

    def __init__(self, tests_from=REPO):
        self.work = Path(tempfile.mkdtemp(prefix="mnv2-cmut-"))
        for name in ("setup.py", "pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, self.work / name)
        for name in ("csrc", "mobilenetv2", "weights"):
            shutil.copytree(REPO / name, self.work / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.so", "build"))
        shutil.copytree(tests_from / "tests", self.work / "tests", ignore=shutil.ignore_patterns("__pycache__", "fuzz"))
        env = dict(os.environ, MNV2_REQUIRE_EXT="1")
        env.pop("MNV2_CFLAGS", None)
        env.pop("MNV2_LDFLAGS", None)
        log = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "--force"], cwd=self.work,
                             env=env, capture_output=True, text=True, check=True).stdout
        self.compile, self.link = {}, None
        for line in log.splitlines():
            words = shlex.split(line)
            if not words or not ("gcc" in words[0] or "cc" in words[0]):
                continue
            if "-shared" in words:
                words[words.index("-o") + 1] = str(next((self.work / "mobilenetv2").glob("_mnv2*.so")))
                self.link = words
            elif "-c" in words:
                src = words[words.index("-c") + 1]
                self.compile[Path(src).name] = (words, self.work / words[words.index("-o") + 1])
        assert self.link and self.compile, log
        self.base_objects = {name: obj.read_bytes() for name, (_, obj) in self.compile.items()}
        self.base_code = {name: self._code(obj) for name, (_, obj) in self.compile.items()}

    def _code(self, obj):
        stripped = obj.with_suffix(".nodebug.o")
        subprocess.run(["objcopy", "--strip-debug", str(obj), str(stripped)], check=True)
        data = stripped.read_bytes()
        stripped.unlink()
        return data

    def run(self, cfile, text, tests, timeout):
        """'stillborn', 'equivalent (same object code)', 'killed', 'killed (timeout)' or 'survived'."""
        src = self.work / "csrc" / cfile
        original = src.read_text()
        words, obj = self.compile[cfile]
        try:
            src.write_text(text)
            if subprocess.run(words, cwd=self.work, capture_output=True).returncode != 0:
                return "stillborn"
            if self._code(obj) == self.base_code[cfile]:
                return "equivalent (same object code)"
            subprocess.run(self.link, cwd=self.work, capture_output=True, check=True)
            if not self._loads():  # the tests would skip every C test and call it survived
                return "stillborn"
            return run_tests(self.work, tests, timeout)
        finally:
            src.write_text(original)
            obj.write_bytes(self.base_objects[cfile])

    def _loads(self):
        """Whether the relinked extension loads (an undefined symbol fails only here)."""
        probe = "from mobilenetv2.engines import native; raise SystemExit(0 if native.available() else 1)"
        env = dict(os.environ, PYTHONPATH=str(self.work), PYTHONDONTWRITEBYTECODE="1")
        return subprocess.run([sys.executable, "-c", probe], cwd=self.work, env=env,
                              capture_output=True).returncode == 0

    def close(self):
        subprocess.run(self.link, cwd=self.work, capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)


def shared_folder():
    """The shared test data the mutants' tests read: $MOBILENETV2_SHARED, else ../shared beside
    the checkout (as tests/conftest.py finds it)."""
    env = os.environ.get("MOBILENETV2_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def run_tests(work, tests, timeout):
    env = dict(os.environ, PYTHONPATH=str(work), MOBILENETV2_SHARED=str(shared_folder()),
               PYTHONDONTWRITEBYTECODE="1", HYPOTHESIS_PROFILE="ci")
    for name in ("MNV2_FORCE_ISA", "MNV2_FORCE_SCALAR", "MNV2_NUM_THREADS", "OMP_NUM_THREADS"):
        env.pop(name, None)
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode in (1, 2) or done.returncode < 0:
            # a test failed, collecting them did (the mutant broke an import), or a signal ended
            # the run (a C mutant's SIGSEGV, an abort)
            return "killed" if done.returncode > 0 else f"killed (signal {-done.returncode})"
        if done.returncode == 0:
            return "survived"
        # 3-5: pytest's internal error, a usage error, no tests collected: the mutant was not tested
        return f"not run (pytest exit {done.returncode}: {(done.stdout + done.stderr).strip()[-200:]})"
    except subprocess.TimeoutExpired:
        return "killed (timeout)"


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def run_c_mutants(cfiles, seed, timeout, only=None, tests_from=REPO, log=print):
    """Run each file's quota of seeded mutants (or exactly the mutant ids in ``only``)."""
    if only is not None:
        known = {c_mutant_id(f, pt) for f in cfiles for pt in c_mutation_points((REPO / "csrc" / f).read_text())}
        if set(only) - known:
            raise SystemExit(f"no such mutant: {', '.join(sorted(set(only) - known))}")
    build = CBuild(tests_from)
    results = []
    try:
        for cfile in cfiles:
            quota, tests = C_TARGETS[cfile]
            text = (REPO / "csrc" / cfile).read_text()
            points = c_mutation_points(text)
            random.Random(f"{seed}/{cfile}").shuffle(points)
            ran = 0
            for point in points:
                mid = c_mutant_id(cfile, point)
                if only is not None and mid not in only:
                    continue
                if only is None and ran >= quota:
                    break
                t0 = time.monotonic()
                outcome = build.run(cfile, apply_c_mutant(text, point), tests, timeout)
                if outcome == "stillborn":
                    continue
                ran += outcome != "equivalent (same object code)"
                ln, _, kind, old, new = point
                results.append({"module": cfile, "id": mid, "change": f"line {ln}: {old!r} -> {new!r}",
                                "source": text.split("\n")[ln - 1].strip(), "outcome": outcome,
                                "seconds": round(time.monotonic() - t0, 1)})
                log(f"{mid:<34} {results[-1]['change'][:60]:<60} {outcome}")
    finally:
        build.close()
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--module", action="append", choices=sorted(TARGETS))
    p.add_argument("--max", type=int, default=40, help="mutants per module (a seeded sample)")
    p.add_argument("--c", action="store_true", help="mutate csrc/ (C_TARGETS) instead of the Python modules")
    p.add_argument("--cfile", action="append", choices=sorted(C_TARGETS), help="with --c: only these files")
    p.add_argument("--only", action="append",
                   help="run exactly these mutant ids: with --c file:line:col:kind, else module:index (as printed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--json")
    args = p.parse_args(argv)
    if not shared_folder().is_dir():  # a clone in /tmp has none beside it: its tests skipped, 3/8 "survived"
        print(f"# warning: no shared test data at {shared_folder()} (set MOBILENETV2_SHARED): the tests that "
              "need it skip, so a mutant only they would kill survives", file=sys.stderr, flush=True)
    results = []
    start = time.monotonic()
    if args.c:
        cfiles = args.cfile or list(C_TARGETS)
        if args.only:
            cfiles = [f for f in cfiles if any(o.startswith(f + ":") for o in args.only)]
        results = run_c_mutants(cfiles, args.seed, args.timeout, only=set(args.only) if args.only else None,
                                log=lambda line: print(line, flush=True))
    modules = args.module or sorted(TARGETS)
    if args.only and not args.c:
        modules = [m for m in modules if any(o.startswith(m + ":") for o in args.only)]
        known = {f"{m}:{pt[0]}" for m in modules
                 for pt in mutation_points(ast.parse((REPO / "mobilenetv2" / f"{m}.py").read_text()))}
        if set(args.only) - known:  # as --c says it: a mistyped id ran nothing and scored 0/0
            raise SystemExit(f"no such mutant: {', '.join(sorted(set(args.only) - known))} (ids as printed: "
                             "module:index, of a module --module names where it is given)")
    for module in [] if args.c else modules:
        source = (REPO / "mobilenetv2" / f"{module}.py").read_text()
        points = mutation_points(ast.parse(source))
        sample = random.Random(f"{args.seed}/{module}").sample(points, min(args.max, len(points)))
        if args.only:
            sample = [pt for pt in points if f"{module}:{pt[0]}" in args.only]
        for index, kind, what in sorted(sample, key=lambda p: p[0]):
            mutated, line = mutated_source(source, index, kind)
            outcome = run_mutant(module, mutated, TARGETS[module], args.timeout)
            results.append({"module": module, "id": f"{module}:{index}", "change": what, "outcome": outcome,
                            "source": line})
            print(f"{module + ':' + str(index):<20} {what:<44} {outcome}", flush=True)
    scored = [r for r in results if not r["outcome"].startswith(("equivalent", "not run"))]
    killed = sum(r["outcome"].startswith("killed") for r in scored)
    equivalent = sum(r["outcome"].startswith("equivalent") for r in results)
    print(f"\n{killed}/{len(scored)} mutants killed ({100 * killed / max(len(scored), 1):.1f} %) "
          f"in {time.monotonic() - start:.0f} s; {equivalent} equivalent by object code not run")
    for module in sorted({r["module"] for r in scored}):
        mine = [r for r in scored if r["module"] == module]
        print(f"  {module:<24} {sum(r['outcome'].startswith('killed') for r in mine)}/{len(mine)}")
    for r in results:
        if r["outcome"] == "survived" or r["outcome"].startswith("not run"):
            what = "survivor" if r["outcome"] == "survived" else r["outcome"]
            print(f"{what}: {r.get('id', r['module'])} {r['change']}  [{r.get('source', '')}]")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "seed": args.seed, "results": results}, indent=1))
    return 0

if __name__ == "__main__":
    sys.exit(main())
