"""The batch command on Ray Data (a local 2-CPU instance): the same rows as without Ray, and an actor
killed mid-run loses and duplicates nothing."""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

from batch_images import write_images
from conftest import REPO, cli_error_lines, same_values
from mobilenetv2.cli import main

pytest.importorskip("pyarrow", reason="the batch command needs the 'batch' extra (pyarrow)")
ray = pytest.importorskip("ray", reason="the Ray tests need the 'ray' extra")
pytest.importorskip("ray.data", reason="the Ray tests need the 'ray' extra (ray[data])")
import pyarrow.dataset as pads  # noqa: E402

from mobilenetv2.ray import Predictor, actor_resources  # noqa: E402

SMALL = ["--alpha", "0.35", "--size", "96", "--weights", "none", "--batch-size", "8"]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local Ray instance with 2 CPUs whose workers import this checkout."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), old]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if old is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 60, seed=5, bad=["broken.jpg"])
    return folder


@pytest.fixture(scope="module")
def local_rows(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    assert main(["features", str(images), "--out", str(out), *SMALL, "--quiet"]) == 0
    return sorted_table(out)


def sorted_table(out):
    table = pads.dataset(str(out), format="parquet").to_table()
    return table.sort_by("id")


def assert_same_rows(got, want):
    assert got.num_rows == want.num_rows == len(set(got.column("id").to_pylist()))
    assert got.schema.remove_metadata() == want.schema.remove_metadata()
    for name in want.column_names:
        if name == "features":  # the values: see same_values
            assert all(same_values(g, w) for g, w in zip(got.column(name).to_pylist(),
                                                          want.column(name).to_pylist())), name
        else:
            assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


@contextlib.contextmanager
def users_progress_bars():
    """Ray Data's bars on in the process's DataContext (the user's setting, which run_job's quiet
    job must leave as it found it), and Ray's default back after the test."""
    ctx = ray.data.DataContext.get_current()
    before, ctx.enable_progress_bars = ctx.enable_progress_bars, True
    try:
        yield ctx
    finally:
        ctx.enable_progress_bars = before


def test_ray_rows_equal_the_local_run(local_ray, images, local_rows, tmp_path, capsys):
    out = tmp_path / "ray"
    assert main(["features", str(images), "--out", str(out), *SMALL, "--ray", "auto"]) == 0
    # not --quiet: our own count of images done (beside Ray's bars), its final line forced at the end
    assert any(line.startswith("61/61 images  ") for line in capsys.readouterr().err.splitlines())
    got = sorted_table(out)
    assert_same_rows(got, local_rows)
    assert same_values(np.array(got.column("features").to_pylist()[1]),
                          np.array(local_rows.column("features").to_pylist()[1]))
    assert not list(out.glob(".tmp-*"))
    # a rerun finds every id done and starts no Ray job
    assert main(["features", str(images), "--out", str(out), *SMALL, "--ray", "auto", "--quiet"]) == 0
    assert sorted_table(out).num_rows == 61


def test_an_actor_killed_once_loses_and_duplicates_nothing(local_ray, images, local_rows, tmp_path):
    from mobilenetv2.batch.dataset import OutputDataset
    from mobilenetv2.batch.inputs import list_images
    from mobilenetv2.batch.job import BatchJob
    from mobilenetv2.ray import run_job
    marker = str(tmp_path / "killed-once")

    class DiesOnItsThirdBatch(Predictor):  # defined here: Ray ships it to the actors by value
        calls = 0

        def __call__(self, batch):
            type(self).calls += 1
            if type(self).calls == 3 and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)  # the actor process dies mid-job, as on an OOM kill or a lost node
            return super().__call__(batch)

    job_args = dict(kind="features", alpha=0.35, size=96, weights="none", threads=1)
    out = OutputDataset(tmp_path / "out", BatchJob(**job_args).config())
    written, errors = run_job(job_args, list_images([str(images)]), out, batch_size=8, quiet=True,
                              predictor=DiesOnItsThirdBatch)
    assert os.path.exists(marker), "no actor was killed: the test proved nothing"
    assert (written, errors) == (61, 1)
    assert_same_rows(sorted_table(out.path), local_rows)


