"""Every argument of the public API is bounded and checked, and a bad one is the package's
ArgumentError (a ValueError) naming it: never a TypeError, OverflowError or a silent change."""
from fractions import Fraction

import numpy as np
import pytest

from mobilenetv2 import MobileNetV2, model as model_module
from mobilenetv2.engines import pool as threadpool
from mobilenetv2.errors import ArgumentError


@pytest.fixture(scope="module")
def small():
    return MobileNetV2((96, 96, 3), alpha=0.35, weights=None, include_top=False)


def x96():
    return np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=model_module.MAX_ALPHA * 1.01), "alpha must be a positive number at most 4"),
    (dict(alpha=float("inf")), "alpha must be"),
    (dict(alpha=10 ** 400), "alpha must be"),
    (dict(alpha=Fraction(-1, 3)), "alpha must be"),
    (dict(alpha=1 + 0j), "alpha must be"),
    (dict(classes=model_module.MAX_CLASSES + 1), "classes must be a positive whole number at most 100000"),
    (dict(classes=10.0), "classes must be"),
    (dict(classes=True), "classes must be"),
    (dict(input_shape=(224.5, 224, 3)), r"input_shape height must be a whole number or None, got 224\.5"),
    (dict(input_shape=(224, 224, 3.0)), "input_shape channels must be a whole number"),
    (dict(input_shape=(10 ** 5, 64, 3)), "at most 4096"),
    (dict(input_shape=(64, 64, 0)), "channels must be a whole number from 1"),
    (dict(input_shape=(64, 64, 10 ** 6)), "channels must be a whole number from 1"),
    (dict(dtype="float33"), "dtype must be 'float32' or 'float64', got 'float33'"),
    (dict(dtype=None), "dtype must be 'float32' or 'float64', got None"),
    (dict(dtype=np.int32), "dtype must be"),
    (dict(dtype=[1]), "dtype must be"),
    (dict(threads=0), "threads must be None or a whole number from 1 to"),
    (dict(threads=-3), "threads must be"),
    (dict(threads=10 ** 30), "threads=1000000000000000000000000000000 is more than the"),
    (dict(threads=1.5), "threads must be"),
    (dict(threads=True), "threads must be"),
])
def test_constructor_bounds(kwargs, match):
    kwargs.setdefault("weights", None)
    kwargs.setdefault("include_top", "input_shape" not in kwargs)
    with pytest.raises(ArgumentError, match=match):
        MobileNetV2(**kwargs)


def test_fraction_alpha_is_the_same_model_as_its_float():
    a = MobileNetV2((96, 96, 3), alpha=Fraction(7, 20), weights=None)
    b = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
    assert a.alpha == 0.35 and a.count_params() == b.count_params()
    assert [layer.weight_shapes() for layer in a.layers] == [layer.weight_shapes() for layer in b.layers]


def test_numpy_scalars_are_accepted():
    m = MobileNetV2((np.int64(96), np.int32(96), 3), alpha=np.float32(0.5), classes=np.int16(10),
                    weights=None, threads=np.int8(2), dtype=np.dtype("float64"))
    assert m.input_shape == (96, 96, 3) and m.classes == 10 and m.threads == 2 and m.dtype == np.float64


def test_unsigned_numpy_counts_are_used_as_their_value():
    """-np.uint8(5) is 251 and 256 + np.uint8(128) overflows: decode_predictions(top=np.uint8(5))
    gave 749 classes (np.uint64: none), predict(batch_size=np.uint8(128)) on 300 images NumPy's
    OverflowError."""
    from mobilenetv2 import decode_predictions
    preds = np.arange(1000, dtype=np.float64)[None] / 1000
    for top in (np.uint8(5), np.uint64(5), np.int8(5)):
        assert [row[2] for row in decode_predictions(preds, top=top)[0]] == [0.999, 0.998, 0.997, 0.996, 0.995]
    m = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, include_top=False, pooling="avg")
    x = np.random.default_rng(0).uniform(-1, 1, (300, 32, 32, 3)).astype(np.float32)
    out = m.predict(x, batch_size=np.uint8(128))
    assert out.shape == (300, 1280)  # (1280 features at any alpha up to 1)
    assert np.array_equal(out, m.predict(x, batch_size=128))  # the same chunks (NumPy's BLAS rounds by batch)


