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
``RESERVED_CPUS`` of the cluster free (room for ``IO_TASK_CPUS`` per read or write task).

``run_job`` (``mobilenetv2 features|predict --ray``) has no write tasks: on a file system every node
sees, its actors are ``PartWriter``s, which write each block's rows as one Parquet part themselves
and return only (file, rows, errors).  The vectors then never cross Ray's object store, no write
task (nor the worker process Ray starts for it) takes CPU from the actors, and the driver adopts
the parts in the input order (Ray's ``preserve_order``: the rows come as the local engine writes
them).  Measured on 2 busy cores (benchmarks/README.md): the job's CPU per image, all of Ray's
processes counted, went from 7.6-9.7 ms to 7.3-8.6 ms (decode and inference: ~6.5), its fixed CPU
per job from 4.3-6.4 s to 3.1-4.4 s.
"""
import math
import os

from mobilenetv2 import errors
from mobilenetv2.batch import require
from mobilenetv2.errors import ArgumentError, is_finite, is_whole

class RayJobFailed(errors.Error, RuntimeError):
    """The Ray job failed (an actor that cannot start, a task out of retries): the message says why."""


RESERVED_CPUS = 0.5   # left to read/write tasks by the default actor num_cpus
IO_TASK_CPUS = 0.25   # what each of run_job's write tasks asks for


def _whole(value, name, low):
    if not is_whole(value) or value < low:
        raise ArgumentError(f"{name} must be a whole number from {low} up, got {value!r}")
    return int(value)


def actor_resources(cluster_cpus, threads=1, actors=None, actor_cpus=None):
    """(actors, num_cpus per actor) for a cluster with ``cluster_cpus`` CPUs.

    Default: one actor per ``threads`` CPUs, each asking ``threads`` CPUs less its share of
    RESERVED_CPUS, so that read and write tasks can always be scheduled; e.g. 2 CPUs, threads=1:
    2 actors x 0.75 CPU.  A ValueError when the choice would leave no room for them."""
    threads = _whole(threads, "threads", 1)
    if not is_finite(cluster_cpus) or cluster_cpus <= 0:
        raise ArgumentError(f"cluster_cpus must be a positive number, got {cluster_cpus!r}")
    if actors is not None:
        actors = _whole(actors, "actors", 1)
    if actor_cpus is not None and (not is_finite(actor_cpus) or actor_cpus <= 0):
        raise ArgumentError(f"actor_cpus must be a positive number, got {actor_cpus!r}")
    cluster_cpus = float(cluster_cpus)  # (a Fraction has no :g format for the message below)
    actor_cpus = None if actor_cpus is None else float(actor_cpus)
    actors = actors or max(1, int(cluster_cpus // threads))
    if actor_cpus is None:
        actor_cpus = min(float(threads), (cluster_cpus - RESERVED_CPUS) / actors)
    if actor_cpus <= 0 or actors * actor_cpus + IO_TASK_CPUS > cluster_cpus + 1e-9:
        raise ArgumentError(f"{actors} actors x {actor_cpus:g} CPUs leave no CPU for the read and write tasks "
                            f"on a cluster of {cluster_cpus:g} CPUs (they would wait forever): use fewer actors "
                            "or a smaller --ray-actor-cpus")
    return actors, actor_cpus


def actor_memory_bytes(job, batch_size, images):
    """The bytes each actor of a ``--ray`` run of ``images`` images asks Ray for (``memory=``): what an
    actor running the BatchJob ``job`` holds at least.  An actor is a process with a model of its own:
    a batch (``job.memory_bytes``; a short job's is shorter), the weights as loaded
    (``job.weights_bytes()``) and, where the C plan runs the job, their packed form as well
    (``job.packed_bytes()``, made on the actor's first batch).  Its Python process itself is left out."""
    return (job.memory_bytes(max(1, min(batch_size, images))) + job.weights_bytes()
            + job.packed_bytes())


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
        from mobilenetv2.batch.inputs import given_rows
        from mobilenetv2.batch.job import blas_single_threaded
        ids, paths = given_rows(batch)
        with blas_single_threaded():
            return self.job.run(ids, paths)


def _reachable(address, timeout=10.0):
    """A RayJobFailed unless a ``host:port`` address takes a TCP connection: ray.init retries an
    address where nothing listens for ever (a typo hung the command, 10 minutes and counting).
    Other forms (``ray://...``) are left to Ray."""
    import socket
    host, sep, port = address.rpartition(":")
    if not sep or not host or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayJobFailed(f"no Ray cluster answers at {address!r} ({exc.strerror or exc}): start one "
                           "(ray start --head) or give its address (HOST:6379 by default)") from None


def _connect(address):
    ray = require("ray", "ray")
    if not ray.is_initialized():
        if address in (None, "auto"):
            ray.init()  # a cluster already running here (or at RAY_ADDRESS), else a local one
        else:
            _reachable(address)
            ray.init(address=address)
    return ray


def part_name(ids):
    """The file name of the rows of ``ids`` (in order): the same for a retried block, so that a
    retry replaces what a killed attempt published instead of adding a second copy."""
    import hashlib
    digest = hashlib.blake2b("\n".join(ids).encode("utf-8"), digest_size=8).hexdigest()
    return f"part-{digest}-{len(ids)}.parquet"


class PartWriter:
    """A Ray Data callable class that writes its rows itself, for ``map_batches(PartWriter,
    batch_size=None, ...)`` over blocks of (id, path) rows on a file system every node sees.

    Each call runs ``predictor`` (Predictor by default, built once per actor from ``job_args``) on
    ``batch_size`` images at a time and writes the rows as row groups of one Parquet file of
    ``folder``, published atomically (temporary file, fsync, rename) under ``part_name(ids)``; it
    returns one small row (file, rows, errors) instead of the rows.  So the vectors never travel
    through Ray's object store, and no write task competes with the actors for the CPUs; a block
    retried after an actor died rewrites the same file name with the same bytes."""

    def __init__(self, folder, batch_size=32, predictor=Predictor, **job_args):
        self.folder = os.fspath(folder)
        self.batch_size = _whole(batch_size, "batch_size", 1)
        self.predictor = predictor(**job_args)

    def __call__(self, block):
        pa = require("pyarrow", "batch")
        from mobilenetv2.batch.dataset import PartFile
        from mobilenetv2.batch.inputs import given_rows
        ids, paths = given_rows(block)
        result = {"file": [], "rows": [], "errors": []}
        if paths:
            part, errors = PartFile(self.folder, self.predictor.job.schema()), 0
            try:
                for i in range(0, len(paths), self.batch_size):
                    rows = self.predictor({"id": ids[i:i + self.batch_size], "path": paths[i:i + self.batch_size]})
                    errors += rows.num_rows - rows.column("error").null_count
                    part.write(rows)
                name = part_name(ids)
                part.publish(os.path.join(self.folder, name))
            except BaseException:
                part.abort()
                raise
            result = {"file": [name], "rows": [len(ids)], "errors": [errors]}
        return pa.table(result, schema=pa.schema([("file", pa.string()), ("rows", pa.int64()),
                                                  ("errors", pa.int64())]))


def _check_memory(nodes, actors, actor_cpus, actor_memory):
    """Refuse a job whose ``actors`` cannot all be placed on the alive ``nodes`` (``ray.nodes()``)
    once each asks Ray for ``actor_memory`` bytes (its model and the batch it runs: see
    ``actor_memory_bytes``): Ray puts no more actors on a node than its memory resource holds, so
    that actors that each fit do not together take more than the node has; an actor that cannot be
    placed would be waited for for ever."""
    fit = by_cpu = 0
    for node in nodes:
        if node.get("Alive", True):
            resources = node.get("Resources", {})
            cpus = int(resources.get("CPU", 0) / actor_cpus + 1e-9)
            by_cpu += cpus
            fit += min(cpus, int(resources.get("memory", 0) // actor_memory))
    if fit < actors <= by_cpu:
        raise ArgumentError(f"{actors} Ray actors need at least {actor_memory / 2 ** 20:.1f} MiB each (a model "
                            f"and its batch), and the nodes' memory holds {fit} of them: lower --ray-actors or "
                            "--batch-size")


def part_rows(images, actors, rows_per_part=4096):
    """Images per part (one Ray block, one task): at most ``rows_per_part``, and small enough that
    every actor gets about 4 parts, so that a short job ends on balanced actors (the last part
    of one actor is the time the other may wait)."""
    _whole(images, "images", 0)
    _whole(actors, "actors", 1)
    _whole(rows_per_part, "rows_per_part", 1)
    return max(1, min(rows_per_part, math.ceil(images / (4 * actors))))


def _cause(exc):
    """The line of a Ray error that says what went wrong: the last line of the first exception of the
    traceback text Ray carries back (an actor's OSError, say), not of the exceptions raised from it
    (Ray Data's own, whose last line is advice about retries)."""
    text = str(exc).split("The above exception was the direct cause of the following exception")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_job(job_args, items, out, address="auto", actors=None, actor_cpus=None, batch_size=32, quiet=False,
            predictor=Predictor, rows_per_part=4096, progress=None, actor_memory=None):
    """Run ``items`` [(id, path)] on Ray Data into the OutputDataset ``out``; returns (rows, errors).

    from_items (blocks of ``part_rows`` images) -> map_batches(PartWriter, actors x actor_cpus): each
    actor decodes, infers and writes its block's part into a ``.tmp-ray-*`` folder of ``out``; the
    driver moves the reported parts into ``out`` in the input order (the rows' order is the local
    engine's), so a killed job keeps its parts moved in (a rerun does the rest) and a file a killed
    actor left behind is never adopted.  ``out`` must be on a file system every node sees (one
    machine, or NFS); for object stores use the Predictor recipe above.  ``progress``: a
    mobilenetv2.batch.local.Progress (replaces Ray's bars).  ``actor_memory``: the bytes each actor
    asks Ray for (see _check_memory; None: none)."""
    import shutil
    if not items:
        return 0, 0
    ray = _connect(address)
    require("ray.data", "ray")
    require("pyarrow", "batch")
    threads = job_args.get("threads") or 1
    actors, actor_cpus = actor_resources(ray.cluster_resources().get("CPU", 0), threads, actors, actor_cpus)
    rows = part_rows(len(items), actors, rows_per_part)
    blocks = math.ceil(len(items) / rows)
    actors = min(actors, blocks)  # an actor without a block would only build a model
    memory = {}
    if actor_memory:
        _check_memory(ray.nodes(), actors, actor_cpus, actor_memory)
        memory = dict(memory=actor_memory)
    staging = os.path.join(out.path, f".tmp-ray-{out.run_id}")
    os.makedirs(staging, exist_ok=True)
    # Ray's bars off for this job only: the DataContext is the process's, and the user's later
    # datasets keep the setting they had (it is put back when the job ends, or fails).
    ctx = ray.data.DataContext.get_current()
    bars = ctx.enable_progress_bars
    if quiet or progress is not None:
        ctx.enable_progress_bars = False
    written = errors = 0
    adopted = set()
    try:
        ds = ray.data.from_items([{"id": i, "path": p} for i, p in items], override_num_blocks=blocks)
        ds = ds.map_batches(PartWriter, batch_size=None, batch_format="pyarrow",
                            fn_constructor_kwargs=dict(job_args, threads=threads, folder=staging,
                                                       batch_size=batch_size, predictor=predictor),
                            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=actor_cpus, **memory)
        # The parts in the input order, as the local engine writes them (users diff runs and join on
        # position): Ray hands the blocks' results over in their input order.  The actors still run
        # side by side; a part finished early waits in the staging folder for those before it.
        ds.context.execution_options.preserve_order = True
        for result in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for name, n, bad in zip(*(result.column(c).to_pylist() for c in ("file", "rows", "errors"))):
                if name in adopted:  # cannot happen (ids are unique); never count a part twice
                    continue
                adopted.add(name)
                out.adopt([os.path.join(staging, name)])
                written += n
                errors += bad
                if progress is not None:
                    progress.update(n, bad)
    except ray.exceptions.RayError as exc:
        raise RayJobFailed(f"the Ray job failed ({type(exc).__name__}: {_cause(exc)}); "
                           "the parts already in --out stay: rerun to resume") from exc
    finally:
        ctx.enable_progress_bars = bars
        shutil.rmtree(staging, ignore_errors=True)  # a killed actor's temporary or unreported files
    return written, errors
