"""The ``mobilenetv2`` command: classify images, list the variants, dump activations, benchmark.

    mobilenetv2 classify IMAGE... [--alpha A] [--size S] [--weights W] [--dtype D] [--top K] [--json]
    mobilenetv2 classify --hf DIR IMAGE... [--dtype D] [--top K] [--json]   (a transformers checkpoint
                         [--hf-backend pillow|torchvision]                   folder)
    mobilenetv2 segment --hf DIR IMAGE --out mask.png [--overlay] [--dtype D] [--hf-backend pillow|torchvision]
    mobilenetv2 info [--json]
    mobilenetv2 dump IMAGE --layers NAME...|all --out acts.npz [--no-top] [--alpha A] [--size S] [--weights W]
                     [--dtype D]
    mobilenetv2 summary [--alpha A] [--size S] [--weights W] [--dtype D]
    mobilenetv2 bench ...            (see mobilenetv2 bench --help)
    mobilenetv2 compare OTHER [--weights W] [--images F|DIR... | --random N --seed S | --input X.npy]
                        [--mapping M.json] [--json OUT] [--plot OUT.png] [--factor F]
    mobilenetv2 features|predict DIR_OR_GLOB_OR_LIST... --out DIR [--alpha A] [--size S] [--weights W]
                                     (a resumable Parquet dataset)

--weights W is read one way everywhere (mobilenetv2.model_options): 'imagenet' (the default; summary's
is 'none'), 'none' (Keras's initial weights), a variant name such as 1.0_224 (its imagenet weights with
its alpha and size; an --alpha or --size that differs is refused; mobilenetv2 info lists the 22) or a
Keras .h5 file. compare's W is a Keras .h5, a Hugging Face checkpoint folder or a variant name; a
checkpoint folder goes to classify and segment with --hf DIR (their --weights refuses a folder).
"""
import argparse
import contextlib
import json
import os
import sys
import warnings

import numpy as np

from mobilenetv2 import files
from mobilenetv2.errors import ArgumentError, Error, OneLineArgumentParser, OutputPathError, positive_int
from mobilenetv2.model_options import add_model_args, model_args