def test_zero_d_integer_arrays_are_whole_numbers(tmp_path):
    """np.array(2) is a whole number to operator.index (and what a computation on arrays often
    hands on): every count takes it as its value, stored as an int.  It was refused everywhere
    ('classes must be a positive whole number ..., got array(7)'); a 0-d bool array is not a count."""
    from PIL import Image
    from mobilenetv2 import decode_predictions, load_image, post_process_semantic_segmentation, ray as mray
    from mobilenetv2.batch.job import BatchJob
    from mobilenetv2.dask import cached_job
    a = np.array
    m = MobileNetV2((a(32), 32, a(3)), alpha=0.35, weights=None, classes=a(7), threads=a(2))
    assert (m.input_shape, m.classes, m.threads) == ((32, 32, 3), 7, 2)
    assert all(type(v) is int for v in (*m.input_shape, m.classes, m.threads))
    x = np.zeros((3, 32, 32, 3), np.float32)
    assert m.predict(x, batch_size=a(2)).shape == (3, 7)
    assert m.macs(input_shape=(a(32), 32, 3)) == m.macs()
    assert [len(r) for r in decode_predictions(np.eye(2, 1000), top=a(3))] == [3, 3]
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(photo)
    assert load_image(photo, target_size=a(33)).shape == (33, 33, 3)
    assert load_image(photo, target_size=(a(34), a(35))).shape == (34, 35, 3)
    assert post_process_semantic_segmentation(np.zeros((1, 4, 4, 2)), [(a(5), a(6))])[0].shape == (5, 6)
    assert mray.part_rows(a(10), a(2), a(3)) == mray.part_rows(10, 2, 3)
    resources = mray.actor_resources(4, threads=a(1), actors=a(2))  # (== holds for array(2) too: the types)
    assert resources == mray.actor_resources(4, threads=1, actors=2) and list(map(type, resources)) == [int, float]
    job = BatchJob(kind="predict", alpha=0.35, size=a(32), weights=None, top=a(4), threads=a(1))
    assert (job.size, job.top, job.model.threads) == (32, 4, 1)
    assert cached_job(kind="predict", alpha=0.35, size=a(32), weights=None, top=a(4), threads=a(1)).top == 4
    for bad in (a(True), np.bool_(True), a(2.0), a([2])):
        with pytest.raises(ArgumentError, match="classes must be"):
            MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=bad)
        with pytest.raises(ArgumentError, match="batch_size must be"):
            m.predict(x, batch_size=bad)


def test_zero_d_float_arrays_are_real_numbers(tmp_path):
    """np.array(0.35) is the float it holds (what a computation on arrays hands on), as np.array(2)
    is a count: every real-valued argument takes it, stored as Python's float (a JSON report or
    config writes it).  It was refused ('alpha must be a positive number ..., got array(0.35)');
    a bool, a 1-d array, a complex number and an int past float's range (ray's cluster_cpus:
    OverflowError) are not."""
    import json
    from PIL import Image
    from mobilenetv2 import load_image, ray as mray
    from mobilenetv2.dask import cached_job
    from mobilenetv2.formats.hf_config import ConfigError
    from mobilenetv2.processing.hf_processing import processor_config
    from mobilenetv2.tools.compare import CompareError, compare
    a = np.array
    assert MobileNetV2((32, 32, 3), alpha=a(0.35), weights=None).alpha == 0.35
    assert cached_job(kind="predict", alpha=a(0.35), size=32, weights=None, top=4).model.alpha == 0.35
    photo = tmp_path / "p.png"
    Image.fromarray(np.arange(40 * 50 * 3, dtype=np.uint8).reshape(40, 50, 3)).save(photo)
    assert np.array_equal(load_image(photo, target_size=20, crop=a(0.5)), load_image(photo, target_size=20, crop=0.5))
    resources = mray.actor_resources(a(4.0), actor_cpus=a(0.5))
    assert resources == (4, 0.5) and type(resources[1]) is float
    cfg = processor_config({"image_mean": a(0.5), "image_std": np.float32(0.25), "rescale_factor": a(0.5)})
    assert (cfg.image_mean, cfg.image_std, cfg.rescale_factor) == ((0.5,) * 3, (0.25,) * 3, 0.5)
    assert json.loads(json.dumps(cfg.to_json()))["image_std"] == [0.25] * 3
    for bad in (a(True), np.bool_(True), a([0.5]), a(0.5j), 10 ** 400):
        with pytest.raises(ArgumentError, match="alpha must be"):
            MobileNetV2((32, 32, 3), alpha=bad, weights=None)
        with pytest.raises(ArgumentError, match="crop must be"):
            load_image(photo, crop=bad)
        with pytest.raises(ArgumentError, match="cluster_cpus must be"):
            mray.actor_resources(bad)
        with pytest.raises(ConfigError, match="image_mean must be"):
            processor_config({"image_mean": bad})
        with pytest.raises(CompareError, match="factor must be"):
            compare(tmp_path / "m.onnx", factor=bad)


