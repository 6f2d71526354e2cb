"""Every public call, every argument, a pool of hostile values: each call returns, or raises the
package's own Error, or (for a path of the wrong type) the TypeError Python's os module raises.
Nothing else: no bare ValueError from NumPy (``an_array in ("avg", "max")``), no KeyError,
MemoryError or ZeroDivisionError from inside the package.  Found this way: an array as
``pooling`` or ``engine``, a dict as ``target_sizes``, (10**6, 10**6) as a target size."""
import inspect
import os

import numpy as np
import pytest

import mobilenetv2 as M
from mobilenetv2 import MobileNetV2
from mobilenetv2.formats.hf_config import HFConfig

HOSTILE = [0, -1, 1.5, float("nan"), float("inf"), "x", "", b"", None, True, 10 ** 12, [], (1, 2, 3), (0, 0),
           np.int64(-3), object(), {"a": 1}, np.zeros((2, 2)), np.full(3, np.nan), np.array(7)]


def _path_type_error(exc):
    return isinstance(exc, TypeError) and "expected str, bytes or os.PathLike" in str(exc)


def _calls(tmp_path):
    """(name, function, keyword arguments that work, the arguments to make hostile)."""
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=7)
    hf_folder = M.save_pretrained(M.hf.HFMobileNetV2(HFConfig(depth_multiplier=0.35, image_size=32,
                                                             id2label={i: str(i) for i in range(5)})),
                                  tmp_path / "hf")
    hf = M.from_pretrained(hf_folder)
    x = np.zeros((1, 32, 32, 3), np.float32)
    photo = tmp_path / "photo.png"
    from PIL import Image
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(photo)
    calls = [
        ("MobileNetV2", MobileNetV2, dict(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=7),
         ["input_shape", "alpha", "include_top", "weights", "pooling", "classes", "classifier_activation",
          "dtype", "threads", "top_pooling", "engine"]),
        ("predict", model.predict, dict(x=x, batch_size=1), ["x", "batch_size"]),
        ("features", model.features, dict(x=x, layers=["block_1_expand"]), ["x", "layers"]),
        ("get_layer", model.get_layer, dict(name="Conv1"), ["name"]),
        ("profile", model.profile, dict(x=x, runs=1), ["x", "runs"]) if M.engines.native.available() else None,
        ("set_weights", model.set_weights, dict(arrays=model.get_weights()), ["arrays"]),
        ("summary", model.summary, dict(input_shape=None, print_fn=lambda line: None), ["input_shape"]),
        ("macs", model.macs, dict(input_shape=(32, 32, 3)), ["input_shape"]),
        ("preprocess_input", M.preprocess_input, dict(x=np.zeros((4, 4, 3), np.uint8)), ["x"]),
        ("decode_predictions", M.decode_predictions, dict(preds=np.zeros((1, 1000)), top=5), ["preds", "top"]),
        ("load_image", M.load_image, dict(path=photo, target_size=(32, 32)),
         ["path", "target_size", "interpolation", "crop"]),
        ("export_tflite", M.export_tflite, dict(model=model, path=tmp_path / "e.tflite"),
         ["path", "batch", "input_size"]),
        ("from_pretrained", M.from_pretrained, dict(path=hf_folder),
         ["path", "dtype", "threads", "top_pooling", "engine"]),
        ("save_pretrained", M.save_pretrained, dict(model=model, path=tmp_path / "sp"), ["model", "path"]),
        ("hf predict", hf.predict, dict(x=x), ["x", "batch_size"]),
        ("hf features", hf.features, dict(x=x, layers=["layer.0"]), ["x", "layers"]),  # (5: 'int' not iterable)
        ("hf trace", hf.trace, dict(x=x, names="hf"), ["x", "names"]),  # (an array: NumPy's ValueError)
        ("hf get_layer", hf.get_layer, dict(name="layer.0"), ["name"]),  # (a list: 'unhashable type')
        ("hf_preprocess", M.hf_preprocess, dict(image=np.zeros((40, 50, 3), np.uint8), preprocessor_config=hf_folder),
         ["image", "preprocessor_config", "backend"]),
        ("post_process_semantic_segmentation", M.post_process_semantic_segmentation,
         dict(logits=np.zeros((1, 4, 4, 3), np.float32), target_sizes=[(5, 5)]), ["logits", "target_sizes"]),
    ]
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return calls
    onnx_path = M.export_onnx(model, tmp_path / "m.onnx")
    return calls + [
        ("export_onnx", M.export_onnx, dict(model=model, path=tmp_path / "e.onnx"),
         ["path", "batch", "opset", "input_size"]),
        ("compare", M.compare, dict(other=onnx_path, random=1),
         ["weights", "images", "random", "seed", "batch", "mapping", "factor"]),
    ]


