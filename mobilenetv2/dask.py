"""MobileNetV2 on Dask: a partition function that lives in an importable module, one model per process.

Importing this module does not import Dask.  The recipe::

    import dask.dataframe as dd, pandas as pd
    from dask.distributed import Client, LocalCluster        # or a running cluster
    from mobilenetv2.dask import predict_partition, partition_meta, partition_schema

    client = Client(LocalCluster(n_workers=CPUS, threads_per_worker=1))   # one thread per worker
    paths = dd.from_pandas(pd.DataFrame({"path": image_paths}), npartitions=CPUS * 8)
    config = dict(kind="features", alpha=1.0, size=224, weights="imagenet")
    rows = paths.map_partitions(predict_partition, **config, meta=partition_meta(**config))
    rows.to_parquet("/shared/features", schema=partition_schema(**config))   # fixed-size list vectors

Why a module and not a function in your script: Dask pickles a function defined in ``__main__`` by
value, with fresh globals, so a model cached in it is rebuilt for every partition (2x slower on 2
cores); ``predict_partition`` is pickled by reference and its model is built once per worker
process (``functools.lru_cache``).  One thread per worker and ``threads=1``: the parallelism is the
workers (each call also holds BLAS to one thread, see mobilenetv2.batch.job.blas_single_threaded).  The rows are the batch command's (mobilenetv2.batch.job) as a pandas DataFrame: the vectors
are one NumPy array per row.
"""
import functools

from mobilenetv2.errors import ArgumentError, is_whole, real


@functools.lru_cache(maxsize=4, typed=True)  # typed: True and 2.0 equal 1 and 2, and must still be refused
def _cached_job(kind, alpha, size, weights, layer, top, dtype, threads):
    from mobilenetv2.batch.job import BatchJob
    return BatchJob(kind=kind, alpha=alpha, size=size, weights=weights, layer=layer, top=top, dtype=dtype,
                    threads=threads)


def cached_job(kind="features", alpha=1.0, size=224, weights="imagenet", layer=None, top=5, dtype="float32",
               threads=1):
    """The BatchJob (its model built once) of this configuration, kept for the life of the process.
    The configuration's values are the cache's key: a list or an array among them is an
    ArgumentError, not the cache's "unhashable type"."""
    args = dict(kind=kind, alpha=alpha, size=size, weights=weights, layer=layer, top=top, dtype=dtype,
                threads=threads)
    for name, value in args.items():
        if is_whole(value):  # (np.array(2), unhashable, is the number 2)
            args[name] = value = int(value)
        elif real(value) is not None:  # (np.array(0.35) too: the float it holds)
            args[name] = value = real(value)
        try:
            hash(value)
        except TypeError:  # (a list, an array, a tuple holding one)
            raise ArgumentError(f"the job's settings must be plain values (numbers, strings, None), "
                                f"got {name}={value!r}") from None
    return _cached_job(*args.values())


cached_job.cache_info, cached_job.cache_clear = _cached_job.cache_info, _cached_job.cache_clear


def predict_partition(frame, kind="features", alpha=1.0, size=224, weights="imagenet", layer=None, top=5,
                      dtype="float32", threads=1):
    """A pandas DataFrame with a ``path`` column (and optionally ``id``) -> its rows as a DataFrame
    (columns id, path, features or classes/scores[/wnids/names], error)."""
    from mobilenetv2.batch.inputs import given_rows
    from mobilenetv2.batch.job import blas_single_threaded
    job = cached_job(kind, alpha, size, weights, layer, top, dtype, threads)
    ids, paths = given_rows(frame)
    with blas_single_threaded():
        return job.run(ids, paths).to_pandas()


def partition_meta(kind="features", alpha=1.0, size=224, weights="imagenet", layer=None, top=5, dtype="float32",
                   threads=1):
    """The empty DataFrame Dask's ``meta=`` wants for ``predict_partition``'s output."""
    job = cached_job(kind, alpha, size, weights, layer, top, dtype, threads)
    return job.schema().empty_table().to_pandas()


def partition_schema(kind="features", alpha=1.0, size=224, weights="imagenet", layer=None, top=5, dtype="float32",
                     threads=1):
    """The Arrow schema for ``to_parquet(..., schema=)``: Dask cannot infer the vectors' type from
    ``partition_meta`` (an empty object column), and with it they are written as fixed-size lists,
    as the batch command writes them."""
    return cached_job(kind, alpha, size, weights, layer, top, dtype, threads).schema()