def test_a_zero_d_bool_array_is_a_flag():
    """np.array(True) is the flag it holds, as np.bool_(True) and 1 are (Keras's ``if include_top:``
    takes them all): include_top and the C kernels' flags refused it ('include_top must be True or
    False, got array(True)'); 2, 0.5, "yes", None and a 1-d array are still refused."""
    from mobilenetv2.engines import native
    a = np.array
    x = np.zeros((1, 32, 32, 3), np.float32)
    for on in (True, np.bool_(True), a(True), 1, a(1)):
        m = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, include_top=on)
        assert m.include_top is True and m.predict(x).shape == (1, 1000)
    for off in (False, np.bool_(False), a(False), 0, a(0)):
        m = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, include_top=off)
        assert m.include_top is False and m.predict(x).shape == (1, 1, 1, 1280)
    for bad in (2, 0.5, "yes", None, a([True]), a(2)):
        with pytest.raises(ArgumentError, match="include_top must be True or False"):
            MobileNetV2((32, 32, 3), alpha=0.35, weights=None, include_top=bad)
    if native.available():
        from mobilenetv2.engines import c_kernels
        rng = np.random.default_rng(0)
        v, packed = rng.normal(0, 4, (5, 8)).astype(np.float32), c_kernels.pack_pointwise(
            rng.normal(0, 1, (8, 16)).astype(np.float32), np.zeros(16, np.float32))
        linear = c_kernels.pointwise(v, packed, 8, 16, relu6=a(False))
        assert (linear < 0).any() and (linear > 6).any()
        assert np.array_equal(c_kernels.pointwise(v, packed, 8, 16, relu6=a(True)), np.clip(linear, 0, 6))
        with pytest.raises(ArgumentError, match="relu6 must be True or False"):
            c_kernels.pointwise(v, packed, 8, 16, relu6=a([True]))


def test_a_zero_d_array_where_items_belong_is_an_argument_error(tmp_path):
    """A 0-d array has __iter__ and __len__, and both raise TypeError: as features' layers,
    set_weights' arrays, summary/macs' input_shape, an export's input_size, the segmentation
    post-processing's target_sizes or a kernel's pads it got past the checks to a bare TypeError
    ('iteration over a 0-d array', 'len() of unsized object')."""
    from mobilenetv2 import export_tflite, post_process_semantic_segmentation
    from mobilenetv2.engines import native
    m = MobileNetV2((None, None, 3), alpha=0.35, weights=None, include_top=False)
    x = np.zeros((1, 32, 32, 3), np.float32)
    calls = {"layers": lambda v: m.features(x, v), "set_weights": m.set_weights,
             "input_shape": lambda v: m.macs(input_shape=v), "summary": lambda v: m.summary(v, print_fn=print),
             "input_size": lambda v: export_tflite(m, tmp_path / "e.tflite", input_size=v),
             "target_sizes": lambda v: post_process_semantic_segmentation(np.zeros((1, 4, 4, 2)), v)}
    if native.available():
        from mobilenetv2.engines import c_kernels
        calls["pads"] = lambda v: c_kernels.dwconv3x3(np.zeros((1, 8, 8, 16), np.float32),
                                                     np.zeros((3, 3, 16), np.float32), np.zeros(16, np.float32),
                                                     1, v, True)
    for what, call in calls.items():
        for value in (np.array(2), np.array("Conv1"), np.array(None, dtype=object)):
            with pytest.raises(ArgumentError):
                call(value)