def _foreign(name, fn, good, args, values, allowed=lambda exc, arg, name: False):
    """What the call ``fn(**good)`` with each of ``args`` set to each of ``values`` raised besides
    an Error (and what ``allowed`` lets through), one line each."""
    fn(**good)  # the baseline works
    found = []
    for arg in args:
        for value in values:
            try:
                with np.errstate(all="ignore"):
                    fn(**dict(good, **{arg: value}))
            except M.Error:
                pass
            except Exception as exc:  # noqa: BLE001 (the point: nothing else may escape)
                if not allowed(exc, arg, name):
                    found.append(f"{name}({arg}={value!r:.40}): {type(exc).__name__}: {exc}")
    return found


def _named_type_or_os_error(exc, arg, name):
    """An OSError naming its file, os's TypeError for a path of another type, or a TypeError of the
    package's own that names the argument or the call."""
    if isinstance(exc, OSError):
        return exc.filename is not None
    return isinstance(exc, TypeError) and (_path_type_error(exc) or arg in str(exc) or name.split()[-1] in str(exc))


def test_every_public_call_refuses_hostile_arguments_with_its_own_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    foreign = []
    for name, fn, good, hostile in filter(None, _calls(tmp_path)):
        params = inspect.signature(fn).parameters
        assert set(hostile) <= set(params), (name, set(hostile) - set(params))
        foreign += _foreign(name, fn, good, hostile, HOSTILE, _named_type_or_os_error)
    assert not foreign, "\n".join(foreign)
    assert not (tmp_path.parent / (tmp_path.name + ".png")).exists()
    assert os.getcwd() == str(tmp_path)


KERNEL_HOSTILE = HOSTILE + [(0, 0, 0, 0), (-1, 0, 0, 0), (10 ** 9, 0, 0, 0), (0, 10 ** 6), (5, 2), (1.5, 0, 0, 0),
                            np.zeros((1, 8, 8, 3), np.float64), np.zeros((0, 8, 8, 3), np.float32),
                            np.zeros((1, 8, 8, 0), np.float32), np.zeros((1, 8, 8, 16), np.float32)[:, ::2]]


@pytest.mark.skipif(not M.engines.native.available(), reason="the C extension is not built")
def test_the_kernel_wrappers_refuse_hostile_arguments_before_c_sees_them():
    """The C side checks nothing: every wrapper argument is checked in Python first.  Sizes that
    are not whole numbers (1.5, "2", an array) reached cffi's TypeError or NumPy's ValueError, a
    string eps float()'s; none of them reached C, and none may (this test would crash if one did)."""
    from mobilenetv2.engines import c_kernels as ck
    rng = np.random.default_rng(0)
    f32 = np.float32
    x = rng.uniform(-1, 1, (1, 8, 8, 16)).astype(f32)
    w_pw, b24 = rng.uniform(-1, 1, (16, 24)).astype(f32), np.zeros(24, f32)
    packed = ck.pack_pointwise(w_pw, b24)
    w_dw, b16 = rng.uniform(-1, 1, (3, 3, 16)).astype(f32), np.zeros(16, f32)
    xs, w_st = rng.uniform(-1, 1, (1, 9, 9, 3)).astype(f32), rng.uniform(-1, 1, (3, 3, 3, 16)).astype(f32)
    calls = [
        ("pack_pointwise", ck.pack_pointwise, dict(w=w_pw, bias=b24)),
        ("pointwise", ck.pointwise, dict(x=x.reshape(64, 16), packed=packed, cin=16, cout=24, relu6=True,
                                         residual=np.zeros((64, 24), f32), rows=None, panels=None)),
        ("dwconv3x3", ck.dwconv3x3, dict(x=x, w=w_dw, bias=b16, stride=1, pads=(1, 1, 1, 1), relu6=True, rows=None)),
        ("stem", ck.stem, dict(x=xs, w=w_st, bias=b16, pads=(0, 1, 0, 1), relu6=True, rows=None)),
        ("stem_row", ck.stem_row, dict(x=xs[0], w=w_st, bias=b16, pads=(0, 1, 0, 1), i=0, relu6=True, out=None)),
        ("global_pool", ck.global_pool, dict(x=x, kind="avg", channels=None)),
        ("softmax", ck.softmax, dict(x=rng.uniform(-1, 1, (2, 10)).astype(f32))),
        ("fold_batchnorm", ck.fold_batchnorm, dict(w=rng.uniform(-1, 1, (1, 1, 16, 24)).astype(f32), gamma=b24 + 1,
                                                   beta=b24, mean=b24, var=b24 + 1, eps=1e-3)),
        ("dwconv3x3_dilated", ck.dwconv3x3_dilated, dict(x=x, w=w_dw, bias=b16, stride=1, dilation=2,
                                                         pads=(2, 2, 2, 2), relu6=True, rows=None)),
        ("resize_scales", ck.resize_scales, dict(h=4, w=5, oh=8, ow=9, align_corners=False)),
        ("resize_bilinear", ck.resize_bilinear, dict(x=x, oh=9, ow=11, align_corners=False, rows=None)),
        ("relu6", ck.relu6, dict(x=x)),
        ("count_nonfinite", ck.count_nonfinite, dict(x=x)),
    ]
    foreign = [line for name, fn, good in calls for line in _foreign(name, fn, good, good, KERNEL_HOSTILE)]
    assert not foreign, "\n".join(foreign)


