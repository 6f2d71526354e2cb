"""The Python API walked as a new user walks it: README's example, then arguments a user is likely
to get wrong.  Each test here was red before its fix (the defect is in its docstring), except the
float32/float64 agreement on a real photo, which holds the README's "golden reference" claim."""
import inspect

import numpy as np
import pytest

import mobilenetv2 as M
from mobilenetv2 import MobileNetV2, decode_predictions, load_image, preprocess_input
from mobilenetv2.engines import machine, native
from conftest import require_shared

REAL_BACKBONE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def test_the_float32_engines_agree_with_the_float64_reference_on_a_real_photo():
    """README: dtype='float64' is the golden reference.  On the real backbone and the panda photo,
    the C core and the NumPy engine in float32 are within 1e-5 of it (relative to its largest
    value), and the float64 reference itself is Keras's float32 output to the same tolerance."""
    weights = require_shared("weights", REAL_BACKBONE)
    ref = np.load(require_shared("reference", "real_backbone_1.0_224.npz"))
    i = list(ref["files"]).index("panda.jpg")
    image = load_image(require_shared("images", "panda.jpg"), target_size=224)
    assert np.array_equal(image, ref["inputs_uint8"][i])  # Keras's own resize of the photo
    x = preprocess_input(image)[None]
    gold = MobileNetV2((224, 224, 3), include_top=False, pooling="avg", weights=weights, dtype="float64")
    want = gold.predict(x.astype(np.float64))[0]
    scale = np.abs(want).max()
    engines = ["numpy"] + (["c"] if native.available() else [])
    for engine in engines:
        got = MobileNetV2((224, 224, 3), include_top=False, pooling="avg", weights=weights, engine=engine).predict(x)
        assert got.dtype == np.float32
        assert np.abs(got[0] - want).max() <= 1e-5 * scale, engine
    assert np.abs(ref["pooled"][i] - want).max() <= 1e-5 * scale


@pytest.mark.parametrize("preds", [np.ones((1, 1000), complex), np.full((1, 1000), "0.5"),
                                   np.ones((1, 1000), bool), np.array([[None] * 1000])],
                         ids=["complex", "str", "bool", "object"])
def test_decode_predictions_takes_real_scores_only(preds):
    """Scores of strings, complex numbers or bools were ranked and returned as scores
    (("n15075141", "toilet_tissue", "0.5")); an object array raised TypeError from the sort."""
    with pytest.raises(M.ArgumentError, match="preds"):
        decode_predictions(preds)


def test_decode_predictions_refuses_nan_scores():
    """A NaN sorts above every number: a row with one NaN named that class first, with score nan,
    over the class that does score highest."""
    preds = np.zeros((2, 1000))
    preds[:, 3] = 0.9
    preds[1, 0] = np.nan
    assert decode_predictions(preds[:1], top=1)[0][0][:2] == ("n01491361", "tiger_shark")  # class 3
    with pytest.raises(M.ArgumentError, match="NaN"):
        decode_predictions(preds, top=1)


@pytest.mark.parametrize("target_size", [{224: 1, 160: 2}, {224, 160}, frozenset({224, 160})],
                         ids=["dict", "set", "frozenset"])
def test_load_image_target_size_is_an_int_or_an_ordered_pair(target_size):
    """A dict gave an image of its keys' size ({1: 2, 3: 4}: 1x3), a set one in its hash order:
    neither says which is the height."""
    with pytest.raises(M.ArgumentError, match="target_size"):
        load_image(require_shared("images", "panda.jpg"), target_size=target_size)


@pytest.mark.parametrize("target_size", [(160, 96), [160, 96], np.array([160, 96])], ids=["tuple", "list", "array"])
def test_load_image_target_size_pairs_are_height_then_width(target_size):
    assert load_image(require_shared("images", "panda.jpg"), target_size=target_size).shape == (160, 96, 3)


@pytest.mark.parametrize("alpha", [np.float32(0.35), np.float32(1.3), np.float32(1.4), np.array(0.35, np.float32),
                                   np.float16(0.35)], ids=["f32-0.35", "f32-1.3", "f32-1.4", "0d-f32", "f16"])
