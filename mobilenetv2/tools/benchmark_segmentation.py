"""Time DeepLabV3-MobileNetV2 (transformers' google/deeplabv3_mobilenet_v2_1.0_513) at 513x513:
the C core against ONNX Runtime on an ONNX export of the same model, 1 and 2 threads.

    mobilenetv2 bench --segmentation DIR [--size 513] [--threads 1,2] [--runs 20] [--lockstep 20]
    python benchmarks/bench_segmentation.py [--hf DIR] ...   (DIR defaults to ../shared's checkpoint)

DIR is a transformers DeepLabV3-MobileNetV2 checkpoint folder (--segmentation random: the same
config with random weights: same speed).  Every measurement runs in a fresh spawned process (ONNX
Runtime's workers outlive their sessions); the runs are split over --rounds rounds that visit every
engine in turn, so a slow spell of a shared machine lands on both.  Prints what ran and a table of
batch-1 latencies (median, p10, p90, min) with the C core's speed relative to ONNX Runtime; writes
JSON (--out FOLDER, default the current folder).  Each call's CPU time (time.process_time, every thread of the
process) is recorded too: at 1 thread it leaves out the time the scheduler gave to other jobs, so on
a shared, loaded machine its C-vs-ORT ratio is the steadier one (at 2 threads it also counts the
threads' waiting, so only wall time says anything there).  --lockstep CALLS adds a 1-thread
measurement with each engine in its own process and their calls alternating one by one.
"""
import datetime
import json
import multiprocessing
import os
import queue as queue_module
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

from mobilenetv2.tools.benchmark import call_times, cpu_model, hide_avx512_or_say_why, peak_rss_mb, summarize

ENGINES = ("c", "ort")


def load_model(hf_dir):
    from mobilenetv2.hf import HFMobileNetV2, expect_head, from_pretrained
    from mobilenetv2.formats.hf_config import HFConfig
    if hf_dir is not None:  # a classifier ran and was reported as DeepLabV3
        return expect_head(from_pretrained(hf_dir), "segmentation", hf_dir)
    labels = {i: str(i) for i in range(21)}
    return HFMobileNetV2(HFConfig(output_stride=8, head="segmentation", id2label=labels, image_size=513))


def engine_call(engine, hf_dir, onnx_path, size, threads):
    """A function making one batch-1 call of ``engine``."""
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    if engine == "c":
        model = load_model(hf_dir)
        model.threads = threads
        if model._plan(model._check_input(x)) is None:
            raise RuntimeError("the C plan does not run here")
        fn = lambda: model.predict(x)  # noqa: E731
    else:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        fn = lambda: session.run(None, {"input": x})  # noqa: E731
    return fn


def _hide_if(hide):
    """In a fresh child: hide AVX-512 first (--hide-avx512), before an engine looks at the CPU."""
    if hide:
        from mobilenetv2.engines import native
        native.hide_avx512()


def measure(engine, hf_dir, onnx_path, size, threads, runs, warmup, queue, hide=False):
    """In a child process: time ``runs`` batch-1 calls of one engine (or say why it could not)."""
    try:
        _hide_if(hide)
        fn = engine_call(engine, hf_dir, onnx_path, size, threads)
        cpu = []

        def timed():
            start = time.process_time()
            fn()
            cpu.append(time.process_time() - start)
        wall = call_times(timed, runs, warmup)
        queue.put((wall, cpu[warmup:], peak_rss_mb()))
    except Exception as exc:
        queue.put(f"{engine} at {threads} thread(s): {type(exc).__name__}: {exc}")


def serve(engine, hf_dir, onnx_path, size, hide, conn):
    """In a child process, 1 thread: "ready" (or why not, and stop), then one timed call (wall,
    CPU seconds) per request on ``conn``."""
    try:
        _hide_if(hide)
        fn = engine_call(engine, hf_dir, onnx_path, size, 1)
    except Exception as exc:
        conn.send(f"{engine}: {type(exc).__name__}: {exc}")
        return
    conn.send("ready")
    while conn.recv():
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        conn.send((time.perf_counter() - wall, time.process_time() - cpu))


