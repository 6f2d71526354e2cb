"""Throughput of the batch command (``mobilenetv2 features``) against the naive loop, and on Ray.

Engines, visited in turn in each of --rounds rounds (so a slow spell of a shared machine lands on all):
  naive    for each batch: load and preprocess its images, then model.predict (nothing overlaps; BLAS
           with NumPy's default threads, as a user's loop runs)
  stream   mobilenetv2.batch.local.run with the CLI's defaults: one single-threaded model replica per
           core, one BLAS thread, decoding in a thread pool overlapping inference, rows written to
           Parquet parts (the CLI's path, minus interpreter start-up and model build)
  ray      (--ray) mobilenetv2.ray.run_job on a local ray.init(num_cpus=cores): N actors x threads=1,
           end to end (actor start-up and model build per actor included), rows written as parts;
           Ray's workers at nice 0 like the other engines (--ray-nice; Ray's default is 15)
  ray-start  the same job on N images (one per actor): the fixed cost of a job, mostly actor start-up
  "ray running" in the table: the images / (last batch's end - first batch's start) of the ray job,
           from each actor's clock (the actors' start-up and model build left out, the job's
           scheduling, reads and writes between batches kept)
  "ray steady": the sum over the actors of each one's images / (its first batch start to its last
           batch end): "running" without the actors' staggered start and the job's tail (the last
           part still running on one actor while the other is done), the rate a long job holds
  "ray marginal" in the table: (images - N) / (ray - ray-start), the rate once the actors run, which
           is what a job of millions of images sees
CPU: "cpu ms/img" is the CPU time per image of this process (naive, stream) or of this process and
all its descendants (ray rows: Ray's raylet, GCS, workers, actors; a /proc reader thread keeps the
last reading of a process that exits), for ray marginal (ray - ray-start) / (images - N).  Ray's
processes keep using some CPU between jobs (0.1 core right after one): counted against Ray, never
against the stream or the naive loop.  "busy" = CPU / wall time, in cores.  Where every engine
keeps all the cores busy, throughput = cores / CPU per image, so the last lines give the ratios the
CPU times predict on idle cores: on a machine shared with other work, where wall clocks move with
the neighbours, they are the steadier measure.
All engines compute pooled features of the same model (random Keras-initial weights: same speed as
ImageNet's); float32 uses the C engine, float64 the NumPy reference (--float64-images images).

Images: the 100 ImageNet photos of ../shared/images/imagenet-sample (about 500x375 JPEG), linked
--images / 100 times under different folders; generated 400x300 JPEGs where ../shared is absent.

Writes JSON (benchmarks/results/batch-bench-<time>.json unless --json PATH).

    python benchmarks/batch_bench.py --images 800 --rounds 3 --ray
"""
import math
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)

REPO = _args.ROOT
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from mobilenetv2 import load_image, preprocess_input  # noqa: E402
from mobilenetv2.engines import native  # noqa: E402
from mobilenetv2.batch import local  # noqa: E402
from mobilenetv2.batch.dataset import OutputDataset  # noqa: E402
from mobilenetv2.batch.inputs import list_images  # noqa: E402
from mobilenetv2.batch.job import BatchJob  # noqa: E402
from mobilenetv2.tools.benchmark import cpu_model  # noqa: E402


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
    """Runs the job; returns {actor pid: [(batch start, batch end, images)]} (time.time())."""
    from mobilenetv2.ray import Predictor, run_job
    clock = os.path.join(str(out) + "-clock")
    os.makedirs(clock, exist_ok=True)

    class Clocked(Predictor):  # defined here: Ray ships it to the actors by value
        def __call__(self, batch):
            start = time.time()
            rows = super().__call__(batch)
            with open(os.path.join(clock, str(os.getpid())), "a") as f:
                f.write(f"{start} {time.time()} {rows.num_rows}\n")
            return rows

    dataset = OutputDataset(out, BatchJob(**job_args).config())
    # a job of one image per actor (ray-start) runs one part of one image on each: every actor starts
    run_job(job_args, items, dataset, actors=actors, batch_size=batch_size, quiet=True, predictor=Clocked,
            **({"rows_per_part": 1} if len(items) <= actors else {}))
    return {name: [tuple(map(float, line.split())) for line in open(os.path.join(clock, name))]
            for name in os.listdir(clock)}