def _folder(text):
    """--hf's type: an empty path names no folder (it was taken for no --hf at all: classify then
    ran Keras's ImageNet model on the images instead of the checkpoint asked for)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path names no folder: give the checkpoint folder")
    return text


def _not_the_image(out, image):
    """Refuse an output path that is the input image: the photo was replaced by its own class map
    (segment photo.png --out photo.png)."""
    try:
        same = os.path.samefile(out, image)
    except OSError:  # either missing: not the same file (a missing image is said next)
        same = False
    if same:
        raise OutputPathError(f"--out {out!r} is the input image {image!r}: give another file name")


def _file_classes(weights):
    """The classes of the classifier in --weights's .h5 file (None for a _no_top file, 'imagenet'
    or 'none'): the model a fine-tuned file fits."""
    if weights in ("imagenet", "none"):
        return None
    from mobilenetv2.formats.loader import classifier_classes
    return classifier_classes(weights)


def _model(args, include_top=True, pooling=None, classes=1000):
    from mobilenetv2 import MobileNetV2
    weights = None if args.weights == "none" else args.weights
    return MobileNetV2((args.size, args.size, 3), alpha=args.alpha, include_top=include_top,
                       weights=weights, pooling=pooling, classes=classes, dtype=args.dtype)


def _load_batch(paths, size, dtype):
    from mobilenetv2.processing.preprocessing import load_image, preprocess_input
    images = np.stack([load_image(p, target_size=(size, size)) for p in paths])
    return preprocess_input(images.astype(dtype))


def _check_images(paths):
    """Each image path exists and is a regular file, before any model is built or weights read."""
    from mobilenetv2.processing.preprocessing import check_image_paths
    check_image_paths(paths)


def _classify_hf(args):
    """classify with a transformers checkpoint folder: its processor, its labels."""
    from mobilenetv2.hf import expect_head, from_pretrained
    from mobilenetv2.processing.hf_processing import hf_preprocess
    from mobilenetv2.engines.numpy_kernels import softmax
    model = expect_head(from_pretrained(args.hf, dtype=args.dtype), "classification", args.hf)
    xs = [hf_preprocess(p, model.processor_config, args.hf_backend or "pillow").astype(args.dtype)
          for p in args.images]
    if len({x.shape for x in xs}) == 1:
        logits = model.predict(np.concatenate(xs))
    else:  # a processor without a center crop keeps each image's own aspect: one image at a time
        logits = np.concatenate([model.predict(x) for x in xs])
    logits = logits.astype(np.float64)
    # scored as transformers' image-classification pipeline scores them: a sigmoid per class for a
    # multi-label checkpoint or a single label, else a softmax
    if model.config.problem_type == "multi_label_classification" or model.config.num_labels == 1:
        with np.errstate(over="ignore"):
            probs = 1.0 / (1.0 + np.exp(-logits))
    else:
        probs = softmax(logits)
    results = []
    for path, p in zip(args.images, probs):
        best = np.argsort(-p, kind="stable")[:args.top]
        results.append((path, [(int(i), model.id2label.get(int(i), str(i)), float(p[i])) for i in best]))
    if args.json:
        print(json.dumps([{"image": path, "predictions": [{"id": i, "label": n, "score": s} for i, n, s in top]}
                          for path, top in results], indent=2))
        return 0
    for path, top in results:
        print(path)
        for rank, (i, name, score) in enumerate(top, 1):
            print(f"  {rank}. {name:<28} {i:>5}  {score:.4f}")
    return 0


def cmd_classify(args):
    from mobilenetv2.processing.imagenet import decode_predictions
    if args.hf_backend is not None and not args.hf:
        raise ArgumentError("--hf-backend applies only with --hf (a transformers checkpoint's processor)")
    _check_images(args.images)
    if args.hf:
        return _classify_hf(args)
    model = _model(args)
    if model.classes != 1000:
        raise ArgumentError("classify needs a 1000-class ImageNet head")
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
    from mobilenetv2.formats import registry
    from mobilenetv2.engines.native import backend
    from mobilenetv2.network.variants import variant_table
    rows = variant_table()
    for row in rows:
        for top, key in ((True, "weights_top"), (False, "weights_no_top")):
            path, problem = registry.found_weights(row["alpha"], row["rows"], top)
            row[key] = str(path) if path else None
            row[f"{key}_problem"] = problem  # set where the file found is not the registry's
            row[f"{key}_action"] = registry.what_loading_does(path, row["alpha"], row["rows"], top) \
                if problem else None
    if args.json:
        print(json.dumps({"backend": backend(), "variants": rows}, indent=2))
        return 0
    print(f"engine: {backend()}")
    head = f"{'variant':<9} {'params':>10} {'params(M)':>9} {'MACs(M)':>8} {'top-1':>6} {'top-5':>6}  weights (top / no top)"
    print(head)
    print("-" * len(head))
    for r in rows:
        found = "/".join(("wrong file" if r[f"{k}_problem"] else "found") if r[k] else "-"
                         for k in ("weights_top", "weights_no_top"))
        print(f"{r['variant']:<9} {r['keras_params']:>10,} {r['params_m']:>9.2f} {r['macs_m']:>8} "
              f"{r['top1']:>6.1f} {r['top5']:>6.1f}  {found}")
    print("params: Keras count_params() with the 1000-class head; params(M), MACs(M), top-1/top-5: "
          "the published ImageNet table's convention (computed here from the graph).")
    for r in rows:
        for k, what in (("weights_top", "with top"), ("weights_no_top", "no top")):
            if r[f"{k}_problem"]:
                print(f"wrong file: {r[k]} ({r['variant']}, {what}): {r[f'{k}_problem']}; {r[f'{k}_action']}")
    return 0


def _npz_path(path):
    """The path np.savez writes for ``path`` (``.npz`` added where missing), checked."""
    path = files.check_output_path(path, "--out")
    return os.path.abspath(files.check_output_path(path if path.endswith(".npz") else path + ".npz", "--out"))


def _save_npz_atomically(path, arrays):
    """Write arrays to ``path`` (``.npz`` added where missing) through a temporary file in the
    same folder renamed into place, with the umask's permissions: no half-written file remains."""
    path = _npz_path(path)
    with files.atomic_write(path, suffix=".npz") as f:
        np.savez(f, **arrays)
    return path


def cmd_dump(args):
    every = "all" in args.layers
    if every and set(args.layers) != {"all"}:
        raise ArgumentError("--layers: 'all' means every layer; give it alone, or name the layers")
    _not_the_image(_npz_path(args.out), args.image)  # before any work: '' or 'dir/' would write
    _check_images([args.image])                         # elsewhere, a folder fail late
    classes = (args.include_top and _file_classes(args.weights)) or 1000  # a fine-tuned file's own head
    model = _model(args, include_top=args.include_top, pooling=None, classes=classes)
    x = _load_batch([args.image], args.size, args.dtype)
    names = [layer.name for layer in model.layers[1:]] if every else list(dict.fromkeys(args.layers))
    feats = model.features(x, names)
    arrays = {name: y[0] for name, y in feats.items()}
    arrays.setdefault("input", x[0])  # the preprocessed image they came from: compare runs a dump on it
    path = _save_npz_atomically(args.out, arrays)
    for name, y in feats.items():
        print(f"{name:<32} {str(y.shape[1:]):<20} {y.dtype}")
    print(f"wrote {len(feats)} activations to {path}")
    return 0


