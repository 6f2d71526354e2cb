"""MobileNetV2 on Ray Data: a predictor class for ``Dataset.map_batches``, and the ``--ray`` run.

Importing this module does not import Ray (only ``run_job`` does).  The recipe, in your own pipeline::

    import ray
    from mobilenetv2.ray import Predictor, actor_resources

    ds = ray.data.from_items([{"path": p} for p in paths])        # or read_parquet/read_csv of paths
    actors, cpus = actor_resources(ray.cluster_resources()["CPU"], threads=1)
    ds = ds.map_batches(Predictor, batch_format="pyarrow", batch_size=32,
                        fn_constructor_kwargs=dict(kind="features", alpha=1.0, size=224,
                                                   weights="imagenet", threads=1),
                        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus)
    ds.write_parquet("/shared/features")

Each actor builds its model once, in ``Predictor.__init__``, with ``threads`` C threads (1 by default:
Ray's parallelism is the actors; more threads than the CPUs Ray gave an actor only compete).  A batch
needs a ``path`` column; an ``id`` column is kept if present, else ``id`` is the hash of the path as
given (see mobilenetv2.batch.inputs).  The output rows and schema are the batch command's
(mobilenetv2.batch.job): bit-identical to ``mobilenetv2 features|predict`` without Ray.

The small-cluster trap: actors asking for every CPU leave none to Ray's read and write tasks, and the
pipeline waits forever (2 actors x num_cpus=1 on 2 CPUs hung).  ``actor_resources`` keeps
``RESERVED_CPUS`` of the cluster free, and ``run_job`` runs its writes with ``IO_TASK_CPUS`` each.
"""
import math
import os

from mobilenetv2 import errors
from mobilenetv2.batch import require

class RayJobFailed(errors.Error, RuntimeError):
    """The Ray job failed (an actor that cannot start, a task out of retries): the message says why."""


RESERVED_CPUS = 0.5   # left to read/write tasks by the default actor num_cpus
IO_TASK_CPUS = 0.25   # what each of run_job's write tasks asks for


def actor_resources(cluster_cpus, threads=1, actors=None, actor_cpus=None):
    """(actors, num_cpus per actor) for a cluster with ``cluster_cpus`` CPUs.

    Default: one actor per ``threads`` CPUs, each asking ``threads`` CPUs less its share of
    RESERVED_CPUS, so that read and write tasks can always be scheduled; e.g. 2 CPUs, threads=1:
    2 actors x 0.75 CPU.  A ValueError when the choice would leave no room for them."""
    if threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    actors = actors or max(1, int(cluster_cpus // threads))
    if actor_cpus is None:
        actor_cpus = min(float(threads), (cluster_cpus - RESERVED_CPUS) / actors)
    if actor_cpus <= 0 or actors * actor_cpus + IO_TASK_CPUS > cluster_cpus + 1e-9:
        raise ValueError(f"{actors} actors x {actor_cpus:g} CPUs leave no CPU for the read and write tasks "
                         f"on a cluster of {cluster_cpus:g} CPUs (they would wait forever): use fewer actors "
                         "or a smaller --ray-actor-cpus")
    return actors, actor_cpus


def _column(batch, name):
    if isinstance(batch, dict):
        return list(batch[name]) if name in batch else None
    names = batch.column_names if hasattr(batch, "column_names") else list(batch.columns)
    if name not in names:
        return None
    col = batch[name]
    return col.to_pylist() if hasattr(col, "to_pylist") else list(col)


class Predictor:
    """A Ray Data callable class: ``ds.map_batches(Predictor, fn_constructor_kwargs=...)``.

    Constructor arguments: those of ``mobilenetv2.batch.job.BatchJob`` (kind='features'|'predict',
    alpha, size, weights, layer, top, dtype), threads=1.  Call: a batch with a ``path`` column (a
    pyarrow Table, a dict of arrays or a pandas DataFrame) -> a pyarrow Table of rows."""

    def __init__(self, kind="features", alpha=1.0, size=224, weights="imagenet", layer=None, top=5,
                 dtype="float32", threads=1):
        from mobilenetv2.batch.job import BatchJob
        self.job = BatchJob(kind=kind, alpha=alpha, size=size, weights=weights, layer=layer, top=top,
                            dtype=dtype, threads=threads)

    def __call__(self, batch):
        from mobilenetv2.batch.inputs import image_id
        from mobilenetv2.batch.job import blas_single_threaded
        paths = _column(batch, "path")
        if paths is None:
            raise ValueError("the batch has no 'path' column (the image paths to read)")
        paths = [str(p) for p in paths]
        ids = _column(batch, "id") or [image_id(p) for p in paths]
        with blas_single_threaded():
            return self.job.run([str(i) for i in ids], paths)


def _connect(address):
    ray = require("ray", "ray")
    if not ray.is_initialized():
        if address in (None, "auto"):
            ray.init()  # a cluster already running here (or at RAY_ADDRESS), else a local one
        else:
            ray.init(address=address)
    return ray


def run_job(job_args, items, out, address="auto", actors=None, actor_cpus=None, batch_size=32, quiet=False,
            predictor=Predictor):
    """Run ``items`` [(id, path)] on Ray Data into the OutputDataset ``out``; returns (rows, errors).

    read (from_items) -> map_batches(predictor, actors x actor_cpus) -> write_parquet into a
    ``.tmp-ray-*`` folder of ``out``, whose files become parts when the job has finished, so a killed
    job leaves nothing half-written (its rows are redone by the next run).  ``out`` must be on a file
    system every node sees (one machine, or NFS); for object stores use the recipe above."""
    if not items:
        return 0, 0
    ray = _connect(address)
    require("ray.data", "ray")
    pq = require("pyarrow.parquet", "batch")
    threads = job_args.get("threads") or 1
    actors, actor_cpus = actor_resources(ray.cluster_resources().get("CPU", 0), threads, actors, actor_cpus)
    ctx = ray.data.DataContext.get_current()
    if quiet:
        ctx.enable_progress_bars = False
    blocks = max(1, min(len(items), max(4 * actors, math.ceil(len(items) / (16 * batch_size)))))
    ds = ray.data.from_items([{"id": i, "path": p} for i, p in items], override_num_blocks=blocks)
    ds = ds.map_batches(predictor, fn_constructor_kwargs=dict(job_args, threads=threads), batch_format="pyarrow",
                        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                        num_cpus=actor_cpus)
    staging = os.path.join(out.path, f".tmp-ray-{out.run_id}")
    try:
        ds.write_parquet(staging, ray_remote_args={"num_cpus": IO_TASK_CPUS})
    except ray.exceptions.RayError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise RayJobFailed(f"the Ray job failed ({type(exc).__name__}: {lines[-1] if lines else ''}); "
                           "the parts already in --out stay: rerun to resume") from exc
    files = [os.path.join(staging, f) for f in os.listdir(staging) if f.endswith(".parquet")]
    written = errors = 0
    for f in files:
        table = pq.read_table(f, columns=["id", "error"])
        written += table.num_rows
        errors += table.num_rows - table.column("error").null_count
    out.adopt(files)
    os.rmdir(staging)
    return written, errors