def _reply(name, pipe):
    """The next reply of serving process ``name``; a RuntimeError (one line) where it said why it
    cannot serve or stopped (the parent holds no copy of the child's end, so a child that dies
    is an EOFError here, not a wait for ever)."""
    try:
        out = pipe.recv()
    except (EOFError, OSError):
        raise RuntimeError(f"the {name} process stopped without a reply") from None
    if isinstance(out, str) and out != "ready":
        raise RuntimeError(f"the {name} process: {out}")
    return out


def alternate(pipes, procs, calls, warmup):
    """Wait for each serving process in ``pipes`` (name -> connection, see serve) to be ready, then
    ask each for one call in turn, warmup + calls times; then stop them (``procs``).  Per name:
    the replies after the warmup.  A process that cannot serve or stops is a RuntimeError."""
    got = {name: [] for name in pipes}
    try:
        for name, pipe in pipes.items():
            _reply(name, pipe)
        for i in range(warmup + calls):
            for name, pipe in pipes.items():
                try:
                    pipe.send(True)
                except OSError:
                    raise RuntimeError(f"the {name} process stopped") from None
                result = _reply(name, pipe)
                if i >= warmup:
                    got[name].append(result)
    finally:
        for pipe in pipes.values():
            try:
                pipe.send(False)
            except OSError:  # already gone
                pass
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
    return got


def start_servers(ctx, target, argss):
    """{name: our end of the pipe}, [processes]: one spawned ``target(*args, their end)`` per
    (name, args) of ``argss``, our copy of their end closed (so their exit reads as EOF here)."""
    pipes, procs = {}, []
    for name, args in argss.items():
        ours, theirs = ctx.Pipe()
        procs.append(ctx.Process(target=target, args=args + (theirs,)))
        procs[-1].start()
        theirs.close()
        pipes[name] = ours
    return pipes, procs


def lockstep(ctx, hf_dir, onnx_path, size, calls, warmup, hide=False):
    """1 thread, each engine in its own process, calls alternating one by one (C, ORT, C, ...): a
    slow spell of a shared machine lands on both within a call.  Per engine: wall and CPU seconds
    of each call, and the median over pairs of ORT's time / C's (wall, CPU)."""
    pipes, procs = start_servers(ctx, serve, {e: (e, hf_dir, onnx_path, size, hide) for e in ENGINES})
    got = alternate(pipes, procs, calls, warmup)
    pairs = np.array([[o[k] / c[k] for k in (0, 1)] for c, o in zip(got["c"], got["ort"])])
    return got, np.median(pairs, axis=0)


def run_child(ctx, *args, hide=False):
    queue = ctx.Queue()
    p = ctx.Process(target=measure, args=args + (queue, hide))
    p.start()
    while True:  # a child that dies without a word (a signal) must not leave us waiting forever
        try:
            out = queue.get(timeout=1)
            break
        except queue_module.Empty:
            if not p.is_alive():
                raise RuntimeError(f"the timing process stopped with exit code {p.exitcode}")
    p.join()
    if isinstance(out, str):
        raise RuntimeError(out)
    return out


