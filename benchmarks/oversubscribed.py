"""More C threads than cores, or cores busy with other processes: the time of one run.

The plan's threads share each op; a thread the OS has descheduled (more threads than cores, or
another process on its core) must not stall the others for a time slice.  For a single image the
threads take each other's untaken shares of a stage (csrc/plan.c, run_stages); a batch's images
form units of about two, so a thread with more images has shares a free thread can take.  Prints
median, mean, p90 and max of ``--runs`` runs per (batch, threads) and writes JSON.  ``--hogs N``
keeps N busy-looping processes running meanwhile (the loaded machine); ``--hog-cpus 1`` pins them
to CPU 1 (one core taken, as by a neighbour on a shared host: the thread there runs at half
speed for the whole run, where unpinned hogs slow every thread alike).

``--other DIR`` (a built checkout of another commit) times this checkout and DIR in alternating
fresh processes (``--pairs`` of them, this/other then other/this) and prints each side's median
and the median of the per-pair ratios this / other.  The JSON goes to benchmarks/results/
(``--json PATH`` elsewhere).

    python benchmarks/oversubscribed.py [--variant 0.35_96] [--threads 1,2,4,8,16] [--batches 1,16]
                                        [--runs 20] [--hogs 0] [--hog-cpus LIST]
                                        [--other DIR] [--pairs 6] [--json PATH]
"""
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)

HERE = _args.ROOT

