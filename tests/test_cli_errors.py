"""Every failure of the command line is one line on stderr and a non-zero exit status, never a
traceback; outputs go where the user says, whole or not at all, with the umask's permissions."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import one_line
from mobilenetv2 import MobileNetV2, cli
from mobilenetv2.cli import main
from mobilenetv2.errors import OutputPathError

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--alpha", "0.35", "--size", "96", "--weights", "none"]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (60, 70, 3), dtype=np.uint8)).save(path)
    return path


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "mobilenetv2", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


@pytest.mark.parametrize("args, says", [
    (["classify", "missing.jpg"] + SMALL, "missing.jpg"),
    (["classify", "/dev/zero"] + SMALL, "is a device, not a regular file"),
    (["classify", "IMG", "--size", "0", "--alpha", "0.35"], "--size: must be a whole number from 1 to 4096, got 0"),
    (["classify", "IMG", "--size", str(10 ** 9)], "--size: must be a whole number from 1 to 4096"),
    (["classify", "IMG", "--size", "1e3"], "--size: '1e3' is not a whole number"),
    (["classify", "IMG", "--alpha", "nan"], "--alpha: 'nan' is not a finite number"),
    (["classify", "IMG", "--alpha", "1/3"], "--alpha: '1/3' is not a number"),
    (["classify", "IMG", "--alpha", "1e308", "--weights", "none"], "alpha must be a positive number at most 4"),
    (["classify", "IMG", "--top", "0"] + SMALL, "--top: must be a whole number from 1 to 1000"),
    (["features", "IMG", "--out", "OUTDIR", "--workers", "0"], "--workers: must be a whole number from 1 up, got 0"),
    (["predict", "IMG", "--out", "OUTDIR", "--batch-size", "x"], "--batch-size: 'x' is not a whole number"),
    (["classify", "IMG", "--weights", "/dev/zero"], "is a device, not a regular file"),
    (["classify", "IMG", "--dtype", "float33"], "invalid choice: 'float33'"),
    (["dump", "IMG", "--layers", "Conv1", "--out", ""] + SMALL, "--out path is empty"),
    (["dump", "IMG", "--layers", "Conv1", "--out", "OUTDIR/"] + SMALL, "ends with a path separator"),
    (["dump", "IMG", "--layers", "Conv1", "--out", "OUTDIR"] + SMALL, "is an existing folder"),
    (["dump", "IMG", "--layers", "Conv1", "--out", "nowhere/x.npz"] + SMALL, "does not exist"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "mobilenetv2: error: the following arguments are required: command (see mobilenetv2 --help)"),
    (["--bogus"], "mobilenetv2: error: the following arguments are required: command"),
    # --weights, read one way by every subcommand (mobilenetv2.model_options)
    (["classify", "IMG", "--weights", "0.35_96", "--alpha", "0.5"],
     "--alpha 0.5 conflicts with --weights 0.35_96, whose alpha is 0.35: drop --alpha"),
    (["dump", "IMG", "--layers", "Conv1", "--out", "x.npz", "--weights", "0.35_96", "--size", "128"],
     "--size 128 conflicts with --weights 0.35_96, whose size is 96: drop --size"),
    (["predict", "IMG", "--out", "OUTDIR", "--weights", "1.0_96", "--alpha", "0.35", "--size", "96"],
     "--alpha 0.35 conflicts with --weights 1.0_96"),
    (["features", "IMG", "--out", "OUTDIR", "--weights", "1.0_225"],
     "--weights: unknown variant '1.0_225'; the 22 are: 1.4_224, 1.3_224, 1.0_224,"),
    (["summary", "--weights", "0.3_96"], "(mobilenetv2 info shows them)"),
    (["classify", "IMG", "--weights", "missing.h5"],
     "--weights 'missing.h5': no such file or folder; --weights takes 'imagenet', 'none', a variant name"),
    (["predict", "IMG", "--out", "OUTDIR", "--weights", "nowhere/w.h5"], "'nowhere/w.h5': no such file or folder"),
    (["classify", "IMG", "--weights", "OUTDIR"],
     "--weights 'OUTDIR' is a folder (a Hugging Face checkpoint?); classify takes a checkpoint folder with --hf DIR"),
    (["dump", "IMG", "--layers", "Conv1", "--out", "x.npz", "--weights", "OUTDIR"],
     "is a folder (a Hugging Face checkpoint?); dump reads Keras weights: 'imagenet', 'none', a variant name"),
    (["features", "IMG", "--out", "x", "--weights", "OUTDIR"], "features reads Keras weights"),
])
def test_failures_are_one_line(tmp_path, image, capsys, monkeypatch, args, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "OUTDIR").mkdir()
    args = [str(image) if a == "IMG" else a for a in args]
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        code = main(args)
    except SystemExit as exc:  # argparse
        code = exc.code
    assert code == 2
    assert says in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written anywhere


@pytest.mark.parametrize("exc, code, says", [
    (MemoryError(), 2, "out of memory"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (RuntimeError("a bug"), 1, "internal error: RuntimeError: a bug (please report it"),
    (OSError(28, "No space left on device"), 2, "No space left on device"),
])
def test_unexpected_failures_are_one_line(image, capsys, monkeypatch, exc, code, says):
    def boom(args):
        raise exc
    monkeypatch.setattr(cli, "cmd_classify", boom)
    assert main(["classify", str(image)] + SMALL) == code
    assert says in one_line(capsys.readouterr().err)


def test_a_real_process_prints_no_traceback(tmp_path):
    fifo = tmp_path / "w.h5"
    os.mkfifo(fifo)
    run = run_cli("summary", "--size", "10", cwd=tmp_path)
    assert run.returncode == 2 and "must be from 1 to 4096" not in run.stderr
    assert "input_shape height must be at least 32" in one_line(run.stderr)
    run = run_cli("classify", str(fifo), "--weights", str(fifo), cwd=tmp_path)
    assert run.returncode == 2 and "FIFO" in one_line(run.stderr)
    run = run_cli("bench", "--threads", "0", cwd=tmp_path)
    assert run.returncode == 2 and "--threads must each be from 1 to" in one_line(run.stderr)
    assert os.listdir(tmp_path) == ["w.h5"]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_dump_and_save_weights_follow_the_umask(tmp_path, image, capsys, mask):
    old = os.umask(mask)
    try:
        assert main(["dump", str(image), "--layers", "Conv1", "--out", str(tmp_path / "a")] + SMALL) == 0
        saved = MobileNetV2((96, 96, 3), alpha=0.35, weights=None).save_weights(tmp_path / "w.h5")
    finally:
        os.umask(old)
    for path in (tmp_path / "a.npz", Path(saved)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "img.png", "w.h5"]


@pytest.mark.parametrize("out", ["", "sub/", "sub"])
def test_save_weights_refuses_folder_paths(tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(OutputPathError):
        MobileNetV2((96, 96, 3), alpha=0.35, weights=None).save_weights(out)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["sub"]


def test_bench_writes_its_json_in_the_current_folder(tmp_path):
    run = run_cli("bench", "--variants", "0.35_96", "--engines", "numpy", "--numpy-runs", "1",
                  "--warmup", "0", "--rounds", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    written = [p.name for p in tmp_path.iterdir()]
    assert len(written) == 1 and written[0].startswith("bench-") and written[0].endswith(".json")
    assert f"# wrote {tmp_path / written[0]}" in run.stdout


@pytest.mark.parametrize("arg, says", [("--json=", "--json path is empty"),
                                       ("--runs=0", "--runs must be from 1 to 100000"),
                                       ("--threads=1,x", "comma list of whole numbers")])
def test_bench_argument_errors(arg, says, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", arg])
    assert info.value.code == 2 and says in one_line(capsys.readouterr().err)


def test_warnings_are_one_line_too(capsys, monkeypatch):
    import warnings

    def warn(args):
        warnings.warn("the C extension is not available (no compiler);\n  running on NumPy", RuntimeWarning)
        return 0
    monkeypatch.setattr(cli, "cmd_summary", warn)
    assert main(["summary"]) == 0
    assert capsys.readouterr().err == ("mobilenetv2: warning: the C extension is not available (no compiler); "
                                       "running on NumPy\n")


def test_the_missing_extension_warning_names_the_package_once(capsys, monkeypatch):
    """The package's own warning starts 'mobilenetv2:' (it is seen outside the CLI too): the
    CLI's line said 'mobilenetv2: warning: mobilenetv2: the C extension ...'."""
    from mobilenetv2.engines import native

    def warn(args):
        native.warn_if_missing()
        return 0
    monkeypatch.setattr(native, "lib", None)
    monkeypatch.setattr(native, "_warned", False)
    monkeypatch.setattr(native, "missing_reason", lambda: "not built")
    monkeypatch.setattr(cli, "cmd_summary", warn)
    assert main(["summary"]) == 0
    assert capsys.readouterr().err == ("mobilenetv2: warning: the C extension is not available (not built); "
                                       "running on the NumPy engine, which is correct but slower.\n")