def runs_per_round(runs, rounds):
    """How many of ``runs`` timed calls each round makes: ``runs`` in all, over ``rounds`` rounds
    (or ``runs`` of one call, where fewer), the first ``runs % rounds`` one more (20 over 3: 7, 7,
    6; it was 6 each, 18 in all, and --runs 2 over 3 rounds made 3)."""
    rounds = min(rounds, runs)
    return [runs // rounds + (i < runs % rounds) for i in range(rounds)]


def main(argv=None, out=".", out_help="the current folder"):
    """The command; ``out`` (described as ``out_help``) is --out's default: benchmarks/
    bench_segmentation.py gives its results folder."""
    from mobilenetv2.errors import OneLineArgumentParser
    ap = OneLineArgumentParser(prog="mobilenetv2 bench --segmentation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--segmentation", "--hf", dest="hf", required=True, metavar="DIR",
                    help="the DeepLabV3 checkpoint folder, or 'random' for random weights")
    ap.add_argument("--size", type=int, default=513)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=out, metavar="FOLDER",
                    help=f"the existing folder the JSON goes in (default: {out_help})")
    ap.add_argument("--lockstep", type=int, default=0, metavar="CALLS",
                    help="also time CALLS 1-thread calls per engine alternating one by one, each "
                         "engine in its own process (ratios as medians over the pairs)")
    ap.add_argument("--hide-avx512", action="store_true",
                    help="hide AVX-512 (and AMX) from both engines through CPUID faulting: an AVX2-only "
                         "CPU emulated on this one (as mobilenetv2 bench --hide-avx512)")
    args = ap.parse_args(argv)
    if args.hide_avx512:  # before ONNX Runtime is imported here, and again in every child
        why = hide_avx512_or_say_why(ap.prog)
        if why:
            ap.exit(2, why + "\n")
    from mobilenetv2.tools.benchmark import check_counts, parse_threads
    from mobilenetv2.model import MAX_SIZE, MIN_SIZE
    threads = parse_threads(ap, args.threads)
    check_counts(ap, args, ("runs", "rounds"), ("warmup", "lockstep"))
    if not args.hf:  # '' named no folder, and ran on random weights
        ap.error("--segmentation takes a DeepLabV3 checkpoint folder, or 'random' for random weights; got ''")
    if not MIN_SIZE <= args.size <= MAX_SIZE:
        ap.error(f"--size must be from {MIN_SIZE} to {MAX_SIZE}, got {args.size}")
    if not os.path.isdir(args.out):  # before the timing, not after (and never a folder made of a typo)
        ap.error(f"--out {args.out!r} " + ("is a file" if os.path.exists(args.out) else "does not exist")
                 + ": give the folder the JSON goes in")
    hf_dir = None if args.hf == "random" else str(args.hf)
    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        sys.exit("mobilenetv2 bench --segmentation: needs onnxruntime (pip install onnxruntime)")
    from mobilenetv2 import export_onnx
    from mobilenetv2.engines import native
    model = load_model(hf_dir)
    if not native.available():
        sys.exit("mobilenetv2 bench --segmentation: the C extension is not built, so there is no C core to time")
    tmp = tempfile.mkdtemp(prefix="bench-seg-")
    try:
        onnx_path = export_onnx(model, os.path.join(tmp, "deeplabv3.onnx"), batch=1, input_size=(args.size, args.size))
        x = np.random.default_rng(0).uniform(-1, 1, (1, args.size, args.size, 3)).astype(np.float32)
        ours = model.predict(x)
        theirs = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        agree = float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))

        alpha = f"{model.config.depth_multiplier:g}"  # the checkpoint's, not the default's 1.0
        print(f"DeepLabV3-MobileNetV2 {alpha}, {args.size}x{args.size}, batch 1; weights: {hf_dir or 'random'}")
        print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); Python {platform.python_version()}; "
              f"C core {native.backend()}; ONNX Runtime {ort_version}" +
              ("; AVX-512 hidden from both engines (--hide-avx512, CPUID faulting)" if native.avx512_hidden() else ""))
        print(f"C core vs ONNX Runtime outputs: relative L2 {agree:.2e}")
        ctx = multiprocessing.get_context("spawn")
        times = {(e, t): [] for e in ENGINES for t in threads}  # seconds, one list per round
        cpu = {(e, t): [] for e in ENGINES for t in threads}
        rss = {}
        for calls in runs_per_round(args.runs, args.rounds):
            for t in threads:
                for e in ENGINES:
                    got, got_cpu, mem = run_child(ctx, e, hf_dir, onnx_path, args.size, t, calls, args.warmup,
                                                  hide=args.hide_avx512)
                    times[(e, t)].append(list(got))
                    cpu[(e, t)].append(list(got_cpu))
                    rss[(e, t)] = max(rss.get((e, t), 0), mem)
        every = {k: [v for r in rounds for v in r] for k, rounds in times.items()}
        every_cpu = {k: [v for r in rounds for v in r] for k, rounds in cpu.items()}
        rows = []
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (CPU ms: process CPU time per call)")
        print(f"\n{'engine':<14} {'threads':>7} {'median ms':>10} {'p10':>8} {'p90':>8} {'min':>8} {'RSS MB':>7} "
              f"{'C vs ORT':>9} {'CPU ms':>7} {'by CPU':>7}")
        for t in threads:
            ort_median = summarize(every[("ort", t)])["median_ms"]
            ort_cpu = float(np.median(every_cpu[("ort", t)])) * 1e3
            for e in ENGINES:
                s = summarize(every[(e, t)])
                cpu_ms = float(np.median(every_cpu[(e, t)])) * 1e3
                ratio, cpu_ratio = ort_median / s["median_ms"], ort_cpu / cpu_ms
                name = {"c": "C core", "ort": "ONNX Runtime"}[e]
                by_cpu = f"{cpu_ratio if e == 'c' else 1.0:>6.2f}x" if t == 1 else f"{'-':>7}"
                print(f"{name:<14} {t:>7} {s['median_ms']:>10.1f} {s['p10_ms']:>8.1f} {s['p90_ms']:>8.1f} "
                      f"{s['min_ms']:>8.1f} {rss[(e, t)]:>7.0f} {ratio if e == 'c' else 1.0:>8.2f}x {cpu_ms:>7.1f} {by_cpu}")
                rows.append(dict(engine=e, threads=t, rss_mb=rss[(e, t)], cpu_median_ms=cpu_ms, **s,
                                 times_ms_by_round=[[v * 1e3 for v in r] for r in times[(e, t)]],
                                 cpu_ms_by_round=[[v * 1e3 for v in r] for r in cpu[(e, t)]]))
        paired = None
        if args.lockstep:
            got, (wall_ratio, cpu_ratio) = lockstep(ctx, hf_dir, onnx_path, args.size, args.lockstep, args.warmup,
                                                    args.hide_avx512)
            print(f"\nlockstep, 1 thread, {args.lockstep} pairs of calls (load average now "
                  f"{os.getloadavg()[0]:.1f}):")
            for e in ENGINES:
                wall, cpu_s = (np.array([g[k] for g in got[e]]) * 1e3 for k in (0, 1))
                print(f"  {e:<4} wall median {np.median(wall):7.1f} ms  p10 {np.percentile(wall, 10):7.1f}  "
                      f"CPU median {np.median(cpu_s):7.1f} ms")
            print(f"  C vs ORT, median over pairs: wall {wall_ratio:.2f}x, CPU {cpu_ratio:.2f}x")
            paired = dict(calls=args.lockstep, wall_ratio=float(wall_ratio), cpu_ratio=float(cpu_ratio),
                          **{f"{e}_{k}_ms": [g[i] * 1e3 for g in got[e]] for e in ENGINES
                             for i, k in enumerate(("wall", "cpu"))})
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(args.out, f"segmentation-{stamp}.json")
        from mobilenetv2.files import atomic_write
        with atomic_write(path, suffix=".json") as f:
            f.write(json.dumps({"model": f"deeplabv3_mobilenet_v2_{alpha}", "size": args.size, "weights": hf_dir or "random",
                       "cpu": cpu_model(), "cores": os.cpu_count(), "backend": native.backend(),
                       "avx512_hidden": native.avx512_hidden(),
                       "onnxruntime": ort_version, "agreement_rel_l2": agree, "load_average_end": os.getloadavg()[0],
                       "threads": threads, "runs": args.runs, "rounds": min(args.rounds, args.runs),
                       "warmup": args.warmup,
                       "rows": rows, "lockstep_1_thread": paired}, indent=2).encode())
        print(f"\nwrote {path}")
        return 0
    finally:  # the ONNX export timed (8 MB at 513) is not left in the temporary folder
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
