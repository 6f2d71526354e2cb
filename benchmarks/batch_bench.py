"""Throughput of the batch command (``mobilenetv2 features``) against the naive loop, and on Ray.

Engines, visited in turn in each of --rounds rounds (so a slow spell of a shared machine lands on all):
  naive    for each batch: load and preprocess its images, then model.predict (nothing overlaps; BLAS
           with NumPy's default threads, as a user's loop runs)
  stream   mobilenetv2.batch.local.run with the CLI's defaults: one single-threaded model replica per
           core, one BLAS thread, decoding in a thread pool overlapping inference, rows written to
           Parquet parts (the CLI's path, minus interpreter start-up and model build)
  ray      (--ray) mobilenetv2.ray.run_job on a local ray.init(num_cpus=cores): N actors x threads=1,
           end to end (actor start-up and model build per actor included), rows written as parts
  ray-start  the same job on N images (one per actor): the fixed cost of a job, mostly actor start-up
  "ray running" in the table: the images / (last batch's end - first batch's start) of the ray job,
           from each actor's clock (the actors' start-up and model build left out, the job's
           scheduling, reads and writes between batches kept)
  "ray marginal" in the table: (images - N) / (ray - ray-start), the rate once the actors run, which
           is what a job of millions of images sees
All engines compute pooled features of the same model (random Keras-initial weights: same speed as
ImageNet's); float32 uses the C engine, float64 the NumPy reference (--float64-images images).

Images: the 100 ImageNet photos of ../shared/images/imagenet-sample (about 500x375 JPEG), linked
--images / 100 times under different folders; generated 400x300 JPEGs where ../shared is absent.

    python benchmarks/batch_bench.py --images 800 --rounds 3 --ray
"""
import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from mobilenetv2 import load_image, native, preprocess_input  # noqa: E402
from mobilenetv2.batch import local  # noqa: E402
from mobilenetv2.batch.dataset import OutputDataset  # noqa: E402
from mobilenetv2.batch.inputs import list_images  # noqa: E402
from mobilenetv2.batch.job import BatchJob  # noqa: E402
from mobilenetv2.benchmark import cpu_model  # noqa: E402


def make_images(folder, n):
    shared = Path(os.environ.get("MOBILENETV2_SHARED", REPO.parent / "shared")) / "images" / "imagenet-sample"
    photos = sorted(shared.glob("*.JPEG")) if shared.is_dir() else []
    if not photos:
        from batch_images import write_images
        write_images(folder, n, size=(300, 400))
        return "generated random JPEG/PNG, 300-400 px"
    for i in range(n):
        sub = folder / f"copy{i // len(photos):03d}"
        sub.mkdir(parents=True, exist_ok=True)
        photo = photos[i % len(photos)]
        (sub / photo.name).symlink_to(photo)
    return f"{len(photos)} ImageNet sample photos (shared/images/imagenet-sample), linked {math.ceil(n / len(photos))}x"


def naive(job, items, batch_size):
    for i in range(0, len(items), batch_size):
        paths = [p for _, p in items[i:i + batch_size]]
        x = preprocess_input(np.stack([load_image(p, target_size=(job.size, job.size)) for p in paths])
                             .astype(job.dtype))
        job.infer(x)


def stream(jobs, items, batch_size, out):
    dataset = OutputDataset(out, jobs[0].config())
    local.run(jobs, items, dataset, batch_size=batch_size, prefetch=2)


def ray_run(job_args, items, batch_size, out, actors):
    """Runs the job; returns (first batch start, last batch end) over the actors (time.time())."""
    from mobilenetv2.ray import Predictor, run_job
    clock = os.path.join(str(out) + "-clock")
    os.makedirs(clock, exist_ok=True)

    class Clocked(Predictor):  # defined here: Ray ships it to the actors by value
        def __call__(self, batch):
            start = time.time()
            rows = super().__call__(batch)
            with open(os.path.join(clock, str(os.getpid())), "a") as f:
                f.write(f"{start} {time.time()}\n")
            return rows

    dataset = OutputDataset(out, BatchJob(**job_args).config())
    run_job(job_args, items, dataset, actors=actors, batch_size=batch_size, quiet=True, predictor=Clocked)
    spans = [tuple(map(float, line.split())) for name in os.listdir(clock)
             for line in open(os.path.join(clock, name))]
    return min(a for a, _ in spans), max(b for _, b in spans)