CHILD = _args.CHILD_HEAD + """from mobilenetv2 import MobileNetV2
model = MobileNetV2(({res}, {res}, 3), alpha={alpha}, weights=None, threads={threads})
x = np.random.default_rng(0).uniform(-1, 1, ({batch}, {res}, {res}, 3)).astype(np.float32)
t0 = time.perf_counter()
while time.perf_counter() - t0 < {warmup}:  # plan, threads, caches
    model(x)
times = []
for _ in range({runs}):
    t0 = time.perf_counter()
    model(x)
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def _hog(cpus=None):
    """A busy-looping process (on ``cpus`` only, if given)."""
    pin = f"import os; os.sched_setaffinity(0, {sorted(cpus)!r})\n" if cpus else ""
    return subprocess.Popen([sys.executable, "-c", pin + "while True:\n    pass"])


def _stats(times):
    ms = np.array(times) * 1e3
    return dict(median_ms=float(np.median(ms)), mean_ms=float(ms.mean()), p90_ms=float(np.percentile(ms, 90)),
                min_ms=float(ms.min()), max_ms=float(ms.max()))


def _child_times(root, alpha, res, batch, threads, runs, warmup=0.5):
    """The run times of a fresh process importing the checkout ``root`` (after ``warmup`` seconds
    of untimed runs)."""
    code = CHILD.format(root=str(root), alpha=alpha, res=res, batch=batch, threads=threads, runs=runs, warmup=warmup)
    return _args.child_json(code, f"timing {root}")


def _ab(args, alpha, res, other):
    """--other: each (batch, threads) in alternating fresh processes of this checkout and ``other``."""
    print(f"{'batch':>5} {'threads':>7} {'this median ms':>14} {'other median ms':>15} {'this/other':>10}  [min, max]")
    rows = []
    for batch in args.batches:
        for threads in args.threads:
            got = {"this": [], "other": []}
            for i in range(args.pairs):
                for side in ("this", "other") if i % 2 == 0 else ("other", "this"):
                    root = HERE if side == "this" else other
                    got[side].append(_stats(_child_times(root, alpha, res, batch, threads, args.runs)))
            r = np.array([a["median_ms"] / b["median_ms"] for a, b in zip(got["this"], got["other"])])
            row = dict(batch=batch, threads=threads, ratio=float(np.median(r)), ratio_min=float(r.min()),
                       ratio_max=float(r.max()), this=got["this"], other=got["other"],
                       this_median_ms=float(np.median([g["median_ms"] for g in got["this"]])),
                       other_median_ms=float(np.median([g["median_ms"] for g in got["other"]])))
            rows.append(row)
            print(f"{batch:5d} {threads:7d} {row['this_median_ms']:14.2f} {row['other_median_ms']:15.2f} "
                  f"{row['ratio']:10.3f}  [{row['ratio_min']:.3f}, {row['ratio_max']:.3f}]")
    return rows


def main(argv=None):
    parser = _args.parser(__doc__, __file__)
    parser.add_argument("--variant", type=_args.variant, default="0.35_96", help="(default %(default)s)")
    parser.add_argument("--threads", type=_args.thread_list, default="1,2,4,8,16",
                        help="comma list (default %(default)s)")
    parser.add_argument("--batches", type=_args.counts(1, 1024), default="1,16",
                        help="comma list (default %(default)s)")
    parser.add_argument("--runs", type=_args.count(1), default=20, help="(default %(default)s)")
    parser.add_argument("--hogs", type=_args.count(0, 256), default=0,
                        help="busy-looping processes kept running meanwhile (default %(default)s)")
    parser.add_argument("--hog-cpus", default=None, help="comma list of CPUs the hogs are pinned to")
    parser.add_argument("--other", type=_args.checkout, default=None,
                        help="a built checkout of another commit: A/B in fresh processes")
    parser.add_argument("--pairs", type=_args.count(1), default=6,
                        help="with --other: pairs of processes (default %(default)s)")
    parser.add_argument("--json", type=_args.output_path,
                        help="output path (default: benchmarks/results/oversubscribed-<time>.json)")
    args = parser.parse_args(argv)
    hog_cpus = None
    if args.hog_cpus:
        try:
            hog_cpus = {int(c) for c in args.hog_cpus.split(",")}
        except ValueError:
            parser.error(f"--hog-cpus must be a comma list of CPU numbers, got {args.hog_cpus!r}")
        if not hog_cpus <= os.sched_getaffinity(0):
            parser.error(f"--hog-cpus {sorted(hog_cpus)}: this process may run only on CPUs {sorted(os.sched_getaffinity(0))}")
    other = args.other
    import mobilenetv2
    from mobilenetv2 import MobileNetV2
    from mobilenetv2.tools.benchmark import cpu_model
    from mobilenetv2.network.variants import parse_variant
    alpha, res = parse_variant(args.variant)
    args.json = _args.json_path(args.json, "oversubscribed")
    hogs = [_hog(hog_cpus) for _ in range(args.hogs)]
    rows = []
    try:
        pinned = f" pinned to CPUs {sorted(hog_cpus)}" if hog_cpus else ""
        print(f"# {datetime.now(timezone.utc).isoformat(timespec='seconds')}  {cpu_model()}, {os.cpu_count()} CPUs, "
              f"backend {mobilenetv2.backend()}, MobileNetV2 {args.variant}, {args.hogs} busy processes alongside{pinned}")
        if other is not None:
            print(f"# this: {HERE}; other: {other}; {args.pairs} pairs of processes, {args.runs} runs each")
            rows = _ab(args, alpha, res, other)
            return _write(args, cpu_model(), mobilenetv2.backend(), hog_cpus, other, rows)
        model = MobileNetV2((res, res, 3), alpha=alpha, weights=None, threads=1)
        print(f"{'batch':>5} {'threads':>7} {'median ms':>10} {'mean ms':>8} {'p90 ms':>8} {'max ms':>8}")
        for batch in args.batches:
            x = np.random.default_rng(0).uniform(-1, 1, (batch, res, res, 3)).astype(np.float32)
            for threads in args.threads:
                model.threads = threads
                model(x)  # warm-up: plan and threads
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - t0)
                row = dict(batch=batch, threads=threads, **_stats(times))
                rows.append(row)
                print(f"{batch:5d} {threads:7d} {row['median_ms']:10.2f} {row['mean_ms']:8.2f} "
                      f"{row['p90_ms']:8.2f} {row['max_ms']:8.2f}")
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    return _write(args, cpu_model(), mobilenetv2.backend(), hog_cpus, None, rows)


def _write(args, cpu, backend, hog_cpus, other, rows):
    _args.write_json(args.json, dict(cpu=cpu, cpus=os.cpu_count(), backend=backend, variant=args.variant,
                                     date=datetime.now(timezone.utc).isoformat(timespec="seconds"), hogs=args.hogs,
                                     hog_cpus=sorted(hog_cpus) if hog_cpus else None,
                                     other=str(other) if other else None, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
