"""One-thread latency of every engine in one process, visited in turn call by call.

    python benchmarks/interleaved.py [--variants 1.0_224,0.35_96] [--batch 1] [--rounds 150]
                                     [--gap MS] [--json PATH]

For a busy machine: bench.py times each engine in its own process for a share of its runs, so
a slow spell of minutes still lands on some engines more than on others.  Here every round
calls each engine once (the C core on each SIMD ISA this CPU has, then the installed peers, all at
1 thread, so no engine keeps worker threads that compete with the next), and the table reports
the min and the 10th percentile of each engine's calls, and the C core's p10 against the best
float32 peer's.  Same models and weights as bench.py.

--gap MS keeps the core busy in Python for MS milliseconds before each timed call, as an
application that runs the network once a camera frame does.  On a shared machine the caches then
lose the network's weights and buffers between calls (other tenants share L3, and even L2 drifts
away within tens of ms), so this times the cold call every engine pays there.
"""
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)

from mobilenetv2.engines import native  # noqa: E402
from mobilenetv2.tools.benchmark import PEERS, _model, _runner, cpu_model, git_commit  # noqa: E402
from mobilenetv2.network.variants import parse_variant  # noqa: E402


def engines(alpha, res, x, tmpdir, name):
    """(label, call) for the C core on every ISA, then each installed float32 peer."""
    out = []
    for isa in [i for i in reversed(native.isas()) if i != "scalar"]:
        model = _model(alpha, res)
        model.threads = 1

        def call(model=model, isa=isa):
            with native.use_isa(isa):
                model(x)
        out.append((f"C {isa}", call))
    for peer in PEERS:
        run = _runner(peer, _model(alpha, res), x, 1, tmpdir, name)
        if isinstance(run, str):
            print(f"# {name}: skipped {peer}: {run}")
            continue
        out.append((peer, run))
    return out


def main(argv=None):
    p = _args.parser(__doc__, __file__)
    p.add_argument("--variants", type=_args.variants, default="1.0_224,1.4_224,0.5_160,0.35_96",
                   help="comma list (default %(default)s)")
    p.add_argument("--batch", type=_args.count(1, 1024), default=1, help="(default %(default)s)")
    p.add_argument("--rounds", type=_args.count(1), default=150, help="(default %(default)s)")
    p.add_argument("--gap", type=_args.number(0, 10_000), default=0.0,
                   help="ms of Python work before each timed call (default %(default)s)")
    p.add_argument("--json", type=_args.output_path, help="write the figures to this file (default: none)")
    args = p.parse_args(argv)
    gap = f", {args.gap:g} ms gap before each call" if args.gap else ""
    print(f"# {cpu_model()}, 1 thread, batch {args.batch}, {args.rounds} rounds{gap}; ms: min / p10")
    report = dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), cpu=cpu_model(),
                  commit=git_commit(), batch=args.batch, rounds=args.rounds, gap_ms=args.gap, variants={})
    with tempfile.TemporaryDirectory() as tmpdir:
        for name in args.variants:
            alpha, res = parse_variant(name)
            x = np.random.default_rng(0).uniform(-1, 1, (args.batch, res, res, 3)).astype(np.float32)
            calls = engines(alpha, res, x, tmpdir, name)
            for _, call in calls:  # warm up: plans built, caches filled
                for _ in range(3):
                    call()
            times = {label: [] for label, _ in calls}
            for _ in range(args.rounds):
                for label, call in calls:
                    until = time.perf_counter() + args.gap / 1e3
                    while time.perf_counter() < until:
                        pass
                    start = time.perf_counter()
                    call()
                    times[label].append(time.perf_counter() - start)
            p10 = {label: float(np.percentile(t, 10)) * 1e3 for label, t in times.items()}
            cells = "  ".join(f"{label} {min(t) * 1e3:.3f} / {p10[label]:.3f}" for label, t in times.items())
            peers = [p10[label] for label in times if label in PEERS]
            best = f"  C {native.isas()[-1]} vs best peer {min(peers) / p10['C ' + native.isas()[-1]]:.2f}x" if peers else ""
            print(f"{name}: {cells}{best}")
            report["variants"][name] = {label: dict(min_ms=min(t) * 1e3, p10_ms=p10[label],
                                                    median_ms=float(np.median(t)) * 1e3)
                                        for label, t in times.items()}
    if args.json:
        _args.write_json(args.json, report, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