def cmd_summary(args):
    """The layers' output shapes, parameters and MACs depend on --alpha and --size alone, not on
    the weights' values: 'imagenet' (a variant name too) must name one of the 22 official files,
    but the file is not loaded, so a summary needs neither the file nor a network.  A .h5 file
    given is loaded: the summary is then of the model that file fits, with its classifier's
    classes or, for a _no_top file, without a classifier (or it says why the file fits none)."""
    include_top, classes = True, 1000
    if args.weights == "imagenet":
        from mobilenetv2.formats import registry
        registry.weights_filename(args.alpha, args.size)  # the ArgumentError loading it would give
        args.weights = "none"
    elif args.weights != "none":  # a file: its head, or none (a _no_top file), is the model's
        classes = _file_classes(args.weights)
        include_top, classes = classes is not None, classes or 1000
    _model(args, include_top=include_top, classes=classes).summary()
    return 0


def _palette(n):
    """n distinct RGB colours, PASCAL VOC's convention (class 0 black), from the bits of the id."""
    out = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        out[i] = (r, g, b)
    return out


def _save_png_atomically(path, array, palette=None):
    """``array`` as a PNG: RGB, or with ``palette`` ((n, 3) uint8, n <= 256) an indexed PNG whose
    pixel values are ``array``'s (PASCAL VOC's mask format: the class ids read back as they are)."""
    from PIL import Image
    if palette is None:
        image = Image.fromarray(array)
    else:
        image = Image.fromarray(array.astype(np.uint8), mode="P")
        image.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    with files.atomic_write(path, suffix=".png") as f:
        image.save(f, format="PNG")
    return os.path.abspath(path)


def cmd_segment(args):
    """The class map of a photo at its own size (transformers' post-processing), colour-coded."""
    from mobilenetv2.hf import expect_head, from_pretrained
    from mobilenetv2.processing.hf_processing import _rgb_image, hf_preprocess, post_process_semantic_segmentation
    if not args.out.lower().endswith(".png"):
        raise ArgumentError(f"--out must name a .png file, got {args.out!r}")
    files.check_output_path(args.out, "--out")  # a folder named x.png failed after the model ran
    _not_the_image(args.out, args.image)
    _check_images([args.image])
    model = expect_head(from_pretrained(args.hf, dtype=args.dtype), "segmentation", args.hf)
    photo = np.asarray(_rgb_image(args.image))
    logits = model.predict(hf_preprocess(args.image, model.processor_config, args.hf_backend).astype(args.dtype))
    classes = post_process_semantic_segmentation(logits, [photo.shape[:2]])[0]
    colours = _palette(max(model.classes, 1))
    if args.overlay:
        path = _save_png_atomically(args.out, (0.5 * photo + 0.5 * colours[classes]).round().astype(np.uint8))
    elif len(colours) <= 256:  # the class ids themselves, shown in the palette's colours
        path = _save_png_atomically(args.out, classes, palette=colours)
    else:
        path = _save_png_atomically(args.out, colours[classes])
    ids, counts = np.unique(classes, return_counts=True)
    what = "class map over the photo" if args.overlay else "class map"
    print(f"{args.image}: {classes.shape[1]}x{classes.shape[0]} {what} written to {path}")
    for i, n in sorted(zip(ids, counts), key=lambda t: -t[1]):
        r, g, b = colours[i]
        print(f"  {model.id2label.get(int(i), str(i)):<16} {int(i):>3}  #{r:02x}{g:02x}{b:02x}  {n / classes.size:7.2%}")
    return 0


def cmd_bench(argv):
    from mobilenetv2.tools import benchmark
    return benchmark.main(argv)


