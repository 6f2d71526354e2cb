"""A model in a long-lived service: RSS and OS threads while one model sees many input shapes.

Runs one MobileNetV2 0.35/96 (float32, the C engine) on batch sizes 1..N (default 100), one call
each, then a no-top model on input sizes 32..32+S-1, and prints RSS (VmRSS) and the OS thread
count (Threads, /proc/self/status) as it goes; writes the figures as JSON (benchmarks/results/
by default).

    python benchmarks/plan_cache.py [--batches 100] [--sizes 50] [--threads 2] [--json PATH]
"""
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)


def status():
    """(RSS in MB, OS threads) of this process from /proc/self/status."""
    rss = threads = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None):
    from mobilenetv2.network.arch import MAX_SIZE
    parser = _args.parser(__doc__, __file__)
    parser.add_argument("--batches", type=_args.count(1, 1024), default=100,
                        help="batch sizes 1..N, one call each (default %(default)s)")
    parser.add_argument("--sizes", type=_args.count(1, MAX_SIZE - 31), default=50,
                        help="input sizes 32..32+S-1, one call each (default %(default)s)")
    parser.add_argument("--threads", type=_args.thread_count, default=2, help="(default %(default)s)")
    parser.add_argument("--json", type=_args.output_path,
                        help="output path (default: benchmarks/results/plan-cache-<time>.json)")
    args = parser.parse_args(argv)
    path = _args.json_path(args.json, "plan-cache")
    import mobilenetv2
    from mobilenetv2 import MobileNetV2
    rng = np.random.default_rng(0)
    rows = []
    start = status()
    print(f"# {cpu_name()}, {os.cpu_count()} CPUs, backend {mobilenetv2.backend()}, threads {args.threads}")
    print(f"{'phase':<10} {'shape':>18} {'RSS MB':>8} {'threads':>8}")
    print(f"{'start':<10} {'':>18} {start[0]:8.1f} {start[1]:8d}")
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=args.threads)
    t0 = time.perf_counter()
    for n in range(1, args.batches + 1):
        model.predict(rng.uniform(-1, 1, (n, 96, 96, 3)).astype(np.float32), batch_size=n)
        rss, threads = status()
        rows.append(dict(phase="batch", shape=[n, 96, 96, 3], rss_mb=rss, threads=threads))
        if n in (1, 2, 5, 10, 20, 50) or n % 25 == 0:
            print(f"{'batch':<10} {str((n, 96, 96, 3)):>18} {rss:8.1f} {threads:8d}")
    anysize = MobileNetV2(None, alpha=0.35, include_top=False, weights=None, threads=args.threads)
    for s in range(32, 32 + args.sizes):
        anysize.predict(rng.uniform(-1, 1, (1, s, s, 3)).astype(np.float32))
        rss, threads = status()
        rows.append(dict(phase="size", shape=[1, s, s, 3], rss_mb=rss, threads=threads))
        if s % 10 == 0:
            print(f"{'size':<10} {str((1, s, s, 3)):>18} {rss:8.1f} {threads:8d}")
    elapsed = time.perf_counter() - t0
    peak_rss = max(r["rss_mb"] for r in rows)
    peak_threads = max(r["threads"] for r in rows)
    print(f"peak RSS {peak_rss:.1f} MB, peak threads {peak_threads}, {elapsed:.1f} s")
    _args.write_json(path, dict(cpu=cpu_name(), cpus=os.cpu_count(), backend=mobilenetv2.backend(),
                                threads=args.threads, python=sys.version.split()[0], start_rss_mb=start[0],
                                start_threads=start[1], peak_rss_mb=peak_rss, peak_threads=peak_threads,
                                seconds=elapsed, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
