"""The command line, as a user runs it."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import keras_reference, require_shared, same_values, set_synthetic_weights
from mobilenetv2 import MobileNetV2
from mobilenetv2.formats import registry
from mobilenetv2.cli import main


@pytest.fixture(scope="module")
def synthetic_top_file(tmp_path_factory):
    """The synthetic 0.35_96 model with its classifier, saved as a Keras weights file."""
    model = set_synthetic_weights(MobileNetV2((96, 96, 3), alpha=0.35, weights=None))
    return model.save_weights(tmp_path_factory.mktemp("w") / "synthetic_0.35_96.h5")


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_classify_panda_matches_keras_ranking(synthetic_top_file, capsys):
    """Image loading, preprocessing, the network and decoding end to end, against Keras's logits."""
    panda = require_shared("images", "panda.jpg")
    classes = json.loads(require_shared("imagenet_class_index.json").read_text())
    code = main(["classify", str(panda), "--alpha", "0.35", "--size", "96",
                 "--weights", synthetic_top_file, "--top", "5", "--json"])
    assert code == 0
    [result] = json.loads(capsys.readouterr().out)
    probs = softmax(keras_reference("synthetic_keras.npz")["0.35_96/logits"][0].astype(np.float64))
    want = np.argsort(-probs)[:5]
    assert [p["wnid"] for p in result["predictions"]] == [classes[str(i)][0] for i in want]
    assert [p["name"] for p in result["predictions"]] == [classes[str(i)][1] for i in want]
    np.testing.assert_allclose([p["score"] for p in result["predictions"]], probs[want], rtol=1e-4)


def test_classify_text_output_and_errors(synthetic_top_file, tmp_path, capsys):
    from PIL import Image
    img = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 50), 128, np.uint8)).save(img)
    args = ["--alpha", "0.35", "--size", "96", "--weights", synthetic_top_file]
    assert main(["classify", str(img), "--top", "2"] + args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(img) and out[1].lstrip().startswith("1. ") and len(out) == 3
    assert main(["classify", str(tmp_path / "missing.jpg")] + args) == 2
    assert "missing.jpg" in capsys.readouterr().err
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((20, 64, 3), np.uint8)).save(tiny)
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(black)
    assert main(["classify", str(tiny), str(black)] + args) == 0  # resized to 96x96 as Keras resizes it
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(tiny) and out[6] == str(black) and out[1:6] == out[7:12]  # both all black
    assert main(["classify", str(img), "--alpha", "0.5", "--size", "96", "--weights", synthetic_top_file]) == 2
    assert "alpha" in capsys.readouterr().err


def test_dump_writes_the_named_activations(synthetic_top_file, tmp_path, capsys):
    from mobilenetv2.processing.preprocessing import load_image, preprocess_input
    from PIL import Image
    img = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "acts.npz"
    layers = ["block_1_pad", "block_2_add", "out_relu"]
    assert main(["dump", str(img), "--layers", *layers, "--out", str(out), "--alpha", "0.35",
                 "--size", "96", "--weights", synthetic_top_file]) == 0
    # one line per layer: its name and one image's shape (96 -> 48, padded to 49; 0.35 x 16 -> 8
    # channels expanded x 6; 24 -> 8 at 24x24; 1280 at 3x3), then where they went
    printed = [re.fullmatch(r"(\S+) +(\(.*\)) +(\S+)", line) for line in capsys.readouterr().out.splitlines()]
    assert [m.groups() for m in printed[:3]] == [("block_1_pad", "(49, 49, 48)", "float32"),
                                                 ("block_2_add", "(24, 24, 8)", "float32"),
                                                 ("out_relu", "(3, 3, 1280)", "float32")]
    assert len(printed) == 4 and printed[3] is None  # "wrote 3 activations to ..."
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=synthetic_top_file)
    want = model.features(preprocess_input(load_image(img, target_size=96))[None], layers)
    with np.load(out) as acts:
        assert sorted(acts.files) == sorted(layers + ["input"])
        for name in layers:
            np.testing.assert_array_equal(acts[name], want[name][0])
        np.testing.assert_array_equal(acts["input"], preprocess_input(load_image(img, target_size=96)))
    # A bad layer name is an error that writes nothing.
    bad = tmp_path / "bad.npz"
    assert main(["dump", str(img), "--layers", "block_99_add", "--out", str(bad), "--alpha", "0.35",
                 "--size", "96", "--weights", synthetic_top_file]) == 2
    assert "block_99_add" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts.npz", "noise.png"]


