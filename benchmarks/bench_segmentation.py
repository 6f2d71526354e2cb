"""`mobilenetv2 bench --segmentation` with this checkout's defaults: the checkpoint
../shared/hf/deeplabv3_mobilenet_v2_1.0_513 (or $MOBILENETV2_SHARED's; --hf DIR to choose, random
weights where neither exists) and the JSON in benchmarks/results/.

    python benchmarks/bench_segmentation.py [--hf DIR] [--size 513] [--threads 1,2] [--runs 20] [--lockstep 20]
"""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mobilenetv2.tools import benchmark_segmentation  # noqa: E402


def main(argv):
    if not any(a in ("--hf", "--segmentation") or a.startswith(("--hf=", "--segmentation=")) for a in argv):
        env = os.environ.get("MOBILENETV2_SHARED")
        shared = Path(env) if env else REPO.parent / "shared"
        checkpoint = shared / "hf" / "deeplabv3_mobilenet_v2_1.0_513"
        argv = ["--hf", str(checkpoint) if checkpoint.is_dir() else "random"] + argv
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv = argv + ["--out", str(REPO / "benchmarks" / "results")]
    return benchmark_segmentation.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