def test_rows_keep_the_input_order_when_a_later_block_finishes_first(local_ray, images, tmp_path):
    """Users diff two runs and join on position: the rows come in the input order, as the local
    engine writes them, whatever order the actors finish their blocks in.  Here the first block
    waits until a later block's part is written (so the two actors run side by side) and, where the
    driver takes parts as they come, until that part is in --out."""
    import glob
    import time
    from mobilenetv2.batch.dataset import OutputDataset
    from mobilenetv2.batch.inputs import list_images
    from mobilenetv2.batch.job import BatchJob
    from mobilenetv2.ray import run_job
    items = list_images([str(images)])
    out_dir, seen = str(tmp_path / "out"), str(tmp_path / "later-block-first")

    class FirstBlockWaits(Predictor):  # defined here: Ray ships it to the actors by value
        def __call__(self, batch):
            if items[0][0] in batch["id"]:
                staged, deadline = None, time.monotonic() + 60
                while time.monotonic() < deadline:
                    if glob.glob(os.path.join(out_dir, "part-*.parquet")):
                        staged = staged or time.monotonic()  # a later block is in --out already
                        break
                    if staged is None and glob.glob(os.path.join(out_dir, ".tmp-ray-*", "part-*.parquet")):
                        staged = time.monotonic()  # a later block is written
                    if staged is not None and time.monotonic() > staged + 2:
                        break  # and not moved into --out: the driver waits for this block
                    time.sleep(0.05)
                if staged is not None:
                    open(seen, "w").close()
            return super().__call__(batch)

    job_args = dict(kind="features", alpha=0.35, size=96, weights="none", threads=1)
    out = OutputDataset(out_dir, BatchJob(**job_args).config())
    with users_progress_bars() as ctx:
        assert run_job(job_args, items, out, batch_size=8, quiet=True, predictor=FirstBlockWaits) == (61, 1)
        assert ctx.enable_progress_bars, "a quiet job turned off the bars of the user's later datasets"
    assert os.path.exists(seen), "no later block finished before the first: the test proved nothing"
    assert len(out.parts()) > 2
    assert pads.dataset(out_dir, format="parquet").to_table().column("id").to_pylist() == [i for i, _ in items]


