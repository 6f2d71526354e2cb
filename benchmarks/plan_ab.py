"""The plan's rules against other settings of them, on this machine: A/B in one process.

    python benchmarks/plan_ab.py --set WEIGHTS_CACHED_BYTES=65536 [--set FUSE_MIN_BYTES=inf ...]
                                 [--variants 1.0_224] [--threads 1,8,16] [--batches 1]
                                 [--seconds 4] [--json PATH]

The plan's choices (rows, pixels or panels; which blocks fuse; band heights) follow constants in
mobilenetv2/engines/plan.py derived from this machine's caches and cores.  For each variant this builds two
C models with the benchmark's synthetic weights: A with the constants as they are, B with the
``--set`` ones changed while its plans are built (one per batch size), and checks that both give
the same bits (every plan must: the kernels fix each output's order of operations).  Then, per
thread count and batch, it calls A and B in turn for ``--seconds`` and prints each side's median
and p10 and the median of the per-pair ratios B / A (below 1: B is faster).  Both models live in
one process and alternate call by call, so a noisy machine's slow spells land on both.  Written
for the lent 16-core machine, where one call must settle a question (benchmarks/README.md), and
usable anywhere.  Writes JSON (CPU, date, commit, the constants, each plan's shape, every figure).
"""
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)


class UsageError(ValueError):
    """A bad command-line value (one line, exit 2)."""


def _threshold(name):
    """A size or row-count threshold (any number from 0, inf: never), as against a count of
    threads or band rows (a whole number from 1)."""
    return name.endswith(("_BYTES", "_ROWS"))


def constants():
    """{name: value}: mobilenetv2.engines.plan's rule constants, the ones --set may change: its byte and
    row thresholds, the thread count it balances for and the band height (not ALIGN, which the C
    kernels' loads need)."""
    from mobilenetv2.engines import plan as P
    return {k: v for k, v in vars(P).items() if k.isupper() and isinstance(v, (int, float))
            and not isinstance(v, bool) and (_threshold(k) or k.endswith("_THREADS") or k.startswith("MAX_"))}


def parse_sets(items):
    """['NAME=VALUE', ...] -> {NAME: number}; NAME one of constants(); VALUE for a threshold a
    number from 0 or 'inf', else a whole number from 1."""
    known, out = constants(), {}
    for item in items:
        name, eq, raw = item.partition("=")
        name = name.strip()
        if not eq or name not in known:
            raise UsageError(f"--set {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(known))}")
        try:
            value = int(raw) if raw.strip().isdigit() else float(raw)
        except ValueError:
            raise UsageError(f"--set {item!r}: {raw!r} is not a number") from None
        if _threshold(name):
            if math.isnan(value) or value < 0:
                raise UsageError(f"--set {item!r}: a threshold is a number from 0 (or inf)")
        elif not isinstance(value, int) or value < 1:
            raise UsageError(f"--set {item!r}: {name} is a whole number from 1")
        out[name] = value
    if not out:
        raise UsageError("give at least one --set NAME=VALUE (the B side)")
    return out


def plan_shape(plan):
    """What a plan chose, in counts: ops, barriers, fused blocks, pointwise ops split by panels,
    ops split by pixels."""
    from mobilenetv2.engines import native
    lib = native.lib
    ops = plan.ops
    return dict(ops=len(ops), barriers=sum(int(op.get("sync", 1)) for op in ops),
                fused=sum(op["kind"] == lib.MNV2_OP_BLOCK for op in ops),
                by_panels=sum(bool(op.get("split_panels")) for op in ops if op["kind"] == lib.MNV2_OP_POINTWISE),
                by_pixels=sum(bool(op.get("split_pixels")) for op in ops))


def build(alpha, res, inputs, sets):
    """A model whose plans for these inputs are built with mobilenetv2.engines.plan's constants set as
    ``sets`` says (restored afterwards), and its outputs for them."""
    from mobilenetv2.engines import plan as P
    from mobilenetv2.tools.benchmark import _model
    saved = {k: getattr(P, k) for k in sets}
    model = _model(alpha, res)
    try:
        for k, v in sets.items():
            setattr(P, k, v)
        outputs = [model(x) for x in inputs]
    finally:
        for k, v in saved.items():
            setattr(P, k, v)
    return model, outputs


def alternate(a, b, x, seconds):
    """Call a and b in turn (a, b, b, a, ...) for about ``seconds`` after a short warm-up: the
    two lists of call times in seconds."""
    for f in (a, b, a, b):
        f(x)
    times = ([], [])
    end = time.perf_counter() + seconds
    turn = 0
    while time.perf_counter() < end or len(times[0]) < 5:
        order = (0, 1) if turn % 2 == 0 else (1, 0)
        for side in order:
            f = (a, b)[side]
            start = time.perf_counter()
            f(x)
            times[side].append(time.perf_counter() - start)
        turn += 1
    return times


