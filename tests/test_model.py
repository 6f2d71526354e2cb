"""The model object: Keras's constructor arguments and errors, input checks, and the API."""
import numpy as np
import pytest

from mobilenetv2 import MobileNetV2
from mobilenetv2.errors import ArgumentError
from mobilenetv2.network import arch
from mobilenetv2.network.variants import VARIANTS, PUBLISHED, variant_table


@pytest.fixture(scope="module")
def small():
    return MobileNetV2((96, 96, 3), alpha=0.35, weights=None)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("kwargs,match", [
    (dict(alpha=0), "alpha must be a positive"),
    (dict(alpha=-1.0), "alpha must be a positive"),
    (dict(alpha=float("nan")), "alpha must be a positive"),
    (dict(alpha="1.0"), "alpha must be a positive"),
    (dict(alpha=True), "alpha must be a positive"),
    (dict(input_shape=(31, 64, 3)), "at least 32"),
    (dict(input_shape=(64, 64)), r"\(height, width, channels\)"),
    (dict(input_shape="big"), r"\(height, width, channels\)"),
    (dict(dtype="float16"), "float32' or 'float64"),
    (dict(pooling="min", include_top=False), "pooling must be"),
    (dict(classes=0), "classes must be a positive"),
    (dict(classifier_activation="relu"), "classifier_activation"),
    (dict(weights=123), "weights must be"),
    (dict(include_top=True, input_shape=(None, None, 3)), "static"),
])
def test_bad_arguments(kwargs, match):
    kwargs.setdefault("weights", None)
    with pytest.raises(ValueError, match=match):
        MobileNetV2(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(alpha=0.6), "imagenet weights exist for alpha"),
    (dict(classes=10), "classes must be 1000"),
    (dict(input_shape=(100, 100, 3)), "input_shape must be one of"),
    (dict(input_shape=(96, 96, 1), include_top=False), "3 input channels"),
])
def test_bad_arguments_with_imagenet_weights(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MobileNetV2(weights="imagenet", **kwargs)


@pytest.mark.parametrize("x,match", [
    (np.zeros((1, 96, 96), np.float32), "got shape"),
    (np.zeros((1, 1, 96, 96, 3), np.float32), "got shape"),
    (np.zeros((1, 96, 96, 4), np.float32), "3 channels"),
    (np.zeros((1, 96, 96, 3), np.uint8), "preprocess_input"),
    (np.zeros((1, 96, 96, 3), np.complex64), "floating-point"),
    (np.array([["a"]]), "floating-point"),
    (np.zeros((1, 64, 64, 3), np.float32), r"takes inputs of \(96, 96, 3\)"),
    (np.zeros((0, 96, 96, 3), np.float32), "empty"),
])
def test_bad_inputs(small, x, match):
    with pytest.raises(ValueError, match=match):
        small.predict(x)


@pytest.mark.parametrize("value, says", [(np.nan, "NaN or inf"), (np.inf, "NaN or inf"), (-np.inf, "NaN or inf"),
                                         (1e39, r"values beyond the range of float32 \(\|x\| > 3.4e\+38\)"),
                                         (-1e300, r"values beyond the range of float32")])
def test_non_finite_input(small, value, says):
    """NaN, infinity, and a finite float64 value that is infinite once cast to the model's float32
    (said as such: it was 'NaN or inf', which the input did not hold)."""
    x = rand(2, 96, 96, 3).astype(np.float64)
    x[1, 50, 3, 2] = value
    for call in (small.predict, small, lambda x: small.features(x, "Conv1"), small.trace,
                 lambda x: small.predict(x, batch_size=1)):
        with pytest.raises(ValueError, match=says):
            call(x)


@pytest.mark.parametrize("engine", ["auto", "numpy"])
def test_predict_in_chunks_refuses_a_nan_in_a_later_chunk_before_running_any(monkeypatch, engine):
    """predict in several chunks checks the whole batch first (no chunk runs, then fails); in one
    chunk the run's own check (the C stem's, or NumPy's before the layers) finds it."""
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, engine=engine)
    x = rand(3, 32, 32, 3)
    x[2, 31, 31, 2] = np.nan
    calls = []
    forward = model._forward
    monkeypatch.setattr(model, "_forward", lambda chunk: calls.append(len(chunk)) or forward(chunk))
    with pytest.raises(ValueError, match="NaN or inf"):
        model.predict(x, batch_size=1)
    assert calls == []
    with pytest.raises(ValueError, match="NaN or inf"):
        model.predict(x, batch_size=3)
    assert calls == [3]
    x[2, 31, 31, 2] = 0.5
    assert model.predict(x, batch_size=1).shape == (3, 1000) and calls == [3, 1, 1, 1]


