"""The batch command (``mobilenetv2 features|predict``): its rows against the model run image by image,
resuming after SIGKILL, bad images, ids, and the output folder's rules."""
import contextlib
import errno
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from batch_images import write_images
from conftest import REPO, cli_error_lines, one_line, same_values, set_synthetic_weights
from mobilenetv2 import MobileNetV2, load_image, preprocess_input
from mobilenetv2.cli import main

pa = pytest.importorskip("pyarrow", reason="the batch command needs the 'batch' extra (pyarrow)")
import pyarrow.dataset as pads  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

SMALL = ["--alpha", "0.35", "--size", "96"]
PROCESSED = re.compile(r"processed (\d+) images \((\d+) unreadable\), skipped (\d+)")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return folder, write_images(folder, 240, bad=["broken.png"])


def read_rows(out):
    table = pads.dataset(str(out), format="parquet").to_table()
    return {row["id"]: row for row in table.to_pylist()}, table


def model_rows(model, paths, layer=None):
    """The independent truth: each image loaded and run on its own, batch of one."""
    rows = {}
    for path in paths:
        x = preprocess_input(load_image(path, target_size=(96, 96)).astype(model.dtype))[None]
        y = model.predict(x) if layer is None else model.features(x, [layer])[layer]
        rows[path] = y.reshape(-1)
    return rows


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_features_equal_the_model_image_by_image(images, tmp_path, capsys):
    folder, paths = images
    out = tmp_path / "feats"
    code, stdout, stderr = run_cli(["features", str(folder), "--out", str(out), "--weights", "none", *SMALL,
                                    "--batch-size", "7", "--rows-per-part", "50"], capsys)
    assert code == 0, stderr
    assert PROCESSED.search(stdout).groups() == ("241", "1", "0")
    rows, table = read_rows(out)
    assert len(rows) == table.num_rows == 241
    assert table.schema.field("features").type == pa.list_(pa.float32(), 1280)
    want = model_rows(MobileNetV2((96, 96, 3), alpha=0.35, include_top=False, pooling="avg", weights=None,
                                  threads=1), [p for p in paths if not p.endswith("broken.png")])
    by_path = {row["path"]: row for row in rows.values()}
    for path, y in want.items():
        got = np.array(by_path[path]["features"], dtype=np.float32)
        assert by_path[path]["error"] is None
        assert same_values(got, y), path
    broken = by_path[os.path.join(str(folder), "broken.png")]
    assert broken["features"] is None and "not an image file" in broken["error"]
    assert len(list(out.glob("part-*.parquet"))) == 5  # 241 rows, 50 a part (batches of 7: 56 56 56 56 17)
    assert not list(out.glob(".tmp-*"))
    assert "1 image could not be read" in stderr


def test_features_of_a_named_layer_and_float64(images, tmp_path, capsys):
    folder, paths = images
    some = [p for p in paths if not p.endswith("broken.png")][:10]
    listing = tmp_path / "some.txt"
    listing.write_text("# ten images\n" + "\n".join(some) + "\n\n")
    out = tmp_path / "block"
    code, _, stderr = run_cli(["features", str(listing), "--out", str(out), "--weights", "none", *SMALL,
                               "--layer", "block_13_expand_relu", "--dtype", "float64", "--batch-size", "4"], capsys)
    assert code == 0, stderr
    rows, table = read_rows(out)
    field = table.schema.field("features")
    assert field.type == pa.list_(pa.float64(), 6 * 6 * 192)
    assert field.metadata[b"shape"] == b"[6, 6, 192]"
    model = MobileNetV2((96, 96, 3), alpha=0.35, include_top=False, pooling="avg", weights=None, dtype="float64")
    want = model_rows(model, some, layer="block_13_expand_relu")
    for row in rows.values():
        assert same_values(np.array(row["features"]), want[row["path"]])


@pytest.fixture(scope="module")
def synthetic_top_file(tmp_path_factory):
    model = set_synthetic_weights(MobileNetV2((96, 96, 3), alpha=0.35, weights=None))
    return str(model.save_weights(tmp_path_factory.mktemp("w") / "synthetic_0.35_96.h5"))


def test_predict_writes_the_top_classes(images, synthetic_top_file, tmp_path, capsys):
    from mobilenetv2.processing.imagenet import class_table
    folder, paths = images
    out = tmp_path / "preds"
    code, _, stderr = run_cli(["predict", str(folder / "sub"), "--out", str(out), *SMALL,
                               "--weights", synthetic_top_file, "--top", "3"], capsys)
    assert code == 0, stderr
    rows, table = read_rows(out)
    assert table.schema.field("classes").type == pa.list_(pa.int32(), 3)
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=synthetic_top_file, threads=1)
    want = model_rows(model, [p for p in paths if os.sep + "sub" + os.sep in p])
    assert len(rows) == len(want) == 80
    table_names = class_table()
    for row in rows.values():
        probs = want[row["path"]]
        best = sorted(range(1000), key=lambda i: -probs[i])[:3]
        assert row["classes"] == best
        assert same_values(np.array(row["scores"], np.float32), probs[best])
        assert row["wnids"] == [table_names[i][0] for i in best]
        assert row["names"] == [table_names[i][1] for i in best]


def test_top_past_the_head_s_classes_is_refused(images, synthetic_top_file, tmp_path, capsys):
    folder, _ = images
    out = tmp_path / "preds"
    code, _, stderr = run_cli(["predict", str(folder / "sub"), "--out", str(out), *SMALL,
                               "--weights", synthetic_top_file, "--top", "1001"], capsys)
    assert code == 2 and stderr.count("\n") == 1
    assert "top must be at most the 1000 classes, got 1001" in stderr
    assert not out.exists()


def _ids(files):
    ids = []
    for f in files:
        ids += pq.read_table(f, columns=["id"]).column("id").to_pylist()
    return ids


