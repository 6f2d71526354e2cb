"""Whether this machine runs slow at first: one C model called back to back, median per interval.

    python benchmarks/settle.py [--variant 1.0_224] [--threads 1] [--seconds 20] [--every 2]
                                [--json PATH]

On the lent 16-core VM, which starts fresh for each session, the bench's first measurement was
the one row behind in two runs out of four, 1.2x slower than the same plan a few minutes later.
This times one variant (the benchmark's synthetic weights, batch 1) for ``--seconds`` and prints
the median, p10 and count of the calls in each ``--every``-second interval, and the last
interval's median over the first's: a machine that settles shows a ratio under 1.  device_run.sh
runs it before the bench (``SETTLE_SECONDS``), which also leaves the bench a settled machine.
Writes JSON (CPU, date, commit, every interval).
"""
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)


def intervals(stamps, times, every):
    """[(start s, median s, p10 s, calls)] of the calls that started in each ``every``-second
    interval from the first call (stamps: call starts in seconds from 0; times: their lengths)."""
    stamps, times = np.asarray(stamps, float), np.asarray(times, float)
    out = []
    if not len(stamps):
        return out
    index = np.floor(stamps / every).astype(int)
    for i in range(int(index.max()) + 1):
        sel = times[index == i]
        if len(sel):
            out.append((i * every, float(np.median(sel)), float(np.percentile(sel, 10)), int(len(sel))))
    return out


def main(argv=None):
    p = _args.parser(__doc__, __file__)
    p.add_argument("--variant", type=_args.variant, default="1.0_224", help="(default %(default)s)")
    p.add_argument("--threads", type=_args.thread_count, default=1, help="(default %(default)s)")
    p.add_argument("--seconds", type=_args.number(0, 3600), default=20.0, help="(default %(default)s)")
    p.add_argument("--every", type=_args.number(0, 3600), default=2.0, help="(default %(default)s)")
    p.add_argument("--json", type=_args.output_path,
                   help="output path (default: benchmarks/results/settle-<time>.json)")
    args = p.parse_args(argv)
    from mobilenetv2.engines import native
    from mobilenetv2.tools.benchmark import _input, _model, cpu_model, git_commit
    from mobilenetv2.network.variants import parse_variant
    alpha, res = parse_variant(args.variant)
    if not (0 < args.every <= args.seconds <= 3600):
        p.error("--every and --seconds: 0 < every <= seconds <= 3600")
    if not native.available():
        print("settle: the C extension is not built", file=sys.stderr)
        return 1
    now = datetime.now(timezone.utc)
    model = _model(alpha, res)
    model.threads = args.threads
    x = _input(res, 1)
    model(x)  # the plan and the thread pool
    stamps, times = [], []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        start = time.perf_counter()
        model(x)
        stamps.append(start - t0)
        times.append(time.perf_counter() - start)
    rows = intervals(stamps, times, args.every)
    print(f"# {now.isoformat(timespec='seconds')}  {cpu_model()}, {native.backend()}, {args.variant} batch 1 "
          f"at {args.threads} thread(s), back to back for {args.seconds:g} s; commit {git_commit()}")
    print(f"{'from s':>7s} {'median ms':>10s} {'p10 ms':>8s} {'calls':>6s}")
    for start, med, p10, n in rows:
        print(f"{start:7.1f} {med * 1e3:10.3f} {p10 * 1e3:8.3f} {n:6d}")
    ratio = rows[-1][1] / rows[0][1]
    print(f"# last interval's median / first's: {ratio:.3f}")
    report = dict(cpu=cpu_model(), date=now.isoformat(timespec="seconds"), commit=git_commit(),
                  backend=native.backend(), variant=args.variant, threads=args.threads, every_s=args.every,
                  load_average=os.getloadavg()[0], last_over_first=ratio,
                  intervals=[dict(start_s=s, median_ms=m * 1e3, p10_ms=q * 1e3, calls=n) for s, m, q, n in rows])
    _args.write_json(_args.json_path(args.json, "settle"), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
