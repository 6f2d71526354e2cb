"""The command line's own subcommands walked as a hostile user runs them (a subprocess each): an
empty --hf, file names that are not text in the locale's encoding, a newline in a stray word,
--layers given twice or 'all' beside names, an --out that is the input photo itself, and a stdout
that nobody reads or that is full."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli_error_lines, one_line, require_shared, set_synthetic_weights
from mobilenetv2 import MobileNetV2

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--alpha", "0.35", "--size", "96", "--weights", "none"]


def run_cli(*args, cwd=None, **env):
    """``python -m mobilenetv2 ARGS`` (str or bytes each), with no weights to be found or fetched."""
    env = dict(os.environ, PYTHONPATH=str(REPO), MOBILENETV2_NO_DOWNLOAD="1", **env)
    env.pop("MOBILENETV2_DEBUG", None)
    env.pop("MOBILENETV2_WEIGHTS_DIR", None)
    env["KERAS_HOME"] = str(cwd or ".")  # an empty cache: nothing real read, nothing written there
    return subprocess.run([sys.executable, "-m", "mobilenetv2", *args], capture_output=True,
                          timeout=300, cwd=cwd, env=env)


def err(run):
    return run.stderr.decode("utf-8", "backslashreplace")


def failure(run):
    """The one line of a refusal (exit status 2, no traceback)."""
    assert run.returncode == 2, (run.returncode, run.stdout[-500:], err(run))
    return one_line(err(run))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (50, 60, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def synthetic_top_file(tmp_path_factory):
    """The synthetic 0.35_96 classifier (the weights of shared/reference's Keras run) as a .h5."""
    model = set_synthetic_weights(MobileNetV2((96, 96, 3), alpha=0.35, weights=None))
    return model.save_weights(tmp_path_factory.mktemp("w") / "synthetic_0.35_96.h5")


@pytest.mark.parametrize("command", [["classify", "IMG"], ["segment", "IMG", "--out", "mask.png"]])
def test_an_empty_hf_is_refused_not_taken_for_no_hf(tmp_path, image, command):
    """`--hf ''` was falsy, so classify ran Keras's model instead (exit 0, ImageNet classes for a
    checkpoint that was never read), and refused --weights/--alpha/--size only with a real --hf."""
    args = [str(image) if a == "IMG" else a for a in command]
    run = run_cli(*args, "--hf", "", *SMALL, cwd=tmp_path)
    assert "argument --hf: an empty path names no folder" in failure(run)
    assert run.stdout == b""
    run = run_cli(*args, "--hf=", cwd=tmp_path)
    assert "argument --hf: an empty path" in failure(run)
    assert sorted(os.listdir(tmp_path)) == ["img.png"]


def test_a_file_name_that_is_not_utf8_is_printed_as_its_bytes(tmp_path, image):
    """Under a locale whose stdout is strict (en_US.UTF-8: Python's 'strict' error handler; here
    PYTHONIOENCODING=utf-8:strict), a name with a Latin-1 byte failed once the work was done:
    "'utf-8' codec can't encode ... surrogates not allowed", exit 2, dump's file already written."""
    name = b"caf\xe9.png"
    os.rename(image, os.path.join(os.fsencode(tmp_path), name))
    run = run_cli(b"classify", name, b"--top", b"1", *map(os.fsencode, SMALL), cwd=tmp_path,
                  PYTHONIOENCODING="utf-8:strict")
    assert run.returncode == 0 and not cli_error_lines(err(run)), err(run)
    assert run.stdout.splitlines()[0] == name  # the name as the file system has it, as ls prints it
    out = b"acts\xff.npz"
    run = run_cli(b"dump", name, b"--layers", b"Conv1", b"--out", out, *map(os.fsencode, SMALL), cwd=tmp_path,
                  PYTHONIOENCODING="utf-8:strict")
    assert run.returncode == 0 and not cli_error_lines(err(run)), err(run)
    last = run.stdout.splitlines()[-1]
    assert last.startswith(b"wrote 1 activations to /") and last.endswith(b"/" + out)
    with np.load(os.path.join(os.fsencode(tmp_path), out)) as z:
        assert sorted(z.files) == ["Conv1", "input"] and z["Conv1"].shape == (48, 48, 16)


@pytest.mark.parametrize("word", ["x\ny", "a\r\nb", "\n"])
def test_a_stray_word_with_a_newline_is_still_one_line(tmp_path, word):
    """argparse joins unrecognized words as they are: "unrecognized arguments: x<newline>y" was
    two lines on stderr."""
    run = run_cli("info", word, cwd=tmp_path)
    line = failure(run)
    assert line.startswith("mobilenetv2: error: unrecognized arguments: ") and repr(word)[1:-1] in line
    run = run_cli("dump", "IMG", "--layers", "Conv1", "--out", "x.npz", word, cwd=tmp_path)
    assert "unrecognized arguments" in failure(run)
    run = run_cli("bench", "--variants", "0.35_96", word, cwd=tmp_path)  # bench's own parser too
    line = failure(run)
    assert line.startswith("mobilenetv2 bench: error: unrecognized arguments: ") and repr(word)[1:-1] in line


def test_layers_given_twice_dumps_both(tmp_path, synthetic_top_file):
    """`--layers Conv1 --layers out_relu` dumped out_relu alone (the second replaced the first,
    silently); both against Keras's outputs for the panda, to float32 rounding."""
    panda = require_shared("images", "panda.jpg")
    ref = np.load(require_shared("reference", "synthetic_keras.npz"))
    out = tmp_path / "acts.npz"
    run = run_cli("dump", str(panda), "--layers", "Conv1", "--layers", "out_relu", "block_3_expand_relu", "out_relu",
                  "--out", str(out), "--weights", str(synthetic_top_file), "--alpha", "0.35", "--size", "96",
                  cwd=tmp_path)
    assert run.returncode == 0, err(run)
    with np.load(out) as z:
        assert sorted(z.files) == ["Conv1", "block_3_expand_relu", "input", "out_relu"]
        for name in ("Conv1", "block_3_expand_relu", "out_relu"):
            want = ref[f"0.35_96/layer/{name}"].reshape(z[name].shape)
            # Keras's float32 error kept in full in a feature map: test_keras_reference's MAP_RTOL
            assert np.linalg.norm(z[name] - want) <= 3e-5 * np.linalg.norm(want), name
            assert np.abs(z[name] - want).max() <= 2e-4 * np.abs(want).max(), name
        np.testing.assert_allclose(z["input"], ref["panda_uint8_96"] / 127.5 - 1, rtol=0, atol=1e-6)
    assert run.stdout.decode().splitlines()[-1].startswith("wrote 3 activations")


@pytest.mark.parametrize("layers", [["all", "Conv1"], ["Conv1", "--layers", "all"], ["all", "--layers", "Conv1"]])
def test_all_mixed_with_names_is_refused_saying_so(tmp_path, image, layers):
    """'all' beside names was "no layer named 'all'" (or, in a second --layers, silently dropped)."""
    run = run_cli("dump", str(image), "--layers", *layers, "--out", "x.npz", *SMALL, cwd=tmp_path)
    assert "--layers: 'all' means every layer; give it alone" in failure(run)
    assert sorted(os.listdir(tmp_path)) == ["img.png"]


def test_segment_refuses_to_write_over_its_photo(tmp_path):
    """`segment photo.png --out photo.png` replaced the photo with its class map (exit 0)."""
    folder = require_shared("hf", "deeplabv3_mobilenet_v2_1.0_513")
    photo = tmp_path / "cat.png"
    photo.write_bytes(require_shared("images", "cat.png").read_bytes())
    before = photo.read_bytes()
    for out in ("cat.png", "./cat.png", str(photo)):
        run = run_cli("segment", "cat.png", "--hf", str(folder), "--out", out, cwd=tmp_path)
        assert f"--out {out!r} is the input image 'cat.png'" in failure(run)
        assert photo.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["cat.png"]


def test_dump_refuses_to_write_over_its_image(tmp_path, image):
    """An image whose name ends in .npz (Pillow reads a file by its bytes) given as dump's --out."""
    named = tmp_path / "img.npz"
    os.rename(image, named)
    before = named.read_bytes()
    for out in ("img.npz", "img"):  # (dump adds .npz where missing)
        run = run_cli("dump", "img.npz", "--layers", "Conv1", "--out", out, *SMALL, cwd=tmp_path)
        assert "is the input image 'img.npz'" in failure(run)
        assert named.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["img.npz"]


def _run_to(stdout, *args, cwd):
    """``python -m mobilenetv2 ARGS`` writing to ``stdout`` (a file descriptor), buffered as it is
    for a user (not under PYTHONUNBUFFERED, which the test runner's environment may set)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), MOBILENETV2_NO_DOWNLOAD="1", KERAS_HOME=str(cwd))
    for name in ("PYTHONUNBUFFERED", "MOBILENETV2_DEBUG", "MOBILENETV2_WEIGHTS_DIR"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "mobilenetv2", *args], stdout=stdout, stderr=subprocess.PIPE,
                          timeout=300, cwd=cwd, env=env)


@pytest.mark.parametrize("args", [["info"], ["classify", "IMG", "--top", "1", *SMALL],
                                  ["classify", "IMG", "--json", *SMALL]])
def test_an_output_nobody_reads_is_exit_141_and_a_full_disk_one_line(tmp_path, image, args):
    """What stdout still buffered as main returned was written by Python's exit: a reader gone
    (`| true`) or a full disk (`> /dev/full`) printed "Exception ignored in: <_io.TextIOWrapper
    name='<stdout>'...>" and the error on stderr, with exit status 120."""
    args = [str(image) if a == "IMG" else a for a in args]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        run = _run_to(write, *args, cwd=tmp_path)
    finally:
        os.close(write)
    assert run.returncode == 141 and not cli_error_lines(err(run)), err(run)
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "wb") as full:
        run = _run_to(full, *args, cwd=tmp_path)
    line = failure(run)
    assert line.endswith("error: [Errno 28] cannot write the output to stdout: No space left on device") or \
        line.endswith("error: [Errno 28] No space left on device"), line


