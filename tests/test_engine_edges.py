"""Edges of the engines in a service: an interrupt while a pool starts, the memory limit of the
cgroup a process actually runs in.  (Threads, copies, fork, pickling, ISAs and plan caches are
covered by test_service.py, test_copy.py, test_pickle.py, test_isa.py and test_plan*.py.)"""
import gc
import sys
import time

import pytest

from mobilenetv2.engines import machine, native
from mobilenetv2.engines import pool as threadpool


def os_threads():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return None


def os_threads_within(limit, seconds=5.0):
    """This process's OS threads once they are at most ``limit``, or after ``seconds`` as they
    are then (the kernel's count drops a moment after a join returns; a worker kept alive never
    leaves)."""
    deadline = time.monotonic() + seconds
    while os_threads() > limit and time.monotonic() < deadline:
        time.sleep(0.01)
    return os_threads()


# -- a KeyboardInterrupt while a pool starts --------------------------------------------------------
@pytest.mark.skipif(not native.available(), reason="the C extension is not built")
@pytest.mark.skipif(sys.implementation.name != "cpython" or os_threads() is None,
                    reason="needs CPython's profile hook and /proc/self/status")
def test_an_interrupt_anywhere_in_starting_a_pool_leaves_no_threads_running():
    """Ctrl-C (a notebook's interrupt, a service's SIGINT) lands in Python only between bytecodes:
    one that arrived while mnv2_pool_create started the threads was raised as that call returned,
    before Pool held the handle, and the pool's threads ran on for the life of the process
    (1-4 left running in 150 interrupted first predicts).  Here the interrupt is raised after
    each C call of Pool() in turn (a profile hook's c_return, which drops the call's result as
    an interrupt there does); every time, the process's threads come back to what they were."""
    gc.collect()
    base = os_threads()
    init = threadpool.Pool.__init__.__code__
    raised_at = []
    for k in range(1, 100):
        seen = [0]

        def interrupt(frame, event, arg):
            if event == "c_return" and frame.f_code is init:
                seen[0] += 1
                if seen[0] == k:
                    raise KeyboardInterrupt  # (the profile hook is unset as it raises)

        sys.setprofile(interrupt)
        try:
            p = threadpool.Pool(3)  # two worker threads
        except KeyboardInterrupt:
            raised_at.append(k)
        else:
            assert p.usable() and p.threads == 3
            del p
            break
        finally:
            sys.setprofile(None)
        gc.collect()
        assert os_threads_within(base) == base, f"an interrupt after C call {k} of Pool() left threads running"
    else:
        pytest.fail("Pool() never ran without an interrupt")
    assert raised_at, "no C call of Pool() was interrupted"
    gc.collect()
    assert os_threads_within(base) == base


# -- the memory limit of the cgroup this process is in --------------------------------------------
def _meminfo(tmp_path, kib=20000000):
    path = tmp_path / f"meminfo_{kib}"
    path.write_text(f"MemTotal:       32000000 kB\nMemAvailable:   {kib} kB\n")
    return path


def _cgroup_files(folder, limit, used, v1=False):
    folder.mkdir(parents=True, exist_ok=True)
    names = ("memory.limit_in_bytes", "memory.usage_in_bytes") if v1 else ("memory.max", "memory.current")
    (folder / names[0]).write_text(f"{limit}\n")
    (folder / names[1]).write_text(f"{used}\n")