def test_sigkill_then_rerun_finishes_only_the_missing_ids(images, tmp_path):
    from mobilenetv2.batch.inputs import image_id
    """A run killed after its first parts: the rerun writes exactly the ids not yet written, and the
    union equals the float64 model run image by image (float64: slow enough to kill mid-run)."""
    folder, paths = images
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "mobilenetv2", "features", str(folder), "--out", str(out), "--weights", "none",
            *SMALL, "--dtype", "float64", "--workers", "1", "--batch-size", "4", "--rows-per-part", "8"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.parquet"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    first = set(out.glob("part-*.parquet"))
    done = _ids(first)
    assert 8 <= len(done) < 241 and len(done) % 8 == 0  # whole parts only: the part being written is lost

    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(out.glob(".tmp-*"))
    new = _ids(set(out.glob("part-*.parquet")) - first)
    broken_again = str(int(image_id("broken.png") in new))  # listed first: usually written before the kill
    assert PROCESSED.search(rerun.stdout).groups() == (str(241 - len(done)), broken_again, str(len(done)))
    rows, table = read_rows(out)
    assert sorted(new + done) == sorted(rows) and table.num_rows == 241  # every id exactly once
    assert not set(new) & set(done)
    model = MobileNetV2((96, 96, 3), alpha=0.35, include_top=False, pooling="avg", weights=None, dtype="float64")
    want = model_rows(model, [p for p in paths if not p.endswith("broken.png")])
    for row in rows.values():
        if row["error"] is None:
            assert same_values(np.array(row["features"]), want[row["path"]]), row["path"]


