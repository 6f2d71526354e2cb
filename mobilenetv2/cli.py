"""The ``mobilenetv2`` command: classify images, list the variants, dump activations, benchmark.

    mobilenetv2 classify IMAGE... [--alpha A] [--size S] [--weights PATH] [--top K] [--json]
    mobilenetv2 info [--json]
    mobilenetv2 dump IMAGE --layers NAME... --out acts.npz [--alpha A] [--size S] [--weights PATH]
    mobilenetv2 summary [--alpha A] [--size S]
    mobilenetv2 bench ...            (see mobilenetv2 bench --help)
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np

from mobilenetv2 import files
from mobilenetv2.errors import Error, OneLineArgumentParser as _Parser


def _positive_int(limit):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be from 1 to {limit}, got {value}")
        return value
    return parse


def _finite_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _weights_arg(value):
    return value if value in ("imagenet", "none") else os.fspath(value)


def _add_model_args(p, top=True):
    from mobilenetv2.model import MAX_SIZE
    p.add_argument("--alpha", type=_finite_float, default=1.0, help="width multiplier (default 1.0)")
    p.add_argument("--size", type=_positive_int(MAX_SIZE), default=224,
                   help="input height and width (default 224)")
    p.add_argument("--weights", type=_weights_arg, default="imagenet",
                   help="'imagenet' (found or downloaded), 'none' (random), or a Keras .h5 path")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")


def _model(args, include_top=True, pooling=None):
    from mobilenetv2 import MobileNetV2
    weights = None if args.weights == "none" else args.weights
    return MobileNetV2((args.size, args.size, 3), alpha=args.alpha, include_top=include_top,
                       weights=weights, pooling=pooling, dtype=args.dtype)


def _load_batch(paths, size, dtype):
    from mobilenetv2.preprocessing import load_image, preprocess_input
    images = np.stack([load_image(p, target_size=(size, size)) for p in paths])
    return preprocess_input(images.astype(dtype))


def cmd_classify(args):
    from mobilenetv2.imagenet import decode_predictions
    model = _model(args)
    if model.classes != 1000:
        raise ValueError("classify needs a 1000-class ImageNet head")
    preds = model.predict(_load_batch(args.images, args.size, args.dtype))
    decoded = decode_predictions(preds, top=args.top)
    if args.json:
        print(json.dumps([{"image": path, "predictions": [
            {"wnid": w, "name": n, "score": float(s)} for w, n, s in top]}
            for path, top in zip(args.images, decoded)], indent=2))
        return 0
    for path, top in zip(args.images, decoded):
        print(path)
        for rank, (wnid, name, score) in enumerate(top, 1):
            print(f"  {rank}. {name:<28} {wnid}  {score:.4f}")
    return 0


def cmd_info(args):
    from mobilenetv2 import registry
    from mobilenetv2.native import backend
    from mobilenetv2.variants import variant_table
    rows = variant_table()
    for row in rows:
        for top, key in ((True, "weights_top"), (False, "weights_no_top")):
            path = registry.find_weights(row["alpha"], row["rows"], top)
            row[key] = str(path) if path else None
    if args.json:
        print(json.dumps({"backend": backend(), "variants": rows}, indent=2))
        return 0
    print(f"engine: {backend()}")
    head = f"{'variant':<9} {'params':>10} {'params(M)':>9} {'MACs(M)':>8} {'top-1':>6} {'top-5':>6}  weights (top / no top)"
    print(head)
    print("-" * len(head))
    for r in rows:
        found = "/".join("found" if r[k] else "-" for k in ("weights_top", "weights_no_top"))
        print(f"{r['variant']:<9} {r['keras_params']:>10,} {r['params_m']:>9.2f} {r['macs_m']:>8} "
              f"{r['top1']:>6.1f} {r['top5']:>6.1f}  {found}")
    print("params: Keras count_params() with the 1000-class head; params(M), MACs(M), top-1/top-5: "
          "the published ImageNet table's convention (computed here from the graph).")
    return 0


def _save_npz_atomically(path, arrays):
    """Write arrays to ``path`` (``.npz`` added where missing) through a temporary file in the
    same folder renamed into place, with the umask's permissions: no half-written file remains."""
    path = os.path.abspath(files.check_output_path(path, "--out"))
    if not path.endswith(".npz"):
        path += ".npz"
    with files.atomic_write(path, suffix=".npz") as f:
        np.savez(f, **arrays)
    return path


def cmd_dump(args):
    files.check_output_path(args.out, "--out")  # before any work: '' or 'dir/' would write elsewhere
    model = _model(args, include_top=args.include_top, pooling=None)
    x = _load_batch([args.image], args.size, args.dtype)
    names = [layer.name for layer in model.layers[1:]] if args.layers == ["all"] else args.layers
    feats = model.features(x, names)
    path = _save_npz_atomically(args.out, {name: y[0] for name, y in feats.items()})
    for name, y in feats.items():
        print(f"{name:<32} {str(y.shape[1:]):<20} {y.dtype}")
    print(f"wrote {len(feats)} activations to {path}")
    return 0


def cmd_summary(args):
    _model(args).summary()
    return 0


def cmd_bench(argv):
    from mobilenetv2 import benchmark
    return benchmark.main(argv)


def build_parser():
    parser = _Parser(prog="mobilenetv2", description="MobileNetV2 inference with Keras's weights and names.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="top ImageNet classes of images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    _add_model_args(p)
    p.add_argument("--top", type=_positive_int(1000), default=5, help="how many classes to show (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("info", help="the 22 variants: params, MACs, published accuracy, weights found")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("dump", help="save activations by Keras layer name to an .npz file")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layers", nargs="+", required=True, metavar="NAME", help="Keras layer names, or 'all'")
    p.add_argument("--out", required=True, help="output .npz path")
    p.add_argument("--no-top", dest="include_top", action="store_false", help="model without the classifier")
    _add_model_args(p)
    p.set_defaults(func=cmd_dump)

    p = sub.add_parser("summary", help="print the layers, output shapes, params and MACs")
    _add_model_args(p)
    p.set_defaults(func=cmd_summary, weights="none")

    sub.add_parser("bench", help="time the engines and peers (mobilenetv2 bench --help)", add_help=False)
    return parser


def main(argv=None):
    """Run one command.  Every failure is one line on stderr and a non-zero exit status: 2 for
    a bad argument or input, 1 for an internal error, 130 for Ctrl-C; never a traceback
    (set MOBILENETV2_DEBUG=1 to see one)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and not argv[0].startswith("-") else "mobilenetv2"
    try:
        with warnings.catch_warnings():  # warnings (no C extension, ...) on one line each too
            warnings.showwarning = _one_line_warning
            if argv and argv[0] == "bench":
                return cmd_bench(argv[1:])
            args = build_parser().parse_args(argv)
            return args.func(args)
    except KeyboardInterrupt:
        print(f"mobilenetv2 {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a program that stopped reading (| head)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except MemoryError:
        _fail(command, "out of memory (try a smaller --size or batch, or fewer images at once)")
        return 2
    except (Error, ValueError, OSError) as exc:
        _fail(command, f"error: {exc}")
        return 2
    except Exception as exc:  # a bug: still one line, with what to report
        _fail(command, f"internal error: {type(exc).__name__}: {exc} (please report it; "
                       "MOBILENETV2_DEBUG=1 shows the traceback)")
        return 1


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"mobilenetv2: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _fail(command, message):
    if os.environ.get("MOBILENETV2_DEBUG") == "1":
        import traceback
        traceback.print_exc()
    print(f"mobilenetv2 {command}: {' '.join(message.split())}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