def where_time_goes(job1, jobn, items, batch_size):
    """Decode and inference timed apart on a warm model (wall ms per image, alone in this process):
    decode (load_image + preprocess, one thread), inference with 1 thread and with every core.
    Returns them; main() derives the best ratio overlap can give over the naive loop on idle cores:
    naive = decode + infer(1 thread) / cores; overlapped = (decode + infer(1 thread)) / cores."""
    paths = [p for _, p in items[:batch_size]]
    start = time.perf_counter()
    x = preprocess_input(np.stack([load_image(p, target_size=(job1.size, job1.size)) for p in paths])
                         .astype(job1.dtype))
    decode = (time.perf_counter() - start) / len(paths)
    infer = {}
    for job in (job1, jobn):
        job.infer(x)  # plans compiled
        start = time.perf_counter()
        job.infer(x)
        infer[job.model.threads] = (time.perf_counter() - start) / len(paths)
    return decode, infer


def cpu_seconds():
    """CPU time of this process, every thread (Ray's actors run in other processes: not counted)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=800)
    p.add_argument("--float64-images", type=int, default=48)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ray", action="store_true", help="also time the Ray Data path (needs the 'ray' extra)")
    p.add_argument("--ray-actors", type=int, default=None, help="default: one per core")
    p.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "batch_bench.json"))
    args = p.parse_args(argv)
    load_start = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tmp = Path(tempfile.mkdtemp(prefix="mnv2-batch-bench-"))
    source = make_images(tmp / "images", args.images)
    items = list_images([str(tmp / "images")])
    cases = [("float32", items), ("float64", items[:args.float64_images])]
    jobs = {dt: BatchJob("features", alpha=args.alpha, size=args.size, weights="none", dtype=dt, threads=cores)
            for dt, _ in cases}
    # the CLI's defaults: one single-threaded replica per core (and one BLAS thread)
    replicas = {dt: [BatchJob("features", alpha=args.alpha, size=args.size, weights="none", dtype=dt, threads=1)
                     for _ in range(cores)] for dt, _ in cases}
    engines = ["naive", "stream"]
    if args.ray:
        import ray
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        engines += ["ray", "ray-start"]
    actors = args.ray_actors or cores
    for dt, its in cases:  # warm-up: plans compiled, images in the page cache, before any timing
        naive(jobs[dt], its[:args.batch_size], args.batch_size)
        stream(replicas[dt], its[:2 * args.batch_size], args.batch_size, tmp / f"warm-{dt}")
    decode, infer = where_time_goes(replicas["float32"][0], jobs["float32"], items, args.batch_size)
    # the naive loop's inference taken as scaling perfectly over the cores (its best case): a busy
    # machine's measured multi-thread time can be slower than one thread and would overstate the gain
    ideal = (decode + infer[1] / cores) / ((decode + infer[1]) / cores)
    split = (f"# where time goes (float32, alone, wall ms/image): decode {1000 * decode:.2f}, inference "
             f"{1000 * infer[1]:.2f} on 1 thread / {1000 * infer[cores]:.2f} on {cores}; best overlap on "
             f"{cores} idle cores: {ideal:.2f}x the naive loop")
    print(split, file=sys.stderr)
    times, cpu, running = {}, {}, {}
    run_no = 0
    for _ in range(args.rounds):
        for dt, its in cases:
            for engine in engines:
                run_no += 1
                out = tmp / f"out{run_no}"
                start, cpu_start = time.perf_counter(), cpu_seconds()
                if engine == "naive":
                    naive(jobs[dt], its, args.batch_size)
                elif engine == "stream":
                    stream(replicas[dt], its, args.batch_size, out)
                else:
                    span = ray_run(dict(kind="features", alpha=args.alpha, size=args.size, weights="none", dtype=dt,
                                        threads=1), its if engine == "ray" else its[:actors], args.batch_size, out,
                                   actors)
                    if engine == "ray":
                        running.setdefault(dt, []).append(len(its) / (span[1] - span[0]))
                times.setdefault((engine, dt), []).append(time.perf_counter() - start)
                cpu.setdefault((engine, dt), []).append(cpu_seconds() - cpu_start)
                n = actors if engine == "ray-start" else len(its)
                print(f"  {engine:<9} {dt}: {n} images in {times[engine, dt][-1]:.2f} s", file=sys.stderr)
    rows = []
    for dt, its in cases:
        base = statistics.median(times["naive", dt])
        single = statistics.median(times["stream", dt])
        for engine in engines:
            t = times[engine, dt]
            med = statistics.median(t)
            n = len(its) if engine != "ray-start" else actors
            rate = n / med
            cpu_ms = None if engine.startswith("ray") else 1000 * statistics.median(cpu[engine, dt]) / n
            util = None if engine.startswith("ray") else statistics.median(
                [c / w for c, w in zip(cpu[engine, dt], t)])
            rows.append({"engine": engine, "dtype": dt, "images": n, "median_s": med, "min_s": min(t),
                         "cpu_ms_per_image": cpu_ms, "cores_busy": util,
                         "max_s": max(t), "images_per_s": rate, "vs_naive": rate / (len(its) / base),
                         "vs_stream": rate / (len(its) / single),
                         "config": f"{actors} actors x 1 thread" if engine.startswith("ray")
                         else f"{len(replicas[dt])} replicas" if engine == "stream" else f"{cores} threads"})
        if "ray" in engines:
            rate = statistics.median(running[dt])
            rows.append({"engine": "ray running", "dtype": dt, "images": len(its), "median_s": None,
                         "min_s": None, "max_s": None, "images_per_s": rate, "cpu_ms_per_image": None,
                         "cores_busy": None, "vs_naive": rate / (len(its) / base),
                         "vs_stream": rate / (len(its) / single), "config": f"{actors} actors x 1 thread"})
            marginal = [(len(its) - actors) / (a - b) for a, b in zip(times["ray", dt], times["ray-start", dt])]
            rate = statistics.median(marginal)
            rows.append({"engine": "ray marginal", "dtype": dt, "images": len(its) - actors, "median_s": None,
                         "min_s": None, "max_s": None, "images_per_s": rate, "cpu_ms_per_image": None,
                         "cores_busy": None, "vs_naive": rate / (len(its) / base),
                         "vs_stream": rate / (len(its) / single), "config": f"{actors} actors x 1 thread"})
    header = (f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}  {cpu_model()}, {cores} cores, "
              f"engine: {native.backend()}, python {platform.python_version()}, numpy {np.__version__}\n"
              f"# features of MobileNetV2 {args.alpha:g}_{args.size}, batch {args.batch_size}, {args.rounds} rounds; "
              f"images: {source}; load average at start {load_start:.1f}")
    if args.ray:
        import ray
        header += f"; ray {ray.__version__}"
    header += f", at end {os.getloadavg()[0]:.1f}\n{split}"
    print(header)
    print(f"{'engine':<13}{'dtype':<9}{'config':<24}{'images':>7}{'median s':>10}{'min s':>8}{'max s':>8}"
          f"{'img/s':>8}{'vs naive':>10}{'vs stream':>10}{'cpu ms/img':>12}{'busy':>6}")
    def sec(v):
        return f"{v:.2f}" if v is not None else "-"
    print("(cpu ms/img: this process's CPU time per image, all threads; busy: CPU time / wall time, in cores "
          "- below the core count where other processes had the cores)")
    for r in rows:
        print(f"{r['engine']:<13}{r['dtype']:<9}{r['config']:<24}{r['images']:>7}{sec(r['median_s']):>10}"
              f"{sec(r['min_s']):>8}{sec(r['max_s']):>8}{r['images_per_s']:>8.1f}{r['vs_naive']:>9.2f}x"
              f"{r['vs_stream']:>9.2f}x{sec(r['cpu_ms_per_image']):>12}{sec(r['cores_busy']):>6}")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"header": header, "cpu": cpu_model(), "cores": cores, "rows": rows,
                   "decode_ms": 1000 * decode, "infer_ms": {str(k): 1000 * v for k, v in infer.items()},
                   "best_overlap": ideal,
                   "times": {f"{e}/{d}": t for (e, d), t in times.items()},
                   "ray_running_images_per_s": running}, f, indent=2)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
