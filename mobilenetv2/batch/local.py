"""The single-machine stream: images decode in a thread pool while model replicas run batches.

    (id, path) batches --> decode pool (one task per image) --> W model replicas, each with `threads`
        C threads (default W = CPUs / threads, threads = 1) --> table --> part writer (in input order)

Replicas rather than one model on every core: a C plan's threads meet at a barrier after each layer,
so one of them descheduled by a decoding thread stalls the others; single-threaded replicas just
share the cores with the decoders (measured on 2 cores: see benchmarks/README.md).  Pillow and the C
engine release the GIL, so Python threads are enough, and the replicas are copies of one model
(BatchJob.replicas) that share its weights and their packed C form: one weight set in memory,
loaded and packed once, whatever W.

The replicas also mean one BLAS thread (threadpoolctl, in the ``batch`` extra): the float64 NumPy
engine's matmuls are small, and OpenBLAS threads spinning at their own barriers cost far more than
they give (2 loaded cores, float64 1.0_224: 1.3 images/s with OpenBLAS's 2 threads, 8.9-11 with 1).

Memory is bounded by the batches in flight: ``(prefetch + workers) x batch_size`` decoded images,
whatever the number of images (the list of paths and the set of done ids, ~100 bytes an image, are
the only things that grow with it).
"""
import collections
import concurrent.futures
import math
import os
import queue
import sys
import time

from mobilenetv2.batch.job import blas_single_threaded


def available_cpus():
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_memory(job, workers, batch_size, prefetch, images):
    """Refuse, before the replicas are built, a run of ``images`` whose ``workers`` replicas of ``job``
    and ``prefetch`` decoded batches waiting for them certainly exceed the memory available: each
    model checks its own buffers alone, and replicas that each fit could together take more than the
    machine has (Linux lends the address space, then kills the process).  The weights count once:
    the replicas share ``job``'s (``job.replicas``), loaded already, and the C plan's packed form of
    them, still to be made.  A short run counts the batches it has: ``--batch-size 4096`` on 20
    images is one of 20."""
    from mobilenetv2.engines import machine
    from mobilenetv2.errors import InsufficientMemory
    available = machine.available_memory()
    if available is None or not images:
        return
    batch_size = min(batch_size, images)
    batches = math.ceil(images / batch_size)
    workers = min(workers, batches)
    prefetch = min(prefetch, batches - workers)
    replicas = workers * job.memory_bytes(batch_size) + job.packed_bytes()
    waiting = prefetch * batch_size * job.size * job.size * 3
    if replicas + waiting > available:
        mib = 2 ** 20
        raise InsufficientMemory(
            f"{workers} workers running batches of {batch_size} at {job.size}x{job.size} ({job.dtype.name}) "
            f"need at least {(replicas + waiting) / mib:.1f} MiB ({workers} model replicas {replicas / mib:.1f}, "
            f"{prefetch} decoded batches waiting {waiting / mib:.1f}), {available / mib:.1f} MiB is available: "
            "lower --workers or --batch-size")


def _duration(seconds):
    """'1d 02:03:04' / '02:03:04'."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


class Progress:
    """Count, images/s and ETA on a stream (stderr): redrawn in place on a terminal, else a line
    every ``every`` seconds."""

    def __init__(self, total, stream=None, every=10.0, enabled=True):
        self.total, self.done, self.errors = total, 0, 0
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 0.2 if self.tty else every
        self.enabled = enabled and total > 0
        self.start = self._last = time.perf_counter()

    def rate(self):
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self):
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_text = _duration(eta) if eta == eta else "--:--:--"
        errors = f"  {self.errors} errors" if self.errors else ""
        return f"{self.done}/{self.total} images  {rate:.1f} images/s  ETA {eta_text}{errors}"

    def update(self, n, errors=0, force=False):
        self.done += n
        self.errors += errors
        now = time.perf_counter()
        if self.enabled and (force or now - self._last >= self.every):
            self._last = now
            self.stream.write(("\r" + self.line() + "\033[K") if self.tty else self.line() + "\n")
            self.stream.flush()

    def finish(self):
        if self.enabled:
            self.update(0, force=True)
            if self.tty:
                self.stream.write("\n")


def _batches(items, batch_size):
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        yield [k for k, _ in chunk], [p for _, p in chunk]


PREFETCH = 2  # decoded batches waiting for the models, by default


def run(jobs, items, dataset, batch_size=32, prefetch=PREFETCH, decode_workers=None, rows_per_part=4096,
        progress=None):
    """Process ``items`` [(id, path)] into ``dataset`` with the model replicas ``jobs`` (BatchJobs of
    one configuration; one is fine); returns (rows, errors) written.  Each part file holds
    ``rows_per_part`` rows (the last the rest): a batch that crosses a part's end is split there."""
    from mobilenetv2.batch.job import _positive_int
    rows_per_part = _positive_int("rows_per_part", rows_per_part)
    jobs = list(jobs) if isinstance(jobs, (list, tuple)) else [jobs]
    decode_workers = decode_workers or available_cpus()
    replicas = queue.SimpleQueue()
    for job in jobs:
        replicas.put(job)

    def infer(ids, paths, loads):
        loaded = [f.result() for f in loads]
        job = replicas.get()
        try:
            x, ok, bad = job.assemble(loaded)
            return job.table(ids, paths, job.infer(x), ok, bad), len(bad)
        finally:
            replicas.put(job)

    writer = dataset.part_writer(jobs[0].schema())
    batches = _batches(items, batch_size)
    written = errors = 0
    with blas_single_threaded(), \
            concurrent.futures.ThreadPoolExecutor(decode_workers, thread_name_prefix="mnv2-decode") as decoders, \
            concurrent.futures.ThreadPoolExecutor(len(jobs), thread_name_prefix="mnv2-model") as models:
        pending = collections.deque()  # (loads, inference) of each batch in flight, in input order
        try:
            while True:
                while len(pending) < prefetch + len(jobs):
                    nxt = next(batches, None)
                    if nxt is None:
                        break
                    ids, paths = nxt
                    loads = [decoders.submit(jobs[0].load, path) for path in paths]
                    pending.append((loads, models.submit(infer, ids, paths, loads)))
                if not pending:
                    break
                table, bad = pending.popleft()[1].result()
                rows = table.num_rows
                while table.num_rows:  # a batch that crosses a part's end is split there
                    room = rows_per_part - writer.rows
                    writer.write(table.slice(0, room))
                    table = table.slice(room)
                    if writer.rows >= rows_per_part:
                        writer.commit()
                written += rows
                errors += bad
                if progress is not None:
                    progress.update(rows, bad)
            writer.commit()
        except BaseException:
            for loads, inference in pending:
                for future in loads + [inference]:
                    future.cancel()
            writer.abort()
            raise
    return written, errors