def test_info_lists_the_22_variants(monkeypatch, capsys):
    weights = require_shared("weights")
    monkeypatch.setenv("MOBILENETV2_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("KERAS_HOME", "/nonexistent-keras-home")
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    rows = {r["variant"]: r for r in info["variants"]}
    assert len(rows) == 22
    assert rows["1.0_224"]["macs_m"] == 300 and rows["0.35_96"]["params_m"] == 1.66
    assert rows["1.0_224"]["weights_no_top"].endswith("kernels_1.0_224_no_top.h5")
    assert rows["1.0_224"]["weights_top"] is None and rows["0.5_160"]["weights_no_top"] is None
    # the shared file is not the download (weights/README.md): loading refuses it, and info says so
    size = (weights / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5").stat().st_size
    registry_size = next(v["size"] for v in registry.variants() if (v["alpha"], v["rows"], v["include_top"])
                         == (1.0, 224, False))
    assert size != registry_size
    assert rows["1.0_224"]["weights_no_top_problem"] == f"it has {size} bytes, the registry says {registry_size}"
    assert rows["0.35_96"]["weights_no_top_problem"] is None
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "1.4_224" in text and "0.35_96" in text and "3,538,984" in text
    assert "-/wrong file" in text and "loading refuses it" in text


def test_info_params_are_keras_count_params_for_the_22_variants(monkeypatch, capsys):
    """Keras 3's count_params() of each variant with its head (../shared/reference), not a figure
    of this package's own."""
    keras = json.loads(require_shared("reference", "synthetic_keras.json").read_text())
    monkeypatch.setenv("KERAS_HOME", "/nonexistent-keras-home")
    assert main(["info", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["variants"]
    assert len(rows) == 22
    assert {r["variant"]: r["keras_params"] for r in rows} == {r["variant"]: keras[r["variant"]]["params"]
                                                               for r in rows}


def test_a_dump_is_what_compare_reads(tmp_path, capsys, monkeypatch):
    """dump writes the input beside the activations, so compare runs the dump as it is; against
    the float64 reference of the same weights every layer agrees.  Its progress bar is drawn
    for a person at a terminal only: not into a log (stderr not a terminal), not with --quiet."""
    from PIL import Image
    weights = set_synthetic_weights(MobileNetV2((96, 96, 3), alpha=0.35, include_top=False, weights=None))
    weights = weights.save_weights(tmp_path / "no_top.h5")
    img = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "acts.npz"
    assert main(["dump", str(img), "--layers", "all", "--no-top", "--out", str(out), "--alpha", "0.35",
                 "--size", "96", "--weights", str(weights)]) == 0
    capsys.readouterr()
    assert main(["compare", str(out), "--weights", str(weights), "--quiet"]) == 0
    assert "AGREES" in capsys.readouterr().out
    assert main(["compare", str(out), "--weights", str(weights)]) == 0
    assert capsys.readouterr().err == ""  # stderr is no terminal here
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["compare", str(out), "--weights", str(weights), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["compare", str(out), "--weights", str(weights)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("\r[...") and "\r[#" in err and err.endswith("\r" + " " * 96 + "\r")  # drawn, then wiped


def test_classify_hf_refuses_keras_model_flags(capsys):
    folder = require_shared("hf", "mobilenet_v2_0.35_96")
    image = require_shared("images", "panda.jpg")
    for flag, value in (("--alpha", "0.5"), ("--size", "96"), ("--weights", "x.h5")):
        assert main(["classify", "--hf", str(folder), str(image), flag, value]) == 2
        assert f"{flag} does not apply with --hf" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    run = subprocess.run([sys.executable, "-m", "mobilenetv2", "summary", "--alpha", "0.35", "--size", "96"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Total params: 1,691,208" in run.stdout and "block_16_project" in run.stdout


@pytest.fixture(scope="module")
def variant_files(tmp_path_factory):
    """The synthetic 0.35_96 weights under the official file names, with and without top, alone in
    a folder: weights/registry.json records no size or SHA-256 for 0.35_96, so they load as the
    variant's imagenet files.  The no-top file's Conv1 kernel is halved, so a test that loaded one
    file where it meant the other would see it."""
    folder = tmp_path_factory.mktemp("weights_dir")
    paths = {}
    for top in (True, False):
        model = set_synthetic_weights(MobileNetV2((96, 96, 3), alpha=0.35, include_top=top, weights=None))
        if not top:
            conv = model.get_layer("Conv1")
            conv.set_weights([w * 0.5 for w in conv.get_weights()], model.dtype)
        paths[top] = str(model.save_weights(folder / registry.weights_filename(0.35, 96, top)))
    return folder, paths


@pytest.fixture
def weights_dir(variant_files, monkeypatch):
    """$MOBILENETV2_WEIGHTS_DIR holds the variant files; nothing may download."""
    folder, paths = variant_files
    monkeypatch.setenv(registry.ENV_DIR, str(folder))
    monkeypatch.setenv(registry.ENV_NO_DOWNLOAD, "1")
    monkeypatch.setenv("KERAS_HOME", "/nonexistent-keras-home")
    return paths


@pytest.fixture(scope="module")
def three_images(tmp_path_factory):
    from PIL import Image
    folder = tmp_path_factory.mktemp("three")
    rng = np.random.default_rng(5)
    for i, (h, w) in enumerate(((70, 90), (96, 96), (120, 64))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder, sorted(str(p) for p in folder.iterdir())


SAME_WEIGHTS = [["--weights", "0.35_96"], ["--alpha", "0.35", "--size", "96"],
                ["--weights", "0.35_96", "--alpha", "0.35", "--size", "96"]]


@pytest.mark.parametrize("flags", SAME_WEIGHTS)
def test_classify_a_variant_name_loads_its_weights(weights_dir, flags, capsys):
    """--weights 0.35_96 is --alpha 0.35 --size 96 (imagenet): the variant's file, found through
    $MOBILENETV2_WEIGHTS_DIR; the ranking is Keras's with those weights, the scores the Python
    API's with the file named."""
    from mobilenetv2.processing.preprocessing import load_image, preprocess_input
    panda = require_shared("images", "panda.jpg")
    classes = json.loads(require_shared("imagenet_class_index.json").read_text())
    assert main(["classify", str(panda), *flags, "--top", "5", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    keras = keras_reference("synthetic_keras.npz")["0.35_96/logits"][0].astype(np.float64)
    want = np.argsort(-keras)[:5]
    assert [p["wnid"] for p in result["predictions"]] == [classes[str(i)][0] for i in want]
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=weights_dir[True])
    probs = model.predict(preprocess_input(load_image(panda, target_size=96))[None])[0]
    np.testing.assert_allclose([p["score"] for p in result["predictions"]], probs[want], rtol=1e-6)


@pytest.mark.parametrize("flags", SAME_WEIGHTS)
def test_dump_a_variant_name_loads_its_weights(weights_dir, three_images, flags, tmp_path):
    from mobilenetv2.processing.preprocessing import load_image, preprocess_input
    image = three_images[1][0]
    x = preprocess_input(load_image(image, target_size=96))[None]
    layers = ["Conv1", "block_5_add", "out_relu"]
    for top, extra in ((True, []), (False, ["--no-top"])):
        out = tmp_path / f"acts_{top}.npz"
        assert main(["dump", image, "--layers", *layers, "--out", str(out), *flags, *extra]) == 0
        model = MobileNetV2((96, 96, 3), alpha=0.35, include_top=top, weights=weights_dir[top])
        want = model.features(x, layers)
        with np.load(out) as acts:
            for name in layers:
                np.testing.assert_array_equal(acts[name], want[name][0])
    # the two files differ: the loop above tells the no-top file from the other
    with np.load(tmp_path / "acts_True.npz") as a, np.load(tmp_path / "acts_False.npz") as b:
        assert not np.allclose(a["Conv1"], b["Conv1"])


def test_summary_a_variant_name_is_its_alpha_and_size(weights_dir, capsys):
    assert main(["summary", "--weights", "0.35_96"]) == 0
    text = capsys.readouterr().out
    assert "Total params: 1,691,208" in text and "(None, 3, 3, 1280)" in text  # Keras's 0.35_96
    assert main(["summary", "--alpha", "0.35", "--size", "96", "--weights", "imagenet"]) == 0
    assert capsys.readouterr().out == text


def test_summary_needs_no_weights_file(weights_dir, tmp_path, monkeypatch, capsys):
    """summary loaded the imagenet file to print shapes, parameters and MACs, none of which
    depend on its values: without the file (an empty weights folder, downloads off) it failed.
    It prints what it prints with the file present; a variant with no official file is still
    refused, as loading it was."""
    with_file = {}
    for flags in (["--weights", "0.35_96"], ["--alpha", "0.35", "--size", "96", "--weights", "imagenet"]):
        assert main(["summary", *flags]) == 0
        with_file[tuple(flags)] = capsys.readouterr().out
    monkeypatch.setenv(registry.ENV_DIR, str(tmp_path))  # empty
    assert registry.find_weights(0.35, 96) is None and registry.find_weights(1.0, 224) is None
    for flags, text in with_file.items():
        assert main(["summary", *flags]) == 0
        assert capsys.readouterr().out == text
    assert "Total params: 1,691,208" in text
    assert main(["summary", "--weights", "imagenet"]) == 0  # 1.0_224, whose file is nowhere
    text = capsys.readouterr().out
    assert "Total params: 3,538,984" in text and '"mobilenetv2_1.00_224"' in text  # Keras's count and name
    assert main(["summary", "--weights", "none"]) == 0
    assert capsys.readouterr().out == text
    assert main(["summary", "--alpha", "1.3", "--size", "96", "--weights", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert "no official MobileNetV2 weights for alpha=1.3, rows=96" in err and err.count("\n") == 1


def test_summary_of_a_weights_file_is_of_the_model_that_file_fits(weights_dir, tmp_path, capsys):
    """summary --weights FILE built the model with the 1000-class classifier whatever the file:
    a _no_top file (Keras's own backbone among them) was refused, 'use include_top=False (dump
    --no-top ...)', though summary has no such option.  Keras's counts for alpha 0.35: 1,691,208
    with the 1000-class head, so 410,208 without it (1280 x 1000 + 1000 fewer), 419,175 with a
    7-class head."""
    flags = ["--alpha", "0.35", "--size", "96"]
    assert main(["summary", *flags, "--weights", weights_dir[False]]) == 0
    text = capsys.readouterr().out
    assert "Total params: 410,208" in text and "predictions" not in text and "(None, 3, 3, 1280)" in text
    assert main(["summary", *flags, "--weights", weights_dir[True]]) == 0
    assert "Total params: 1,691,208" in capsys.readouterr().out
    seven = tmp_path / "seven.h5"
    MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classes=7).save_weights(seven)
    assert main(["summary", *flags, "--weights", str(seven)]) == 0
    text = capsys.readouterr().out
    assert "Total params: 419,175" in text and "(None, 7)" in text
    # the file still decides nothing but the head: another alpha is refused, saying which it is
    assert main(["summary", "--weights", weights_dir[False]]) == 2
    err = capsys.readouterr().err
    assert "alpha=0.35" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["classify", "dump", "segment"])
def test_a_missing_image_is_said_before_any_weights_are_looked_for(command, tmp_path, monkeypatch, capsys):
    """classify photo.jpg with a mistyped photo and no weights file said only that the weights
    were not found (downloads off); the image was looked at once the model had loaded.  The image
    paths are checked first now, each as load_image checks it: missing, or not a regular file."""
    monkeypatch.setenv(registry.ENV_DIR, str(tmp_path))  # empty: no weights anywhere
    monkeypatch.setenv(registry.ENV_NO_DOWNLOAD, "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-home"))
    rest = {"classify": [], "dump": ["--layers", "Conv1", "--out", str(tmp_path / "a.npz")],
            "segment": ["--hf", str(tmp_path / "no-checkpoint"), "--out", str(tmp_path / "m.png")]}[command]
    missing = str(tmp_path / "phtoo.jpg")
    assert main([command, missing, *rest]) == 2
    err = capsys.readouterr().err
    assert "image file not found" in err and "phtoo.jpg" in err and "weights" not in err
    assert err.count("\n") == 1
    folder = tmp_path / "photos"
    folder.mkdir()
    assert main([command, str(folder), *rest]) == 2
    err = capsys.readouterr().err
    assert "'photos' is not a file (an image file path was expected)" in err.replace(str(tmp_path) + "/", "")
    assert not any(p.suffix in (".npz", ".png") for p in tmp_path.iterdir())


def test_compare_without_matplotlib_refuses_plot_before_the_run(weights_dir, three_images, tmp_path,
                                                               monkeypatch, capsys):
    """compare --plot without matplotlib ran the whole comparison, printed its report and wrote
    --json, then failed on --plot: the missing extra is said before any work, nothing written."""
    out = tmp_path / "acts.npz"
    assert main(["dump", three_images[1][0], "--layers", "Conv1", "--no-top", "--out", str(out),
                 "--weights", "0.35_96"]) == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    report = tmp_path / "report.json"
    assert main(["compare", str(out), "--weights", "0.35_96", "--quiet", "--json", str(report),
                 "--plot", str(tmp_path / "p.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "--plot" in captured.err and "mobilenetv2[plot]" in captured.err
    assert not report.exists() and not (tmp_path / "p.png").exists()


def test_compare_a_truncated_weights_file_is_said_to_be_one(weights_dir, three_images, tmp_path, capsys):
    """compare --weights trunc.h5 answered 'loads into no MobileNetV2 of alpha (...)': the search
    over alphas hid the loader's reason, which every other subcommand gives."""
    out = tmp_path / "acts.npz"
    assert main(["dump", three_images[1][0], "--layers", "Conv1", "--no-top", "--out", str(out),
                 "--weights", "0.35_96"]) == 0
    data = open(weights_dir[False], "rb").read()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[:len(data) // 2])
    capsys.readouterr()
    assert main(["compare", str(out), "--weights", str(trunc), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'" + str(trunc) + "' is truncated or corrupt" in err and "loads into no" not in err
    assert err.count("\n") == 1
    assert main(["dump", three_images[1][0], "--layers", "Conv1", "--no-top", "--out", str(out),
                 "--weights", str(trunc), "--alpha", "0.35", "--size", "96"]) == 2
    assert "is truncated or corrupt" in capsys.readouterr().err  # what dump says of it


@pytest.mark.parametrize("kind", ["features", "predict"])
def test_batch_commands_a_variant_name_loads_its_weights(weights_dir, three_images, kind, tmp_path, capsys):
    """The rows are the Python API's with the variant's file, and the run is the one --alpha and
    --size name: a rerun with them into the same --out resumes it (same configuration)."""
    pytest.importorskip("pyarrow", reason="the batch command needs the 'batch' extra (pyarrow)")
    import pyarrow.dataset as pads
    from mobilenetv2.processing.preprocessing import load_image, preprocess_input
    folder, paths = three_images
    out = tmp_path / "out"
    assert main([kind, str(folder), "--out", str(out), "--weights", "0.35_96", "--quiet"]) == 0
    assert "processed 3 images" in capsys.readouterr().out
    top = kind == "predict"
    model = MobileNetV2((96, 96, 3), alpha=0.35, include_top=top, weights=weights_dir[top],
                        pooling=None if top else "avg")
    rows = {r["path"]: r for r in pads.dataset(str(out), format="parquet").to_table().to_pylist()}
    assert sorted(rows) == paths
    for path in paths:
        y = model.predict(preprocess_input(load_image(path, target_size=96))[None])[0]
        if top:
            best = list(np.argsort(-y, kind="stable")[:5])
            assert rows[path]["classes"] == best
            assert same_values(np.array(rows[path]["scores"], np.float32), y[best])
        else:
            assert same_values(np.array(rows[path]["features"], np.float32), y)
    assert main([kind, str(folder), "--out", str(out), "--alpha", "0.35", "--size", "96", "--quiet"]) == 0
    assert "processed 0 images (0 unreadable), skipped 3" in capsys.readouterr().out


def test_compare_a_variant_name_is_its_imagenet_file(weights_dir, three_images, tmp_path, capsys):
    """compare's --weights reads a variant name as the other subcommands do: a dump made with
    --weights 0.35_96 agrees with the reference of --weights 0.35_96 and of the file's path."""
    out = tmp_path / "acts.npz"
    assert main(["dump", three_images[1][0], "--layers", "all", "--out", str(out), "--weights", "0.35_96"]) == 0
    for weights in ("0.35_96", weights_dir[True]):
        capsys.readouterr()
        assert main(["compare", str(out), "--weights", weights, "--quiet"]) == 0
        assert "AGREES" in capsys.readouterr().out
    # 0.35_128's file is not in the folder (and nothing downloads): the name chose the file
    assert main(["compare", str(out), "--weights", "0.35_128", "--quiet"]) == 2
    assert "'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_128.h5' not found" \
        in capsys.readouterr().err


def test_compare_a_dump_without_the_classifier_loads_the_no_top_file(weights_dir, three_images, tmp_path,
                                                                     monkeypatch, capsys):
    """compare --weights 0.35_96 loaded the file with the classifier for every dump: a dump of the
    backbone (dump --no-top, made with the no-top file) was compared with the other file's Conv1
    (halved here: it diverged), and a user with the no-top file alone could not compare at all.
    A dump with no 'predictions' (or Keras 2's 'Logits') array gets the no-top file; one with it,
    the file with the classifier."""
    import shutil
    image = three_images[1][0]

    def compare(dump, weights):
        report = tmp_path / "report.json"
        code = main(["compare", str(dump), "--weights", weights, "--quiet", "--json", str(report)])
        capsys.readouterr()
        return code, json.loads(report.read_text()) if code in (0, 1) else None

    no_top = tmp_path / "no_top.npz"
    assert main(["dump", image, "--layers", "all", "--no-top", "--out", str(no_top), "--weights", "0.35_96"]) == 0
    code, report = compare(no_top, "0.35_96")
    assert code == 0 and report["agrees"]
    assert registry.weights_filename(0.35, 96, False) in report["weights"]["source"]

    # a dump of the model with the classifier: with its 'predictions' (or named 'Logits') the file
    # with it; without, the no-top file, whose Conv1 is not the one the dump was made with
    top = tmp_path / "top.npz"
    assert main(["dump", image, "--layers", "all", "--out", str(top), "--weights", "0.35_96"]) == 0
    with np.load(top) as acts:
        acts = dict(acts)
    logits, headless = tmp_path / "logits.npz", tmp_path / "headless.npz"
    np.savez(logits, Logits=acts["predictions"], **{k: v for k, v in acts.items() if k != "predictions"})
    np.savez(headless, **{k: v for k, v in acts.items() if k != "predictions"})
    for dump in (top, logits):
        code, report = compare(dump, "0.35_96")
        assert code == 0 and registry.weights_filename(0.35, 96, True) in report["weights"]["source"], dump
    code, report = compare(headless, "0.35_96")
    assert code == 1 and report["first_divergent_layer"] == "Conv1"
    assert registry.weights_filename(0.35, 96, False) in report["weights"]["source"]
    # the file with the classifier named by its path serves a headless dump (its head left out),
    # and the dump's pooled features are compared
    code, report = compare(headless, weights_dir[True])
    assert code == 0 and "global_average_pooling2d" in [r["layer"] for r in report["layers"]]
    assert "predictions" not in [r["layer"] for r in report["layers"]]

    # the no-top file alone, nothing to download: the backbone's dump is compared
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(weights_dir[False], alone)
    monkeypatch.setenv(registry.ENV_DIR, str(alone))
    assert compare(no_top, "0.35_96")[0] == 0
    assert main(["compare", str(top), "--weights", "0.35_96", "--quiet"]) == 2  # this one needs the other
    assert f"{registry.weights_filename(0.35, 96, True)!r} not found" in capsys.readouterr().err


def _parsers(parser, name="mobilenetv2"):
    """Every (sub)command's parser, by its command line."""
    import argparse
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _parsers(subparser, f"{name} {sub}")


def test_every_default_the_help_states_is_the_default():
    """An option whose help says "(default N)" takes N when it is left out: where argparse holds the
    default, its value; where the command fills it in later (default None), the value it uses."""
    import argparse
    from mobilenetv2.batch import local
    from mobilenetv2.cli import build_parser
    from mobilenetv2.model_options import MODEL_DEFAULTS
    filled_later = {"--prefetch": local.PREFETCH, "--random": 1, "--weights": MODEL_DEFAULTS["weights"]}
    checked = 0
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            said = re.search(r"\(default:? (-?[0-9.]+|'[^']*')\)", action.help or "")
            if said is None or action.help == argparse.SUPPRESS:
                continue
            value = said.group(1).strip("'")
            default = action.default if action.default is not None else filled_later.get(action.option_strings[-1])
            assert default is not None, (name, action.option_strings)
            assert str(default) == value or float(default) == float(value), (name, action.option_strings, default)
            checked += 1
    assert checked >= 15
