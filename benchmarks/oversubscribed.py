"""More C threads than cores: the time of one run as threads grow past the CPU count.

The plan's threads meet at barriers between ops; with more threads than cores a waiting thread
must give its core to one that still has work (yield, then sleep), or every barrier waits for
time slices.  Prints the median and spread of ``--runs`` runs per (batch, threads) and writes JSON.

    python benchmarks/oversubscribed.py [--threads 1,2,4,8,16] [--batches 1,16] [--runs 20]
"""
import argparse
import json
import os
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", default="oversubscribed.json")
    args = parser.parse_args(argv)
    import mobilenetv2
    from mobilenetv2 import MobileNetV2
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=1)
    rows = []
    print(f"# {os.cpu_count()} CPUs, backend {mobilenetv2.backend()}, MobileNetV2 0.35/96")
    print(f"{'batch':>5} {'threads':>7} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for batch in [int(b) for b in args.batches.split(",")]:
        x = np.random.default_rng(0).uniform(-1, 1, (batch, 96, 96, 3)).astype(np.float32)
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
                             min_ms=float(ms.min()), max_ms=float(ms.max())))
            print(f"{batch:5d} {threads:7d} {np.median(ms):10.2f} {ms.min():8.2f} {ms.max():8.2f}")
    with open(args.json, "w") as f:
        json.dump(dict(cpus=os.cpu_count(), backend=mobilenetv2.backend(), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