def main(argv=None):
    p = _args.parser(__doc__, __file__)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a mobilenetv2.engines.plan constant for the B side (repeat for several)")
    p.add_argument("--variants", type=_args.variants, default="1.0_224", help="comma list (default %(default)s)")
    p.add_argument("--threads", type=_args.thread_list, default="1,2", help="comma list (default %(default)s)")
    p.add_argument("--batches", type=_args.counts(1, 1024), default="1", help="comma list (default %(default)s)")
    p.add_argument("--seconds", type=_args.number(0, 3600), default=4.0,
                   help="per variant, thread count and batch (default %(default)s)")
    p.add_argument("--json", type=_args.output_path,
                   help="output path (default: benchmarks/results/plan_ab-<time>.json)")
    args = p.parse_args(argv)
    from mobilenetv2.engines import machine, native
    from mobilenetv2.tools.benchmark import _input, cpu_model, git_commit
    from mobilenetv2.network.variants import parse_variant
    try:
        sets = parse_sets(args.set)
        if not args.seconds > 0:
            raise UsageError(f"--seconds {args.seconds}: must be positive")
    except UsageError as exc:
        p.error(str(exc))
    threads, batches = args.threads, args.batches
    variants = [(name, parse_variant(name)) for name in args.variants]
    if not native.available():
        print("plan_ab: the C extension is not built", file=sys.stderr)
        return 1
    now = datetime.now(timezone.utc)
    meta = dict(cpu=cpu_model(), date=now.isoformat(timespec="seconds"), commit=git_commit(),
                backend=native.backend(), cores=machine.CORES, l1d=machine.L1D, l2=machine.L2, l3=machine.L3,
                a=constants(), b=sets, load_average_start=os.getloadavg()[0])
    print(f"# {meta['date']}  {meta['cpu']}, {meta['cores']} cores, {meta['backend']}, commit {meta['commit']}")
    print("# B sets " + ", ".join(f"{k}={v} (A {meta['a'][k]})" for k, v in sets.items()))
    print(f"{'variant':9s} {'thr':>3s} {'batch':>5s} {'A med ms':>9s} {'A p10':>8s} {'B med ms':>9s} {'B p10':>8s} "
          f"{'B/A':>6s} {'pairs':>6s}")
    results, same = [], True
    for name, (alpha, res) in variants:
        inputs = [_input(res, b) for b in batches]
        a, out_a = build(alpha, res, inputs, {})
        b, out_b = build(alpha, res, inputs, sets)
        bits = [bool(np.array_equal(u, v)) for u, v in zip(out_a, out_b)]
        same = same and all(bits)
        shapes = {side: plan_shape(m._plan(inputs[0])) for side, m in (("a", a), ("b", b))}
        print(f"# {name}: batch-{batches[0]} plans A {shapes['a']}, B {shapes['b']}; "
              f"same bits: {'yes' if all(bits) else 'NO'}")
        for t in threads:
            a.threads = b.threads = t
            a(inputs[0])
            # one pool of threads for both: two pools' workers, each waiting a while for its next
            # run, would take the cores from the other model's (B 1.39x A with equal plans, 2 cores)
            b._pool = a._pool
            for batch, x in zip(batches, inputs):
                ta, tb = alternate(a, b, x, args.seconds)
                n = min(len(ta), len(tb))
                ratio = float(np.median(np.array(tb[:n]) / np.array(ta[:n])))
                row = dict(variant=name, threads=t, batch=batch, pairs=n,
                           a_median_ms=float(np.median(ta)) * 1e3, a_p10_ms=float(np.percentile(ta, 10)) * 1e3,
                           b_median_ms=float(np.median(tb)) * 1e3, b_p10_ms=float(np.percentile(tb, 10)) * 1e3,
                           b_over_a=ratio, plans=shapes, same_bits=bits)
                results.append(row)
                print(f"{name:9s} {t:3d} {batch:5d} {row['a_median_ms']:9.3f} {row['a_p10_ms']:8.3f} "
                      f"{row['b_median_ms']:9.3f} {row['b_p10_ms']:8.3f} {ratio:6.3f} {n:6d}", flush=True)
    meta["load_average_end"] = os.getloadavg()[0]
    _args.write_json(_args.json_path(args.json, "plan_ab"), dict(meta, same_bits=same, results=results))
    if not same:
        print("plan_ab: A and B gave different bits: a plan broke the fixed order of operations", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