def test_ids_follow_the_relative_path(tmp_path, capsys):
    from mobilenetv2.batch.inputs import image_id, list_images
    a = tmp_path / "a"
    write_images(a, 6, seed=1)
    shutil.copytree(a, tmp_path / "moved" / "b")
    here = list_images([str(a)])
    there = list_images([str(tmp_path / "moved" / "b")])
    assert [i for i, _ in here] == [i for i, _ in there]
    assert dict(here)[image_id("img00001.png")] == str(a / "img00001.png")
    assert dict(here)[image_id("sub/img00000.jpg")] == str(a / "sub" / "img00000.jpg")
    import hashlib
    assert image_id("sub/x.png") == hashlib.blake2b(b"sub/x.png", digest_size=8).hexdigest()
    globbed = list_images([str(a / "**" / "*.png")])
    assert {p for _, p in globbed} == {str(p) for p in a.rglob("*.png")}
    assert dict(globbed)[image_id("sub/img00003.png")] == str(a / "sub" / "img00003.png")
    with pytest.raises(ValueError, match="same path relative"):
        list_images([str(a), str(tmp_path / "moved" / "b")])
    with pytest.raises(FileNotFoundError, match="matches no file") as info:
        list_images([str(a / "*.gif")])
    assert info.value.errno == errno.ENOENT and info.value.filename == str(a / "*.gif")
    with pytest.raises(FileNotFoundError) as info:
        list_images([str(tmp_path / "nowhere")])
    assert info.value.errno == errno.ENOENT and info.value.filename == str(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    with pytest.raises(ValueError, match="no image files found in '.*empty'"):
        list_images([str(tmp_path / "empty")])
    code, _, stderr = run_cli(["features", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "nowhere" in stderr and "Traceback" not in stderr


def test_out_folder_rules(images, tmp_path, capsys):
    folder, _ = images
    some = tmp_path / "some"
    write_images(some, 5, seed=2)
    out = tmp_path / "out"
    base = ["features", str(some), "--out", str(out), "--weights", "none", *SMALL]
    assert run_cli(base, capsys)[0] == 0
    (out / ".tmp-left-by-a-kill.parquet").write_bytes(b"half")
    code, stdout, _ = run_cli(base, capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("0", "0", "5")
    assert not list(out.glob(".tmp-*"))
    code, _, stderr = run_cli(base + ["--dtype", "float64"], capsys)
    # the manifest's own refusal, before any part is read (each part's check is the second line)
    assert code == 2 and "holds results of another configuration (dtype: 'float32' there, 'float64' now)" in stderr
    code, stdout, _ = run_cli(base + ["--dtype", "float64", "--overwrite"], capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("5", "0", "0")
    rows, table = read_rows(out)
    assert table.num_rows == 5 and table.schema.field("features").type.value_type == pa.float64()
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, stderr = run_cli(["features", str(some), "--out", str(afile), "--weights", "none", *SMALL], capsys)
    assert code == 2 and "not a folder" in stderr
    # a folder of someone else's files (no manifest of this command) is never written into
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "part-00000.parquet").write_bytes(b"not ours")
    for extra in ([], ["notes.txt", "b.csv"]):
        for name in extra:
            (theirs / name).write_text("x")
        code, _, stderr = run_cli(["features", str(some), "--out", str(theirs), "--weights", "none", *SMALL], capsys)
        more = f" and {len(extra)} more" if extra else ""
        assert code == 2 and stderr.count("\n") == 1
        assert f"is not empty and has no _mobilenetv2.json: it is not an output folder of this command (it holds " \
               f"'b.csv'{more})" in stderr if extra else "(it holds 'part-00000.parquet')" in stderr
    assert sorted(p.name for p in theirs.iterdir()) == ["b.csv", "notes.txt", "part-00000.parquet"]


def test_missing_pyarrow_names_the_extra(tmp_path, monkeypatch, capsys):
    write_images(tmp_path / "i", 2)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    code, _, stderr = run_cli(["features", str(tmp_path / "i"), "--out", str(tmp_path / "o"), "--weights", "none",
                               *SMALL], capsys)
    assert code == 2 and "mobilenetv2[batch]" in stderr
    assert not (tmp_path / "o").exists()


def _peak_rss_kib(argv, env, cwd):
    """Run ``argv`` and return the child's peak resident set (ru_maxrss, KiB on Linux)."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = proc.stdout.read().decode()
    proc.stdout.close()
    assert proc.returncode == 0, stdout
    return usage.ru_maxrss, stdout


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="os.wait4 (a child's own peak RSS) is POSIX-only")
def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """2,000 images within 1.5x the peak RSS of 200: nothing is held per image but its id and path.
    (Holding the decoded 128x128 float32 inputs alone would add ~390 MB for 2,000 images.)"""
    paths = write_images(tmp_path / "i", 2000, size=(100, 180))
    listing = tmp_path / "first200.txt"
    listing.write_text("\n".join(paths[:200]))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    peaks = {}
    for name, source in (("200", listing), ("2000", tmp_path / "i")):
        argv = [sys.executable, "-m", "mobilenetv2", "features", str(source), "--out", str(tmp_path / name),
                "--weights", "none", "--alpha", "0.35", "--size", "128", "--batch-size", "32", "--quiet"]
        peaks[name], stdout = _peak_rss_kib(argv, env, tmp_path)
        assert PROCESSED.search(stdout).group(1) == name
    assert peaks["2000"] <= 1.5 * peaks["200"], peaks


def test_the_memory_check_counts_every_worker(images, tmp_path, capsys, monkeypatch):
    """Each replica's model checks only its own buffers against the memory available: two replicas
    that each fit ran side by side where together they could not (Linux lends the address space,
    then kills the process).  12 MiB holds one replica of 0.35_96 with batches of 8 (the run at the
    end), not two: refused before any replica is built, saying what to lower."""
    from mobilenetv2.engines import machine
    folder, _ = images
    monkeypatch.setattr(machine, "available_memory", lambda: 12 << 20)
    argv = ["features", str(folder), "--weights", "none", *SMALL, "--batch-size", "8", "--quiet"]
    code, stdout, stderr = run_cli(argv + ["--out", str(tmp_path / "two"), "--workers", "2"], capsys)
    lines = cli_error_lines(stderr)
    assert code == 2 and len(lines) == 1, stderr
    assert "2 workers running batches of 8 at 96x96 (float32) need at least" in lines[0]
    assert lines[0].endswith("12.0 MiB is available: lower --workers or --batch-size"), stderr
    assert not list((tmp_path / "two").glob("part-*"))
    # without --batch-size: batches of 32, as --help says
    code, _, stderr = run_cli([a for a in argv if a not in ("--batch-size", "8")] +
                              ["--out", str(tmp_path / "default"), "--workers", "2"], capsys)
    assert code == 2 and "2 workers running batches of 32 at 96x96" in stderr, stderr
    code, stdout, stderr = run_cli(argv + ["--out", str(tmp_path / "one"), "--workers", "1"], capsys)
    assert code == 0, stderr
    assert PROCESSED.search(stdout).groups() == ("241", "1", "0")
    # a short run counts the batch it has: 3 images are one batch of 3 for one replica, whatever is asked
    write_images(tmp_path / "few", 3)
    code, stdout, stderr = run_cli(["features", str(tmp_path / "few"), "--weights", "none", *SMALL, "--quiet",
                                    "--batch-size", "100000", "--workers", "2", "--out", str(tmp_path / "few-out")],
                                   capsys)
    assert code == 0, stderr
    assert PROCESSED.search(stdout).groups() == ("3", "0", "0")


@pytest.mark.parametrize("extra", [[], ["--dtype", "float64"], ["--layer", "block_6_project_BN"]],
                         ids=["float32-c", "float64", "layer-numpy"])
def test_three_replicas_write_the_rows_of_one(tmp_path, capsys, monkeypatch, extra):
    """The replicas are copies of the first job's model (its weight arrays, its packed C form):
    their rows are those of one model, bit for bit, on the C plan (float32) and on the NumPy layers
    (float64, or a layer other than the pooled output, run image by image)."""
    from mobilenetv2.batch.job import BatchJob
    write_images(tmp_path / "i", 23, seed=5, bad=["broken.png"])
    tables, users = {}, {}
    table = BatchJob.table
    for workers in ("1", "3"):
        used = users[workers] = set()
        monkeypatch.setattr(BatchJob, "table", lambda self, *a: used.add(id(self)) or table(self, *a))
        code, stdout, stderr = run_cli(["features", str(tmp_path / "i"), "--out", str(tmp_path / workers), *SMALL,
                                        "--weights", "none", "--batch-size", "3", "--workers", workers, "--quiet",
                                        *extra], capsys)
        assert code == 0, stderr
        assert PROCESSED.search(stdout).groups() == ("24", "1", "0")
        tables[workers] = pads.dataset(str(tmp_path / workers), format="parquet").to_table()
    assert len(users["1"]) == 1 and len(users["3"]) == 3  # (8 batches taken in turn by 3 replicas)
    one, three = tables["1"], tables["3"]
    assert one.schema == three.schema and one.column("id").to_pylist() == three.column("id").to_pylist()
    assert one.column("error").to_pylist() == three.column("error").to_pylist()
    want, got = (t.column("features").combine_chunks().flatten().to_numpy() for t in (one, three))
    assert want.dtype == (np.float64 if extra[:1] == ["--dtype"] else np.float32) and want.size > 0
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_replicas_share_the_weights_but_not_the_locks(dtype):
    """Each replica's model is a copy.copy of the first's: its own lock, layers and plans over the
    same weight arrays and, where the C plan runs, the same packed arrays (the first model packs
    them before it is copied, else each copy would pack its own).  Running in three threads at once,
    each computes what the first computes alone."""
    import threading

    from mobilenetv2.engines import native
    from mobilenetv2.batch.job import BatchJob
    job = BatchJob(alpha=0.35, size=96, weights=None, dtype=dtype, threads=1)
    jobs = job.replicas(3)
    assert len(jobs) == 3 and jobs[0] is job and job.replicas(1) == [job]
    for twin in jobs[1:]:
        assert twin.model is not job.model and twin.config() == job.config()
        assert twin.model._plan_lock is not job.model._plan_lock
        assert twin.model.get_layer("block_3_expand") is not job.model.get_layer("block_3_expand")
        for name in ("Conv1", "block_3_expand", "block_16_project"):
            for w, v in zip(twin.model.get_layer(name).weights, job.model.get_layer(name).weights):
                assert np.shares_memory(w, v)
        if dtype == "float32" and native.available():
            packed = job.model._packed._arrays
            assert packed.keys() == twin.model._packed._arrays.keys() and "block_16_project" in packed
            assert all(np.shares_memory(twin.model._packed._arrays[name]["w"], arrays["w"])
                       for name, arrays in packed.items())
    x = preprocess_input(np.random.default_rng(3).integers(0, 256, (4, 96, 96, 3)).astype(dtype))
    want = job.infer(x)
    got = [None] * 3
    start = threading.Barrier(3)

    def run(i):
        start.wait()
        got[i] = jobs[i].infer(x)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for y in got:
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_memory_check_counts_the_shared_weights_once(dtype, monkeypatch):
    """The figure of W replicas: W batches' buffers, and the weights once: the loaded ones are in use
    already (shared by the replicas), and the C plan's packed form of them (float32, as big as
    the float32 weights within 4 %) is made once for all.  Before, each replica past the first
    counted a weight set of its own."""
    from mobilenetv2.engines import machine, native
    from mobilenetv2.batch import local
    from mobilenetv2.batch.job import BatchJob
    from mobilenetv2.errors import InsufficientMemory
    monkeypatch.setattr(machine, "available_memory", lambda: 1 << 20)
    job = BatchJob(alpha=0.35, size=96, weights=None, dtype=dtype)
    packed = 4 * job.model.count_params() if dtype == "float32" and native.available() else 0
    mib = 2 ** 20
    for workers in (1, 3):
        with pytest.raises(InsufficientMemory) as info:
            local.check_memory(job, workers, 8, 2, 100)  # 13 batches of 8: 2 waiting
        replicas = workers * job.memory_bytes(8) + packed
        waiting = 2 * 8 * 96 * 96 * 3
        assert (f"need at least {(replicas + waiting) / mib:.1f} MiB ({workers} model replicas "
                f"{replicas / mib:.1f}, 2 decoded batches waiting {waiting / mib:.1f})") in str(info.value)
        for available, enough in ((replicas + waiting - 1, False), (replicas + waiting, True)):
            monkeypatch.setattr(machine, "available_memory", lambda: available)
            if enough:  # the waiting batches count as much as the replicas: a byte less is refused
                local.check_memory(job, workers, 8, 2, 100)
            else:
                with pytest.raises(InsufficientMemory):
                    local.check_memory(job, workers, 8, 2, 100)
    # 24 images in batches of 8 on 3 workers: every batch has a worker, none waits decoded
    replicas = 3 * job.memory_bytes(8) + packed
    monkeypatch.setattr(machine, "available_memory", lambda: replicas)
    local.check_memory(job, 3, 8, 2, 24)
    monkeypatch.setattr(machine, "available_memory", lambda: replicas - 1)
    with pytest.raises(InsufficientMemory, match="0 decoded batches waiting 0.0"):
        local.check_memory(job, 3, 8, 2, 24)


def test_a_numpy_replica_s_memory_grows_by_one_image_s_pixels_and_output_per_image():
    """float64 runs the NumPy layers one image at a time: one more image in a batch is its
    decoded bytes (96 x 96 x 3), their float64 copy and its float64 row of 1000 classes."""
    from mobilenetv2.batch.job import BatchJob
    job = BatchJob(kind="predict", alpha=0.35, size=96, weights=None, dtype="float64", top=1000)
    assert job.top == 1000  # as many as the head has: allowed
    pixels = 96 * 96 * 3
    for n in (1, 8, 31):
        assert job.memory_bytes(n + 1) - job.memory_bytes(n) == pixels + 8 * (pixels + 1000)


@pytest.mark.parametrize("dtype, layer", [("float32", None), ("float64", None), ("float32", "block_6_project_BN")],
                         ids=["float32-c", "float64", "layer-numpy"])
def test_each_ray_actor_asks_for_its_own_weights_and_their_packed_copy(dtype, layer):
    """An actor is a process with a model of its own: its batch, the weights as loaded and, where the C
    plan runs the job (float32, the pooled output, the extension built), the packed float32 copy it
    makes on its first batch.  Before, the packed copy was left out of the actor's request.  The
    figure is computed before Ray is used (mobilenetv2.ray imports Ray only to run a job)."""
    from mobilenetv2.engines import native
    from mobilenetv2.batch.job import BatchJob
    from mobilenetv2.ray import actor_memory_bytes
    job = BatchJob(alpha=0.35, size=96, weights=None, dtype=dtype, layer=layer)
    params = sum(w.size for w in job.model.get_weights())
    loaded = params * np.dtype(dtype).itemsize
    packed = 4 * params if dtype == "float32" and layer is None and native.available() else 0
    assert actor_memory_bytes(job, 8, 100) == job.memory_bytes(8) + loaded + packed
    # a short job's batch is the images it has: 3 images, batches of 8, are one batch of 3
    assert actor_memory_bytes(job, 8, 3) == job.memory_bytes(3) + loaded + packed


def test_ray_without_ray_names_the_extra(tmp_path, monkeypatch, capsys):
    write_images(tmp_path / "i", 2)
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    code, _, stderr = run_cli(["features", str(tmp_path / "i"), "--out", str(tmp_path / "o"), "--weights", "none",
                               *SMALL, "--ray", "auto"], capsys)
    assert code == 2 and "mobilenetv2[ray]" in stderr


def test_progress_line_counts_rate_and_eta():
    import io
    from mobilenetv2.batch.local import Progress
    stream = io.StringIO()
    progress = Progress(10_000_000, stream=stream, every=0)
    progress.start -= 100.0  # 100 s ago
    progress.update(800, errors=2)
    line = stream.getvalue().strip()
    rate = float(re.search(r"([\d.]+) images/s", line).group(1))
    assert line.startswith("800/10000000 images") and "2 errors" in line and 7.9 < rate <= 8.0
    days, h, m, s = map(int, re.search(r"ETA (\d+)d (\d\d):(\d\d):(\d\d)", line).groups())
    assert abs(days * 86400 + h * 3600 + m * 60 + s - (10_000_000 - 800) / rate) < 2  # ~14.5 days at 8/s
    stream = io.StringIO()  # slower than an image a second (float64 on huge images): still an ETA
    progress = Progress(10, stream=stream, every=0)
    progress.start -= 100.0
    progress.update(5)
    assert re.search(r"images/s  ETA 00:01:(39|40)$", stream.getvalue().strip())  # 5 more at 0.05/s
    # nothing done yet (every image still decoding): no rate, so no ETA; no images: no line at all
    stream = io.StringIO()
    Progress(5, stream=stream, every=0).finish()
    assert stream.getvalue() == "0/5 images  0.0 images/s  ETA --:--:--\n"
    stream = io.StringIO()
    progress = Progress(1, stream=stream, every=0)  # one image is a job too
    progress.update(1)
    progress.finish()
    assert stream.getvalue().startswith("1/1 images") and stream.getvalue().endswith("\n")
    stream = io.StringIO()
    Progress(0, stream=stream, every=0).finish()
    assert stream.getvalue() == ""


def test_the_stream_holds_blas_to_one_thread_while_it_runs(tmp_path):
    """float64 replicas with OpenBLAS's own threads spin at its barriers (7x slower on 2 busy cores)."""
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="the BLAS limit needs threadpoolctl ('batch' extra)")
    from mobilenetv2.batch import local
    from mobilenetv2.batch.dataset import OutputDataset
    from mobilenetv2.batch.inputs import list_images
    from mobilenetv2.batch.job import BatchJob

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    class Recording(BatchJob):
        seen = []

        def infer(self, x):
            self.seen.append(blas_threads())
            return super().infer(x)

    write_images(tmp_path / "i", 6)
    job = Recording("features", alpha=0.35, size=96, weights="none", dtype="float64")
    before = blas_threads()
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        outside = blas_threads()
        local.run([job], list_images([str(tmp_path / "i")]), OutputDataset(tmp_path / "o", job.config()), batch_size=2)
        assert blas_threads() == outside  # restored after the run
    assert Recording.seen and all(t and set(t) == {1} for t in Recording.seen)
    assert blas_threads() == before


@pytest.mark.skipif(sys.platform == "win32", reason="the --out lock is an flock (POSIX)")
def test_a_second_run_on_the_same_out_is_refused(tmp_path):
    from mobilenetv2.batch.dataset import OutputDataset
    config = {"format": 1, "kind": "features"}
    first = OutputDataset(tmp_path / "out", config)
    with pytest.raises(ValueError, match="another run is writing"):
        OutputDataset(tmp_path / "out", config)
    first.close()
    OutputDataset(tmp_path / "out", config).close()


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_dataset_files_get_the_umasks_permissions(tmp_path, capsys, mask):
    """Parts and _mobilenetv2.json are made by mkstemp (0600); a dataset meant to be read by other
    users or nodes gets what open(path, 'w') would give, as every other output does."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    write_images(folder, 3)
    out = tmp_path / "feats"
    old = os.umask(mask)
    try:
        code, _, stderr = run_cli(["features", str(folder), "--out", str(out), "--weights", "none", *SMALL], capsys)
    finally:
        os.umask(old)
    assert code == 0, stderr
    made = [p for p in out.iterdir() if p.is_file()]
    names = {p.name for p in made}
    assert "_mobilenetv2.json" in names and any(n.startswith("part-") for n in names), names
    for p in made:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p.name


def test_another_folder_with_the_same_layout_is_refused_a_moved_copy_resumes(tmp_path, capsys):
    """Ids are paths relative to the input: day2/img00001.png after day1/img00001.png has the same
    id. It was skipped as done (its row: day1's image); now refused, while a copy of day1 (the
    same files elsewhere) still resumes."""
    day1, day2, out = tmp_path / "day1", tmp_path / "day2", tmp_path / "out"
    write_images(day1, 4, seed=1)
    write_images(day2, 4, seed=2)  # the same names, other pixels (and sizes)
    assert (day1 / "img00001.png").stat().st_size != (day2 / "img00001.png").stat().st_size
    base = ["--out", str(out), "--weights", "none", *SMALL]
    assert run_cli(["features", str(day1), *base], capsys)[0] == 0
    code, _, stderr = run_cli(["features", str(day2), *base], capsys)
    assert code == 2 and "has the id of the row written for" in one_line(stderr), stderr
    assert "another image: run other inputs into another --out" in stderr
    shutil.copytree(day1, tmp_path / "copy")
    code, stdout, stderr = run_cli(["features", str(tmp_path / "copy"), *base], capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("0", "0", "4"), stderr


def test_a_part_of_another_configuration_is_refused(tmp_path, capsys):
    """A part file of another run (another layer: 11,520 values a row) dropped into --out counted
    its ids as done, and the dataset then failed to read as one table."""
    some = tmp_path / "some"
    write_images(some, 2)
    pooled, layer = tmp_path / "pooled", tmp_path / "layer"
    base = ["--weights", "none", *SMALL]
    assert run_cli(["features", str(some), "--out", str(pooled), *base], capsys)[0] == 0
    assert run_cli(["features", str(some), "--out", str(layer), "--layer", "out_relu", *base], capsys)[0] == 0
    stray = next(layer.glob("part-*.parquet"))
    shutil.copy(stray, pooled / "part-zz-stray.parquet")
    code, _, stderr = run_cli(["features", str(some), "--out", str(pooled), *base], capsys)
    assert code == 2 and "part-zz-stray.parquet' holds rows of another configuration" in stderr
    assert '"layer": "out_relu"' in stderr


def test_a_file_name_that_is_not_utf8_is_processed(tmp_path, capsys):
    """One such name stopped the whole job ('utf-8 codec can't encode')."""
    folder = tmp_path / "imgs"
    write_images(folder, 2)
    raw = os.fsencode(folder) + b"/caf\xe9.png"
    shutil.copy(folder / "img00001.png", raw)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["features", str(folder), "--out", str(out), "--weights", "none", *SMALL], capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("3", "0", "0"), stderr
    rows, _ = read_rows(out)
    import hashlib

    from mobilenetv2.engines import native
    from mobilenetv2.batch.inputs import image_id
    key = hashlib.blake2b(b"caf\xe9.png", digest_size=8).hexdigest()
    assert rows[key]["path"] == str(folder) + "/caf\\xe9.png" and rows[key]["error"] is None
    assert image_id("img00001.png") in rows
    # The same pixels: the same bits from the C engine, whatever else shares the batch; the NumPy
    # engine's matmul rounds a row by where BLAS puts it (Zen 5's OpenBLAS kernels: 5e-7 relative).
    same, twin = rows[key]["features"], rows[image_id("img00001.png")]["features"]
    if native.available():
        assert same == twin
    else:
        np.testing.assert_allclose(same, twin, rtol=1e-5, atol=1e-9)
    (tmp_path / "list.txt").write_bytes(b"imgs/caf\xe9.png\n")  # a Latin-1 list names it too
    code, stdout, stderr = run_cli(["features", str(tmp_path / "list.txt"), "--out", str(tmp_path / "o2"),
                                    "--weights", "none", *SMALL], capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("1", "0", "0"), stderr


def test_a_glob_through_a_link_loop_lists_each_file_once(tmp_path):
    from mobilenetv2.batch.inputs import list_images
    (tmp_path / "loop" / "a").mkdir(parents=True)
    os.symlink("..", tmp_path / "loop" / "a" / "up")
    Image.new("RGB", (40, 40)).save(tmp_path / "loop" / "a" / "x.jpg")
    globbed = list_images([str(tmp_path / "loop" / "**" / "*.jpg")])
    assert [p for _, p in globbed] == [str(tmp_path / "loop" / "a" / "x.jpg")]  # was 41 rows of it
    assert [p for _, p in list_images([str(tmp_path / "loop")])] == [p for _, p in globbed]


def test_a_folder_tree_deeper_than_the_recursion_limit_is_walked(tmp_path):
    """os.walk recurses: 1,100 levels were an internal RecursionError."""
    from mobilenetv2.batch.inputs import list_images
    deep = tmp_path / "d"
    deep.mkdir()
    path, levels = os.fspath(deep), []
    try:
        for _ in range(1100):  # one level at a time: os.makedirs recurses too
            path = os.path.join(path, "a")
            os.mkdir(path)
            levels.append(path)
        Image.new("RGB", (40, 40)).save(os.path.join(path, "x.png"))
        assert [p for _, p in list_images([str(deep)])] == [os.path.join(path, "x.png")]
    finally:  # bottom up: shutil.rmtree (pytest's cleanup of old tmp folders) recurses too
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(path, "x.png"))
        for level in reversed(levels):
            os.rmdir(level)


def test_layer_rows_are_the_same_for_any_batch_size(images, tmp_path, capsys):
    """A --layer runs the NumPy layers, whose BLAS products depend on the batch: the rows of batch 5
    differed from batch 1 (5.5e-7). Each image now runs on its own there, as float64 does."""
    folder, _ = images
    rows = []
    for bs in ("1", "5"):
        out = tmp_path / f"b{bs}"
        code, _, stderr = run_cli(["features", str(folder / "sub"), "--out", str(out), "--weights", "none",
                                   *SMALL, "--layer", "block_16_project_BN", "--batch-size", bs], capsys)
        assert code == 0, stderr
        rows.append(read_rows(out)[0])
    assert rows[0].keys() == rows[1].keys() and len(rows[0]) > 5
    for key in rows[0]:
        assert rows[0][key]["features"] == rows[1][key]["features"], key


@pytest.mark.parametrize("content", [b"[1, 2]", b'"x"', b"null"])
def test_a_manifest_that_is_not_an_object_is_refused(tmp_path, capsys, content):
    some = tmp_path / "some"
    write_images(some, 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "_mobilenetv2.json").write_bytes(content)
    code, _, stderr = run_cli(["features", str(some), "--out", str(out), "--weights", "none", *SMALL], capsys)
    assert code == 2 and "not a configuration; use --overwrite" in stderr, stderr


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_folder_this_command_did_not_write_is_refused_and_left_alone(tmp_path, capsys, overwrite):
    """--out naming a folder of other files (a Spark dataset's part-*.parquet, someone's .tmp-* folder):
    nothing deleted, nothing added, one line."""
    some = tmp_path / "some"
    write_images(some, 1)
    out = tmp_path / "shared"
    (out / ".tmp-build").mkdir(parents=True)
    (out / ".tmp-build" / "data").write_text("keep")
    (out / "part-00000-1b2c.snappy.parquet").write_text("keep")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code, _, stderr = run_cli(["features", str(some), "--out", str(out), "--weights", "none", *SMALL, *overwrite],
                              capsys)
    assert code == 2 and "has no _mobilenetv2.json" in stderr and "new or empty folder" in stderr, stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_an_empty_folder_and_one_a_run_left_before_its_manifest_are_used(tmp_path, capsys):
    some = tmp_path / "some"
    write_images(some, 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").touch()
    (out / ".tmp-abcd1234.json").write_text("{")  # a run killed while writing its manifest
    code, stdout, stderr = run_cli(["features", str(some), "--out", str(out), "--weights", "none", *SMALL], capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("2", "0", "0"), stderr
    assert not list(out.glob(".tmp-*"))


def test_a_folder_or_file_whose_name_looks_like_a_glob_is_itself(tmp_path, capsys):
    """'Trip [2019]' exists: it is that folder, not a pattern matching 'Trip 2' (which matched nothing)."""
    from mobilenetv2.batch.inputs import image_id
    trip = tmp_path / "Trip [2019]"
    paths = write_images(trip, 2)
    photo = tmp_path / "photo [1].jpg"
    shutil.copy(paths[0], photo)
    for spec, n in ((trip, 2), (photo, 1)):
        out = tmp_path / f"out{n}"
        code, stdout, stderr = run_cli(["features", str(spec), "--out", str(out), "--weights", "none", *SMALL], capsys)
        assert code == 0 and PROCESSED.search(stdout).groups() == (str(n), "0", "0"), stderr
        assert sorted(read_rows(out)[0]) == sorted(image_id(os.path.relpath(p, spec if n == 2 else tmp_path))
                                                   for p in (paths if n == 2 else [str(photo)]))
    code, _, stderr = run_cli(["features", str(trip / "*.jpg"), "--out", str(tmp_path / "o3"), "--weights", "none",
                               *SMALL], capsys)
    assert code == 2 and "matches no file" in stderr and "[[]" in stderr, stderr


def test_nothing_under_a_folder_input_is_left_out_silently(tmp_path, capsys, monkeypatch):
    """A link loop named like an image gets a row saying why; a folder that cannot be listed is named
    in a warning (both were left out without a word: the run said all was done)."""
    some = tmp_path / "some"
    write_images(some, 2)
    os.symlink("loop.jpg", some / "loop.jpg")
    (some / "locked").mkdir()
    Image.new("RGB", (40, 40)).save(some / "locked" / "x.jpg")
    scandir = os.scandir

    def no_entry(path):
        if os.fspath(path).endswith("locked"):  # (root reads any folder: chmod 0 would not do)
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", no_entry)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["features", str(some), "--out", str(out), "--weights", "none", *SMALL], capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("3", "1", "0"), stderr
    assert "warning: folder" in stderr and "locked' cannot be listed (Permission denied)" in stderr, stderr
    loop = [row for row in read_rows(out)[0].values() if row["path"].endswith("loop.jpg")]
    assert len(loop) == 1 and "symbolic links" in loop[0]["error"], loop


def test_an_overwrite_killed_half_way_can_be_run_again(tmp_path, capsys, monkeypatch):
    """--overwrite deletes the old parts, then the manifest: killed in between, the folder is still one
    this command wrote (a folder of parts without a manifest is refused as someone else's)."""
    from mobilenetv2.batch import dataset
    some = tmp_path / "some"
    write_images(some, 4)
    out = tmp_path / "out"
    base = ["features", str(some), "--out", str(out), "--weights", "none", *SMALL, "--batch-size", "1",
            "--rows-per-part", "1"]
    assert run_cli(base, capsys)[0] == 0
    (out / ".DS_Store").write_bytes(b"\0")  # a hidden file some file browsers add is no obstacle
    remove = dataset._remove

    def killed_after_one(path):
        remove(path)
        raise KeyboardInterrupt

    listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: sorted(listdir(path), key=lambda n: n != dataset.MANIFEST))
    monkeypatch.setattr(dataset, "_remove", killed_after_one)
    assert run_cli(base + ["--overwrite"], capsys)[0] == 130
    monkeypatch.undo()
    code, stdout, stderr = run_cli(base + ["--overwrite"], capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("4", "0", "0"), stderr
    assert read_rows(out)[1].num_rows == 4


def test_ctrl_c_just_after_a_part_is_renamed_reads_as_an_interruption(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the folder is synced after a part's rename: exit 130 and 'interrupted', not
    "error: No such file or directory: '.tmp-....parquet'" from deleting the renamed temporary."""
    from mobilenetv2.batch import dataset
    some = tmp_path / "some"
    write_images(some, 2)
    out = tmp_path / "out"

    def interrupted(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "_fsync_dir", interrupted)
    code, _, stderr = run_cli(["features", str(some), "--out", str(out), "--weights", "none", *SMALL], capsys)
    assert code == 130 and "interrupted; the finished parts stay" in stderr, stderr
    monkeypatch.undo()
    code, stdout, stderr = run_cli(["features", str(some), "--out", str(out), "--weights", "none", *SMALL], capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("0", "0", "2"), stderr


def test_a_manifest_that_cannot_be_written_fails_the_run(tmp_path, capsys, monkeypatch):
    """A disk that fills while the manifest is written: one line and a non-zero exit, no
    manifest and no temporary left, and the run goes once there is room (a lost error here
    ran the job into a folder no later run would know as its own)."""
    from mobilenetv2.batch import dataset
    some = tmp_path / "some"
    write_images(some, 2)
    out = tmp_path / "out"

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dataset.os, "fsync", full)
    code, _, stderr = run_cli(["features", str(some), "--out", str(out), "--weights", "none", *SMALL], capsys)
    assert code == 2 and stderr.count("\n") == 1 and os.strerror(errno.ENOSPC) in stderr, stderr
    assert not [p.name for p in out.iterdir() if p.name.endswith(".json")]
    monkeypatch.undo()
    code, stdout, stderr = run_cli(["features", str(some), "--out", str(out), "--weights", "none", *SMALL], capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("2", "0", "0"), stderr
    seconds, rate = map(float, re.search(r"in ([\d.]+) s \(([\d.]+) images/s\)", stdout).groups())
    assert rate > 0 and (seconds < 0.1 or abs(rate * seconds - 2) < 0.1 * rate + 0.2)  # a run under 1 s has a rate too


def test_an_out_folder_that_cannot_be_locked_is_not_said_to_be_busy(tmp_path, capsys, monkeypatch):
    """flock's ENOLCK (an NFS mount without its lock daemon) read as 'another run is writing to --out',
    so no run could ever write there: now a warning, and the run."""
    import errno
    import fcntl
    some = tmp_path / "some"
    write_images(some, 2)

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    code, stdout, stderr = run_cli(["features", str(some), "--out", str(tmp_path / "out"), "--weights", "none", *SMALL],
                                   capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("2", "0", "0"), stderr
    assert "warning: --out" in stderr and "cannot be locked (No locks available)" in stderr, stderr


@pytest.mark.parametrize("extra, message", [
    (["--ray", "auto", "--workers", "2", "--prefetch", "4"], "--workers, --prefetch size the local engine"),
    (["--ray", "auto", "--decode-workers", "3"], "--decode-workers size the local engine"),
    (["--ray-actors", "2"], "--ray-actors apply to --ray only"),
    (["--ray-actor-cpus", "0.5"], "--ray-actor-cpus apply to --ray only"),
])
def test_an_option_of_the_other_engine_is_refused_not_ignored(tmp_path, capsys, extra, message):
    """--workers with --ray (or --ray-actors without it) did nothing, silently."""
    write_images(tmp_path / "i", 1)
    code, _, err = run_cli(["features", str(tmp_path / "i"), "--out", str(tmp_path / "out"), "--weights", "none",
                            *SMALL, *extra], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cell", [np.array(["a.jpg", "b.jpg"]), ["a.jpg"], ("a.jpg",)])
def test_a_path_cell_holding_several_values_is_an_argument_error(cell):
    """The recipes' rows (a Dask partition, a Ray batch) with an array or a list where one path goes:
    NumPy's 'truth value of an array ... is ambiguous' ValueError escaped from the empty-cell test."""
    from mobilenetv2.batch.inputs import given_rows
    from mobilenetv2.errors import ArgumentError
    with pytest.raises(ArgumentError, match=r"row 1 of the batch has .* as its path: give one path"):
        given_rows({"path": ["ok.jpg", cell]})
    assert given_rows({"path": ["ok.jpg", None]})[1] == ["ok.jpg", ""]


def test_disk_full_while_publishing_a_part_exits_2_and_keeps_the_finished_parts(tmp_path, capsys, monkeypatch):
    """An OSError while writing (here ENOSPC on the second part's publish): one line, exit 2, the
    first part (exactly --rows-per-part rows: a part is closed when it holds that many) kept, no
    temporary file left, and the rerun writes the rest."""
    import errno

    from mobilenetv2.batch import dataset
    write_images(tmp_path / "i", 12, seed=3)
    out = tmp_path / "out"
    argv = ["features", str(tmp_path / "i"), "--out", str(out), "--weights", "none", *SMALL, "--batch-size", "2",
            "--rows-per-part", "4", "--workers", "1", "--quiet"]
    publish, calls = dataset.PartFile.publish, []

    def full_on_the_second(self, final):
        calls.append(final)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return publish(self, final)

    monkeypatch.setattr(dataset.PartFile, "publish", full_on_the_second)
    code, stdout, stderr = run_cli(argv, capsys)
    assert code == 2 and cli_error_lines(stderr) == ["mobilenetv2 features: error: [Errno 28] No space left on device"]
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 1 and pq.read_table(parts[0]).num_rows == 4
    assert not list(out.glob(".tmp-*"))
    monkeypatch.undo()
    code, stdout, stderr = run_cli(argv, capsys)
    assert code == 0 and PROCESSED.search(stdout).groups() == ("8", "0", "4"), stderr
    assert [pq.read_table(p).num_rows for p in sorted(out.glob("part-*.parquet"))] == [4, 4, 4]


def test_progress_on_stderr_unless_quiet(tmp_path, capsys):
    write_images(tmp_path / "i", 3, seed=4)
    base = ["features", str(tmp_path / "i"), "--weights", "none", *SMALL, "--batch-size", "2"]
    code, _, stderr = run_cli(base + ["--out", str(tmp_path / "loud")], capsys)
    lines = cli_error_lines(stderr)
    assert code == 0 and lines[0].startswith("mobilenetv2 features: 3 images, 0 already in ")
    assert lines[-1].startswith("3/3 images  ") and " images/s  ETA 00:00:00" in lines[-1]
    code, _, stderr = run_cli(base + ["--out", str(tmp_path / "quiet"), "--quiet"], capsys)
    assert code == 0 and cli_error_lines(stderr) == []


def test_workers_default_to_the_cpus_over_the_threads_and_decoders_as_asked(tmp_path, capsys, monkeypatch):
    """Without --workers: one replica per --threads CPUs of the affinity mask (4 CPUs, 2 threads: 2
    replicas); --decode-workers 1 decodes every image on one thread."""
    import threading

    from mobilenetv2.batch import job as batch_job
    from mobilenetv2.batch import local
    write_images(tmp_path / "i", 12, seed=6)
    seen, threads = [], set()
    run, load = local.run, batch_job.BatchJob.load

    def recording_run(jobs, *a, **k):
        seen.append(len(jobs))
        return run(jobs, *a, **k)

    def recording_load(self, path):
        threads.add(threading.current_thread().name)
        time.sleep(0.005)  # long enough that a second decoder, were there one, would take some
        return load(self, path)

    monkeypatch.setattr(local, "available_cpus", lambda: 4)
    monkeypatch.setattr(local, "run", recording_run)
    monkeypatch.setattr(batch_job.BatchJob, "load", recording_load)
    code, stdout, stderr = run_cli(["features", str(tmp_path / "i"), "--out", str(tmp_path / "o"), "--weights", "none",
                                    *SMALL, "--batch-size", "1", "--threads", "2", "--decode-workers", "1",
                                    "--quiet"], capsys)
    assert code == 0, stderr
    assert seen == [2] and len(threads) == 1 and next(iter(threads)).startswith("mnv2-decode")


def test_available_cpus_without_an_affinity_mask(monkeypatch):
    from mobilenetv2.batch import local
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert local.available_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undeterminable"
    assert local.available_cpus() == 1
