"""Before/after at 1 thread: DeepLabV3-MobileNetV2 at 513x513 on this checkout's C core, another
checkout's (a built copy of an earlier commit) and ONNX Runtime, each in its own process, their
calls in lockstep (this, other, ORT, this, ...), so a loaded machine's slow spells land on all three.

    python benchmarks/segmentation_ab.py --other DIR [--rounds 40] [--hf CHECKPOINT]

Prints per engine the median wall and CPU (process_time) ms of a call and, as medians over the
rounds, ORT's time over its own and the other checkout's CPU time over its own.  Make the other
checkout with ``git archive COMMIT | tar -x -C DIR`` and build it in place there (setup.py build_ext
--inplace).
"""
import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent


def serve(kind, root, hf_dir, onnx_path, size, conn):
    """In a child process: one timed call (wall, CPU seconds) per request on ``conn``."""
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
    while conn.recv():
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        conn.send((time.perf_counter() - wall, time.process_time() - cpu))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", required=True, help="a built checkout of another commit")
    ap.add_argument("--hf", default=str(HERE.parent / "shared" / "hf" / "deeplabv3_mobilenet_v2_1.0_513"))
    ap.add_argument("--size", type=int, default=513)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from mobilenetv2 import export_onnx
    from mobilenetv2.tools.benchmark_segmentation import alternate
    from mobilenetv2.hf import from_pretrained
    onnx_path = export_onnx(from_pretrained(args.hf), os.path.join(tempfile.mkdtemp(), "seg.onnx"), batch=1,
                            input_size=(args.size, args.size))
    engines = {"this": ("c", str(HERE)), "other": ("c", str(Path(args.other).resolve())), "ort": ("ort", str(HERE))}
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = {}, []
    for name, (kind, root) in engines.items():
        ours, theirs = ctx.Pipe()
        procs.append(ctx.Process(target=serve, args=(kind, root, args.hf, onnx_path, args.size, theirs)))
        procs[-1].start()
        pipes[name] = ours
    load = os.getloadavg()[0]
    got = alternate(pipes, procs, args.rounds, args.warmup)
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
