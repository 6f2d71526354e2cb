"""The Dask recipe (mobilenetv2.dask): the rows of the batch command, one model per process."""
import numpy as np
import pytest

from batch_images import write_images
from conftest import same_values
from mobilenetv2.cli import main

pytest.importorskip("pyarrow", reason="the batch rows need the 'batch' extra (pyarrow)")
pd = pytest.importorskip("pandas", reason="the Dask recipe needs pandas")
import pyarrow.dataset as pads  # noqa: E402

from mobilenetv2 import dask as mnv2_dask  # noqa: E402

CONFIG = dict(kind="features", alpha=0.35, size=96, weights="none")


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 24, seed=9, bad=["broken.png"])
    out = tmp_path_factory.mktemp("out") / "rows"
    assert main(["features", str(folder), "--out", str(out), "--alpha", "0.35", "--size", "96", "--weights", "none",
                 "--quiet"]) == 0
    return pads.dataset(str(out), format="parquet").to_table().to_pandas().set_index("id").sort_index()


def assert_same(got, want):
    got = got.set_index("id").sort_index()
    assert list(got.index) == list(want.index)
    assert list(got["error"].isna()) == list(want["error"].isna())
    for g, w in zip(got["features"], want["features"]):
        assert (g is None and w is None) or same_values(g, w)


def test_partition_rows_equal_the_batch_command_and_the_model_is_built_once(local_rows):
    frame = pd.DataFrame({"id": local_rows.index, "path": local_rows["path"]})
    mnv2_dask.cached_job.cache_clear()  # (other test files' jobs are in the process's cache)
    parts = [mnv2_dask.predict_partition(frame.iloc[i:i + 7], **CONFIG) for i in range(0, len(frame), 7)]
    assert_same(pd.concat(parts), local_rows)
    assert mnv2_dask.cached_job.cache_info().misses == 1
    meta = mnv2_dask.partition_meta(**CONFIG)
    assert list(meta.columns) == list(parts[0].columns) and len(meta) == 0


def test_a_missing_path_is_a_row_saying_so_and_a_missing_id_an_error_naming_its_row(local_rows):
    """None, NaN and pandas' NA in the path column were str()'d: rows about files named 'None', 'nan'
    and '<NA>'; in the id column they became the ids 'nan'."""
    from mobilenetv2.errors import ArgumentError
    good = local_rows[local_rows["error"].isna()].iloc[:1]
    frame = pd.DataFrame({"id": ["a", "b", "c", good.index[0]],
                          "path": pd.Series([None, np.nan, pd.NA, good["path"].iloc[0]], dtype=object)})
    rows = mnv2_dask.predict_partition(frame, **CONFIG)
    assert list(rows["id"]) == list(frame["id"])
    assert list(rows["path"][:3]) == ["", "", ""]
    assert all(e.startswith("the path is missing") for e in rows["error"][:3])
    assert all(f is None for f in rows["features"][:3])
    assert_same(rows.iloc[3:], good)
    string_paths = frame.astype({"path": "string"}).drop(columns="id")  # missing: pd.NA; ids: the paths' hashes
    assert list(mnv2_dask.predict_partition(string_paths, **CONFIG)["error"].isna()) == [False] * 3 + [True]
    for missing in (None, np.nan, pd.NA):
        frame = pd.DataFrame({"id": pd.Series(["a", missing], dtype=object), "path": ["x.jpg", "y.jpg"]})
        with pytest.raises(ArgumentError, match="row 1 of the batch \\(path 'y.jpg'\\) has no id"):
            mnv2_dask.predict_partition(frame, **CONFIG)


def test_a_partition_without_a_path_column_is_an_error_naming_it():
    """It was pandas' KeyError: 'path' (Ray's Predictor said what was missing)."""
    from mobilenetv2.errors import ArgumentError
    with pytest.raises(ArgumentError, match="the batch has no 'path' column"):
        mnv2_dask.predict_partition(pd.DataFrame({"paths": ["a.jpg"]}), **CONFIG)


def test_on_dask_processes_and_to_parquet(local_rows, tmp_path):
    dd = pytest.importorskip("dask.dataframe", reason="the Dask test needs dask[dataframe]")
    import dask
    frame = dd.from_pandas(pd.DataFrame({"id": local_rows.index, "path": local_rows["path"]}), npartitions=4)
    rows = frame.map_partitions(mnv2_dask.predict_partition, **CONFIG, meta=mnv2_dask.partition_meta(**CONFIG))
    with dask.config.set(scheduler="processes", num_workers=2):
        assert_same(rows.compute(), local_rows)
        rows.to_parquet(str(tmp_path / "out"), schema=mnv2_dask.partition_schema(**CONFIG))
    written = pads.dataset(str(tmp_path / "out"), format="parquet").to_table()
    assert written.schema.field("features").type == mnv2_dask.partition_schema(**CONFIG).field("features").type
    assert_same(written.to_pandas(), local_rows)


def predict_with(indices, model):
    """A partition function taking the model itself (Dask pickles it into each task)."""
    x = np.random.default_rng(3).uniform(-1, 1, (6, 64, 64, 3)).astype(np.float32)
    return [(i, model.threads, model.predict(x[i:i + 1])[0]) for i in indices]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_map_partitions_with_the_model_as_an_argument_on_processes(dtype):
    db = pytest.importorskip("dask.bag", reason="the Dask test needs dask[bag]")
    import dask
    from mobilenetv2 import MobileNetV2
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, dtype=dtype, threads=2)
    model.set_weights([w * 1.01 for w in model.get_weights()])
    want = predict_with(range(6), model)  # the model has run: plans and a pool that must not travel
    with dask.config.set(scheduler="processes", num_workers=2):
        got = db.from_sequence(range(6), npartitions=3).map_partitions(predict_with, model).compute()
    assert [i for i, _, _ in got] == list(range(6))
    for (_, threads, g), (_, _, w) in zip(got, want):
        assert threads == 2
        np.testing.assert_array_equal(g, w)


def test_the_recipes_defaults_are_the_batch_jobs_at_one_thread():
    """The Dask functions and the Ray Predictor take the batch job's configuration with its defaults
    (1.0_224 ImageNet features, top 5, float32), but one thread each: the parallelism is the workers
    (the module's text).  A default that drifted would make a partition's rows another model's."""
    import inspect

    from mobilenetv2 import dask as mdask
    from mobilenetv2 import ray as mray
    from mobilenetv2.batch.job import BatchJob

    def defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}

    job = defaults(BatchJob.__init__)
    assert job == {"kind": "features", "alpha": 1.0, "size": 224, "weights": "imagenet", "layer": None, "top": 5,
                   "dtype": "float32", "threads": None}
    for fn in (mdask.cached_job, mdask.predict_partition, mdask.partition_meta, mdask.partition_schema,
               mray.Predictor.__init__):
        assert defaults(fn) == {**job, "threads": 1}, fn.__qualname__
