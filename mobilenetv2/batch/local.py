"""The single-machine stream: decode in a thread pool while the model runs, write parts as batches finish.

    list of (id, path) --batches--> [decode pool: at most `prefetch` batches decoded ahead]
        --> model (threads C threads) --> table --> part writer (a part every `rows_per_part` rows)

Memory is bounded by the batches in flight: ``(prefetch + 1) x batch_size`` decoded images plus one
part's rows, whatever the number of images (the list of paths and the set of done ids, ~100 bytes an
image, are the only things that grow with it).  Pillow releases the GIL while it decodes and resizes,
so decoding threads overlap the C engine's threads.
"""
import collections
import concurrent.futures
import sys
import time


class Progress:
    """Count, images/s and ETA on a stream (stderr): redrawn in place on a terminal, else a line
    every ``every`` seconds."""

    def __init__(self, total, stream=None, every=10.0, enabled=True):
        self.total, self.done, self.errors = total, 0, 0
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 0.2 if self.tty else every
        self.enabled = enabled
        self.start = self._last = time.perf_counter()

    def rate(self):
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self):
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta == eta else "--:--:--"
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


def run(job, items, dataset, batch_size=32, prefetch=2, decode_workers=None, rows_per_part=4096,
        progress=None):
    """Process ``items`` [(id, path)] with ``job`` into ``dataset``; returns (rows, errors) written."""
    decode_workers = decode_workers or max(1, prefetch)
    writer = dataset.part_writer(job.schema())
    batches = _batches(items, batch_size)
    written = errors = 0
    with concurrent.futures.ThreadPoolExecutor(decode_workers, thread_name_prefix="mnv2-decode") as pool:
        pending = collections.deque()

        def refill():
            while len(pending) < prefetch:
                nxt = next(batches, None)
                if nxt is None:
                    return
                ids, paths = nxt
                pending.append((ids, paths, pool.submit(job.decode, paths)))

        try:
            refill()
            while pending:
                ids, paths, future = pending.popleft()
                x, ok, bad = future.result()
                refill()  # the next decode starts before this batch's inference
                writer.write(job.table(ids, paths, job.infer(x), ok, bad))
                written += len(ids)
                errors += len(bad)
                if writer.rows >= rows_per_part:
                    writer.commit()
                if progress is not None:
                    progress.update(len(ids), len(bad))
            writer.commit()
        except BaseException:
            for *_, future in pending:
                future.cancel()
            writer.abort()
            raise
    return written, errors

