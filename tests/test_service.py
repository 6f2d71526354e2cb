"""One model in a long-lived service: bounded memory and threads over many input shapes, fork
after a multithreaded run, many Python threads on one model."""
import gc
import multiprocessing
import threading
import time

import numpy as np
import pytest

from mobilenetv2 import MobileNetV2
from mobilenetv2.engines import native

pytestmark = pytest.mark.skipif(not native.available(), reason="the C extension is not built")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def proc_status():
    """(VmRSS in MiB, OS threads) of this process."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["VmRSS"][0]) / 1024, int(fields["Threads"][0])


def os_threads_within(limit, seconds=5.0):
    """This process's OS threads once they are at most ``limit``, or after ``seconds`` as they
    are then.  A pool joins its workers before it is freed, but the kernel's count drops a
    moment after a join returns (a worker between clearing its thread id and leaving the thread
    group: seen as 3 against 2 under TSan with the machine's 2 cores busy); workers kept alive
    would never leave."""
    deadline = time.monotonic() + seconds
    while proc_status()[1] > limit and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc_status()[1]


def test_many_shapes_keep_memory_and_threads_bounded():
    """200 batch sizes and 50 input sizes through one any-size model: the plans stay within the
    cache's bounds, the OS threads are the pool's, and every result is the one a fresh model
    gives (same weights, same threads)."""
    gc.collect()  # earlier tests' models (and their pools' threads) go now, not during this one
    model = MobileNetV2(None, alpha=0.35, include_top=False, pooling="avg", weights=None, threads=2)
    model.plan_cache_bytes = 32 * 1024 * 1024
    model(rand(1, 32, 32, 3))
    rss0, threads0 = proc_status()
    peak_rss, peak_threads = rss0, threads0
    shapes = [(n, 32, 32, 3) for n in range(1, 201)] + [(2, s, s + 1, 3) for s in range(32, 82)]
    checks = {}
    for i, shape in enumerate(shapes):
        y = model(rand(*shape, seed=i))
        if i % 23 == 0:
            checks[shape] = (i, y)
        rss, threads = proc_status()
        peak_rss, peak_threads = max(peak_rss, rss), max(peak_threads, threads)
        assert len(model._plans) <= model.plan_cache_shapes
        assert sum(p.nbytes for p in list(model._plans.values())[:-1]) <= model.plan_cache_bytes
    # the pool's one worker is already running after the first call: not one more thread
    assert peak_threads == threads0
    # plans: at most 32 MiB cached + the newest (batch 200 at 32x32: 6.6 MiB); inputs and
    # outputs of a call: < 3 MiB; 40 MiB more for the allocator's slack
    assert peak_rss - rss0 < 80, (rss0, peak_rss)
    fresh = MobileNetV2(None, alpha=0.35, include_top=False, pooling="avg", weights=None, threads=2)
    fresh.set_weights(model.get_weights())
    for shape, (i, y) in checks.items():
        np.testing.assert_array_equal(fresh(rand(*shape, seed=i)), y)
    model.clear_cache()
    fresh.clear_cache()
    assert len(model._plans) == 0 and model._pool is None
    assert os_threads_within(threads0 - 1) <= threads0 - 1  # the worker of the model's pool has stopped
    i, y = checks[(1, 32, 32, 3)]
    np.testing.assert_array_equal(model(rand(1, 32, 32, 3, seed=i)), y)  # rebuilt on demand


def test_weights_are_packed_once_for_every_shape():
    model = MobileNetV2(None, alpha=0.35, include_top=False, weights=None, threads=1)
    model(rand(1, 32, 32, 3))
    packed = model._packed
    arrays = {name: dict(a) for name, a in packed._arrays.items()}
    for n in (2, 3):
        model(rand(n, 40, 48, 3))
    assert model._packed is packed
    for name, a in packed._arrays.items():  # the very same arrays, not repacked
        assert all(a[k] is arrays[name][k] for k in a)
    plans = list(model._plans.values())
    assert len(plans) == 3
    conv1 = [{op["w"] for op in p.ops if op["kind"] == native.lib.MNV2_OP_STEM} for p in plans]
    assert len(set().union(*conv1)) == 1  # every plan's stem reads one packed kernel
    model.get_layer("Conv1").set_weights(model.get_layer("Conv1").get_weights())
    model(rand(1, 32, 32, 3))
    assert model._packed is not packed and len(model._plans) == 1


def _child_predict(conn, model, x):
    conn.send(model.predict(x))
    conn.close()


def test_forked_child_after_a_multithreaded_run_does_not_hang():
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=2)
    x = rand(3, 64, 64, 3)
    want = model.predict(x)  # the pool's worker is running (or spinning) in the parent
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child_predict, args=(child, model, x))
    proc.start()
    try:
        assert parent.poll(30), "the forked child did not answer within 30 s (hung?)"
        np.testing.assert_array_equal(parent.recv(), want)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert proc.exitcode == 0
    np.testing.assert_array_equal(model.predict(x), want)  # the parent's pool is untouched


def test_forked_pool_workers_each_get_a_fresh_pool():
    """A multiprocessing pool (fork) mapping over a model used with 2 threads in the parent."""
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=2)
    xs = [rand(2, 64, 64, 3, seed=s) for s in range(4)]
    want = [model.predict(x) for x in xs]
    with multiprocessing.get_context("fork").Pool(2) as workers:
        result = workers.map_async(model.predict, xs)
        got = result.get(timeout=120)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_eight_python_threads_on_one_model_match_serial():
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=2)
    inputs = [rand(1 + i % 3, 64, 64, 3, seed=i) for i in range(8)]
    want = [model.predict(x) for x in inputs]
    got = [[] for _ in inputs]
    start = threading.Barrier(8)

    def work(i):
        start.wait()
        for _ in range(6):
            got[i].append(model(inputs[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for outs, w in zip(got, want):
        assert len(outs) == 6
        for g in outs:
            np.testing.assert_array_equal(g, w)


def test_a_dropped_model_frees_its_threads_and_plans_without_the_cycle_collector():
    """Each layer held a bound method of its model: every model was a reference cycle, so its C
    threads and plans outlived `del model` until the cycle collector ran (with gc disabled, 10
    swaps grew to 32 threads and 764 MiB)."""
    import weakref
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        base_threads = proc_status()[1]
        for _ in range(5):
            model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=4)
            model.predict(rand(2, 96, 96, 3))
            assert proc_status()[1] >= base_threads + 3  # its pool's workers are running
            ref = weakref.ref(model)
            del model
            assert ref() is None  # freed by its reference count alone
            assert os_threads_within(base_threads) == base_threads
    finally:
        if was_enabled:
            gc.enable()


def test_a_failed_set_weights_leaves_the_model_as_it_was():
    """All arrays are checked before any layer changes (a bad last array left 52 of 262 replaced)."""
    from mobilenetv2.errors import WeightsError
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
    x = rand(1, 96, 96, 3)
    before, want = model.get_weights(), model.predict(x)
    new = [w * np.float32(1.1) for w in before]
    new[-1] = np.full_like(new[-1], np.nan)
    with pytest.raises(WeightsError, match="NaN"):
        model.set_weights(new)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))
    assert np.array_equal(model.predict(x), want)


def test_set_weights_while_others_predict_gives_old_or_new_never_a_mix():
    """The swap happens under the plan lock: 22 of 4,000 C-engine outputs matched neither weight
    set when layers were replaced one by one while calls ran."""
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=1)
    x = rand(1, 96, 96, 3)
    a = model.get_weights()
    b = [w * np.float32(0.9) if w.ndim > 1 else w for w in a]
    seen = _swapping(model, a, b, [lambda: model.predict(x)] * 3, swaps=60)
    assert "mix" not in seen and len(seen) > 10


def _swapping(model, a, b, calls, swaps):
    """What each call gave ('a', 'b' or 'mix': the result under weights a, under b, or neither)
    while the model's weights were swapped between a and b ``swaps`` times, each call in a thread
    of its own, over and over."""
    want = []
    for weights in (a, b):
        model.set_weights(weights)
        want.append([call() for call in calls])
    seen, stop = [], threading.Event()

    def run(i):
        while not stop.is_set():
            y = calls[i]()
            seen.append("a" if np.array_equal(y, want[0][i]) else "b" if np.array_equal(y, want[1][i]) else "mix")

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for w in workers:
        w.start()
    for i in range(swaps):
        model.set_weights(a if i % 2 else b)
    stop.set()
    for w in workers:
        w.join()
    return seen


def test_set_weights_while_the_numpy_engine_runs_gives_old_or_new_never_a_mix():
    """The NumPy layers (float64, engine='numpy', features() and trace()) ran without the plan lock
    and read each layer's weights as they reached it: 24 of 27 float64 outputs computed while
    set_weights swapped two weight sets matched neither."""
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, classes=10, dtype="float64")
    x = rand(2, 64, 64, 3).astype(np.float64)
    a = model.get_weights()
    b = [w * 0.9 if w.ndim > 1 else w for w in a]
    calls = [lambda: model.predict(x), lambda: model.features(x, "block_16_project")["block_16_project"]]
    seen = _swapping(model, a, b, calls, swaps=40)
    assert "mix" not in seen and len(seen) > 10


def test_a_batch_larger_than_the_memory_available_is_refused_before_it_runs(monkeypatch):
    """Linux lends address space it has not got: a batch-2048 plan took 23.7 GiB of buffers on a
    23.5 GiB machine without complaint (the OOM killer would have ended the run)."""
    from mobilenetv2 import InsufficientMemory
    from mobilenetv2.engines import machine
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
    x = rand(4, 96, 96, 3)
    want = model.predict(x)
    model.clear_cache()
    monkeypatch.setattr(machine, "available_memory", lambda: 1 << 20)  # 1 MiB free
    with pytest.raises(InsufficientMemory, match=r"out of memory for a batch of 4 at 96x96: its activation "
                                                 r"buffers take .* GiB, 0.0 GiB is available; use a smaller batch"):
        model(x)
    monkeypatch.setattr(machine, "available_memory", lambda: None)  # not known: run
    assert np.array_equal(model(x), want)
    assert isinstance(InsufficientMemory("x"), MemoryError)


def test_predict_in_chunks_holds_memory_as_batch_size_asks():
    """The whole input was converted (and a bool array of it made) before the first chunk ran:
    a non-contiguous float64 input of 400 images took 287 MiB for a batch_size of 8."""
    import tracemalloc
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classifier_activation=None)
    big = rand(200, 96, 96, 6, seed=3)[..., ::2].astype(np.float64)  # 200 images, non-contiguous, 44 MB
    want = np.concatenate([model.predict(big[i:i + 8]) for i in range(0, 200, 8)])
    model.predict(big[:8], batch_size=8)
    tracemalloc.start()
    try:
        got = model.predict(big, batch_size=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, want)
    assert peak < 8 << 20, peak  # a chunk's copies (1.8 MB) and the outputs, not the 22 MB input copy


C_FORK = """
import ctypes, os, signal, sys, threading, time
import numpy as np
from mobilenetv2 import MobileNetV2
model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=2)
x = np.random.default_rng(0).uniform(-1, 1, (4, 96, 96, 3)).astype(np.float32)
want = model.predict(x)
# The other thread is inside a call: it holds the model's lock, blocked without the GIL and not
# asking for it (a thread waiting for the GIL at the fork leaves the child's only thread handing
# the GIL to a thread that is not there, forever: CPython's, whatever this package does).
inside, stop = threading.Event(), threading.Event()
def call():
    with model._plan_lock:
        inside.set()
        stop.wait()
busy = threading.Thread(target=call)
busy.start()
inside.wait()
bad = 0
for _ in range(8):
    pid = ctypes.PyDLL(None).fork()
    if pid == 0:  # the child: a hang is ended by the alarm (status SIGALRM)
        signal.alarm(20)
        os._exit(0 if np.array_equal(model.predict(x), want) else 3)
    _, status = os.waitpid(pid, 0)
    bad += not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
stop.set()
busy.join()
print("children that failed or hung:", bad)
sys.exit(1 if bad else 0)
"""


def test_a_fork_made_from_c_while_another_thread_predicts_does_not_hang_the_child():
    """fork() called from C (a library's, not os.fork: Python's at-fork handlers do not run) while
    another thread was inside predict: the child inherited the model's lock held and hung on its
    first call (8 of 8 children). The lock now belongs to the process that made it.  Run in a
    fresh interpreter: in this one other libraries' threads (a test's Ray or Dask, their gRPC)
    may hold locks of their own across a raw fork."""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", C_FORK], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "children that failed or hung: 0" in run.stdout