def test_too_small_for_any_size_model():
    model = MobileNetV2(None, alpha=0.35, include_top=False, weights=None)
    assert model.input_shape == (None, None, 3)
    with pytest.raises(ValueError, match="at least 32"):
        model.predict(np.zeros((1, 31, 40, 3), np.float32))


def test_default_shapes_follow_keras():
    assert MobileNetV2(weights=None).input_shape == (224, 224, 3)
    assert MobileNetV2(include_top=False, weights=None).input_shape == (None, None, 3)
    assert MobileNetV2((160, 160, 3), include_top=False, weights=None).weights_rows == 160
    assert MobileNetV2((100, 120, 3), include_top=False, weights=None).weights_rows == 224


def test_single_image_is_a_batch_of_one(small):
    x = rand(96, 96, 3)
    np.testing.assert_array_equal(small.predict(x), small.predict(x[None]))
    assert small(x).shape == (1, 1000)


def test_predict_batches_agree_with_one_call(small):
    x = rand(5, 96, 96, 3)
    whole = small.predict(x, batch_size=32)
    assert whole.shape == (5, 1000)
    np.testing.assert_allclose(small.predict(x, batch_size=2), whole, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(whole.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        small.predict(x, batch_size=0)


def test_features_returns_named_layers_and_stops_early(small, monkeypatch):
    x = rand(2, 96, 96, 3)
    names = ["block_3_expand_relu", "Conv1", "block_2_add"]
    trace = small.trace(x)

    later = small.get_layer("block_3_depthwise")

    class Boom(type(later)):
        def __call__(self, *args):
            raise AssertionError("a layer after the last one asked for was computed")

    monkeypatch.setattr(later, "__class__", Boom)
    feats = small.features(x, names)
    assert list(feats) == names
    for name in names:
        np.testing.assert_array_equal(feats[name], trace[name])


def test_features_errors(small):
    x = rand(1, 96, 96, 3)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        small.features(x, ["Conv1", "nope"])
    with pytest.raises(ValueError, match="at least one"):
        small.features(x, [])
    with pytest.raises(ValueError, match="^'input_layer' is the input itself, not an activation"):
        small.features(x, ["input_layer"])


def test_trace_has_every_layer_with_keras_shapes(small):
    trace = small.trace(rand(1, 96, 96, 3))
    assert list(trace) == [layer.name for layer in small.layers[1:]]
    shapes = arch.output_shapes(small.layers, (96, 96, 3))
    for name, y in trace.items():
        assert y.shape == (1,) + shapes[name], name
    assert trace["Conv1"].shape == (1, 48, 48, 16)
    assert trace["out_relu"].shape == (1, 3, 3, 1280)
    assert trace["predictions"].shape == (1, 1000)
    assert small.get_layer("block_4_add").inputs == ("block_3_project_BN", "block_4_project_BN")


def test_any_size_model_pads_like_a_static_one():
    dynamic = MobileNetV2(None, alpha=0.5, include_top=False, pooling="avg", weights=None)
    for h, w in [(33, 47), (64, 64), (97, 32)]:
        static = MobileNetV2((h, w, 3), alpha=0.5, include_top=False, pooling="avg", weights=None)
        x = rand(1, h, w, 3, seed=h)
        np.testing.assert_array_equal(dynamic.predict(x), static.predict(x))


def test_float64_mode_runs_in_float64_and_agrees_with_float32():
    m32 = MobileNetV2((96, 96, 3), alpha=0.5, weights=None, classifier_activation=None)
    m64 = MobileNetV2((96, 96, 3), alpha=0.5, weights=None, classifier_activation=None, dtype="float64")
    x = rand(2, 96, 96, 3)
    y64 = m64.predict(x)
    assert y64.dtype == np.float64 and m64.predict(x.astype(np.float64)).dtype == np.float64
    assert all(w.dtype == np.float64 for w in m64.get_weights())
    y32 = m32.predict(x)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4 * np.abs(y64).max())


def test_weights_roundtrip_and_errors(small):
    weights = small.get_weights()
    assert sum(w.size for w in weights) == small.count_params() == 1691208
    other = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
    other.set_weights([w * 0.5 for w in weights])
    np.testing.assert_array_equal(other.get_layer("Conv1").weights[0], small.get_layer("Conv1").weights[0] * 0.5)
    with pytest.raises(ValueError, match="takes 262 arrays"):
        other.set_weights(weights[:-1])
    bad = list(weights)
    bad[0] = bad[0][..., :8]
    with pytest.raises(ValueError, match=r"'Conv1' weight 'kernel': expected shape \(3, 3, 3, 16\)"):
        other.set_weights(bad)
    bad[0] = np.full_like(weights[0], np.nan)
    with pytest.raises(ValueError, match="NaN"):
        other.set_weights(bad)
    with pytest.raises(ValueError, match="no layer named"):
        small.get_layer("block_99_add")


def test_summary_lists_layers_params_and_macs():
    lines = []
    MobileNetV2(weights=None).summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Total params: 3,538,984" in text
    assert "Total MACs: 300,774,272 (300.8 M)" in text
    for name in ("Conv1 (Conv2D)", "block_1_pad (ZeroPadding2D)", "block_16_project_BN", "predictions (Dense)"):
        assert name in text
    conv1 = next(line for line in lines if line.startswith("Conv1 "))
    assert "(None, 112, 112, 32)" in conv1 and "864" in conv1 and "10,838,016" in conv1


def test_macs_of_another_input_shape():
    """A model of any size counts the shape asked for (MACs grow with the pixels); a model of one
    size counts that size and refuses any other."""
    flexible = MobileNetV2((None, None, 3), alpha=0.35, weights=None, include_top=False)
    fixed = MobileNetV2((96, 128, 3), alpha=0.35, weights=None, include_top=False)
    assert flexible.macs((96, 128, 3)) == fixed.macs() == fixed.macs((96, 128, 3))
    assert flexible.macs((224, 224, 3)) == flexible.macs() > fixed.macs()
    for shape in ((128, 96, 3), (96, 96, 3), (96, 128, 1)):
        with pytest.raises(ValueError, match="takes inputs of"):
            fixed.macs(shape)
    with pytest.raises(ValueError, match="takes inputs of"):
        flexible.macs((96, 128, 4))


def test_variant_table_reproduces_the_published_figures():
    table = variant_table()
    assert len(table) == len(VARIANTS) == 22
    for row in table:
        macs_m, params_m, _, _ = PUBLISHED[row["alpha"], row["rows"]]
        assert row["macs_m"] == macs_m, row["variant"]
        assert row["params_m"] == params_m, row["variant"]
    one = next(r for r in table if r["variant"] == "1.0_224")
    assert one["keras_params"] == 3538984 and one["top1"] == 71.8


def test_save_weights_roundtrip_leaves_one_file(tmp_path, small):
    import h5py
    path = small.save_weights(tmp_path / "small.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.h5"]
    with h5py.File(path, "r") as f:  # the Keras 2 layout: every layer listed, weights by name
        names = [n.decode() for n in f.attrs["layer_names"]]
        assert names == [layer.name for layer in small.layers]
        assert [n.decode() for n in f["Conv1"].attrs["weight_names"]] == ["Conv1/kernel:0"]
    again = MobileNetV2((96, 96, 3), alpha=0.35, weights=path)
    for a, b in zip(small.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_imagenet_top_takes_each_official_square_size_and_no_other():
    """Keras's obtain_input_shape: with the classifier and imagenet weights, (R, R, 3) for an
    official R loads R's weights; a non-square shape is refused (survivor of the mutation pass)."""
    from mobilenetv2.model import _input_shape
    for r in (96, 128, 160, 192, 224):  # Keras's list, not ours read back
        assert _input_shape((r, r, 3), True, "imagenet") == ((r, r, 3), r)
    for shape in ((192, 160, 3), (225, 225, 3), (100, 100, 3)):
        with pytest.raises(ValueError, match="input_shape must be one of"):
            _input_shape(shape, True, "imagenet")
    assert _input_shape((192, 160, 3), False, None) == ((192, 160, 3), 224)


def test_imagenet_backbone_warns_exactly_where_224_is_loaded_for_another_size():
    """Keras warns when input_shape is undefined, non-square or not an official size and loads the
    224 weights; an official square size loads its own file, silently."""
    import warnings
    from mobilenetv2.model import _input_shape
    for shape in (None, (100, 100, 3), (160, 192, 3)):
        with pytest.warns(UserWarning, match="the weights for 224x224 are loaded"):
            assert _input_shape(shape, False, "imagenet")[1] == 224
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _input_shape((160, 160, 3), False, "imagenet") == ((160, 160, 3), 160)
        assert _input_shape((100, 100, 3), False, None) == ((100, 100, 3), 224)  # no weights: no warning


@pytest.mark.parametrize("name, bad", [("plan_cache_bytes", -1), ("plan_cache_bytes", 2.5), ("plan_cache_bytes", None),
                                       ("plan_cache_shapes", 0), ("plan_cache_shapes", 10 ** 6 + 1)])
def test_plan_cache_bounds_refuse_what_they_cannot_be(name, bad):
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None)
    before = getattr(model, name)
    with pytest.raises(ArgumentError, match=name):
        setattr(model, name, bad)
    assert getattr(model, name) == before


def test_the_memory_checks_lower_bound_is_the_largest_step_and_what_is_kept():
    """arch.run_values, the values per example below which a run is refused, worked out by hand for
    1.0 at 224 (the Keras shapes): its largest step is block_1_pad, 112x112x96 in and 113x113x96 out;
    asking for Conv1 alone runs the stem only (224x224x3 in, 112x112x32 out) and keeps Conv1's output."""
    model = MobileNetV2((224, 224, 3), include_top=False, weights=None)
    assert arch.run_values(model.layers, (224, 224, 3)) == 112 * 112 * 96 + 113 * 113 * 96
    assert arch.run_values(model.layers, (224, 224, 3), ["Conv1"]) == 224 * 224 * 3 + 2 * 112 * 112 * 32


def test_numpy_runs_larger_than_the_memory_available_are_refused_before_they_run(monkeypatch):
    """The NumPy engine, features() and trace() had no memory check: Linux lends the address space
    (a float64 trace of 1.0 at 224x224 keeps 173 MB of activations per image: 347 GB for 2000
    images), then kills the process; under an address-space limit, features() and trace() raised
    NumPy's own MemoryError."""
    from mobilenetv2 import InsufficientMemory
    from mobilenetv2.engines import machine
    model = MobileNetV2((None, None, 3), alpha=0.35, include_top=False, weights=None, dtype="float64")
    x = rand(3, 64, 48, 3).astype(np.float64)  # (not copied: the input's copy is checked on its own)
    want = model.trace(x)
    # What the float64 trace keeps for the caller alone: every layer's output (the input's excluded).
    kept = 3 * 8 * sum(int(np.prod(s)) for s in list(arch.output_shapes(model.layers, (64, 48, 3)).values())[1:])
    for available, call in ((kept, lambda: model.trace(x)),  # not enough: the layers' work too
                            (1 << 16, lambda: model.features(x, ["block_1_expand", "out_relu"])),
                            (1 << 16, lambda: model.predict(x, batch_size=3))):
        monkeypatch.setattr(machine, "available_memory", lambda: available)
        with pytest.raises(InsufficientMemory, match=r"out of memory for a batch of 3 at 64x48: its activation "
                                                     r"buffers take .* GiB, 0.0 GiB is available; use a smaller"):
            call()
    monkeypatch.setattr(machine, "available_memory", lambda: None)  # not known: run
    got = model.trace(x)
    assert all(np.array_equal(got[k], want[k]) for k in want)

    def no_memory(*args, **kwargs):  # under an address-space limit (ulimit -v) an allocation fails
        raise MemoryError("Unable to allocate")
    monkeypatch.setattr(type(model.get_layer("block_1_expand")), "__call__", no_memory)
    for call in (lambda: model.trace(x), lambda: model.features(x, "out_relu"), lambda: model.predict(x)):
        with pytest.raises(InsufficientMemory, match="out of memory for a batch of 3 at 64x48; use a smaller"):
            call()


def test_the_numpy_memory_check_works_out_each_input_shape_once(monkeypatch, tmp_path):
    """The memory check recomputed the whole network's shapes on every NumPy call (0.2-0.3 ms: more
    than features(x, 'Conv1') itself).  Now once per input shape and layers asked for, again after
    any weights are replaced (set_weights, a layer's set_weights, load_weights) and in a copy made
    by pickle; the refusal still scales with the batch."""
    import pickle
    from mobilenetv2 import InsufficientMemory
    from mobilenetv2.engines import machine
    shapes = []
    output_shapes = arch.output_shapes
    monkeypatch.setattr(arch, "output_shapes", lambda layers, shape: shapes.append(tuple(shape))
                        or output_shapes(layers, shape))
    monkeypatch.setattr(machine, "available_memory", lambda: 1 << 40)
    model = MobileNetV2((None, None, 3), alpha=0.35, include_top=False, weights=None, dtype="float64")
    x = rand(1, 32, 32, 3)
    model.predict(x), model(x[0]), model.trace(x), model.trace(x), model.features(x, "Conv1")
    model.features(x, ["Conv1"]), model.predict(rand(2, 32, 32, 3), batch_size=1)
    assert shapes == [(32, 32, 3)] * 3  # the whole network, every layer kept, Conv1 kept
    model.predict(rand(1, 40, 32, 3))
    assert shapes[3:] == [(40, 32, 3)]
    h5 = model.save_weights(tmp_path / "w.h5")
    for replace in (lambda: model.set_weights(model.get_weights()),
                    lambda: model.get_layer("Conv1").set_weights(model.get_layer("Conv1").get_weights()),
                    lambda: model.load_weights(h5)):
        del shapes[:]
        replace()
        model.predict(x), model.predict(x)
        assert shapes == [(32, 32, 3)]
    copy = pickle.loads(pickle.dumps(model))
    del shapes[:]
    copy.predict(x), copy.predict(x)
    assert shapes == [(32, 32, 3)]
    # What a float64 trace keeps for the caller alone, per image: every layer's output but the input.
    kept = 8 * sum(int(np.prod(s)) for s in list(output_shapes(model.layers, (32, 32, 3)).values())[1:])
    monkeypatch.setattr(machine, "available_memory", lambda: 2 * kept)
    model.trace(x)  # one image fits (with its largest layer's work)
    with pytest.raises(InsufficientMemory, match="out of memory for a batch of 3 at 32x32"):
        model.trace(rand(3, 32, 32, 3))


def test_an_input_whose_copy_does_not_fit_in_memory_is_refused_before_it_is_made(monkeypatch):
    """A non-contiguous or other-dtype input is copied before anything runs: a broadcast view of
    5000 images at 224x224 (no memory itself) was copied as 5.6 GB of float64 without a check, and
    under an address-space limit raised NumPy's own MemoryError from model(x), features() and trace()."""
    from mobilenetv2 import InsufficientMemory
    from mobilenetv2.engines import machine
    model = MobileNetV2((None, None, 3), alpha=0.35, include_top=False, weights=None, dtype="float64")
    x = np.broadcast_to(rand(1, 64, 48, 3), (5, 64, 48, 3))  # float32, not contiguous: copied as float64
    want = model(np.ascontiguousarray(x, np.float64))
    monkeypatch.setattr(machine, "available_memory", lambda: 5 * 64 * 48 * 3 * 8 - 1)  # the copy's bytes, less one
    for call in (lambda: model(x), lambda: model.predict(x, batch_size=5), lambda: model.features(x, "Conv1"),
                 lambda: model.trace(x)):
        with pytest.raises(InsufficientMemory, match=r"out of memory for a batch of 5 at 64x48: a copy of it as "
                                                     r"float64 takes 0.0 GiB, 0.0 GiB is available; use a smaller"):
            call()
    monkeypatch.setattr(machine, "available_memory", lambda: None)
    assert np.array_equal(model.predict(x, batch_size=1), want)  # a copy of 1 image at a time

    def no_memory(*args, **kwargs):  # under an address-space limit (ulimit -v) the allocation fails
        raise MemoryError("Unable to allocate")
    monkeypatch.setattr(np, "require", no_memory)  # (how the batch is copied: aligned and C-contiguous)
    for call in (lambda: model(x), lambda: model.features(x, "Conv1"), lambda: model.trace(x)):
        with pytest.raises(InsufficientMemory, match="out of memory for a batch of 5 at 64x48; use a smaller"):
            call()
