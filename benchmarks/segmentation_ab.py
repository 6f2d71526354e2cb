"""Before/after at 1 thread: DeepLabV3-MobileNetV2 at 513x513 on this checkout's C core, another
checkout's (a built copy of an earlier commit) and ONNX Runtime, each in its own process, their
calls in lockstep (this, other, ORT, this, ...), so a loaded machine's slow spells land on all three.

    python benchmarks/segmentation_ab.py --other DIR [--rounds 40] [--hf CHECKPOINT]

Prints per engine the median wall and CPU (process_time) ms of a call and, as medians over the
rounds, ORT's time over its own and the other checkout's CPU time over its own.  Make the other
checkout with ``git archive COMMIT | tar -x -C DIR`` and build it in place there (setup.py build_ext
--inplace).
"""
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (imports no mobilenetv2: the "other" child must import the other checkout's)

HERE = _args.ROOT


def serve(kind, root, hf_dir, onnx_path, size, conn):
    """In a child process: "ready" (or why not, and stop), then one timed call (wall, CPU seconds)
    per request on ``conn`` (mobilenetv2.tools.benchmark_segmentation.alternate's protocol)."""
    try:
        sys.path.insert(0, root)
        x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
        if kind == "ort":
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = opts.inter_op_num_threads = 1
            session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
            fn = lambda: session.run(None, {"input": x})  # noqa: E731
        else:
            import mobilenetv2
            if not mobilenetv2.__file__.startswith(root):
                raise RuntimeError(f"imported {mobilenetv2.__file__}, not the checkout in {root}")
            from mobilenetv2.hf import from_pretrained
            model = from_pretrained(hf_dir)
            model.threads = 1
            fn = lambda: model.predict(x)  # noqa: E731
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    conn.send("ready")
    while conn.recv():
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        conn.send((time.perf_counter() - wall, time.process_time() - cpu))


def main(argv=None):
    from mobilenetv2.network.arch import MAX_SIZE, MIN_SIZE
    ap = _args.parser(__doc__, __file__)
    ap.add_argument("--other", type=_args.checkout, required=True, help="a built checkout of another commit")
    ap.add_argument("--hf", default=str(HERE.parent / "shared" / "hf" / "deeplabv3_mobilenet_v2_1.0_513"),
                    help="the DeepLabV3 checkpoint folder (default %(default)s)")
    ap.add_argument("--size", type=_args.count(MIN_SIZE, MAX_SIZE), default=513, help="(default %(default)s)")
    ap.add_argument("--rounds", type=_args.count(1), default=40, help="(default %(default)s)")
    ap.add_argument("--warmup", type=_args.count(0), default=3, help="(default %(default)s)")
    args = ap.parse_args(argv)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        ap.error("needs onnxruntime (pip install onnxruntime)")
    from mobilenetv2 import export_onnx
    from mobilenetv2.errors import Error
    from mobilenetv2.tools.benchmark_segmentation import alternate, start_servers
    from mobilenetv2.hf import expect_head, from_pretrained
    try:  # the checkpoint, before any process starts
        model = expect_head(from_pretrained(args.hf), "segmentation", args.hf)
    except (Error, OSError, ValueError) as exc:
        ap.error(f"--hf: {exc}")
    tmp = tempfile.mkdtemp(prefix="segmentation-ab-")
    try:
        onnx_path = export_onnx(model, os.path.join(tmp, "seg.onnx"), batch=1, input_size=(args.size, args.size))
        engines = {"this": ("c", str(HERE)), "other": ("c", str(args.other)), "ort": ("ort", str(HERE))}
        pipes, procs = start_servers(multiprocessing.get_context("spawn"), serve,
                                     {name: (kind, root, args.hf, onnx_path, args.size)
                                      for name, (kind, root) in engines.items()})
        load = os.getloadavg()[0]
        try:
            got = alternate(pipes, procs, args.rounds, args.warmup)
        except RuntimeError as exc:  # a process that could not serve, or stopped: one line
            raise SystemExit(f"{ap.prog}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.size}x{args.size}, 1 thread, {args.rounds} rounds in lockstep; load average "
          f"{load:.1f} -> {os.getloadavg()[0]:.1f}; other checkout: {args.other}")
    t = {name: np.array(v) for name, v in got.items()}  # [round, (wall, cpu)]
    for name in engines:
        ort_ratio = np.median(t["ort"] / t[name], axis=0)
        other_ratio = np.median(t["other"][:, 1] / t[name][:, 1])
        print(f"  {name:<6} wall median {np.median(t[name][:, 0]) * 1e3:6.1f} ms  CPU median "
              f"{np.median(t[name][:, 1]) * 1e3:6.1f} ms  ORT / this: wall {ort_ratio[0]:.2f}x CPU "
              f"{ort_ratio[1]:.2f}x  other / this CPU {other_ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
