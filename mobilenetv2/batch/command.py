"""``mobilenetv2 features|predict INPUT... --out DIR``: the arguments and the run, local or on Ray.

Progress goes to stderr; the last line on stdout says what this run did:
``processed N images (E unreadable), skipped S already in OUT, in T s (R images/s)``.
"""
import argparse
import math
import os
import sys
import time

from mobilenetv2.batch import MissingExtra, require
from mobilenetv2.errors import ArgumentError, positive_int
from mobilenetv2.model_options import add_model_args


def _cpus(text):
    """An argparse ``type``: a positive, finite number of CPUs (Ray takes fractions)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of CPUs") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of CPUs, got {text}")
    return value


def add_arguments(p, kind):
    """The options of the ``features`` (kind='features') or ``predict`` subcommand."""
    p.add_argument("inputs", nargs="+", metavar="DIR_OR_GLOB_OR_LIST",
                   help="a folder (searched recursively), a quoted glob ('imgs/**/*.jpg'), a .txt file "
                        "of image paths, or an image")
    p.add_argument("--out", required=True,
                   help="output folder (new, empty, or one this command wrote): a Parquet dataset, resumed if it exists")
    add_model_args(p)
    if kind == "features":
        p.add_argument("--layer", metavar="NAME", default=None,
                       help="Keras layer whose output to write, flattened (default: the pooled features, "
                            "global_average_pooling2d)")
    else:
        p.add_argument("--top", type=positive_int(), default=5, help="classes per image (default 5)")
    p.add_argument("--threads", type=positive_int(), default=1,
                   help="C engine threads of each model replica / Ray actor (default 1)")
    p.add_argument("--workers", type=positive_int(), default=None,
                   help="model replicas running batches side by side (default: the CPUs / --threads)")
    p.add_argument("--batch-size", type=positive_int(), default=32, help="images per batch (default 32)")
    p.add_argument("--prefetch", type=positive_int(), default=None,
                   help="batches decoded ahead of the models (default 2); memory ~ batch-size x (prefetch + workers)")
    p.add_argument("--decode-workers", type=positive_int(), default=None,
                   help="threads decoding images (default: the CPUs)")
    p.add_argument("--rows-per-part", type=positive_int(), default=4096,
                   help="rows per part file (default 4096): the unit a killed run loses")
    p.add_argument("--overwrite", action="store_true", help="delete the rows already in --out and start over")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run on Ray Data: 'auto' (a running cluster, else a local one) or a cluster address")
    p.add_argument("--ray-actors", type=positive_int(), default=None,
                   help="Ray actors, each with its own model (default: the cluster's CPUs / --threads)")
    p.add_argument("--ray-actor-cpus", type=_cpus, default=None,
                   help="CPUs Ray reserves per actor (default: --threads, less a share that leaves "
                        "half a CPU of the cluster to the read and write tasks)")


def _refuse_unused(args):
    """Options of the other engine are refused, not ignored: --workers, --prefetch and
    --decode-workers size the local stream, --ray-actors and --ray-actor-cpus Ray's actors.  So are
    an empty --ray address and --workers past the threads a model may start, before anything runs."""
    if args.ray is not None and not args.ray.strip():  # --ray "$RAY_ADDRESS" with the variable unset
        raise ArgumentError("--ray needs an address: 'auto' (a running cluster, else a local one) or HOST:PORT, "
                            "got ''")
    local = [f"--{n.replace('_', '-')}" for n in ("workers", "prefetch", "decode_workers") if getattr(args, n) is not None]
    ray = [f"--{n.replace('_', '-')}" for n in ("ray_actors", "ray_actor_cpus") if getattr(args, n) is not None]
    if args.ray and local:
        raise ArgumentError(f"{', '.join(local)} size the local engine and do nothing with --ray "
                            "(use --ray-actors and --ray-actor-cpus)")
    if not args.ray and ray:
        raise ArgumentError(f"{', '.join(ray)} apply to --ray only (the local engine takes --workers)")
    if args.workers is not None:  # the limit holds for the option, whatever the number of images
        from mobilenetv2.engines import pool
        if args.workers > pool.max_threads():
            raise ArgumentError(f"--workers {args.workers}: at most {pool.max_threads()} here (each replica runs "
                                "in a thread of its own, and a model may start 4 per usable core, at least 64)")


def run(args, kind):
    """Run the subcommand; returns the exit status (2 with one line on stderr for a usage error)."""
    from mobilenetv2.batch import inputs
    from mobilenetv2.batch.dataset import OutputDataset
    from mobilenetv2.batch.job import BatchJob
    name = f"mobilenetv2 {kind}"
    try:
        _refuse_unused(args)
        require("pyarrow", "batch")
        if args.ray:
            require("ray.data", "ray")
        items = inputs.list_images(args.inputs)
        job_args = dict(kind=kind, alpha=args.alpha, size=args.size, weights=args.weights,
                        layer=getattr(args, "layer", None), top=getattr(args, "top", 5), dtype=args.dtype,
                        threads=args.threads)
        job = BatchJob(**job_args)
        out = OutputDataset(args.out, job.config(), overwrite=args.overwrite)
        done = out.done_ids()
        for key, path in items:
            clash = inputs.other_image(path, done.get(key))
            if clash:
                raise ArgumentError(f"{clash}: run other inputs into another --out, or use --overwrite")
    except (MissingExtra, ValueError, OSError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    todo = [item for item in items if item[0] not in done]
    skipped = len(items) - len(todo)
    if not args.quiet:
        print(f"{name}: {len(items)} images, {skipped} already in {out.path}, {len(todo)} to process",
              file=sys.stderr)
    start = time.perf_counter()
    failures = (MissingExtra, ValueError, OSError)
    try:
        if args.ray:
            from mobilenetv2.ray import RayJobFailed
            failures += (RayJobFailed,)
            from mobilenetv2 import ray as mnv2_ray
            # actors may run in another folder (or on another node): absolute paths, same ids
            todo = [(i, os.path.abspath(p)) for i, p in todo]
            if job_args["weights"] not in ("imagenet", "none"):
                job_args["weights"] = os.path.abspath(job_args["weights"])
            from mobilenetv2.batch import local
            progress = local.Progress(len(todo), enabled=not args.quiet)
            actor_memory = mnv2_ray.actor_memory_bytes(job, args.batch_size, len(todo))
            written, errors = mnv2_ray.run_job(job_args, todo, out, address=args.ray, actors=args.ray_actors,
                                               actor_cpus=args.ray_actor_cpus, batch_size=args.batch_size,
                                               quiet=args.quiet, rows_per_part=args.rows_per_part,
                                               progress=progress, actor_memory=actor_memory)
            progress.finish()
        else:
            from mobilenetv2.batch import local
            batches = -(-len(todo) // args.batch_size)  # a replica more would never run
            workers = max(1, min(args.workers or local.available_cpus() // args.threads, batches))
            prefetch = args.prefetch or local.PREFETCH
            local.check_memory(job, workers, args.batch_size, prefetch, len(todo))
            jobs = job.replicas(workers)  # one weight set, loaded and packed once
            progress = local.Progress(len(todo), enabled=not args.quiet)
            written, errors = local.run(jobs, todo, out, batch_size=args.batch_size, prefetch=prefetch,
                                        decode_workers=args.decode_workers, rows_per_part=args.rows_per_part,
                                        progress=progress)
            progress.finish()
    except KeyboardInterrupt:
        print(f"{name}: interrupted; the finished parts stay in {out.path}: rerun to resume", file=sys.stderr)
        return 130
    except failures as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    rate = written / elapsed if elapsed > 0 else 0.0
    print(f"processed {written} images ({errors} unreadable), skipped {skipped} already in {out.path}, "
          f"in {elapsed:.1f} s ({rate:.1f} images/s)")
    if errors:
        print(f"{name}: {errors} {'image' if errors == 1 else 'images'} could not be read: their rows have the reason in the 'error' column",
              file=sys.stderr)
    return 0
