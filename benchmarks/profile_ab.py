"""Per-op before/after (1 thread unless ``--threads``): ``model.profile`` of this checkout's C
plan against another checkout's (a built copy of an earlier commit), in alternating processes
(this, other, other, this, ...), so a loaded machine's slow spells land on both.

    python benchmarks/profile_ab.py --other DIR [--variant 1.0_224] [--threads 1] [--pairs 11]
                                    [--runs 100] [--json PATH]

Each process builds the variant with the benchmark's synthetic weights (mobilenetv2.tools.benchmark),
profiles one batch-1 input ``--runs`` times and reports each op's median.  The table gives, per op,
the median over the processes of each side and the median of the per-pair ratios this / other
(with their min and max): the fused block ops, the whole plan, and every op whose ratio is off 1
by more than 3 %.  Make the other checkout with ``git archive COMMIT | tar -x -C DIR`` and build it
in place there (setup.py build_ext --inplace).  Writes JSON (CPU, date, commit, load, every figure;
by default benchmarks/results/profile-ab-<time>.json).
"""
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)

HERE = _args.ROOT

CHILD = _args.CHILD_HEAD + """from mobilenetv2.tools.benchmark import _model
from mobilenetv2.network.variants import parse_variant
alpha, res = parse_variant({variant!r})
model = _model(alpha, res)
model.threads = {threads}
x = np.random.default_rng(0).uniform(-1, 1, (1, res, res, 3)).astype(np.float32)
model(x)
rows = model.profile(x, runs={runs})
out = {{}}
for r in rows:  # the dense head and its softmax share a layer name
    out[r["layer"] if r["layer"] not in out else r["layer"] + " (" + r["kind"] + ")"] = [r["kind"], r["seconds"]]
out["(whole plan)"] = ["plan", sum(r["seconds"] for r in rows)]
print(json.dumps(out))
"""


def profile(root, variant, runs, threads=1):
    """{label: [kind, seconds]} of one process of checkout ``root`` (first on the child's path, so
    it wins over a PYTHONPATH entry; PYTHONPATH stays for what the checkout needs, such as the
    lent machine's unpacked cffi and peers)."""
    return _args.child_json(CHILD.format(root=str(root), variant=variant, runs=runs, threads=threads),
                            f"profiling {root}", timeout=600, keep_pythonpath=True)


def main(argv=None):
    ap = _args.parser(__doc__, __file__)
    ap.add_argument("--other", type=_args.checkout, required=True, help="a built checkout of another commit")
    ap.add_argument("--variant", type=_args.variant, default="1.0_224", help="(default %(default)s)")
    ap.add_argument("--threads", type=_args.thread_count, default=1, help="(default %(default)s)")
    ap.add_argument("--pairs", type=_args.count(1), default=11, help="(default %(default)s)")
    ap.add_argument("--runs", type=_args.count(1), default=100, help="profile runs per process (default %(default)s)")
    ap.add_argument("--json", type=_args.output_path,
                    help="output path (default: benchmarks/results/profile-ab-<time>.json)")
    args = ap.parse_args(argv)
    from mobilenetv2.tools.benchmark import cpu_model, git_commit
    other = args.other
    load = os.getloadavg()[0]
    got = {"this": [], "other": []}
    for i in range(args.pairs):
        for side in ("this", "other") if i % 2 == 0 else ("other", "this"):
            got[side].append(profile(HERE if side == "this" else other, args.variant, args.runs, args.threads))
    labels = [k for k in got["this"][0] if all(k in p for p in got["this"] + got["other"])]
    table = []
    for k in labels:
        a = np.array([p[k][1] for p in got["this"]])
        b = np.array([p[k][1] for p in got["other"]])
        r = a / b
        table.append(dict(op=k, kind=got["this"][0][k][0], this_us=float(np.median(a) * 1e6),
                          other_us=float(np.median(b) * 1e6), ratio=float(np.median(r)),
                          ratio_min=float(r.min()), ratio_max=float(r.max())))
    print(f"# {datetime.now(timezone.utc).isoformat(timespec='seconds')}  {cpu_model()}, "
          f"{os.cpu_count()} CPUs; {args.variant}, batch 1, {args.threads} thread(s), {args.pairs} pairs of processes, "
          f"profile runs {args.runs}; load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"# this: {HERE} (commit {git_commit()}); other: {other}")
    print(f"{'op':<28} {'kind':<9} {'this us':>9} {'other us':>9} {'this/other':>10}  [min, max]")
    for row in table:
        if row["kind"] in ("block", "plan") or abs(row["ratio"] - 1) > 0.03:
            print(f"{row['op']:<28} {row['kind']:<9} {row['this_us']:9.1f} {row['other_us']:9.1f} "
                  f"{row['ratio']:10.3f}  [{row['ratio_min']:.3f}, {row['ratio_max']:.3f}]")
    _args.write_json(_args.json_path(args.json, "profile-ab"), dict(
        cpu=cpu_model(), date=datetime.now(timezone.utc).isoformat(), commit=git_commit(), other=str(other),
        variant=args.variant, threads=args.threads, pairs=args.pairs, runs=args.runs, load_start=load,
        load_end=os.getloadavg()[0], ops=table, raw=got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
