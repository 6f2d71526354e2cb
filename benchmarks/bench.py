"""Benchmark script: ``python benchmarks/bench.py --help`` (the same as ``mobilenetv2 bench``)."""
import sys
from pathlib import Path

try:
    import mobilenetv2  # noqa: F401  (installed)
except ImportError:  # run from a checkout: the package beside this folder
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mobilenetv2.tools.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