def test_a_service_s_own_cgroup_limit_is_the_one_read_not_the_hierarchy_root_s(tmp_path):
    """A systemd service with MemoryMax= (or a job scheduler's cgroup) runs in a cgroup below the
    hierarchy's root, where /proc/self/cgroup says (without a cgroup namespace, a container's
    root is the host's): its limit was never read, so a batch beyond it was not refused but killed
    by the kernel as it ran.  The process's own cgroup and every one above it count: the least
    any of them leaves."""
    meminfo, root = _meminfo(tmp_path), tmp_path / "cgroup"
    gib = 1 << 30
    # cgroup v2: the root has no memory.max; the service's cgroup allows 4 GiB and uses 1
    _cgroup_files(root / "system.slice" / "app.service", 4 * gib, 1 * gib)
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/system.slice/app.service\n")
    assert machine.available_memory(meminfo, root, proc) == 3 * gib
    # a parent's limit that leaves less wins: the slice allows 5 GiB and uses 4.5 (its other units)
    _cgroup_files(root / "system.slice", 5 * gib, 4 * gib + gib // 2)
    assert machine.available_memory(meminfo, root, proc) == gib // 2
    (root / "system.slice" / "memory.max").write_text("max\n")  # a cgroup without a limit: no say
    assert machine.available_memory(meminfo, root, proc) == 3 * gib
    # the kernel's MemAvailable where it is less
    assert machine.available_memory(_meminfo(tmp_path, 1024), root, proc) == 1024 * 1024
    # cgroup v1 (this is a hybrid machine's memory line among others)
    v1, proc1 = tmp_path / "v1", tmp_path / "proc_cgroup_v1"
    proc1.write_text("9:name=systemd:/\n4:memory:/jobs/1234\n1:cpu,cpuacct:/jobs/1234\n0::/\n")
    _cgroup_files(v1 / "memory", 9223372036854771712, 7 * gib, v1=True)  # the root: v1's "no limit"
    _cgroup_files(v1 / "memory" / "jobs" / "1234", 2 * gib, gib // 4, v1=True)
    assert machine.available_memory(meminfo, v1, proc1) == 2 * gib - gib // 4


def test_cgroup_paths_not_in_this_mount_fall_back_to_its_root(tmp_path):
    """A container whose cgroup is not namespaced sees the host's path in /proc/self/cgroup but
    its own cgroup mounted as the root: folders of that path missing there are skipped; a path
    outside the namespace ('/..') is not followed out of the mount; no /proc/self/cgroup reads
    the mount's root, as before."""
    meminfo, root = _meminfo(tmp_path), tmp_path / "cgroup"
    gib = 1 << 30
    _cgroup_files(root, 8 * gib, 3 * gib)
    proc = tmp_path / "proc_cgroup"
    for path in ("/docker/0123abcd", "/../../elsewhere", "/"):
        proc.write_text(f"0::{path}\n")
        assert machine.available_memory(meminfo, root, proc) == 5 * gib, path
    (tmp_path / "elsewhere").mkdir()
    _cgroup_files(tmp_path / "elsewhere", gib, 0)  # outside the mount: never read
    proc.write_text("0::/../elsewhere\n")
    assert machine.available_memory(meminfo, root, proc) == 5 * gib
    assert machine.available_memory(meminfo, root, tmp_path / "absent") == 5 * gib
    proc.write_text("garbage without colons\n\n0::\n")
    assert machine.available_memory(meminfo, root, proc) == 5 * gib
    assert machine.available_memory(meminfo, tmp_path / "none", proc) == 20000000 * 1024


# -- lowering the plan cache's bounds ----------------------------------------------------------------
@pytest.mark.skipif(not native.available(), reason="the C extension is not built")
def test_lowering_the_plan_cache_bounds_frees_the_plans_beyond_them():
    """README: plans are kept in a cache of at most model.plan_cache_shapes shapes and
    model.plan_cache_bytes of buffers.  A service that lowers them to give memory back kept every
    plan until the next new input shape came (never, where its shapes repeat)."""
    import numpy as np
    from mobilenetv2 import MobileNetV2
    model = MobileNetV2(None, alpha=0.35, include_top=False, weights=None, threads=1)
    for s in range(32, 36):
        model(np.zeros((1, s, s, 3), np.float32))
    assert len(model._plans) == 4
    model.plan_cache_shapes = 2
    assert list(model._plans) == [(1, s, s, 3) for s in (34, 35)]  # the two used last
    model(np.zeros((1, 34, 34, 3), np.float32))  # a shape it holds
    model.plan_cache_bytes = 0
    assert list(model._plans) == [(1, 34, 34, 3)]  # the newest is kept whatever its size