def cmd_compare(args):
    """Exit 0 when OTHER agrees with the float64 reference to its noise floor, 1 when not."""
    from mobilenetv2.tools.compare import compare
    from mobilenetv2.files import check_output_path
    from mobilenetv2.tools.compare.api import input_files
    from mobilenetv2.tools.compare.report import format_table, refuse_an_input, write_json, write_plot
    read = input_files(args.other, args.weights, args.images, args.input, args.mapping)
    for name in ("json", "plot"):  # before the runs, not after (and never over a file compare reads)
        if getattr(args, name):
            refuse_an_input(read, check_output_path(getattr(args, name), f"--{name}"), name)
    if args.plot:  # the extra too: the report once printed, then --plot failed without matplotlib
        from mobilenetv2.tools.compare.errors import require
        require("matplotlib.pyplot", "--plot", "plot")
    report = compare(args.other, weights=args.weights, images=args.images, random=args.random,
                     seed=args.seed, batch=args.input, mapping=args.mapping, factor=args.factor,
                     progress=not args.quiet and sys.stderr.isatty())
    print(format_table(report, all_layers=args.all))
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    if args.plot:
        print(f"wrote {write_plot(report, args.plot)}")
    return 0 if report["agrees"] else 1


def cmd_features(args):
    from mobilenetv2.batch import command
    return command.run(args, "features")


def cmd_predict(args):
    from mobilenetv2.batch import command
    return command.run(args, "predict")


HF_BACKEND_HELP = ("which of transformers 5's MobileNetV2 image processors to reproduce, bit for bit: 'pillow' "
                   "(MobileNetV2ImageProcessorPil, as transformers 4.x; the default) or 'torchvision' "
                   "(MobileNetV2ImageProcessor, what AutoImageProcessor gives where torchvision is installed)")


def build_parser():
    from mobilenetv2.processing.hf_processing import BACKENDS
    parser = OneLineArgumentParser(prog="mobilenetv2", description="MobileNetV2 inference with Keras's weights and names.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="top ImageNet classes of images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_model_args(p)
    p.add_argument("--top", type=positive_int(1000), default=5, help="how many classes to show (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--hf", metavar="DIR", type=_folder, help="a transformers checkpoint folder (config.json, "
                   "model.safetensors, preprocessor_config.json) instead of Keras's weights")
    p.add_argument("--hf-backend", choices=BACKENDS, default=None, help=HF_BACKEND_HELP + " (only with --hf)")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("segment", help="class map of a photo with a transformers DeepLabV3 checkpoint")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--hf", metavar="DIR", type=_folder, required=True,
                   help="a transformers segmentation checkpoint folder")
    p.add_argument("--out", required=True, help="output .png: the class map at the image's size, an indexed PNG whose "
                   "pixel values are the class ids (colour-coded by its palette)")
    p.add_argument("--overlay", action="store_true", help="blend the colours over the photo")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--hf-backend", choices=BACKENDS, default="pillow", help=HF_BACKEND_HELP)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("info", help="the 22 variants: params, MACs, published accuracy, weights found")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("dump", help="save activations by Keras layer name to an .npz file")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layers", nargs="+", action="extend", required=True, metavar="NAME",
                   help="Keras layer names, or 'all' (given twice, --layers adds to the names)")
    p.add_argument("--out", required=True, help="output .npz path")
    p.add_argument("--no-top", dest="include_top", action="store_false", help="model without the classifier")
    add_model_args(p)
    p.set_defaults(func=cmd_dump)

    p = sub.add_parser("summary", help="print the layers, output shapes, params and MACs")
    add_model_args(p, weights="none")
    p.set_defaults(func=cmd_summary)

    from mobilenetv2.batch.command import add_arguments as add_batch_arguments
    p = sub.add_parser("features", help="features of many images into a resumable Parquet dataset")
    add_batch_arguments(p, "features")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("predict", help="top classes of many images into a resumable Parquet dataset")
    add_batch_arguments(p, "predict")
    p.set_defaults(func=cmd_predict)

    sub.add_parser("bench", help="time the engines and peers (mobilenetv2 bench --help)", add_help=False)

    p = sub.add_parser("compare", help="find where another framework's MobileNetV2 leaves the float64 "
                       "reference, and why (exit 0 agrees, 1 diverges, 2 bad input, 3 internal error)")
    p.add_argument("other", metavar="OTHER", help=".onnx, .tflite, an OpenVINO IR .xml (its .bin beside it), .npz, "
                   "or a folder of .npy files")
    p.add_argument("--weights", help="reference weights: a Keras .h5, a Hugging Face checkpoint folder or a "
                   "variant name such as 1.0_224 (mobilenetv2 info lists the 22); default: read from OTHER")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", nargs="+", metavar="FILE|DIR", help="images (load_image + preprocess_input)")
    src.add_argument("--random", type=int, metavar="N", help="N random images, uniform [-1, 1] (default 1)")
    src.add_argument("--input", metavar="X.npy", help="an input batch (N, H, W, 3), float")
    p.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    p.add_argument("--mapping", metavar="M.json", help='{"input": NAME, "layout": "NCHW", "tensors": {OTHER: KERAS}}')
    p.add_argument("--factor", type=float, default=30.0, help="a layer diverges above this many times "
                   "its float32 noise floor (default 30)")
    p.add_argument("--json", metavar="OUT.json", help="write the report as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="plot error per layer against the floor (matplotlib)")
    p.add_argument("--all", action="store_true", help="show every layer in the table")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv=None):
    """Run one command.  Every failure is one line on stderr and a non-zero exit status: 2 for
    a bad argument or input, 1 for an internal error (3 for ``compare``, whose 1 means
    "diverges"), 130 for Ctrl-C; never a traceback
    (set MOBILENETV2_DEBUG=1 to see one)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and not argv[0].startswith("-") else "mobilenetv2"

    def run():
        if argv and argv[0] == "bench":
            return cmd_bench(argv[1:])
        args = build_parser().parse_args(argv)
        if hasattr(args, "alpha"):
            model_args(args, args.command)
        return args.func(args)
    return run_command(command, run)


def run_command(command, run):
    """``run()``'s exit status, with main's handling of every failure (one line on stderr, see
    main): also for the scripts in benchmarks/ that call a command's own main."""
    try:
        return _run_command(command, run)
    finally:
        _settle_stdout()


