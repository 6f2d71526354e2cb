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
import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

try:
    import mobilenetv2  # noqa: F401  (installed)
except ImportError:  # run from a checkout: the package beside this folder
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from mobilenetv2.engines import native
from mobilenetv2.tools.benchmark import PEERS, _model, _runner, cpu_model, git_commit
from mobilenetv2.files import atomic_write
from mobilenetv2.network.variants import parse_variant


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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="1.0_224,1.4_224,0.5_160,0.35_96")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--gap", type=float, default=0.0, help="ms of Python work before each timed call")
    p.add_argument("--json", help="output path")
    args = p.parse_args(argv)
    gap = f", {args.gap:g} ms gap before each call" if args.gap else ""
    print(f"# {cpu_model()}, 1 thread, batch {args.batch}, {args.rounds} rounds{gap}; ms: min / p10")
    report = dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), cpu=cpu_model(),
                  commit=git_commit(), batch=args.batch, rounds=args.rounds, gap_ms=args.gap, variants={})
    with tempfile.TemporaryDirectory() as tmpdir:
        for name in args.variants.split(","):
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
        with atomic_write(Path(args.json), suffix=".json") as f:  # never half a file
            f.write(json.dumps(report, indent=2).encode())
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
