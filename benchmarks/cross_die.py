"""Threads on cores that share a cache and on cores that do not: the time of one run, side by side.

The C engine's threads meet 25-30 times a run (csrc/plan.c), and each meeting moves cache lines
between their cores: some 60 ns for a round trip between cores of one die, over 300 ns between
dies.  A virtual machine's vCPUs move between the host's dies from minute to minute, so the same
command gives two speeds (0.35_96 at 2 threads: 0.19 or 0.30 ms on a 2-vCPU AMD EPYC Zen 4 guest,
2026-12-06).  This script times the C engine in fresh processes (one per variant and thread
count, as oversubscribed.py does), block after block, measures the round trip between the first
two usable CPUs (csrc/peak.c) before and after each block, and sorts the blocks by it: a block
whose two round trips both lie under ``--near-ns`` ran on one die, one whose two both lie over
``--far-ns`` across dies, the rest (the placement moved) are left out.
Prints the median ms per variant and thread count for each placement and writes JSON.

``--other DIR`` (a built checkout of another commit) times DIR too in each block, right after
this checkout (the order alternating from block to block), for an A/B that both placements see.

``--from-bench FILE`` times nothing: it reads a ``mobilenetv2 bench`` JSON, whose every row keeps
each round's median and the round trip measured before and after that round's measurement
(``round_medians_ms``, ``core_round_trip_ns_by_round``), sorts the rounds of every multi-thread
row the same way, and prints each engine's median on one die and across dies: whether the peers
pay what the C engine pays.

The JSON goes to benchmarks/results/ (``--json FILE`` elsewhere).

    python benchmarks/cross_die.py [--variants 0.35_96,0.5_160] [--threads 2] [--batch 1]
                                   [--blocks 20] [--runs 300] [--other DIR] [--json FILE]
    python benchmarks/cross_die.py --from-bench bench.json
"""
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py, and oversubscribed.py's timing processes
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)

from mobilenetv2.engines import native  # noqa: E402
from mobilenetv2.tools.benchmark import core_pairs, core_round_trip_ns, cpu_model  # noqa: E402
from mobilenetv2.network.variants import parse_variant  # noqa: E402

from oversubscribed import _child_times  # noqa: E402

HERE = _args.ROOT


def placement_of(before, after, near_ns, far_ns):
    """"near" where both round trips (ns, None: not measured) lie under ``near_ns`` (one die),
    "far" where both lie over ``far_ns`` (across dies), else "moved"."""
    if before is None or after is None:
        return "moved"
    return "near" if max(before, after) < near_ns else "far" if min(before, after) > far_ns else "moved"


def child(root, variants, threads, batch, runs):
    """{"VARIANT THREADS": median ms} of the checkout ``root``, each in a fresh process."""
    return {f"{name} {t}": float(np.median(_child_times(root, alpha, res, batch, t, runs, warmup=0.3))) * 1e3
            for name, alpha, res in variants for t in threads}


def from_bench(report, near_ns=150.0, far_ns=200.0):
    """Per multi-thread row of a bench JSON (``report``): the median of its rounds' medians whose
    measurement had the round trip between the first CPU pair under ``near_ns`` before and after
    (one die), and over ``far_ns`` both times (across dies), with how many rounds each."""
    out = []
    for r in report["results"]:
        if not isinstance(r.get("threads"), int) or r["threads"] < 2:
            continue
        near, far = [], []
        for ms, trips in zip(r.get("round_medians_ms") or [], r.get("core_round_trip_ns_by_round") or []):
            if ms is None or not trips:
                continue
            pair = next(iter(trips["before"]), None)
            where = placement_of(trips["before"].get(pair), trips["after"].get(pair), near_ns, far_ns)
            {"near": near, "far": far}.get(where, []).append(ms)
        out.append({"variant": r["variant"], "batch": r["batch"], "threads": r["threads"], "engine": r["engine"],
                    "near_ms": float(np.median(near)) if near else None, "near_rounds": len(near),
                    "far_ms": float(np.median(far)) if far else None, "far_rounds": len(far)})
    return out


def print_from_bench(path, near_ns, far_ns):
    report = json.loads(Path(path).read_text())
    rows = from_bench(report, near_ns, far_ns)
    run = report.get("run", {})
    print(f"# {path}: {run.get('cpu')}, {run.get('date')}; each multi-thread row's rounds by the round trip "
          f"around their own measurement (one die: both under {near_ns:.0f} ns, across: both over {far_ns:.0f})")
    line = "{:<10} {:>5} {:>4} {:<10} {:>14} {:>14} {:>10}"
    print(line.format("variant", "batch", "thr", "engine", "one die (n)", "across (n)", "across/one"))
    for r in rows:
        near, far = r["near_ms"], r["far_ms"]
        print(line.format(r["variant"], r["batch"], r["threads"], r["engine"],
                          f"{near:.3f} ({r['near_rounds']})" if near else f"- ({r['near_rounds']})",
                          f"{far:.3f} ({r['far_rounds']})" if far else f"- ({r['far_rounds']})",
                          f"{far / near:.2f}x" if near and far else "-"))
    return rows


