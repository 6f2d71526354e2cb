"""How evenly the C plan's threads share a run: a model of the schedule, not a timing.

    python benchmarks/balance.py [--variants 1.0_224,1.4_224,0.5_160,0.35_96] [--threads 2,4,8,16]
                                 [--cores N] [--stages] [--json PATH]

For each variant (batch 1) and thread count T, the plan is cut into its stages (the ops between two
meeting points, csrc/plan.c) and each stage's work into the T shares the C plan gives its threads:
rows, pixels or output panels [n t / T, n (t + 1) / T), the panels' pixel chunks
(``mnv2_panel_chunks``, the C function itself), share 0 alone for an op not split.  A share's work
is its multiply-accumulates (``model.profile``'s count), plus, for a fused block, the input rows its
expansion (and fused stem) recomputes at the edges of its output rows.  The sum over stages of the
busiest share is the run's critical path if every MAC took the same time; against the even share
(all MACs / T) it gives the efficiency the schedule allows before barriers, caches and memory.

``--cores N`` builds the plan as on an N-core machine (the row-or-panel and fusion choices read the
core count; the caches stay this machine's), so the 16-core schedule can be studied on 2 cores.
``--stages`` prints, for the largest T, the stages that lose most.  ``--lines`` adds, per T, the
cache lines of activations a run writes and how many of them another thread wrote last (the C
plan's output addresses, each share on the thread it belongs to, over a second run so the first
run's lines count too): each such line moves between the cores' caches, some 300 ns where they
sit on two dies of a virtual machine's host.  Writes JSON (CPU, date, commit, every figure) to
``--json`` or benchmarks/results.
"""
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)


def split(n, t, threads):
    """The C plan's cut: items [n t / T, n (t + 1) / T) to share t."""
    return n * t // threads


def input_side_macs(op, kind):
    """The MACs of a fused block that scale with the input rows it reads (its expansion, its fused
    stem), as ``model.profile`` counts them; 0 for any other op."""
    if kind != "block":
        return 0
    pixels_in = op["n"] * op["h"] * op["w_"]
    macs = pixels_in * op["c"] * op["ce"] if op.get("has_expand") else 0
    if op.get("has_stem"):
        macs += pixels_in * 27 * op["c"]
    return macs


