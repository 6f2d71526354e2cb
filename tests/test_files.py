"""mobilenetv2.files: regular files only on the way in, atomic and umask-respecting on the way out."""
import errno
import os
import stat

import pytest

from mobilenetv2 import files
from mobilenetv2.errors import OutputPathError


def test_a_failed_write_raises_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(ZeroDivisionError):
        with files.atomic_write(target) as f:
            f.write(b"half")
            1 / 0
    assert target.read_bytes() == b"old"  # the previous file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("where", ["making the temporary file", "writing it"])
def test_a_system_error_names_the_file_asked_for(tmp_path, monkeypatch, where):
    """A read-only folder or a full disk was reported of the temporary file ('.out.bin.x1y2.tmp')
    or of no file at all ('[Errno 28] No space left on device'): it names the output path."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    if where == "making the temporary file":
        def mkstemp(prefix, suffix, dir):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(dir, prefix + "x1y2" + suffix))
        monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp)
    with pytest.raises(OSError) as caught:
        with files.atomic_write(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write to a full disk does
    assert caught.value.errno == (errno.EROFS if where == "making the temporary file" else errno.ENOSPC)
    assert caught.value.filename == str(target) and str(target) in str(caught.value)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with files.atomic_write(target) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"  # nothing visible until the end
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o027, 0o000])
def test_permissions_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert files.current_umask() == mask
        with files.atomic_write(tmp_path / "x") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x").stat().st_mode) == 0o666 & ~mask


@pytest.mark.parametrize("path, says", [("", "is empty"), ("  ", "is empty"), ("sub/", "ends with a path separator"),
                                        ("sub", "is an existing folder"), ("nowhere/x", "does not exist")])
def test_output_paths_refused(tmp_path, monkeypatch, path, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(OutputPathError, match=says):
        files.check_output_path(path)


def test_output_path_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert files.check_output_path("x.npz") == "x.npz"
    assert files.check_output_path(os.fsencode(tmp_path / "y")) == str(tmp_path / "y")


def test_open_regular(tmp_path):
    regular = tmp_path / "r"
    regular.write_bytes(b"abc")
    fd = files.open_regular(regular)
    try:
        assert os.read(fd, 3) == b"abc"
        assert os.get_blocking(fd)
    finally:
        os.close(fd)
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    for path, says in ((fifo, "a FIFO"), (os.fsencode(fifo), "a FIFO"), ("/dev/null", "a device")):
        with pytest.raises(files.NotRegularFile, match=says):
            files.open_regular(path)
    with pytest.raises(IsADirectoryError) as info:
        files.open_regular(tmp_path)
    assert info.value.errno == errno.EISDIR
    with pytest.raises(FileNotFoundError):
        files.open_regular(tmp_path / "missing")


@pytest.mark.parametrize("bad", [5, None, 3.0, ["m.onnx"]])
def test_an_output_path_of_another_type_is_the_packages_error(tmp_path, monkeypatch, bad):
    """Every writer refuses a path that is not one with ArgumentError naming the argument (it was
    os.fspath's TypeError), before anything is written."""
    from mobilenetv2.errors import ArgumentError
    import mobilenetv2
    monkeypatch.chdir(tmp_path)
    model = mobilenetv2.MobileNetV2((32, 32, 3), alpha=0.35, weights=None)
    for write, what in [(lambda p: mobilenetv2.export_onnx(model, p), "export_onnx path"),
                        (model.save_weights, "weights path"),
                        (lambda p: mobilenetv2.save_pretrained(model, p), "save_pretrained's folder path")]:
        with pytest.raises(ArgumentError, match=f"{what} must be a str or os.PathLike, got {type(bad).__name__}"):
            write(bad)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", [str, os.fsencode])
def test_a_path_with_a_nul_is_the_packages_error_before_anything_is_written(tmp_path, monkeypatch, kind):
    """A NUL in a path reached os's own ValueError ("embedded null byte"), a traceback from deep
    inside every writer and reader: each says what is wrong in its own error, writing nothing."""
    from mobilenetv2.errors import ArgumentError
    import mobilenetv2
    monkeypatch.chdir(tmp_path)
    model = mobilenetv2.MobileNetV2((32, 32, 3), alpha=0.35, weights=None)
    for write in [lambda p: mobilenetv2.export_onnx(model, p), model.save_weights,
                  lambda p: mobilenetv2.save_pretrained(model, p)]:
        with pytest.raises(ArgumentError, match="NUL character"):
            write(kind(str(tmp_path / "out\0.x")))
    for read in [files.open_regular, lambda p: files.read_regular(p, "file", 10)]:
        with pytest.raises(files.NotRegularFile, match="NUL character"):
            read(kind(str(tmp_path / "in\0.x")))
    assert list(tmp_path.iterdir()) == []


def test_read_regular_sets_aside_what_the_file_holds_not_its_limit(tmp_path):
    """A 3 KB file read with a 2 GiB limit, in a process of 1 GiB of address space: read(limit + 1)
    set aside the limit before reading (MemoryError; the fuzz harness's model files met it)."""
    import subprocess
    import sys
    path = tmp_path / "small"
    path.write_bytes(b"abc" * 1000)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
            "from mobilenetv2 import files; "
            f"sys.stdout.write(str(len(files.read_regular({str(path)!r}, 'model file', 2 << 30))))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "3000", run.stderr


def test_read_regular_takes_a_file_of_exactly_its_limit(tmp_path):
    path = tmp_path / "exact"
    path.write_bytes(bytes(range(256)) * 4)
    assert files.read_regular(path, "file", 1024) == path.read_bytes()
    with pytest.raises(files.TooLarge, match="larger than 1023 bytes"):
        files.read_regular(path, "file", 1023)


@pytest.mark.parametrize("size, limit, whole", [
    (3_000, 10_000, True), (3_000, 2_000, False), (3_000, 3_000, True),
    # the 101 bytes fstat's size allows, then a 1 MiB piece ends exactly at the limit: one
    # more byte is asked for, which tells a file of exactly the limit from a longer one
    ((1 << 20) + 101, (1 << 20) + 101, True), ((1 << 20) + 102, (1 << 20) + 101, False)])
def test_read_regular_reads_a_file_that_grew_after_its_size_was_read(tmp_path, monkeypatch, size, limit, whole):
    """fstat said 100 bytes, the file holds more: all of it is read, up to the limit, past
    which it is TooLarge as a file that big from the start is."""
    path = tmp_path / "grown"
    path.write_bytes((bytes(range(256)) * (size // 256 + 1))[:size])
    real = os.fstat

    def fstat(fd):
        st = real(fd)
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, 100,
                               st.st_atime, st.st_mtime, st.st_ctime))
    monkeypatch.setattr(files.os, "fstat", fstat)
    if whole:
        assert files.read_regular(path, "file", limit) == path.read_bytes()
    else:
        with pytest.raises(files.TooLarge, match=f"larger than {limit} bytes"):
            files.read_regular(path, "file", limit)


@pytest.mark.parametrize("name, magic", [("chart.png", b"\x89PNG"), ("chart.PDF", b"%PDF"), ("chart.svg", b"<?xml"),
                                         ("chart", b"\x89PNG"), ("chart.weird", b"\x89PNG")])
def test_save_figure_writes_the_format_its_suffix_names_at_exactly_that_path(tmp_path, name, magic):
    """matplotlib's formats by suffix (any case); PNG where the suffix names none of them, still
    at exactly the path given (matplotlib alone would add '.png'), and nothing else left."""
    matplotlib = pytest.importorskip("matplotlib", reason="save_figure draws with matplotlib (the plot extra)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure()
    try:
        got = files.save_figure(fig, str(tmp_path / name), dpi=50)
    finally:
        plt.close(fig)
    assert got == str(tmp_path / name) and (tmp_path / name).read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_folder_member_takes_links_inside_and_refuses_links_out(tmp_path):
    """A checkpoint folder's member may be a file or a link within the folder (or, in a Hugging
    Face hub cache, a link from snapshots/<rev>/ into blobs/); a link anywhere else is refused."""
    hub = tmp_path / "models--x" / "snapshots" / "abc"
    hub.mkdir(parents=True)
    (tmp_path / "models--x" / "blobs").mkdir()
    (tmp_path / "models--x" / "blobs" / "f00d").write_bytes(b"w")
    (tmp_path / "secret").write_bytes(b"s")
    (hub / "plain.json").write_bytes(b"{}")
    (hub / "sub").mkdir()
    (hub / "sub" / "inner").write_bytes(b"i")
    os.symlink(hub / "sub" / "inner", hub / "inside")
    os.symlink(tmp_path / "models--x" / "blobs" / "f00d", hub / "model.safetensors")
    os.symlink(tmp_path / "secret", hub / "out")
    for name in ("plain.json", "inside", "model.safetensors", "missing"):
        assert files.folder_member(hub, name) == os.path.join(str(hub), name)
    with pytest.raises(files.OutsideFolder, match="outside the checkpoint folder"):
        files.folder_member(hub, "out")
    assert files.outside_folder(hub, hub / "out") == str(tmp_path / "secret")
    plain = tmp_path / "plain"  # not a hub snapshot: its parent's blobs/ is no exception
    plain.mkdir()
    os.symlink(tmp_path / "models--x" / "blobs" / "f00d", plain / "model.safetensors")
    with pytest.raises(files.OutsideFolder):
        files.folder_member(plain, "model.safetensors")


def test_an_output_in_a_folder_we_may_not_write_is_refused_before_any_work(tmp_path, monkeypatch):
    """export_onnx into a read-only folder built the whole graph, then failed with Python's
    PermissionError as it wrote; every writer now refuses it first, with the package's error.
    (Tests run as root, whom permission bits do not stop, so os.access answers as for a user.)"""
    import mobilenetv2
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(locked)
                        else real_access(p, mode, **kw))
    model = mobilenetv2.MobileNetV2((32, 32, 3), alpha=0.35, weights=None)
    monkeypatch.setattr("mobilenetv2.network.arch.output_shapes",
                        lambda *a: pytest.fail("the graph was built before the path was checked"))
    for write in [lambda p: mobilenetv2.export_onnx(model, p), lambda p: mobilenetv2.export_tflite(model, p),
                  model.save_weights]:
        with pytest.raises(OutputPathError, match="is not writable"):
            write(str(locked / "out.x"))
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/null"])
def test_an_output_path_that_is_no_regular_file_is_refused_and_left_alone(tmp_path, kind):
    """Writing is a rename over the path, which replaced a FIFO or a device with a regular file
    (as root, `export_onnx(model, "/dev/null")` replaced /dev/null for the whole system). Such a
    path is refused, checked first and again just before the rename."""
    target = tmp_path / "out"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        os.symlink(os.devnull, target)
    with pytest.raises(OutputPathError, match="exists and is not a regular file"):
        files.check_output_path(target)
    with pytest.raises(OutputPathError, match="exists and is not a regular file"):
        with files.atomic_write(target) as f:
            f.write(b"data")
    if kind == "fifo":
        assert stat.S_ISFIFO(os.lstat(target).st_mode)
    else:
        assert os.readlink(target) == os.devnull and stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary file left


@pytest.mark.parametrize("exporter", ["export_onnx", "export_tflite"])
def test_an_exporter_refuses_a_fifo_before_any_work(tmp_path, exporter):
    if exporter == "export_onnx":
        pytest.importorskip("onnx", reason="export_onnx needs the onnx extra")
    import mobilenetv2
    fifo = tmp_path / "m.out"
    os.mkfifo(fifo)
    model = mobilenetv2.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, include_top=False)
    with pytest.raises(OutputPathError, match="not a regular file"):
        getattr(mobilenetv2, exporter)(model, fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
