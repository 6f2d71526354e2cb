"""`mobilenetv2 bench --segmentation` with this checkout's defaults: the checkpoint
../shared/hf/deeplabv3_mobilenet_v2_1.0_513 (or $MOBILENETV2_SHARED's; --hf DIR to choose, random
weights where neither exists) and the JSON in benchmarks/results/ (--out FOLDER: an existing one).
Fails as the command does: one line on stderr, never a traceback.

    python benchmarks/bench_segmentation.py [--hf DIR] [--size 513] [--threads 1,2] [--runs 20] [--lockstep 20]
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)

from mobilenetv2 import cli  # noqa: E402
from mobilenetv2.tools import benchmark_segmentation  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(a in ("--hf", "--segmentation") or a.startswith(("--hf=", "--segmentation=")) for a in argv):
        env = os.environ.get("MOBILENETV2_SHARED")
        shared = Path(env) if env else _args.ROOT.parent / "shared"
        checkpoint = shared / "hf" / "deeplabv3_mobilenet_v2_1.0_513"
        argv = ["--hf", str(checkpoint) if checkpoint.is_dir() else "random"] + argv
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        _args.RESULTS.mkdir(parents=True, exist_ok=True)  # git-ignored: made where missing
    return cli.run_command("bench", lambda: benchmark_segmentation.main(
        argv, out=str(_args.RESULTS), out_help="benchmarks/results/ of this checkout"))


if __name__ == "__main__":
    sys.exit(main())
