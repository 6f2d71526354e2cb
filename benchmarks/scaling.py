"""Where the threads' time goes: ``model.profile`` of one variant at each thread count, per op, in
alternating processes (1, 2, 4, ..., then again), and what each op loses against perfect scaling.

    python benchmarks/scaling.py [--variant 1.4_224] [--threads 1,2] [--rounds 3] [--runs 100]
                                 [--json PATH]

Each process builds the variant with the benchmark's synthetic weights, profiles one batch-1 input
``--runs`` times and reports each op's median (benchmarks/profile_ab.py's child).  Per op and thread
count T the table gives the median over the rounds' processes, the speedup over 1 thread and the
excess over perfect scaling, ``us(T) - us(1) / T``: the microseconds that op loses at T threads
(imbalance, halos, waiting at its end, memory shared by more cores).  Ops are listed by their
excess at the largest T, with the whole plan first.  Written for the lent 16-core machine, whose
2-thread batch-1 rows scaled worse than the peers' (README.md); on any machine it says which ops
stop scaling.  Writes JSON (CPU, date, commit, every figure) to ``--json`` or benchmarks/results.
"""
import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from profile_ab import profile  # noqa: E402


def parse_threads(text):
    """Sorted thread counts of a comma list, 1 first (the excess needs the 1-thread time); None
    if the list is not counts in 1..64."""
    try:
        threads = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        return None
    if not threads or threads[0] < 1 or threads[-1] > 64:
        return None
    return threads if threads[0] == 1 else [1] + threads


def table(runs_by_threads):
    """[{op, kind, us: {T: median us}, speedup: {T: x}, excess_us: {T: us}}] over the ops every
    process reported, from {T: [{label: [kind, seconds]}, ...]}."""
    threads = sorted(runs_by_threads)
    procs = [p for t in threads for p in runs_by_threads[t]]
    labels = [k for k in procs[0] if all(k in p for p in procs)]
    rows = []
    for k in labels:
        us = {t: float(np.median([p[k][1] for p in runs_by_threads[t]]) * 1e6) for t in threads}
        one = us[1]
        rows.append(dict(op=k, kind=procs[0][k][0], us=us,
                         speedup={t: one / us[t] if us[t] > 0 else None for t in threads},
                         excess_us={t: us[t] - one / t for t in threads}))
    top = threads[-1]
    rows.sort(key=lambda r: (r["kind"] != "plan", -r["excess_us"][top]))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="1.4_224")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts (1 is always added)")
    ap.add_argument("--rounds", type=int, default=3, help="processes per thread count, interleaved")
    ap.add_argument("--runs", type=int, default=100, help="profile runs per process")
    ap.add_argument("--top", type=int, default=15, help="ops to print (by excess at the most threads)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not 1 <= args.rounds <= 100 or not 1 <= args.runs <= 10000:
        ap.error("--rounds must be 1..100 and --runs 1..10000")
    threads = parse_threads(args.threads)
    if threads is None:
        ap.error(f"--threads takes a comma list of counts in 1..64, got {args.threads!r}")
    from mobilenetv2.tools.benchmark import cpu_model, git_commit
    from mobilenetv2.network.variants import parse_variant, variant_name
    try:
        variant = variant_name(*parse_variant(args.variant))
    except ValueError as exc:
        ap.error(f"--variant: {exc}")
    load = os.getloadavg()[0]
    got = {t: [] for t in threads}
    for r in range(args.rounds):
        for t in threads if r % 2 == 0 else threads[::-1]:
            got[t].append(profile(HERE.parent, variant, args.runs, t))
    rows = table(got)
    now = datetime.now(timezone.utc)
    print(f"# {now.isoformat(timespec='seconds')}  {cpu_model()}, {os.cpu_count()} CPUs; {variant}, batch 1, "
          f"{args.rounds} processes per thread count, profile runs {args.runs}; load average {load:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; commit {git_commit()}")
    print("# us: median per op; x: speedup over 1 thread; +us: excess over perfect scaling, us(T) - us(1)/T")
    head = f"{'op':<28} {'kind':<9} {'1T us':>8}" + "".join(f" {f'{t}T us':>8} {'x':>5} {'+us':>7}" for t in threads[1:])
    print(head)
    for row in rows[:args.top + 1]:
        line = f"{row['op']:<28} {row['kind']:<9} {row['us'][1]:8.1f}"
        for t in threads[1:]:
            line += f" {row['us'][t]:8.1f} {row['speedup'][t]:5.2f} {row['excess_us'][t]:7.1f}"
        print(line)
    path = Path(args.json) if args.json else HERE / "results" / f"scaling-{now:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(cpu=cpu_model(), cpus=os.cpu_count(), date=now.isoformat(), commit=git_commit(),
                                    variant=variant, threads=threads, rounds=args.rounds, runs=args.runs,
                                    load_start=load, load_end=os.getloadavg()[0], ops=rows, raw=got), indent=1))
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