def running_rates(spans):
    """(running, steady) images/s of a Ray job from its actors' batch clocks: running = all images /
    (first batch start to last batch end, over the actors); steady = the sum over the actors of each
    one's images / (its first batch start to its last batch end): the rate while every actor runs,
    without the actors' staggered start or the job's tail (one actor finishing its last part while
    the other is done), which is what a job of millions of images sees between its start and end."""
    batches = [b for actor in spans.values() for b in actor]
    running = sum(b[2] for b in batches) / (max(b[1] for b in batches) - min(b[0] for b in batches))
    steady = sum(sum(b[2] for b in actor) / (actor[-1][1] - actor[0][0]) for actor in spans.values())
    return running, steady


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


def _proc_stat(pid):
    """(parent pid, start time, CPU s of the process itself) of a live process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time of this process (every thread) and of all its descendants: Ray's raylet, GCS, workers
    and actors, which ray.init starts below this process.  A thread reads /proc every ``every``
    seconds and keeps each descendant's last reading, so a worker or actor that exits (Ray kills a
    job's actors when it ends, and does not report their time to anyone: the raylet does not wait
    for them) still counts, up to its last reading.  Without /proc: this process only."""

    def __init__(self, every=0.2):
        import threading
        self._seen = {}  # (pid, start time) -> CPU s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc = os.path.isdir("/proc/self")
        if self._proc:
            self._scan()
            self._thread = threading.Thread(target=self._run, args=(every,), daemon=True, name="cpu-meter")
            self._thread.start()

    def _run(self, every):
        while not self._stop.wait(every):
            self._scan()

    def _scan(self):
        procs = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    procs[int(name)] = _proc_stat(name)
                except (OSError, IndexError, ValueError):  # exited meanwhile
                    pass
        children = {}
        for pid, (parent, _, _) in procs.items():
            children.setdefault(parent, []).append(pid)
        todo = list(children.get(os.getpid(), []))
        with self._lock:
            while todo:
                pid = todo.pop()
                self._seen[pid, procs[pid][1]] = procs[pid][2]
                todo += children.get(pid, [])

    def seconds(self, descendants=True):
        """CPU s so far: differences of two readings are what the whole tree spent in between
        (``descendants=False``: this process alone)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        if not descendants:
            return usage.ru_utime + usage.ru_stime
        if self._proc:
            self._scan()
        with self._lock:
            return usage.ru_utime + usage.ru_stime + sum(self._seen.values())

    def close(self):
        self._stop.set()


def main(argv=None):
    p = _args.parser(__doc__, __file__)
    p.add_argument("--images", type=_args.count(1), default=800, help="(default %(default)s)")
    p.add_argument("--float64-images", type=_args.count(1), default=48, help="(default %(default)s)")
    p.add_argument("--alpha", type=_args.number(0, 10), default=1.0, help="(default %(default)s)")
    p.add_argument("--size", type=_args.count(1, 4096), default=224, help="(default %(default)s)")
    p.add_argument("--batch-size", type=_args.count(1, 4096), default=32, help="(default %(default)s)")
    p.add_argument("--rounds", type=_args.count(1), default=3, help="(default %(default)s)")
    p.add_argument("--ray", action="store_true", help="also time the Ray Data path (needs the 'ray' extra)")
    p.add_argument("--ray-actors", type=_args.count(1, 1024), default=None, help="default: one per core")
    p.add_argument("--ray-nice", type=_args.count(0, 19), default=0,
                   help="niceness of Ray's workers (default 0, that of the other engines; Ray's own default is 15)")
    p.add_argument("--json", type=_args.output_path,
                   help="output path (default: benchmarks/results/batch-bench-<time>.json)")
    args = p.parse_args(argv)
    if args.ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            p.error("--ray needs ray (pip install 'mobilenetv2[ray]')")
    load_start = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:  # the model's arguments, before any image is made
        cases = ("float32", "float64")
        jobs = {dt: BatchJob("features", alpha=args.alpha, size=args.size, weights="none", dtype=dt, threads=cores)
                for dt in cases}
    except ValueError as exc:
        p.error(str(exc))
    tmp = Path(tempfile.mkdtemp(prefix="mnv2-batch-bench-"))
    try:
        return bench(args, cores, load_start, jobs, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(args, cores, load_start, jobs, tmp):
    """main's run, in its temporary folder ``tmp`` (the images, the parts written)."""
    source = make_images(tmp / "images", args.images)
    items = list_images([str(tmp / "images")])
    cases = [("float32", items), ("float64", items[:args.float64_images])]
    # the CLI's defaults: one single-threaded replica per core (and one BLAS thread), one weight set
    replicas = {dt: BatchJob("features", alpha=args.alpha, size=args.size, weights="none", dtype=dt,
                             threads=1).replicas(cores) for dt, _ in cases}
    engines = ["naive", "stream"]
    if args.ray:
        import ray
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        # Ray starts its workers at nice 15 (RAY_worker_niceness): on a shared machine they would yield
        # to every other process while the naive loop and the stream run at nice 0
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"RAY_worker_niceness": str(args.ray_nice)}})
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
    meter = CpuMeter()
    cpu_seconds = meter.seconds
    times, cpu, running, steady = {}, {}, {}, {}
    run_no = 0
    for _ in range(args.rounds):
        for dt, its in cases:
            for engine in engines:
                run_no += 1
                out = tmp / f"out{run_no}"
                # naive and stream: this process alone (Ray's idle processes are not their cost)
                tree = engine.startswith("ray")
                start, cpu_start = time.perf_counter(), cpu_seconds(tree)
                if engine == "naive":
                    naive(jobs[dt], its, args.batch_size)
                elif engine == "stream":
                    stream(replicas[dt], its, args.batch_size, out)
                else:
                    spans = ray_run(dict(kind="features", alpha=args.alpha, size=args.size, weights="none", dtype=dt,
                                         threads=1), its if engine == "ray" else its[:actors], args.batch_size, out,
                                    actors)
                    if engine == "ray":
                        rates = running_rates(spans)
                        running.setdefault(dt, []).append(rates[0])
                        steady.setdefault(dt, []).append(rates[1])
                times.setdefault((engine, dt), []).append(time.perf_counter() - start)
                cpu.setdefault((engine, dt), []).append(cpu_seconds(tree) - cpu_start)
                n = actors if engine == "ray-start" else len(its)
                print(f"  {engine:<9} {dt}: {n} images in {times[engine, dt][-1]:.2f} s, "
                      f"{cpu[engine, dt][-1]:.2f} CPU s, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    meter.close()
    rows, cpu_bound = [], []
    for dt, its in cases:
        base = statistics.median(times["naive", dt])
        single = statistics.median(times["stream", dt])

        def row(engine, n, rate, t=None, cpu_s=None, config=None):
            rows.append({"engine": engine, "dtype": dt, "images": n, "images_per_s": rate,
                         "median_s": t and statistics.median(t), "min_s": t and min(t), "max_s": t and max(t),
                         "cpu_ms_per_image": cpu_s and 1000 * statistics.median(cpu_s) / n,
                         "cores_busy": t and cpu_s and statistics.median([c / w for c, w in zip(cpu_s, t)]),
                         "vs_naive": rate / (len(its) / base), "vs_stream": rate / (len(its) / single),
                         "config": config or f"{actors} actors x 1 thread"})

        for engine in engines:
            n = len(its) if engine != "ray-start" else actors
            t = times[engine, dt]
            row(engine, n, n / statistics.median(t), t, cpu[engine, dt],
                None if engine.startswith("ray") else f"{len(replicas[dt])} replicas" if engine == "stream"
                else f"{cores} threads")
        if "ray" in engines:
            row("ray running", len(its), statistics.median(running[dt]))
            row("ray steady", len(its), statistics.median(steady[dt]))
            n = len(its) - actors
            marginal = [n / (a - b) for a, b in zip(times["ray", dt], times["ray-start", dt])]
            cpu_marginal = [a - b for a, b in zip(cpu["ray", dt], cpu["ray-start", dt])]
            row("ray marginal", n, statistics.median(marginal), cpu_s=cpu_marginal)
            # CPU-bound: when every engine keeps all the cores busy, throughput = cores / CPU per image
            per = {r["engine"]: r["cpu_ms_per_image"] for r in rows if r["dtype"] == dt}
            cpu_bound.append(f"# {dt} CPU per image: ray marginal {per['ray marginal']:.2f} ms, stream "
                             f"{per['stream']:.2f}, naive {per['naive']:.2f}: on {cores} cores that all three keep "
                             f"busy, ray marginal = {per['stream'] / per['ray marginal']:.2f}x the stream, "
                             f"{per['naive'] / per['ray marginal']:.2f}x the naive loop")
    header = (f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}  {cpu_model()}, {cores} cores, "
              f"engine: {native.backend()}, python {platform.python_version()}, numpy {np.__version__}\n"
              f"# features of MobileNetV2 {args.alpha:g}_{args.size}, batch {args.batch_size}, {args.rounds} rounds; "
              f"images: {source}; load average at start {load_start:.1f}")
    if args.ray:
        import ray
        header += f"; ray {ray.__version__}, workers at nice {args.ray_nice}"
    header += f", at end {os.getloadavg()[0]:.1f}\n{split}"
    print(header)
    print(f"{'engine':<13}{'dtype':<9}{'config':<24}{'images':>7}{'median s':>10}{'min s':>8}{'max s':>8}"
          f"{'img/s':>8}{'vs naive':>10}{'vs stream':>10}{'cpu ms/img':>12}{'busy':>6}")
    def sec(v):
        return f"{v:.2f}" if v is not None else "-"
    print("(cpu ms/img: CPU time per image, all threads: of this process for naive and stream, of this process and "
          "all its descendants - Ray's raylet, GCS, workers and actors - for ray; busy: CPU time / wall time, in cores "
          "- below the core count where other processes had the cores or the engine left them idle)")
    for r in rows:
        print(f"{r['engine']:<13}{r['dtype']:<9}{r['config']:<24}{r['images']:>7}{sec(r['median_s']):>10}"
              f"{sec(r['min_s']):>8}{sec(r['max_s']):>8}{r['images_per_s']:>8.1f}{r['vs_naive']:>9.2f}x"
              f"{r['vs_stream']:>9.2f}x{sec(r['cpu_ms_per_image']):>12}{sec(r['cores_busy']):>6}")
    for line in cpu_bound:
        print(line)
    _args.write_json(_args.json_path(args.json, "batch-bench"), {
        "header": header, "cpu": cpu_model(), "cores": cores, "rows": rows,
        "decode_ms": 1000 * decode, "infer_ms": {str(k): 1000 * v for k, v in infer.items()},
        "best_overlap": ideal,
        "times": {f"{e}/{d}": t for (e, d), t in times.items()},
        "cpu_s": {f"{e}/{d}": c for (e, d), c in cpu.items()},
        "ray_running_images_per_s": running, "ray_steady_images_per_s": steady,
        "cpu_bound": cpu_bound}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
