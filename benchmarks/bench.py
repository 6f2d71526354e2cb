"""Benchmark script: ``python benchmarks/bench.py --help`` (the same as ``mobilenetv2 bench``)."""
import sys

from mobilenetv2.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
