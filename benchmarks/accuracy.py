"""Float32 error against the float64 engine: the C core on every instruction set, and ONNX Runtime.

The network is 1.0_224 (or --variant) with shared/tools' synthetic weights and no softmax (the
logits are compared, where the long sums of the dense head show).  Inputs: the panda photo
(shared/images/panda.jpg, preprocessed as Keras does) and 8 uniform random images in [-1, 1].
Per engine: the largest |logit32 - logit64| over those 9 inputs divided by the largest |logit64|
of that input, and the mean of that ratio.  Writes a table; --json writes the figures (only then).
"""
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)

from mobilenetv2 import MobileNetV2  # noqa: E402
from mobilenetv2.engines import native  # noqa: E402
from mobilenetv2.tools.benchmark import shared_dir, with_synthetic_weights  # noqa: E402
from mobilenetv2.network.variants import parse_variant  # noqa: E402


def inputs(res):
    xs = []
    shared = shared_dir()
    panda = shared / "images" / "panda.jpg" if shared else None
    if panda is not None and panda.exists():
        from mobilenetv2.processing.preprocessing import load_image, preprocess_input
        xs.append(preprocess_input(load_image(str(panda), target_size=(res, res)).astype(np.float32)))
    rng = np.random.default_rng(8)
    xs += [rng.uniform(-1, 1, (res, res, 3)).astype(np.float32) for _ in range(8)]
    return np.stack(xs)


def model(alpha, res, dtype):
    return with_synthetic_weights(MobileNetV2((res, res, 3), alpha=alpha, weights=None,
                                              classifier_activation=None, dtype=dtype))


def errors(got, ref):
    rel = np.abs(got.astype(np.float64) - ref).max(axis=1) / np.abs(ref).max(axis=1)
    return {"max_rel": float(rel.max()), "mean_rel": float(rel.mean())}


def main(argv=None):
    p = _args.parser(__doc__, __file__)
    p.add_argument("--variant", type=_args.variant, default="1.0_224", help="(default %(default)s)")
    p.add_argument("--json", type=_args.output_path, help="write the figures to this file (default: none)")
    args = p.parse_args(argv)
    alpha, res = parse_variant(args.variant)
    x = inputs(res)
    ref = np.concatenate([model(alpha, res, "float64")(x[i:i + 1].astype(np.float64)) for i in range(len(x))])
    m32 = model(alpha, res, "float32")
    rows = {}
    for isa in native.isas():
        with native.use_isa(isa):
            rows[f"C {isa}"] = errors(np.concatenate([m32(x[i:i + 1]) for i in range(len(x))]), ref)
    try:
        import tempfile
        import onnxruntime as ort
        from mobilenetv2.tools.onnx_export import export_onnx
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(m32, os.path.join(tmp, "m.onnx"), batch=1)
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
        rows["ONNX Runtime"] = errors(got, ref)
    except ImportError as exc:
        print(f"# ONNX Runtime skipped: {exc}")
    print(f"# {args.variant}, synthetic weights, logits, {len(x)} inputs (panda + random), vs float64")
    print(f"{'engine':<14} {'max rel':>10} {'mean rel':>10}")
    for name, e in rows.items():
        print(f"{name:<14} {e['max_rel']:10.3e} {e['mean_rel']:10.3e}")
    if args.json:
        _args.write_json(args.json, {"variant": args.variant, "errors": rows}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