def test_dump_takes_a_fine_tuned_file_with_its_own_classes(tmp_path):
    """A fine-tuned .h5 (a 7-class head) was refused by dump for not having 1000 classes, where
    summary reads the file's classes: dump now builds the model the file fits, and its
    predictions are the 7 the file's head gives (the float64 engine on the same input)."""
    rng = np.random.default_rng(4)
    tuned = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classes=7)
    for layer in tuned.weighted_layers():
        layer.set_weights([rng.normal(0, 0.1, s).astype(np.float32) if "variance" not in w else
                           rng.uniform(0.5, 1.5, s).astype(np.float32)
                           for w, s in zip(layer.weight_names, layer.weight_shapes())], tuned.dtype)
    h5 = tmp_path / "tuned.h5"
    tuned.save_weights(str(h5))
    img = tmp_path / "x.png"
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), np.uint8)).save(img)
    out = tmp_path / "acts.npz"
    run = run_cli("dump", str(img), "--layers", "predictions", "--out", str(out), "--weights", str(h5),
                  "--alpha", "0.35", "--size", "96", "--dtype", "float64", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    ref = MobileNetV2((96, 96, 3), alpha=0.35, weights=str(h5), classes=7, dtype="float64")
    with np.load(out) as got:
        assert got["predictions"].shape == (7,)
        assert np.allclose(got["predictions"], ref.predict(got["input"][None])[0], rtol=1e-12, atol=1e-15)


def test_summary_s_help_says_it_loads_no_imagenet_file(tmp_path):
    """summary --weights imagenet checks the variant and reads no file (the README), while its help
    said 'imagenet' (found or downloaded), the other commands' text."""
    run = run_cli("summary", "--help", cwd=tmp_path)
    text = " ".join(run.stdout.decode().split())
    assert run.returncode == 0 and "found or downloaded" not in text
    assert "no file is found, loaded or downloaded" in text
    assert "found or downloaded" in " ".join(run_cli("dump", "--help", cwd=tmp_path).stdout.decode().split())
