"""More C threads than cores, or cores busy with other processes: the time of one run.

The plan's threads share each op; a thread the OS has descheduled (more threads than cores, or
another process on its core) must not stall the others for a time slice.  For a single image the
threads take each other's untaken shares of a stage (csrc/plan.c, run_stages); batches run in groups
with barriers.  Prints median, mean, p90 and max of ``--runs`` runs per (batch, threads) and writes
JSON.  ``--hogs N`` keeps N busy-looping processes running meanwhile (the loaded machine).

    python benchmarks/oversubscribed.py [--variant 0.35_96] [--threads 1,2,4,8,16] [--batches 1,16]
                                        [--runs 20] [--hogs 0]
"""
import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

try:
    import mobilenetv2  # noqa: F401  (installed)
except ImportError:  # run from a checkout: the package beside this folder
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _hog():
    while True:
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="0.35_96")
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--hogs", type=int, default=0, help="busy-looping processes kept running meanwhile")
    parser.add_argument("--json", default="oversubscribed.json")
    args = parser.parse_args(argv)
    import mobilenetv2
    from mobilenetv2 import MobileNetV2
    from mobilenetv2.benchmark import cpu_model
    from mobilenetv2.variants import parse_variant
    alpha, res = parse_variant(args.variant)
    model = MobileNetV2((res, res, 3), alpha=alpha, weights=None, threads=1)
    hogs = [multiprocessing.get_context("spawn").Process(target=_hog, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    rows = []
    try:
        print(f"# {cpu_model()}, {os.cpu_count()} CPUs, backend {mobilenetv2.backend()}, "
              f"MobileNetV2 {args.variant}, {args.hogs} busy processes alongside")
        print(f"{'batch':>5} {'threads':>7} {'median ms':>10} {'mean ms':>8} {'p90 ms':>8} {'max ms':>8}")
        for batch in [int(b) for b in args.batches.split(",")]:
            x = np.random.default_rng(0).uniform(-1, 1, (batch, res, res, 3)).astype(np.float32)
            for threads in [int(t) for t in args.threads.split(",")]:
                model.threads = threads
                model(x)  # warm-up: plan and threads
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - t0)
                ms = np.array(times) * 1e3
                rows.append(dict(batch=batch, threads=threads, median_ms=float(np.median(ms)),
                                 mean_ms=float(ms.mean()), p90_ms=float(np.percentile(ms, 90)),
                                 min_ms=float(ms.min()), max_ms=float(ms.max())))
                print(f"{batch:5d} {threads:7d} {np.median(ms):10.2f} {ms.mean():8.2f} "
                      f"{np.percentile(ms, 90):8.2f} {ms.max():8.2f}")
    finally:
        for h in hogs:
            h.terminate()
    with open(args.json, "w") as f:
        json.dump(dict(cpu=cpu_model(), cpus=os.cpu_count(), backend=mobilenetv2.backend(), variant=args.variant,
                       hogs=args.hogs, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