def test_actors_that_a_node_s_memory_cannot_hold_together_are_refused(local_ray, images, tmp_path, capsys,
                                                                      monkeypatch):
    """Each actor's model checks only its own buffers: Ray put two actors that each fit side by side on
    a node that could not hold both.  Each now asks Ray for its memory, and a job whose actors the
    nodes cannot hold is refused, not waited for.  12 MiB holds one actor of 0.35_96 with batches of
    8 (the run at the end), not two."""
    from mobilenetv2.batch.job import BatchJob
    from mobilenetv2.ray import actor_memory_bytes
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0, "memory": 12 << 20}}])
    argv = ["features", str(images), *SMALL, "--ray", "auto", "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "two"), "--ray-actors", "2"]) == 2
    stderr = capsys.readouterr().err
    lines = cli_error_lines(stderr)
    assert len(lines) == 1, stderr
    # the figure each actor asks Ray for: a batch of 8, the weights and, on the C engine, their packed copy
    each = actor_memory_bytes(BatchJob(alpha=0.35, size=96, weights="none"), 8, 61) / 2 ** 20
    assert f"2 Ray actors need at least {each:.1f} MiB each" in lines[0]
    assert "the nodes' memory holds 1 of them: lower --ray-actors or --batch-size" in lines[0]
    assert not list((tmp_path / "two").glob("part-*"))
    assert main(argv + ["--out", str(tmp_path / "one"), "--ray-actors", "1"]) == 0
    assert sorted_table(tmp_path / "one").num_rows == 61


def test_default_actors_leave_cpu_for_reads_and_writes():
    assert actor_resources(2, threads=1) == (2, 0.75)
    assert actor_resources(64, threads=4) == (16, (64 - 0.5) / 16)
    assert actor_resources(8, threads=1, actors=2) == (2, 1.0)
    assert actor_resources(2, threads=2) == (1, 1.5)     # one actor of 2 threads: 2 CPUs less 0.5
    assert actor_resources(1, threads=4) == (1, 0.5)     # fewer CPUs than threads: still one actor
    with pytest.raises(ValueError, match="leave no CPU"):
        actor_resources(2, threads=1, actors=2, actor_cpus=1)


def test_a_node_without_cpus_holds_no_actor(monkeypatch):
    """A head node started with num_cpus=0 lists no "CPU" resource: it holds no actor, however much
    memory it has, so two actors on the one 2-CPU node of 12 MiB are refused (one of 8 MiB fits)."""
    from mobilenetv2 import ray as mray
    from mobilenetv2.errors import ArgumentError
    nodes = [{"Alive": True, "Resources": {"memory": 1 << 30}},
             {"Alive": True, "Resources": {"CPU": 2.0, "memory": 12 << 20}},
             {"Alive": False, "Resources": {"CPU": 8.0, "memory": 1 << 30}}]
    with pytest.raises(ArgumentError, match="the nodes' memory holds 1 of them"):
        mray._check_memory(nodes, 2, 1.0, 8 << 20)
    mray._check_memory(nodes, 1, 1.0, 8 << 20)


def test_only_host_port_addresses_are_probed_and_an_empty_job_starts_nothing(monkeypatch):
    """'auto', a ray:// address and other forms than host:port are Ray's to resolve: no connection
    is tried for them; a job of no images returns before Ray is reached."""
    import socket
    from mobilenetv2 import ray as mray

    def no_connection(*args, **kwargs):
        raise AssertionError(f"connected to {args}")
    monkeypatch.setattr(socket, "create_connection", no_connection)
    for address in ("auto", "ray://head:10001", "head", ":6379", "head:", "head:port"):
        assert mray._reachable(address) is None, address
    monkeypatch.setattr(mray, "_connect", no_connection)
    assert mray.run_job({}, [], None) == (0, 0)


def test_a_job_s_threads_size_its_actors(local_ray, monkeypatch):
    """Each actor's model runs the job's --threads: the actors are sized for that many (one where
    the job sets none), not for one thread each whatever was asked."""
    import mobilenetv2.ray as R

    class Sized(Exception):
        pass

    seen = []

    def sizing(cluster_cpus, threads=1, actors=None, actor_cpus=None):
        seen.append(threads)
        raise Sized

    monkeypatch.setattr(R, "actor_resources", sizing)
    for job_args in (dict(threads=2), dict(threads=None), dict()):
        with pytest.raises(Sized):
            R.run_job(dict(kind="features", alpha=0.35, size=96, weights="none", **job_args),
                      [(0, "a.png")], None, quiet=True)
    assert seen == [2, 1, 1]


def test_a_quiet_job_runs_without_ray_s_bars(local_ray, tmp_path, monkeypatch):
    """--quiet turns Ray Data's bars off for the job (as a progress of our own does), and the
    user's setting is back afterwards."""
    import types
    from mobilenetv2.ray import run_job

    class Started(Exception):
        pass

    seen = []

    def from_items(*a, **k):
        seen.append(ray.data.DataContext.get_current().enable_progress_bars)
        raise Started

    monkeypatch.setattr(ray.data, "from_items", from_items)
    out = types.SimpleNamespace(path=str(tmp_path), run_id="t")
    job_args = dict(kind="features", alpha=0.35, size=96, weights="none", threads=1)
    with users_progress_bars() as ctx:
        for quiet in (True, False):
            with pytest.raises(Started):
                run_job(job_args, [(0, "a.png")], out, quiet=quiet)
            assert ctx.enable_progress_bars is True
    assert seen == [False, True] and list(tmp_path.iterdir()) == []  # the staging folder is gone too


def test_parts_hold_a_few_blocks_per_actor_within_the_part_limit():
    from mobilenetv2.ray import part_rows
    assert part_rows(800, actors=2) == 100                       # 800 / (4 x 2)
    assert part_rows(61, actors=2) == 8                          # 61 / 8 = 7.6 -> 8
    assert part_rows(5, actors=2) == 1                           # at least one image
    assert part_rows(10_000_000, actors=64) == 4096              # a big job: --rows-per-part
    assert part_rows(10_000_000, actors=2, rows_per_part=1000) == 1000


def test_a_retried_block_publishes_the_same_part_again(images, local_rows, tmp_path):
    """What Ray does after an actor died: the same block runs again (here on a second writer, as on a
    restarted actor).  It must land in the same file name with the same rows, not in a second file."""
    import pyarrow.parquet as pq
    from mobilenetv2.batch.inputs import list_images
    from mobilenetv2.ray import PartWriter, part_name
    items = list_images([str(images)])
    block = {"id": [i for i, _ in items[:13]], "path": [p for _, p in items[:13]]}
    job_args = dict(kind="features", alpha=0.35, size=96, weights="none", threads=1)
    first = PartWriter(tmp_path, batch_size=4, **job_args)(block).to_pylist()
    name = part_name(block["id"])
    assert pq.read_metadata(tmp_path / name).num_row_groups == 4  # one row group per batch: 4+4+4+1
    before = pq.read_table(tmp_path / name)
    again = PartWriter(tmp_path, batch_size=5, **job_args)(block).to_pylist()
    assert block["path"][0].endswith("broken.jpg")               # the unreadable image is in the block
    assert first == again == [{"file": name, "rows": 13, "errors": 1}]
    assert sorted(os.listdir(tmp_path)) == [name]                # no temporary left, no second part
    assert_same_rows(pq.read_table(tmp_path / name), before)  # bit for bit on the C core
    assert pq.read_metadata(tmp_path / name).num_row_groups == 3  # the retry's file (5+5+3), not the first's (4x)
    want = local_rows.filter(pads.field("id").isin(block["id"])).sort_by("id")
    assert_same_rows(before.sort_by("id"), want)
    other = {"id": block["id"][1:], "path": block["path"][1:]}
    assert part_name(other["id"]) != name


def test_a_missing_path_is_a_row_saying_so_and_a_missing_id_an_error_naming_its_row(images, local_rows):
    """A null path was str()'d into a row about a file named 'None', a binary one into "b'...'"."""
    import pyarrow as pa
    from mobilenetv2.errors import ArgumentError
    good = os.path.join(str(images), "img00001.png")
    batch = pa.table({"path": pa.array([None, os.fsencode(good)], pa.binary())})
    rows = Predictor(alpha=0.35, size=96, weights="none").__call__(batch).to_pylist()
    assert rows[0]["path"] == "" and rows[0]["features"] is None
    assert rows[0]["error"].startswith("the path is missing")
    want = local_rows.filter(pads.field("path") == good).to_pylist()[0]
    assert (rows[1]["path"], rows[1]["error"]) == (good, None)
    assert same_values(np.array(rows[1]["features"]), np.array(want["features"]))
    batch = pa.table({"id": ["a", None], "path": [good, good]})
    with pytest.raises(ArgumentError, match=f"row 1 of the batch \\(path {good!r}\\) has no id"):
        Predictor(alpha=0.35, size=96, weights="none")(batch)


def test_importing_the_recipe_does_not_import_ray():
    code = "import sys, mobilenetv2, mobilenetv2.ray, mobilenetv2.cli; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_a_job_whose_actors_cannot_start_fails_in_one_line(local_ray, images, tmp_path, capsys):
    """Weights that exist on the driver but not for the actors (a node without the file) -> one line, exit 2."""
    from mobilenetv2.batch.dataset import OutputDataset
    from mobilenetv2.batch.inputs import list_images
    from mobilenetv2.batch.job import BatchJob
    from mobilenetv2.ray import RayJobFailed, run_job

    class NoWeightsHere(Predictor):
        def __init__(self, **kwargs):
            raise OSError("weights file 'w.h5' not found on this node")

    job_args = dict(kind="features", alpha=0.35, size=96, weights="none", threads=1)
    out = OutputDataset(tmp_path / "out", BatchJob(**job_args).config())
    with pytest.raises(RayJobFailed, match="not found on this node.*rerun to resume"):
        run_job(job_args, list_images([str(images)])[:4], out, batch_size=2, quiet=True, predictor=NoWeightsHere)
    assert not out.parts()


def test_a_job_whose_actors_raise_says_why(local_ray, images, tmp_path):
    """An actor's error (a full disk) is the message, not Ray Data's advice about retries that follows it."""
    from mobilenetv2.batch.dataset import OutputDataset
    from mobilenetv2.batch.inputs import list_images
    from mobilenetv2.batch.job import BatchJob
    from mobilenetv2.ray import RayJobFailed, run_job

    class DiskFull(Predictor):
        def __call__(self, batch):
            raise OSError(28, "No space left on device")

    job_args = dict(kind="features", alpha=0.35, size=96, weights="none", threads=1)
    out = OutputDataset(tmp_path / "out", BatchJob(**job_args).config())
    with users_progress_bars() as ctx:
        with pytest.raises(RayJobFailed) as failed:
            run_job(job_args, list_images([str(images)])[:4], out, batch_size=2, quiet=True, predictor=DiskFull)
        assert ctx.enable_progress_bars, "a quiet job that failed turned off the bars of the user's later datasets"
    assert "OSError: [Errno 28] No space left on device); the parts already in --out stay" in str(failed.value)
    assert "retr" not in str(failed.value)
    assert not out.parts()


def _inputs(n=4, size=64):
    return np.random.default_rng(7).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_model_sent_through_ray_put_predicts_the_same_bits_with_the_workers_threads(local_ray, dtype):
    """ray.put(model) of a model that has run (compiled plans, a pool) reaches a task, which builds its
    own plans with the one thread Ray gave it (OMP_NUM_THREADS=1) and computes the original's bits."""
    from mobilenetv2 import MobileNetV2
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, dtype=dtype, threads=2)
    model.set_weights([w * 1.01 for w in model.get_weights()])  # not what a fresh model would hold
    default = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, dtype=dtype)  # threads from the worker
    default.set_weights(model.get_weights())
    x = _inputs()
    want = model.predict(x)
    default.predict(x)  # both have compiled plans when they are put

    @ray.remote(num_cpus=1)
    def predict(m, x):
        return m.threads, os.environ.get("OMP_NUM_THREADS"), m.predict(x)

    for sent, threads in ((model, 2), (default, 1)):
        got_threads, omp, got = ray.get(predict.remote(ray.put(sent), ray.put(x)))
        assert (got_threads, omp) == (threads, "1")
        assert same_values(got, want)


def test_an_address_where_no_cluster_listens_fails_at_once(images, tmp_path):
    """ray.init retried such an address for ever (a typo hung the command): now one line, exit 2."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    result = subprocess.run([sys.executable, "-m", "mobilenetv2", "features", str(images), "--out", str(tmp_path / "o"),
                             *SMALL, "--quiet", "--ray", f"127.0.0.1:{port}"], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 2, result.stderr
    assert f"no Ray cluster answers at '127.0.0.1:{port}'" in result.stderr.strip().splitlines()[-1], result.stderr