def main(argv=None):
    p = _args.parser(__doc__, __file__)
    p.add_argument("--variants", type=_args.variants, default="0.35_96,0.5_160",
                   help="comma list (default %(default)s)")
    p.add_argument("--threads", type=_args.thread_list, default="2", help="comma list (default %(default)s)")
    p.add_argument("--batch", type=_args.count(1, 1024), default=1, help="(default %(default)s)")
    p.add_argument("--blocks", type=_args.count(1), default=20, help="(default %(default)s)")
    p.add_argument("--runs", type=_args.count(1), default=300,
                   help="timed calls per variant and thread count per block (default %(default)s)")
    p.add_argument("--near-ns", type=_args.number(0, 1e6), default=150.0,
                   help="round trips under this: one die (default %(default)s)")
    p.add_argument("--far-ns", type=_args.number(0, 1e6), default=200.0,
                   help="round trips over this: across dies (default %(default)s)")
    p.add_argument("--other", type=_args.checkout, help="a built checkout of another commit, timed in the same blocks")
    p.add_argument("--json", type=_args.output_path,
                   help="output path (default: benchmarks/results/cross-die-<time>.json)")
    p.add_argument("--from-bench", metavar="FILE", help="read a bench JSON's rounds instead of timing")
    args = p.parse_args(argv)
    if args.near_ns > args.far_ns:
        p.error(f"--near-ns {args.near_ns:g} is over --far-ns {args.far_ns:g}")
    if args.from_bench:
        try:
            print_from_bench(args.from_bench, args.near_ns, args.far_ns)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise SystemExit(f"cross_die.py: {args.from_bench!r} is no bench JSON with round trips per round: "
                             f"{type(e).__name__}: {e}")
        return 0
    if not native.available():
        raise SystemExit(f"cross_die.py times the C engine, which is not built: {native.missing_reason()}")
    pairs = core_pairs()
    if not pairs:
        raise SystemExit("cross_die.py needs two CPUs to place threads on; this process may use one")
    a, b = pairs[0]
    variants = [(name, *parse_variant(name)) for name in args.variants]
    threads = args.threads
    path = _args.json_path(args.json, "cross-die")
    roots = {"this": HERE}
    if args.other:
        roots["other"] = args.other
    blocks = []
    for k in range(args.blocks):
        before = core_round_trip_ns(a, b)
        order = list(roots) if k % 2 == 0 else list(reversed(roots))
        times = {side: child(roots[side], variants, threads, args.batch, args.runs) for side in order}
        after = core_round_trip_ns(a, b)
        blocks.append({"round_trip_ns": [before, after],
                       "placement": placement_of(before, after, args.near_ns, args.far_ns), "ms": times})
        ns = " / ".join(f"{v:.0f}" if v else "?" for v in (before, after))
        print(f"# block {k + 1}/{args.blocks}: round trip {ns} ns ({blocks[-1]['placement']}); "
              + "; ".join(f"{side} " + ", ".join(f"{key}T {ms:.3f}" for key, ms in t.items())
                          for side, t in times.items()), file=sys.stderr, flush=True)
    print(f"# {cpu_model()}, CPUs {a} and {b}, batch {args.batch}, {args.runs} runs per block; median over blocks "
          "of each block's median ms")
    line = "{:<10} {:>4} {:<6} {:>14} {:>14} {:>10}"
    print(line.format("variant", "thr", "side", "one die (n)", "across (n)", "across/one"))
    summary = []
    for name, _, _ in variants:
        for t in threads:
            for side in roots:
                got = {}
                for placement in ("near", "far"):
                    ms = [blk["ms"][side][f"{name} {t}"] for blk in blocks if blk["placement"] == placement]
                    got[placement] = (float(np.median(ms)) if ms else None, len(ms))
                (near, n_near), (far, n_far) = got["near"], got["far"]
                summary.append({"variant": name, "threads": t, "side": side, "near_ms": near, "near_blocks": n_near,
                                "far_ms": far, "far_blocks": n_far})
                print(line.format(name, t, side, f"{near:.3f} ({n_near})" if near else f"- ({n_near})",
                                  f"{far:.3f} ({n_far})" if far else f"- ({n_far})",
                                  f"{far / near:.2f}x" if near and far else "-"))
    _args.write_json(path, {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(), "cpus": [a, b],
        "argv": sys.argv[1:] if argv is None else list(argv), "roots": {k: str(v) for k, v in roots.items()},
        "summary": summary, "blocks": blocks}, indent=2)
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    status = main()
    print(f"# {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    sys.exit(status)
