"""A new user's walk through the README's "Scaling out" section: list files as editors write them,
the options' stated limits, a folder a refused run left, and PartWriter's own arguments."""
import hashlib
import os

import numpy as np
import pytest

from batch_images import write_images
from conftest import one_line
from mobilenetv2 import MobileNetV2, load_image, preprocess_input
from mobilenetv2.cli import main
from mobilenetv2.errors import ArgumentError

pytest.importorskip("pyarrow", reason="the batch command needs the 'batch' extra (pyarrow)")
import pyarrow.dataset as pads  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

SMALL = ["--weights", "none", "--alpha", "0.35", "--size", "96", "--quiet"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("walk-images")
    return folder, write_images(folder, 20, seed=3)


def cli(argv):
    """main's exit status, the parser's refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def rows(out):
    return pads.dataset(str(out), format="parquet").to_table().to_pylist()


def blake(rel):
    """The README's id, computed here: 16 hex digits of BLAKE2b-64 of the POSIX relative path."""
    return hashlib.blake2b(rel.encode("utf-8"), digest_size=8).hexdigest()


def test_a_list_saved_with_a_utf8_bom_names_its_first_image(images, tmp_path, capsys):
    """Windows Notepad saves UTF-8 with a byte order mark: it is no part of the first path (which
    was read as '\\ufeffa.png', not found, its row an error and its id another)."""
    import shutil
    _, paths = images
    shutil.copy(paths[1], tmp_path / "a.png")
    shutil.copy(paths[2], tmp_path / "b.jpg")
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xef\xbb\xbfa.png\r\nb.jpg\r\n")
    out = tmp_path / "out"
    assert main(["features", str(listing), "--out", str(out), *SMALL]) == 0, capsys.readouterr().err
    got = {r["id"]: r for r in rows(out)}
    assert set(got) == {blake("a.png"), blake("b.jpg")}, got.keys()
    assert got[blake("a.png")]["error"] is None
    assert got[blake("a.png")]["path"] == str(tmp_path / "a.png")


def test_parts_hold_rows_per_part_rows_even_below_the_batch_size(images, tmp_path, capsys):
    """--rows-per-part 5 with batches of 8 wrote parts of 8 rows (the option did nothing below the
    batch size); now each part holds 5 rows, the last the rest, and the rows are the same."""
    folder, paths = images
    out = tmp_path / "out"
    assert main(["features", str(folder), "--out", str(out), *SMALL, "--batch-size", "8",
                 "--rows-per-part", "5"]) == 0, capsys.readouterr().err
    parts = sorted(out.glob("part-*.parquet"))
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    assert sizes == [5, 5, 5, 5], sizes
    assert [r["path"] for r in rows(out)] == [str(p) for p in paths]
    # and the rows equal a run with one part
    whole = tmp_path / "whole"
    assert main(["features", str(folder), "--out", str(whole), *SMALL, "--batch-size", "8"]) == 0
    assert rows(out) == rows(whole)


def test_a_folder_a_refused_run_left_takes_a_corrected_configuration(images, tmp_path, capsys, monkeypatch):
    """A run refused after the folder was made (here: its workers need more memory than there is)
    left only its manifest; the corrected rerun, with a smaller model, was refused as if the folder
    "holds results of another configuration".  A folder without a part holds no results."""
    from mobilenetv2.engines import machine
    folder, paths = images
    out = tmp_path / "out"
    big = ["features", str(folder), "--out", str(out), "--weights", "none", "--alpha", "1.4", "--size", "96",
           "--quiet"]
    with monkeypatch.context() as m:
        m.setattr(machine, "available_memory", lambda: 8 << 20)
        code = main(big)
    err = capsys.readouterr().err
    assert code == 2 and "lower --workers or --batch-size" in one_line(err), err
    assert main(["features", str(folder), "--out", str(out), *SMALL]) == 0, capsys.readouterr().err
    assert len(rows(out)) == len(paths)
    # with a part there, another configuration is still refused
    code = main(big)
    err = capsys.readouterr().err
    assert code == 2 and "holds results of another configuration" in one_line(err), err


@pytest.mark.parametrize("manifest, says", [(b"{not json", "is not valid JSON"),
                                             (b"[1, 2]", "holds list, not a configuration")])
def test_a_damaged_manifest_is_said_in_one_line_and_overwrite_starts_over(images, tmp_path, capsys,
                                                                         manifest, says):
    """A manifest a crash or an editor damaged: one line saying so and what to do, exit 2, the
    folder left as it is; --overwrite then starts over."""
    from mobilenetv2.batch.dataset import MANIFEST
    folder, paths = images
    out = tmp_path / "out"
    assert main(["features", str(folder), "--out", str(out), *SMALL]) == 0
    (out / MANIFEST).write_bytes(manifest)
    before = sorted(p.name for p in out.iterdir())
    assert main(["features", str(folder), "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert says in one_line(err) and "--overwrite" in err, err
    assert sorted(p.name for p in out.iterdir()) == before
    assert main(["features", str(folder), "--out", str(out), *SMALL, "--overwrite"]) == 0
    assert len(rows(out)) == len(paths)


@pytest.mark.parametrize("images_count", [3, 70])
def test_workers_past_the_limit_are_refused_whatever_the_number_of_images(tmp_path, capsys, images_count):
    """--workers 10000 ran with 3 images (clamped to one batch) and was refused with 70 as "70
    replicas": the limit the README states holds for the option, and the message names it."""
    from mobilenetv2.engines import pool
    folder = tmp_path / "imgs"
    write_images(folder, images_count, seed=1)
    code = main(["features", str(folder), "--out", str(tmp_path / "out"), *SMALL, "--batch-size", "1",
                 "--workers", "10000"])
    err = capsys.readouterr().err
    assert code == 2, err
    line = one_line(err)
    assert "--workers 10000" in line and f"at most {pool.max_threads()}" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_ray_actor_cpus_that_is_no_positive_number_is_refused_before_ray_starts(images, tmp_path, capsys,
                                                                                 monkeypatch, value):
    """--ray-actor-cpus 0 started a Ray instance (seconds) and then failed with "actor_cpus must be
    a positive number", the name of a Python argument; the parser refuses it, naming the option."""
    import mobilenetv2.ray as mnv2_ray

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a refused option")
    monkeypatch.setattr(mnv2_ray, "_connect", no_ray)
    folder, _ = images
    code = cli(["features", str(folder), "--out", str(tmp_path / "out"), *SMALL, "--ray", "auto",
                 "--ray-actor-cpus", value])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--ray-actor-cpus" in one_line(err), err
    assert not (tmp_path / "out").exists()


def test_an_empty_ray_address_is_refused_not_a_local_run(images, tmp_path, capsys):
    """--ray '' (an unset shell variable: --ray "$RAY_ADDRESS") ran the local engine silently."""
    folder, _ = images
    code = main(["features", str(folder), "--out", str(tmp_path / "out"), *SMALL, "--ray", ""])
    err = capsys.readouterr().err
    assert code == 2 and "--ray" in one_line(err), err
    assert not (tmp_path / "out").exists()


def test_a_glob_from_the_file_system_root_gives_ids_relative_to_the_root(tmp_path, monkeypatch):
    """A pattern whose fixed prefix is '/' ('/*/x/*.png') had its ids relative to the current folder
    ('../../tmp/...'), so they changed with the folder the command ran in."""
    from mobilenetv2.batch.inputs import list_images
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    top = str(tmp_path).split(os.sep)[1]
    pattern = "/*" + str(tmp_path)[len(top) + 1:] + "/*.png"
    monkeypatch.chdir(tmp_path)
    here = list_images([pattern])
    monkeypatch.chdir("/")
    there = list_images([pattern])
    assert here == there == [(blake(str(image)[1:]), str(image))]


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, "8", True, None])
def test_part_writer_refuses_a_batch_size_that_is_no_count(tmp_path, batch_size):
    """PartWriter(batch_size=0) was built and failed on the actor with range()'s "arg 3 must not be
    zero"; 2.5 ran batches of 2 and "x" raised int()'s ValueError."""
    from mobilenetv2.ray import PartWriter
    with pytest.raises(ArgumentError, match="batch_size"):
        PartWriter(str(tmp_path), batch_size=batch_size, kind="features", alpha=0.35, size=96, weights="none")


def test_part_writer_rows_equal_the_model_image_by_image(images, tmp_path):
    """The README's PartWriter over a block of (id, path) rows: one (file, rows, errors) row, and
    its part's vectors are the model's, image by image (the independent truth)."""
    from mobilenetv2.ray import PartWriter
    _, paths = images
    paths = [str(p) for p in paths[:7]] + [str(tmp_path / "missing.jpg")]
    writer = PartWriter(str(tmp_path), batch_size=3, kind="features", alpha=0.35, size=96, weights="none")
    ids = [f"k{i}" for i in range(len(paths))]
    result = writer({"id": ids, "path": paths}).to_pylist()
    assert len(result) == 1 and result[0]["rows"] == 8 and result[0]["errors"] == 1, result
    table = pq.read_table(tmp_path / result[0]["file"])
    assert table.column("id").to_pylist() == ids
    model = MobileNetV2((96, 96, 3), alpha=0.35, include_top=False, weights=None, pooling="avg")
    for path, got in zip(paths[:-1], table.column("features").to_pylist()):
        want = model.predict(preprocess_input(load_image(path, target_size=(96, 96)).astype("float32"))[None])[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert table.column("features")[7].as_py() is None
