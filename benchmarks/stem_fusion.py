"""The stem fused into the first inverted-residual block, against the separate stem: A/B in one run.

    python benchmarks/stem_fusion.py [--variants 1.0_224,0.35_96] [--rounds 200] [--threads 1]
                                     [--json PATH]

Two C models per variant, same weights: one with the plan's rule (plan.STEM_FUSE_MIN_BYTES, from
the machine's L1d), one with the stem fusion off.  Two measurements:
- per op (the plan's own timer, ``model.profile``), warm (back to back) and cold (after writing
  4x the L3 of other memory, as when other engines run between our calls): the ops before
  block_1 (stem + expanded_conv, fused or not) and the whole network;
- call by call, interleaved with the installed float32 peers (ONNX Runtime, OpenVINO, LiteRT at 1
  thread, as benchmarks/interleaved.py runs them), all the peers between the two C models' calls:
  min, p10 and median ms of each engine, and the fused model's p10 against the separate one's and
  against the best peer's.
Prints a table and writes the JSON (CPU, date, commit, load average, every figure; by default
benchmarks/results/stem-fusion-<time>.json).
"""
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)

from mobilenetv2.engines import machine  # noqa: E402
from mobilenetv2.engines import native  # noqa: E402
from mobilenetv2.engines import plan as P  # noqa: E402
from mobilenetv2.tools.benchmark import PEERS, _model, _runner, cpu_model  # noqa: E402
from mobilenetv2.network.variants import parse_variant  # noqa: E402

ROOT = _args.ROOT


def _models(alpha, res, x, threads):
    """{label: model}: the plan's rule, and the stem fusion off (plans built here, for x's shape)."""
    rule = P.STEM_FUSE_MIN_BYTES
    out = {}
    try:
        for label, threshold in (("fused", rule), ("separate", float("inf"))):
            P.STEM_FUSE_MIN_BYTES = threshold
            model = _model(alpha, res)
            model.threads = threads
            model(x)
            out[label] = model
    finally:
        P.STEM_FUSE_MIN_BYTES = rule
    return out


def _per_op(models, x, rounds):
    """{label: {mode: (us before block_1, us total)}}, medians over rounds, A and B in turn."""
    junk = np.ones(4 * machine.L3 // 4, np.float32)
    out = {}
    for mode in ("warm", "cold"):
        times = {label: [] for label in models}
        for _ in range(rounds):
            for label, model in models.items():
                if mode == "cold":
                    junk += 1
                rows = model.profile(x, runs=1)
                first = next(i for i, r in enumerate(rows) if r["layer"].startswith("block_1_"))
                times[label].append((sum(r["seconds"] for r in rows[:first]), sum(r["seconds"] for r in rows)))
        for label, t in times.items():
            out.setdefault(label, {})[mode] = [float(v) * 1e6 for v in np.median(np.array(t), axis=0)]
    return out


def _interleaved(models, alpha, res, x, name, rounds, tmpdir):
    """Each round: C model A, every peer, C model B, every peer again, so that each C call comes
    after the same others (a C call right after another C model's runs measurably faster, ~3 %
    on 1.0_224: their code is still in the caches).  Without a peer, other memory is written
    between the C calls instead."""
    calls = {f"C {label}": (lambda m=model: m(x)) for label, model in models.items()}
    peers = {}
    for peer in PEERS:
        run = _runner(peer, _model(alpha, res), x, 1, tmpdir, name)
        if isinstance(run, str):
            print(f"# {name}: skipped {peer}: {run}")
            continue
        peers[peer] = run
    if not peers:
        junk = np.ones(4 * machine.L3 // 4, np.float32)

        def scrub():
            junk.__iadd__(1)
        peers["(other memory written)"] = scrub
    sequence = [item for c in calls.items() for item in [c] + list(peers.items())]
    calls.update(peers)
    for call in calls.values():
        for _ in range(3):
            call()
    times = {label: [] for label in calls}
    for _ in range(rounds):
        for label, call in sequence:
            start = time.perf_counter()
            call()
            times[label].append(time.perf_counter() - start)
    return {label: dict(min=min(t) * 1e3, p10=float(np.percentile(t, 10)) * 1e3,
                        median=float(np.median(t)) * 1e3) for label, t in times.items()}


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None):
    p = _args.parser(__doc__, __file__)
    p.add_argument("--variants", type=_args.variants, default="1.0_224,1.4_224,0.5_160,0.35_96",
                   help="comma list (default %(default)s)")
    p.add_argument("--rounds", type=_args.count(1), default=200,
                   help="interleaved rounds (per-op: a third of them, at least 5; default %(default)s)")
    p.add_argument("--threads", type=_args.thread_count, default=1,
                   help="the C models' threads (peers: 1; default %(default)s)")
    p.add_argument("--json", type=_args.output_path,
                   help="output path (default: benchmarks/results/stem-fusion-<time>.json)")
    args = p.parse_args(argv)
    if not native.available():
        print("the C extension is not built", file=sys.stderr)
        return 1
    load = os.getloadavg()[0]
    meta = dict(cpu=cpu_model(), date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                commit=_commit(), backend=native.backend(), threads=args.threads, rounds=args.rounds,
                l1d=machine.L1D, l2=machine.L2, l3=machine.L3, stem_fuse_min_bytes=P.STEM_FUSE_MIN_BYTES,
                load_average_start=load)
    print(f"# {meta['date']}  {meta['cpu']}, {native.backend()}, C at {args.threads} thread(s), peers at 1; "
          f"commit {meta['commit']}; L1d {machine.L1D // 1024} KB (stem fused where its output is bigger); "
          f"load average {load:.2f}")
    print("# per op (us, medians): the ops before block_1 and the whole network, warm / cold; "
          "interleaved: ms min / p10 / median")
    results = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for name in args.variants:
            alpha, res = parse_variant(name)
            x = np.random.default_rng(0).uniform(-1, 1, (1, res, res, 3)).astype(np.float32)
            models = _models(alpha, res, x, args.threads)
            fused = any(r.get("fused", [None])[0] == "Conv1" for r in models["fused"].profile(x, runs=1))
            per_op = _per_op(models, x, max(args.rounds // 3, 5))
            calls = _interleaved(models, alpha, res, x, name, args.rounds, tmpdir)
            ratio = calls["C fused"]["p10"] / calls["C separate"]["p10"]
            peers = [v["p10"] for k, v in calls.items() if k in PEERS]
            best = min(peers) / calls["C fused"]["p10"] if peers else None
            results.append(dict(variant=name, stem_fused_by_rule=fused, per_op_us=per_op, interleaved_ms=calls,
                                fused_over_separate_p10=ratio, best_peer_over_fused_p10=best))
            print(f"{name}: rule fuses the stem: {'yes' if fused else 'no'}")
            for label in models:
                w, c = per_op[label]["warm"], per_op[label]["cold"]
                print(f"  {label:9s} before block_1 {w[0]:7.1f} / {c[0]:7.1f}   network {w[1]:8.1f} / {c[1]:8.1f}")
            print("  " + "  ".join(f"{k} {v['min']:.3f} / {v['p10']:.3f} / {v['median']:.3f}" for k, v in calls.items()))
            print(f"  fused / separate p10 {ratio:.3f}" + (f"; best peer / C fused p10 {best:.2f}x" if best else ""))
    meta["load_average_end"] = os.getloadavg()[0]
    _args.write_json(_args.json_path(args.json, "stem-fusion"), dict(meta, results=results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
