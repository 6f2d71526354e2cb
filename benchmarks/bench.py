"""Benchmark script: ``python benchmarks/bench.py --help`` (the same as ``mobilenetv2 bench``, and
failing as it does: one line on stderr, never a traceback)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402, F401  (puts the checkout's package on the path where it is not installed)

from mobilenetv2 import cli  # noqa: E402


def main(argv=None):
    return cli.main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