def test_the_batch_job_and_the_cluster_helpers_refuse_hostile_arguments():
    """The batch command's job (what features/predict, mobilenetv2.dask and mobilenetv2.ray
    build) and the Ray helpers users call in their own pipelines: an array as ``kind`` or
    ``weights`` raised NumPy's ValueError, a list in dask's cached job the cache's "unhashable
    type", ``part_rows(actors=0)`` a ZeroDivisionError, ``actor_resources("4")`` a TypeError."""
    from mobilenetv2 import dask as mdask, ray as mray
    from mobilenetv2.batch.job import BatchJob
    job = dict(kind="predict", alpha=0.35, size=32, weights=None, layer=None, top=5, dtype="float32", threads=1)
    foreign = _foreign("BatchJob", BatchJob, job, job, HOSTILE, _named_type_or_os_error)
    foreign += _foreign("replicas", BatchJob(**job).replicas, dict(count=2), ["count"], HOSTILE)
    foreign += _foreign("cached_job", mdask.cached_job, job, job, HOSTILE, _named_type_or_os_error)
    foreign += _foreign("actor_resources", mray.actor_resources, dict(cluster_cpus=4, threads=1, actors=None,
                                                                      actor_cpus=None),
                        ["cluster_cpus", "threads", "actors", "actor_cpus"], HOSTILE)
    foreign += _foreign("part_rows", mray.part_rows, dict(images=10, actors=2, rows_per_part=4096),
                        ["images", "actors", "rows_per_part"], HOSTILE)
    assert not foreign, "\n".join(foreign)


def test_the_variant_name_and_safetensors_writer_refuse_hostile_arguments(tmp_path):
    """parse_variant(None) was an AttributeError ('NoneType' has no 'split'), the registry's
    weights_filename(rows=inf) an OverflowError; save_file with a
    tuple of tensors an IndexError, with a number as metadata an AttributeError."""
    from mobilenetv2.formats.registry import weights_filename
    from mobilenetv2.formats.safetensors import save_file
    from mobilenetv2.network.variants import parse_variant
    foreign = _foreign("parse_variant", parse_variant, dict(name="0.35_96"), ["name"], HOSTILE)
    foreign += _foreign("weights_filename", weights_filename, dict(alpha=0.35, rows=96, include_top=True),
                        ["alpha", "rows"], HOSTILE)  # rows=inf was float->int's OverflowError
    foreign += _foreign("save_file", save_file, dict(tensors={"a": np.zeros(2, np.float32)},
                                                     path=tmp_path / "s.safetensors", metadata=None),
                        ["tensors", "metadata"], HOSTILE)
    assert not foreign, "\n".join(foreign)