def test_a_bytes_path_is_a_path_wherever_one_is_taken(tmp_path):
    """model.load_weights, from_pretrained and load_image took a bytes path; MobileNetV2(weights=...)
    and the batch job refused it ('weights must be ... the path of a weights file, got b...'),
    hf_preprocess raised a bare TypeError and compare a CompareError ('OTHER must be a path')."""
    import json
    import os
    import mobilenetv2 as M
    from mobilenetv2.batch.job import BatchJob
    from mobilenetv2.formats.hf_config import HFConfig
    saved = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=7)
    saved.set_weights([w + 0.5 for w in saved.get_weights()])  # not the initial weights
    h5 = os.fsencode(saved.save_weights(tmp_path / "w.h5"))
    loaded = MobileNetV2((32, 32, 3), alpha=0.35, weights=h5, classes=7)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), saved.get_weights()))
    backbone = os.fsencode(MobileNetV2((32, 32, 3), alpha=0.35, weights=None, include_top=False)
                           .save_weights(tmp_path / "no_top.h5"))
    job = BatchJob(kind="features", alpha=0.35, size=32, weights=backbone, threads=1)
    assert job.weights == os.fsdecode(backbone) and json.dumps(job.config())
    folder = M.save_pretrained(M.hf.HFMobileNetV2(HFConfig(depth_multiplier=0.35, image_size=40,
                                                             id2label={0: "a", 1: "b"})), tmp_path / "hf")
    image = np.random.default_rng(0).integers(0, 256, (50, 60, 3), np.uint8)
    assert np.array_equal(M.hf_preprocess(image, os.fsencode(folder)), M.hf_preprocess(image, str(folder)))
    assert M.hf_preprocess(image, os.fsencode(folder)).shape == (1, 40, 40, 3)  # its config's size, not 224
    hf = M.from_pretrained(os.fsencode(folder))  # a transformers model's load_weights: a bare TypeError
    hf.set_weights([w + 0.5 for w in hf.get_weights()])
    hf.load_weights(os.fsencode(os.path.join(folder, "model.safetensors")))
    assert all(np.array_equal(a, b) for a, b in zip(hf.get_weights(), M.from_pretrained(folder).get_weights()))
    try:
        onnx_path = M.export_onnx(MobileNetV2((32, 32, 3), alpha=0.35, weights=backbone, include_top=False),
                                  tmp_path / "m.onnx")
        import onnxruntime  # noqa: F401
    except ImportError:
        return
    np.save(tmp_path / "x.npy", np.zeros((1, 32, 32, 3), np.float32))
    report = M.compare(os.fsencode(onnx_path), weights=backbone, batch=os.fsencode(tmp_path / "x.npy"))
    assert report["agrees"] and report["other"]["source"] == str(onnx_path)
    assert str(tmp_path / "x.npy") in report["input"]["source"] and os.fsdecode(backbone) in report["weights"]["source"]


def test_a_numpy_string_path_is_named_as_a_str(tmp_path):
    """np.str_ (an element of an array of paths) is a str whose repr reads np.str_('x.h5'): the
    messages named the file so ('[Errno 2] weights file not found: np.str_('/.../x.h5')')."""
    import mobilenetv2 as M
    from mobilenetv2.errors import Error
    (tmp_path / "bad.h5").write_bytes(b"not HDF5")
    paths = np.array([str(tmp_path / name) for name in ("x.h5", "bad.h5", "x.png", "hf", "m.onnx")])
    m = MobileNetV2((32, 32, 3), alpha=0.35, weights=None)
    calls = [(paths[0], lambda: MobileNetV2((32, 32, 3), alpha=0.35, weights=paths[0])),
             (paths[0], lambda: m.load_weights(paths[0])),
             (paths[1], lambda: MobileNetV2((32, 32, 3), alpha=0.35, weights=paths[1])),
             (paths[2], lambda: M.load_image(paths[2])),
             (paths[3], lambda: M.from_pretrained(paths[3])),
             (paths[4], lambda: M.compare(paths[4])),
             (tmp_path, lambda: M.export_onnx(m, np.str_(tmp_path)))]
    for path, call in calls:
        with pytest.raises((Error, OSError)) as raised:
            call()
        assert repr(str(path)) in str(raised.value) and "np.str_" not in str(raised.value), str(raised.value)


def test_ray_cpu_counts_take_any_real_number():
    """actor_resources(Fraction(1, 2)) raised a TypeError formatting its own message (a Fraction has
    no ':g'); a Fraction of CPUs is the float it equals."""
    from mobilenetv2 import ray as mray
    assert mray.actor_resources(Fraction(5, 2)) == mray.actor_resources(2.5) == (2, 1.0)
    assert mray.actor_resources(4, actors=2, actor_cpus=Fraction(3, 2)) == (2, 1.5)
    with pytest.raises(ArgumentError, match="leave no CPU for the read and write tasks on a cluster of 0.5 CPUs"):
        mray.actor_resources(Fraction(1, 2))


def test_the_dask_job_cache_does_not_take_a_bad_setting_for_an_equal_good_one():
    """True == 1 and 32.0 == 32 hash alike: once the job with threads=1 and size=32 was cached,
    cached_job(threads=True) or cached_job(size=32.0) returned it instead of refusing the setting
    (as BatchJob and a first call do)."""
    from mobilenetv2.dask import cached_job
    job = dict(kind="predict", alpha=0.35, size=32, weights=None, top=5, threads=1)
    cached_job(**job)
    for name, bad in (("threads", True), ("size", 32.0), ("top", np.float64(5))):
        with pytest.raises(ArgumentError, match=f"{name} must be"):
            cached_job(**dict(job, **{name: bad}))