def _run_command(command, run):
    try:
        with warnings.catch_warnings(), _file_names_on_stdout():  # warnings (no C extension, ...)
            warnings.showwarning = _one_line_warning                # on one line each too
            status = run()
            _flush_stdout()
            return status
    except KeyboardInterrupt:
        print(f"mobilenetv2 {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a program that stopped reading (| head)
        _drop_stdout()
        return 141
    except MemoryError as exc:  # the package's InsufficientMemory says how much and what to do
        _fail(command, f"error: {exc}" if isinstance(exc, Error) else
              "out of memory (try a smaller --size or batch, or fewer images at once)")
        return 2
    except (Error, ValueError, OSError) as exc:
        _fail(command, f"error: {exc}")
        return 2
    except Exception as exc:  # a bug: still one line, with what to report
        _fail(command, f"internal error: {type(exc).__name__}: {exc} (please report it; "
                       "MOBILENETV2_DEBUG=1 shows the traceback)")
        # compare's 1 means "OTHER diverges": a bug there must not read as a verdict
        return 3 if command == "compare" else 1


def _flush_stdout():
    """Write what stdout still buffers now, where its failure is said as any other (a reader gone:
    exit status 141; a full disk: one line, 2): left to Python's exit, which writes it after main
    has returned, it was "Exception ignored in: <_io.TextIOWrapper name='<stdout>' ...>" and a
    BrokenPipeError or OSError on stderr, exit status 120, as `classify x.jpg | true` and
    `classify x.jpg > /dev/full` did wherever stdout is buffered (not under PYTHONUNBUFFERED)."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the output to stdout: {exc.strerror}") from None


def _drop_stdout():
    """Send what stdout still buffers, and anything after, to the null device: it cannot be
    written, and Python's exit would try again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _settle_stdout():
    """After a failure said on stderr, what stdout could not take is dropped (a second message
    from Python's exit would follow the one line)."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError):
        _drop_stdout()


@contextlib.contextmanager
def _file_names_on_stdout():
    """stdout writes a file name that is not text in the locale's encoding (its bytes, which
    Python reads as lone surrogates) as those bytes, as ls does and as Python itself does in the
    C and C.UTF-8 locales: under en_US.UTF-8 its strict stdout failed on `classify caf\\xe9.jpg`,
    after the work (dump's file written), with "surrogates not allowed" and exit status 2."""
    stream, errors = sys.stdout, getattr(sys.stdout, "errors", None)
    if errors != "strict" or not callable(getattr(stream, "reconfigure", None)):
        errors = None  # surrogateescape already (C locales), or not a text file: left as it is
    else:
        try:
            stream.reconfigure(errors="surrogateescape")
        except Exception:  # (a stdout closed or detached: said where it is written to, if it is)
            errors = None
    try:
        yield
    finally:
        if errors is not None:
            with contextlib.suppress(Exception):  # (a stdout gone: | head)
                stream.reconfigure(errors=errors)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    text = " ".join(str(message).split()).removeprefix("mobilenetv2: ")  # the package's own say so already
    print(f"mobilenetv2: warning: {text}", file=sys.stderr)


def _fail(command, message):
    if os.environ.get("MOBILENETV2_DEBUG") == "1":
        import traceback
        traceback.print_exc()
    print(f"mobilenetv2 {command}: {' '.join(message.split())}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