def op_shares(op, kind, macs, threads, panel_chunks):
    """MACs of each of `threads` shares of one op (dict of the plan's op fields)."""
    shares = np.zeros(threads)
    if op.get("split_panels"):
        channels = op["c"] if kind in ("avgpool", "maxpool") else op["cout"]
        panels = -(-channels // 16)
        m = panel_chunks(panels, op["n"] * op["oh"] * op["ow"], threads) if op.get("panel_pixels") else 1
        for t in range(threads):
            shares[t] = macs * (split(panels * m, t + 1, threads) - split(panels * m, t, threads)) / (panels * m)
    elif op.get("split_pixels"):
        pixels = op["oh"] * op["ow"]
        for t in range(threads):
            shares[t] = macs * (split(pixels, t + 1, threads) - split(pixels, t, threads)) / pixels
    elif op.get("split_rows"):
        rows, inside = op["split_rows"], input_side_macs(op, kind)
        for t in range(threads):
            r0, r1 = split(rows, t, threads), split(rows, t + 1, threads)
            if r0 == r1:
                continue
            shares[t] = (macs - inside) * (r1 - r0) / rows
            if inside:  # the input rows the output rows [r0, r1) read, clipped to the image
                reach = 2 * max(op.get("dilation", 1), 1)
                lo = max(0, r0 * op["stride"] - op["pad_top"])
                hi = min(op["h"], (r1 - 1) * op["stride"] - op["pad_top"] + reach + 1)
                shares[t] += inside * (hi - lo) / op["h"]
    else:
        shares[0] = macs
    return shares


def op_writes(op, kind, threads, panel_chunks):
    """(share, first byte, end byte) of each range of its output that each of ``threads`` shares of
    one batch-1 op writes: csrc/plan.c's cuts (run_panels' cells of a panel's pixels, pixel and
    row ranges), share 0 alone for an op not split."""
    y = op["y_addr"]
    channels = op.get("cout") if kind in ("pointwise", "block", "stem", "copy") else op.get("c")
    channels = channels or op["c"]
    pixels = op["n"] * op["oh"] * op["ow"]
    out = []
    if op.get("split_panels") and kind == "pointwise":
        panels = -(-channels // 16)
        m = panel_chunks(panels, pixels, threads) if op.get("panel_pixels") else 1
        for t in range(threads):
            for u in range(split(panels * m, t, threads), split(panels * m, t + 1, threads)):
                p, k = divmod(u, m)
                c0, c1 = 16 * p, min(16 * p + 16, channels)
                for px in range(split(pixels, k, m), split(pixels, k + 1, m)):
                    out.append((t, y + 4 * (px * channels + c0), y + 4 * (px * channels + c1)))
    elif op.get("split_panels"):  # global pooling: the same 16-channel groups, one row of output
        groups = -(-channels // 16)
        for t in range(threads):
            c0, c1 = 16 * split(groups, t, threads), min(16 * split(groups, t + 1, threads), channels)
            out.append((t, y + 4 * c0, y + 4 * c1))
    elif op.get("split_pixels"):
        for t in range(threads):
            out.append((t, y + 4 * split(pixels, t, threads) * channels, y + 4 * split(pixels, t + 1, threads) * channels))
    elif op.get("split_rows"):
        rows, row = op["split_rows"], op["ow"] * channels
        for t in range(threads):
            out.append((t, y + 4 * split(rows, t, threads) * row, y + 4 * split(rows, t + 1, threads) * row))
    else:
        out.append((0, y, y + 4 * pixels * channels))
    return out


def lines_taken_over(ops, rows, threads, panel_chunks):
    """Cache lines of output one run writes, and how many of them another thread wrote last."""
    owner = {}
    for count in (False, True):
        written = taken = 0
        for op, row in zip(ops, rows):
            for t, b0, b1 in op_writes(op, row["kind"], threads, panel_chunks):
                for line in range(b0 // 64, -(-b1 // 64)):
                    written += 1
                    taken += owner.get(line, t) != t
                    owner[line] = t
    return dict(lines_written=written, lines_taken_over=taken)


def stages(ops):
    """Indices of the ops of each stage of a batch-1 run (one group): a new stage at each op
    marked sync (csrc/plan.c's stage_starts with G = 1)."""
    out = []
    for i, op in enumerate(ops):
        if i == 0 or op["sync"]:
            out.append([])
        out[-1].append(i)
    return out


def model(ops, rows, threads, panel_chunks):
    """Even share, critical path (MACs) and each stage's loss for one thread count."""
    total = sum(r["macs"] for r in rows)
    busiest, losses = 0.0, []
    for stage in stages(ops):
        shares = sum(op_shares(ops[i], rows[i]["kind"], rows[i]["macs"], threads, panel_chunks) for i in stage)
        even = sum(rows[i]["macs"] for i in stage) / threads
        busiest += float(shares.max())
        losses.append(dict(ops=[rows[i]["layer"] + ":" + rows[i]["kind"] for i in stage],
                           even_macs=even, busiest_macs=float(shares.max())))
    return dict(threads=threads, even_macs=total / threads, busiest_macs=busiest,
                efficiency=total / threads / busiest if busiest else 1.0, stages=losses)


def plan_of(alpha, res, cores):
    """The batch-1 plan's op fields and profile rows (MACs) for one variant, built as on `cores`."""
    from mobilenetv2.tools import benchmark
    from mobilenetv2.engines import machine, native
    from mobilenetv2.engines import plan as P
    saved = machine.CORES, P.BALANCE_THREADS
    machine.CORES = P.BALANCE_THREADS = cores
    try:
        model = benchmark._model(alpha, res)
        model.threads = 1
        x = benchmark._input(res, 1)
        plan = model._plan(x)
        rows = plan.profile(x, model._thread_pool(), runs=1)
    finally:
        machine.CORES, P.BALANCE_THREADS = saved
    null = native.ffi.NULL
    ops = []
    for op in plan.ops:
        fields = {k: v for k, v in op.items() if not isinstance(v, native.ffi.CData)}
        fields["has_expand"] = op.get("w", null) != null
        fields["has_stem"] = op.get("stem_w", null) not in (null, None)
        fields["y_addr"] = int(native.ffi.cast("uintptr_t", op["y"]))
        ops.append(fields)
    return ops, rows


def main(argv=None):
    from mobilenetv2.engines import machine, native
    from mobilenetv2.tools.benchmark import cpu_model, git_commit
    from mobilenetv2.network.variants import parse_variant, variant_name
    parser = _args.parser(__doc__, __file__)
    parser.add_argument("--variants", type=_args.variants, default="1.0_224,1.4_224,0.5_160,0.35_96",
                        help="comma list (default %(default)s)")
    parser.add_argument("--threads", type=_args.thread_list, default="2,4,8,16",
                        help="comma list (default %(default)s)")
    parser.add_argument("--cores", type=_args.count(1, 1024), default=None,
                        help="build the plan as on this many cores (default: this machine's)")
    parser.add_argument("--stages", action="store_true", help="the stages that lose most, at the most threads")
    parser.add_argument("--lines", action="store_true",
                        help="the cache lines a run writes that another thread wrote last")
    parser.add_argument("--json", type=_args.output_path,
                        help="output path (default: benchmarks/results/balance-<time>.json)")
    args = parser.parse_args(argv)
    threads = sorted(set(args.threads))
    cores = args.cores if args.cores is not None else machine.CORES
    variants = [parse_variant(v) for v in args.variants]
    if not native.available():
        print("balance.py models the C plan: the C extension is not built", file=sys.stderr)
        return 1
    panel_chunks = getattr(native.lib, "mnv2_panel_chunks", None) or (lambda np_, pixels, t: 1)
    print(f"# {datetime.now(timezone.utc).isoformat(timespec='seconds')}  {cpu_model()}; plan as on "
          f"{cores} cores with this machine's caches (L1d {machine.L1D // 1024} KB, L2 {machine.L2 // 1024} KB); "
          f"batch 1; a model of the schedule (MACs), not a timing")
    print(f"{'variant':9s} {'threads':>7s} {'stages':>6s} {'even MMAC':>10s} {'busiest MMAC':>13s} {'efficiency':>10s}"
          + (f" {'lines written':>13s} {'taken over':>10s}" if args.lines else ""))
    report = dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), cpu=cpu_model(),
                  commit=git_commit(), cores=cores, l1d=machine.L1D, l2=machine.L2, variants={})
    for alpha, res in variants:
        name = variant_name(alpha, res)
        ops, rows = plan_of(alpha, res, cores)
        results = [model(ops, rows, t, panel_chunks) for t in threads]
        for r in results:
            if args.lines:
                r.update(lines_taken_over(ops, rows, r["threads"], panel_chunks))
            print(f"{name:9s} {r['threads']:7d} {len(r['stages']):6d} {r['even_macs'] / 1e6:10.2f} "
                  f"{r['busiest_macs'] / 1e6:13.2f} {r['efficiency']:10.3f}"
                  + (f" {r['lines_written']:13d} {r['lines_taken_over'] / r['lines_written']:10.1%}"
                     if args.lines else ""))
        if args.stages:
            top = results[-1]
            worst = sorted(top["stages"], key=lambda s: s["even_macs"] - s["busiest_macs"])[:6]
            for s in worst:
                print(f"#   {name} at {top['threads']} threads: busiest share {s['busiest_macs'] / 1e6:.2f} MMAC, "
                      f"even {s['even_macs'] / 1e6:.2f}: {' + '.join(s['ops'])}")
        report["variants"][name] = results
    _args.write_json(_args.json_path(args.json, "balance"), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
