"""The C engine's threads: how many (``threads=None``), and the pool that holds them.

A model owns one pool, shared by every plan (input shape) it compiles; a plan holds no thread.
Threads of a parent process do not exist in a child made by ``fork()`` (``multiprocessing``'s
fork start method, ``gunicorn --preload``): every pool is forgotten in the child, without
touching its locks or joining its threads, and its owner makes a new one on its next run.
"""
import os
import re
import weakref

from mobilenetv2.engines import native
from mobilenetv2.engines.machine import usable_cores
from mobilenetv2.errors import ArgumentError, is_whole


def max_threads():
    """The most threads a model may use: 4 per core this process may run on (more only adds
    switching between threads that share a core), and at least 64, so a small machine can still
    be oversubscribed on purpose.  Each thread is an OS thread with its own stack (8 MiB of
    address space) and scratch, and a typo like threads=10**6 must not try to start them all."""
    return max(64, 4 * usable_cores())


THREAD_VARIABLES = ("MNV2_NUM_THREADS", "OMP_NUM_THREADS")


class ThreadsError(ArgumentError):
    """A thread count (argument or environment variable) that is not a usable number of threads."""


def check_threads(value, what="threads"):
    """``value`` as an int in [1, max_threads()], or a ThreadsError naming ``what``."""
    limit = max_threads()
    none = "None or " if what == "threads" else ""  # (an environment variable is set or not: never None)
    wrong = f"{what} must be {none}a whole number from 1 to {limit} (4 per usable core, at least 64)"
    if not is_whole(value):  # (an array has __index__ too)
        raise ThreadsError(f"{wrong}, got {value!r}")
    value = int(value)
    if value < 1:
        raise ThreadsError(f"{wrong}, got {value!r}")
    if value > limit:
        raise ThreadsError(f"{what}={value} is more than the {limit} threads the C engine starts "
                           f"here (4 per usable core, at least 64; this process may use {usable_cores()} CPUs)")
    return value


def default_threads(environ=None):
    """Threads for ``threads=None``: the first of $MNV2_NUM_THREADS, $OMP_NUM_THREADS (the first
    entry of a nested list such as "4,2"), the CPUs this process may run on, os.cpu_count().
    Ray, Dask and batch schedulers set OMP_NUM_THREADS to the CPUs a worker was given."""
    environ = os.environ if environ is None else environ
    for name in THREAD_VARIABLES:
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        first = raw.split(",")[0].strip()
        try:  # ASCII digits, as OpenMP reads them (int() takes "1_0" as 10 and Arabic-Indic digits)
            value = int(first, 10) if re.fullmatch(r"[0-9]+", first) else int("x")
        except ValueError:
            raise ThreadsError(f"environment variable {name}={raw!r} is not a positive integer "
                               "(unset it or give a thread count)") from None
        return check_threads(value, f"environment variable {name}")
    return usable_cores()


_POOLS = weakref.WeakSet()  # every live pool of this process, for the fork handler


class Pool:
    """A C thread pool of ``threads`` threads (the caller's included)."""

    def __init__(self, threads):
        threads = check_threads(threads)
        # An interrupt (Ctrl-C, a signal handler's exception) that arrives while the threads start
        # is raised as the C call returns, before its result is stored: the handle would be lost
        # and its threads run on.  So the handle goes into a list from C (extend over map calls
        # the function with no check for interrupts between), and whatever is raised after it,
        # the finally below hands it to the garbage collector, which stops the threads.
        started = []
        try:
            started.extend(map(native.lib.mnv2_pool_create, (threads,)))
        finally:
            handle = started[0] if started else native.ffi.NULL  # (indexing calls nothing)
            if handle != native.ffi.NULL:
                handle = native.ffi.gc(handle, native.lib.mnv2_pool_destroy)  # dropped: destroyed
        if handle == native.ffi.NULL:
            raise RuntimeError(f"could not start {threads} threads for the C engine "
                               "(try fewer: threads=N or MNV2_NUM_THREADS)")
        self.handle = handle
        self._threads = native.lib.mnv2_pool_threads(handle)  # fixed for the pool's life
        self.pid = os.getpid()
        _POOLS.add(self)

    @property
    def threads(self):
        """The pool's thread count, as the C side read it when the pool started (it never changes;
        read once, not on every run)."""
        return self._threads

    def usable(self):
        """False in a forked child (or once forgotten): its owner must make a new pool."""
        return self.handle is not None and self.pid == os.getpid()

    def forget(self):
        """Drop the pool without stopping its threads (which, after fork, do not exist)."""
        if self.handle is not None:
            native.ffi.gc(self.handle, None)  # cancels mnv2_pool_destroy: the memory is left as is
            self.handle = None

    def __getstate__(self):
        raise TypeError("a C thread pool cannot be pickled (a model drops its pool when pickled)")


def _forget_all_pools():
    for pool in list(_POOLS):
        pool.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all_pools)