@pytest.mark.parametrize("argv, folder", [
    (["dump", "IMG", *SMALL, "--layers", "Conv1", "--out", "acts"], "acts.npz"),  # .npz is added
    (["dump", "IMG", *SMALL, "--layers", "Conv1", "--out", "acts.npz"], "acts.npz"),
    (["segment", "--hf", "/no/such/checkpoint", "IMG", "--out", "mask.png"], "mask.png"),
])
def test_an_output_that_is_a_folder_is_refused_before_any_work(tmp_path, image, capsys, monkeypatch,
                                                              argv, folder):
    """Refused before the model is built (the missing checkpoint above is never looked at):
    before, the folder failed after the model ran, naming a temporary file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / folder).mkdir()
    argv = [str(image) if a == "IMG" else a for a in argv]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--out path '{folder}' is an existing folder" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder, image.name])


@pytest.mark.parametrize("weights, says", [
    ("imagenet", "--weights 'imagenet' does not say which weights the reference takes; compare's --weights "
                 "takes a Keras .h5 file, a Hugging Face checkpoint folder or a variant name"),
    ("none", "--weights 'none' does not say which weights"),
    ("2.0_224", "--weights: unknown variant '2.0_224'; the 22 are: 1.4_224"),
    ("missing.h5", "--weights 'missing.h5': no such file or folder; --weights takes a Keras .h5 file"),
    ("/dev/zero", "weights file '/dev/zero' is a device, not a regular file"),
])
def test_compare_weights_errors_are_one_line(tmp_path, weights, says, capsys, monkeypatch):
    """compare reads --weights as the other subcommands do (a folder is a checkpoint there)."""
    monkeypatch.chdir(tmp_path)
    dump = tmp_path / "acts.npz"
    np.savez(dump, input=np.zeros((32, 32, 3), np.float32), Conv1=np.zeros((16, 16, 32), np.float32))
    assert main(["compare", str(dump), "--weights", weights, "--quiet"]) == 2
    assert says in one_line(capsys.readouterr().err)