def test_a_float32_alpha_is_the_published_width_it_rounds_to(monkeypatch, alpha):
    """np.float32(0.35) is 0.3499999940395355 as a Python float: weights='imagenet' refused it
    ("imagenet weights exist for alpha in (0.35, ...), got np.float32(0.35)"), where Keras (whose
    ``alpha not in [0.35, ...]`` compares in float32) takes it.  The registry is asked for the
    published file of that alpha."""
    from mobilenetv2.formats import registry
    asked = []

    def resolve(alpha, rows, include_top=True, **kw):
        asked.append(registry.weights_filename(alpha, rows, include_top))
        raise M.DownloadError("stop here")
    monkeypatch.setattr(registry, "resolve", resolve)
    want = round(float(alpha), 2)  # (0.35, 1.3, 1.4: what the user meant)
    with pytest.raises(M.DownloadError, match="stop here"):
        MobileNetV2((224, 224, 3), alpha=alpha, include_top=False)
    assert asked == [f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{want}_224_no_top.h5"]
    assert MobileNetV2((96, 96, 3), alpha=alpha, weights=None).alpha == want


def test_an_alpha_near_but_not_at_a_published_width_is_not_rounded_to_it():
    for alpha in (0.3499, np.float64(np.float32(0.35)), np.float32(0.36)):
        assert MobileNetV2((96, 96, 3), alpha=alpha, weights=None).alpha == float(alpha)
        with pytest.raises(M.ArgumentError, match="imagenet weights exist for alpha"):
            MobileNetV2((224, 224, 3), alpha=alpha, include_top=False)


@pytest.mark.parametrize("weights", ["none", "None", "", "Imagenet", "IMAGENET", " imagenet"])
def test_a_misspelt_weights_keyword_says_what_weights_takes(tmp_path, monkeypatch, weights):
    """weights='none' (the command line's word for Python's None) and 'Imagenet' were taken as
    file names: FileNotFoundError "weights file not found: 'none'", which is not the ValueError
    Keras raises for them either."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(M.ArgumentError, match=r"weights must be 'imagenet', None .*got " + repr(weights)):
        MobileNetV2((32, 32, 3), alpha=0.35, weights=weights)
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None)
    for bad in (weights, None):  # (load_weights takes no None: its message does not offer it)
        with pytest.raises(M.ArgumentError, match="weights must be 'imagenet' or the path of a weights file"):
            model.load_weights(bad)


def test_a_file_named_like_a_keyword_is_still_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=7)
    model.save_weights(tmp_path / "none")
    twin = MobileNetV2((32, 32, 3), alpha=0.35, weights="none", classes=7)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), twin.get_weights()))
    with pytest.raises(FileNotFoundError):  # a path that is not there is still the OSError it was
        MobileNetV2((32, 32, 3), alpha=0.35, weights=str(tmp_path / "missing.h5"))


@pytest.mark.parametrize("engine", ["auto", "numpy"])
def test_predict_says_a_batch_size_does_not_fit_before_reading_the_whole_input(monkeypatch, engine):
    """predict() in chunks read every chunk for NaN (a copy of each, where the input is not the
    model's dtype) before the first chunk's run found that one chunk does not fit: 1000 images at
    4096x4096 took 85 s to say "out of memory for a batch of 32"."""
    import mobilenetv2.model as model_module
    model = MobileNetV2((None, None, 3), alpha=0.35, include_top=False, weights=None, engine=engine)
    x = np.broadcast_to(np.float32(0.5), (8, 256, 256, 3))  # not contiguous: each chunk is copied
    chunk_bytes = 2 * 256 * 256 * 3 * 4
    monkeypatch.setattr(machine, "available_memory", lambda: 2 * chunk_bytes)  # a chunk's copy fits, its run not
    read = []
    require = model_module._require_finite
    monkeypatch.setattr(model_module, "_require_finite", lambda a: read.append(len(a)) or require(a))
    with pytest.raises(M.InsufficientMemory, match="out of memory for a batch of 2 at 256x256"):
        model.predict(x, batch_size=2)
    assert read == []
    monkeypatch.setattr(machine, "available_memory", lambda: None)
    y = model.predict(x, batch_size=2)
    assert y.shape == (8, 8, 8, 1280) and np.array_equal(y[0], y[7])


def test_get_layer_with_an_index_says_how_to_get_a_layer_by_position():
    """get_layer(3) said "no layer named 3" (Keras takes get_layer(index=3)): it takes a name, and
    model.layers[3] is the layer at a position."""
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None)
    with pytest.raises(M.ArgumentError, match=r"get_layer takes a layer's name.*model\.layers\[3\]"):
        model.get_layer(3)
    assert model.get_layer(model.layers[3].name) is model.layers[3]


def test_every_public_name_and_model_method_has_a_docstring():
    """help(model.get_layer), help(model.set_weights), ... showed nothing: eight public methods and
    properties of MobileNetV2 had no docstring."""
    missing = [n for n in M.__all__ if not inspect.getdoc(getattr(M, n))]
    for name, value in vars(MobileNetV2).items():
        if name.startswith("_") and name != "__call__":
            continue
        doc = value.__doc__ if isinstance(value, property) else inspect.getdoc(value)
        if not doc or doc == "Call self as a function.":
            missing.append(f"MobileNetV2.{name}")
    assert not missing, missing


def test_load_image_given_the_image_s_bytes_or_a_text_file_says_what_it_takes():
    """The image's content passed as the path raised os.open's bare ValueError ("open: embedded
    null character in path"); a file opened in text mode "cannot be read (truncated or corrupt?):
    UnicodeDecodeError" about a sound photo."""
    photo = require_shared("images", "panda.jpg")
    with pytest.raises(M.ArgumentError, match=r"NUL character.*io\.BytesIO"):
        load_image(photo.read_bytes())
    with pytest.raises(M.ArgumentError, match="NUL character"):
        load_image(str(photo) + "\0.jpg")
    with open(photo) as text, pytest.raises(M.ArgumentError, match="mode 'rb'"):
        load_image(text)
    import io
    assert np.array_equal(load_image(io.BytesIO(photo.read_bytes())), load_image(photo))


def test_a_weights_path_with_a_nul_is_an_argument_error():
    """os.open's bare ValueError "embedded null byte", naming no argument."""
    with pytest.raises(M.ArgumentError, match="weights must be"):
        MobileNetV2((32, 32, 3), alpha=0.35, weights="w\0.h5")
    with pytest.raises(M.ArgumentError, match="weights must be"):
        MobileNetV2((32, 32, 3), alpha=0.35, weights=None).load_weights(b"w\0.h5")
