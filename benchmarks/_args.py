"""What the scripts in benchmarks/ share on their command lines: a parser whose errors are one line
(exit 2, no usage block), argparse types that refuse nonsense before any timing starts, where the
JSON goes (benchmarks/results/ by default; a path given must be a file name in an existing folder),
and the fresh child processes some scripts time in, whose failure is one line here too.

A script imports it as its sibling (``sys.path.insert(0, <this folder>)``, then ``import _args``).
It imports nothing of mobilenetv2 itself until a function needs it: segmentation_ab.py's spawned
children import this module before they put another checkout first on their path.
"""
import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent  # the checkout: its package, where mobilenetv2 is not installed
RESULTS = HERE / "results"  # git-ignored: the scripts' JSON by default (bench.py's: the current folder)

if importlib.util.find_spec("mobilenetv2") is None:  # run from a checkout: the package beside this folder
    sys.path.insert(0, str(ROOT))


def parser(doc, script):
    """The parser of the script whose file is ``script`` (its __file__): mobilenetv2's
    OneLineArgumentParser named after it, described by the first paragraph of its docstring."""
    from mobilenetv2.errors import OneLineArgumentParser
    return OneLineArgumentParser(prog=Path(script).name, description=doc.split("\n\n")[0])


def _typed(parse, text):
    """``parse(text)``, its ValueError (mobilenetv2's ArgumentError among them) as argparse's."""
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def variant(text):
    """--variant: a published variant's name (mobilenetv2.network.variants.parse_variant), as
    variant_name spells it."""
    from mobilenetv2.network.variants import parse_variant, variant_name
    return variant_name(*_typed(parse_variant, text.strip()))


def variants(text):
    """--variants: a comma list of at least one variant name (see variant)."""
    names = [variant(name) for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one variant, like 1.0_224")
    return names


def thread_list(text):
    """--threads: a comma list of thread counts, each from 1 to pool.max_threads() (the engine's
    own limit, so no count fails mid-run)."""
    from mobilenetv2.tools.benchmark import thread_counts
    return _typed(thread_counts, text)


def thread_count(text):
    """--threads: one thread count (see thread_list)."""
    counts = thread_list(text)
    if len(counts) != 1:
        raise argparse.ArgumentTypeError(f"takes one thread count, got {text!r}")
    return counts[0]


def count(low=1, high=100_000):
    """An argparse type: a whole number from ``low`` to ``high``."""
    from mobilenetv2.errors import whole_number
    return whole_number(low, high)


def counts(low=1, high=100_000):
    """An argparse type: a comma list of at least one whole number, each from ``low`` to ``high``."""
    one = count(low, high)

    def parse(text):
        values = [one(v) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"give a comma list of whole numbers, got {text!r}")
        return values
    return parse


def number(low=0.0, high=math.inf):
    """An argparse type: a finite number from ``low`` to ``high`` (nan and inf refused)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not low <= value <= high:
            upto = f" to {high:g}" if math.isfinite(high) else " up"
            raise argparse.ArgumentTypeError(f"must be a number from {low:g}{upto}, got {text}")
        return value
    return parse


def output_path(text):
    """--json PATH: a file name in an existing folder (mobilenetv2.files.check_output_path, as
    bench.py checks it), refused before any timing; a folder is never made of a typo."""
    from mobilenetv2.files import check_output_path
    try:
        return Path(check_output_path(text, "JSON"))
    except OSError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def checkout(text):
    """--other DIR: another checkout with its package (built in place), as a resolved Path."""
    root = Path(text).resolve()
    if not (root / "mobilenetv2" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text!r} has no mobilenetv2 package (a checkout built in place)")
    return root


def json_path(given, stem):
    """Where the JSON goes: ``given`` (an output_path), else benchmarks/results/STEM-<time>.json
    (the folder made where missing: it is git-ignored)."""
    if given is not None:
        return Path(given)
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{stem}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"


def write_json(path, report, indent=1):
    """Write ``report`` to ``path`` whole or not at all (never half a file), and say so."""
    from mobilenetv2.files import atomic_write
    with atomic_write(path, suffix=".json") as f:
        f.write(json.dumps(report, indent=indent).encode())
    print(f"# wrote {path}")


CHILD_HEAD = """
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
import mobilenetv2
if not mobilenetv2.__file__.startswith({root!r}):
    raise SystemExit(f"imported {{mobilenetv2.__file__}}, not the checkout in {root!r}")
"""
"""The start of a child script (a str.format template, ``root`` the checkout) that times the
checkout at ``root``: its package first on the path, and refused where another one was imported
(an installed copy, or the checkout of the script's parent)."""


def child_json(code, what, env=None, timeout=900, keep_pythonpath=False):
    """What a fresh ``python -c code`` printed as JSON on its last line; where it fails, one line
    (its last line on stderr: the exception, not its traceback) and exit status 1.  ``env``:
    variables to set on top of this environment, from which PYTHONPATH goes unless
    ``keep_pythonpath`` (the child puts the checkout it times first on its own path)."""
    env = {**{k: v for k, v in os.environ.items() if keep_pythonpath or k != "PYTHONPATH"}, **(env or {})}
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{what}: no answer within {timeout} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or [f"exit status {done.returncode}"]
        raise SystemExit(f"{what} failed: {last[0].strip()}")
    return json.loads(lines[-1])
