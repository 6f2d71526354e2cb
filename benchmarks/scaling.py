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
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _args.py and profile_ab.py
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)

from profile_ab import profile  # noqa: E402


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
    ap = _args.parser(__doc__, __file__)
    ap.add_argument("--variant", type=_args.variant, default="1.4_224", help="(default %(default)s)")
    ap.add_argument("--threads", type=_args.thread_list, default="1,2",
                    help="comma list of thread counts (1 is always added; default %(default)s)")
    ap.add_argument("--rounds", type=_args.count(1, 100), default=3,
                    help="processes per thread count, interleaved (default %(default)s)")
    ap.add_argument("--runs", type=_args.count(1, 10_000), default=100,
                    help="profile runs per process (default %(default)s)")
    ap.add_argument("--top", type=_args.count(0), default=15,
                    help="ops to print (by excess at the most threads; default %(default)s)")
    ap.add_argument("--json", type=_args.output_path,
                    help="output path (default: benchmarks/results/scaling-<time>.json)")
    args = ap.parse_args(argv)
    threads = sorted(set(args.threads) | {1})  # the excess needs the 1-thread time
    from mobilenetv2.tools.benchmark import cpu_model, git_commit
    variant = args.variant
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
    _args.write_json(_args.json_path(args.json, "scaling"), dict(
        cpu=cpu_model(), cpus=os.cpu_count(), date=now.isoformat(), commit=git_commit(), variant=variant,
        threads=threads, rounds=args.rounds, runs=args.runs, load_start=load, load_end=os.getloadavg()[0],
        ops=rows, raw=got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
