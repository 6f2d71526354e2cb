"""Packed weights on transparent huge pages or not (``MNV2_HUGE_PAGES``): speed and memory.

    python benchmarks/huge_pages.py [--variants 1.0_224,1.4_224,0.5_160,0.35_96] [--threads 1]
                                    [--calls 300] [--json PATH]

Speed: per variant and thread count, two fresh processes (the two build orders), each building one
model with its packed weights on huge pages and one with plain arrays and calling them in turn
``--calls`` times, so a slow spell of a shared machine lands on both; the table gives each
side's median ms and the median of the per-call ratios huge / plain.  Memory: the peak RSS of a
process that builds one model and calls it 5 times, with and without.  Writes JSON (CPU, date,
commit, the huge-page size this kernel offers, every figure; by default benchmarks/results/
huge-pages-<time>.json).
"""
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)

HERE = _args.ROOT

SPEED = """
import json, os, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from mobilenetv2.tools.benchmark import _model
from mobilenetv2.network.variants import parse_variant
alpha, res = parse_variant({variant!r})
x = np.random.default_rng(0).uniform(-1, 1, (1, res, res, 3)).astype(np.float32)
models = {{}}
for side in {order!r}:
    os.environ["MNV2_HUGE_PAGES"] = "1" if side == "huge" else "0"  # read when the weights are packed
    m = _model(alpha, res)
    m.threads = {threads}
    m(x)
    models[side] = m
for m in models.values():
    for _ in range(20):
        m(x)
times = {{side: [] for side in models}}
for _ in range({calls}):
    for side, m in models.items():
        t = time.perf_counter()
        m(x)
        times[side].append(time.perf_counter() - t)
print(json.dumps(times))
"""

MEMORY = """
import resource, sys
sys.path.insert(0, {root!r})
import numpy as np
from mobilenetv2.tools.benchmark import _model
from mobilenetv2.network.variants import parse_variant
alpha, res = parse_variant({variant!r})
m = _model(alpha, res)
x = np.zeros((1, res, res, 3), np.float32)
for _ in range(5):
    m(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def main(argv=None):
    ap = _args.parser(__doc__, __file__)
    ap.add_argument("--variants", type=_args.variants, default="1.0_224,1.4_224,0.5_160,0.35_96",
                    help="comma list (default %(default)s)")
    ap.add_argument("--threads", type=_args.thread_list, default="1", help="comma list (default %(default)s)")
    ap.add_argument("--calls", type=_args.count(1), default=300, help="(default %(default)s)")
    ap.add_argument("--json", type=_args.output_path,
                    help="output path (default: benchmarks/results/huge-pages-<time>.json)")
    args = ap.parse_args(argv)
    import numpy as np
    from mobilenetv2.engines import machine
    from mobilenetv2.tools.benchmark import cpu_model, git_commit
    variants, threads = args.variants, args.threads
    now = datetime.now(timezone.utc)
    print(f"# {now.isoformat(timespec='seconds')}  {cpu_model()}, {os.cpu_count()} CPUs; commit {git_commit()}; "
          f"huge page {machine.HUGE_PAGE} bytes; batch 1; {args.calls} calls each, models called in turn")
    if machine.HUGE_PAGE is None:
        print("# this kernel offers no transparent huge pages: both sides run on plain arrays")
    print(f"{'variant':<9} {'thr':>3} {'order':<11} {'huge ms':>8} {'plain ms':>9} {'huge/plain':>10}")
    rows = []
    for v in variants:
        for t in threads:
            for order in (("huge", "plain"), ("plain", "huge")):
                times = _args.child_json(SPEED.format(root=str(HERE), variant=v, order=order, threads=t,
                                                      calls=args.calls), f"timing {v} at {t} thread(s)")
                h, p = np.array(times["huge"]), np.array(times["plain"])
                row = dict(variant=v, threads=t, order="+".join(order),
                           huge_ms=float(np.median(h) * 1e3), plain_ms=float(np.median(p) * 1e3),
                           ratio=float(np.median(h / p)))
                rows.append(row)
                print(f"{v:<9} {t:>3} {row['order']:<11} {row['huge_ms']:8.3f} {row['plain_ms']:9.3f} {row['ratio']:10.3f}")
    print(f"{'variant':<9} {'RSS MB huge':>12} {'RSS MB plain':>13}")
    memory = []
    for v in variants:
        rss = {side: _args.child_json(MEMORY.format(root=str(HERE), variant=v), f"the memory of {v} ({side})",
                                      {"MNV2_HUGE_PAGES": "1" if side == "huge" else "0"})
               for side in ("huge", "plain")}
        memory.append(dict(variant=v, rss_mb_huge=rss["huge"], rss_mb_plain=rss["plain"]))
        print(f"{v:<9} {rss['huge']:12.1f} {rss['plain']:13.1f}")
    _args.write_json(_args.json_path(args.json, "huge-pages"), dict(
        cpu=cpu_model(), date=now.isoformat(), commit=git_commit(), huge_page=machine.HUGE_PAGE, calls=args.calls,
        speed=rows, memory=memory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