def test_summary_prints_with_print_fn_none_as_keras_does(small, capsys):
    """Keras's summary(print_fn=None) prints; ours raised "'NoneType' object is not callable"."""
    small.summary(print_fn=None)
    lines = []
    small.summary(print_fn=lines.append)
    assert capsys.readouterr().out.splitlines() == lines and any("block_1_expand" in line for line in lines)
    with pytest.raises(ArgumentError, match="print_fn must be a function"):
        small.summary(print_fn="x")


def test_thread_limit_follows_the_machine():
    import os
    cores = len(os.sched_getaffinity(0))
    assert threadpool.max_threads() == max(64, 4 * cores)
    assert MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=threadpool.max_threads()).threads \
        == threadpool.max_threads()


@pytest.mark.parametrize("layers, match", [
    (None, "layers must be a layer name or a list of layer names, got None"),
    (5, "layers must be a layer name"),
    (b"Conv1", "layers must be a layer name"),
    ([1], "layer names must be strings, got 1"),
    ([], "at least one layer name"),
])
def test_features_layer_argument(small, layers, match):
    with pytest.raises(ArgumentError, match=match):
        small.features(x96(), layers)


@pytest.mark.parametrize("runs", [0, -1, 1.5, True, "3", model_module.MAX_RUNS + 1])
def test_profile_runs(small, runs):
    with pytest.raises(ArgumentError, match="runs must be a whole number from 1 to"):
        small.profile(x96(), runs=runs)


def test_set_weights_refuses_a_negative_moving_variance():
    m = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, include_top=False)
    arrays = m.get_weights()
    names = [w for layer in m.weighted_layers() for w in layer.weight_names]
    k = [i for i, n in enumerate(names) if n == "moving_variance"][5]
    arrays[k] = arrays[k].copy()
    arrays[k][3] = -0.25
    with pytest.raises(ValueError, match=r"'block_1_project_BN' weight 'moving_variance' has negative values \(as low as -0\.25\)"):
        m.set_weights(arrays)


@pytest.mark.parametrize("dtype,bad,match", [
    (np.float64, 1e39, r"'Conv1' weight 'kernel' has values beyond the range of float32, the model's dtype "
                       r"\(as large as 1e\+39\)"),
    (np.complex128, 1j, r"'Conv1' weight 'kernel': expected real numbers, got dtype complex128"),
    (np.str_, "0.5", r"'Conv1' weight 'kernel': expected real numbers, got dtype <U1"),
    ("M8[s]", 1, r"'Conv1' weight 'kernel': expected real numbers, got dtype datetime64\[s\]"),
])
def test_set_weights_refuses_what_the_model_s_dtype_cannot_hold(dtype, bad, match):
    """A float64 weight past float32's range became inf in a float32 model (the NumPy engine then
    answered, wrongly; the C engine failed its next call with 'batch-norm folding needs finite
    weights'); a complex one lost its imaginary part; a string one was NumPy's TypeError."""
    from mobilenetv2.errors import WeightsError
    m = MobileNetV2((48, 48, 3), alpha=0.35, weights=None, classes=3)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 48, 48, 3)).astype(np.float32)
    want = m.predict(x)
    arrays = m.get_weights()
    arrays[0] = np.zeros(arrays[0].shape, dtype)
    arrays[0][0, 0, 0, 0] = bad
    for call in (lambda: m.set_weights(arrays), lambda: m.get_layer("Conv1").set_weights(arrays[:1])):
        with pytest.raises(WeightsError, match=match):
            call()
    assert np.array_equal(m.predict(x), want)  # unchanged
    if dtype is np.float64:  # a float64 model holds it
        f64 = MobileNetV2((48, 48, 3), alpha=0.35, weights=None, classes=3, dtype="float64")
        f64.set_weights(arrays)
        assert f64.get_layer("Conv1").weights[0][0, 0, 0, 0] == 1e39


def test_set_weights_takes_real_numbers_of_any_width():
    """Integers, bools, float16 and ml_dtypes' bfloat16 (what onnx reads a bfloat16 initializer as)
    are numbers: taken exactly."""
    m = MobileNetV2((48, 48, 3), alpha=0.35, weights=None, classes=3)
    layer = m.get_layer("Conv1")
    kernels = [np.arange(layer.weights[0].size).reshape(layer.weights[0].shape) % 7 - 3,
               layer.weights[0] > 0, layer.weights[0].astype(np.float16)]
    try:
        import ml_dtypes
        kernels.append(layer.weights[0].astype(ml_dtypes.bfloat16))
    except ImportError:
        pass
    for kernel in kernels:
        layer.set_weights([kernel])
        assert np.array_equal(layer.weights[0], kernel.astype(np.float32))
