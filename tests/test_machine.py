"""The machine constants the plan derives its thresholds from: read, not assumed."""
import os

import pytest

from mobilenetv2.engines import machine, plan


def test_sysfs_sizes_are_parsed_and_only_data_caches_count(tmp_path):
    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"),
                                             (2, "Unified", "1024K"), (3, "Unified", "32M")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert machine._sysfs_caches(tmp_path) == {1: 48 * 1024, 2: 1024 * 1024, 3: 32 * 1024 * 1024}


def test_unreadable_sysfs_gives_nothing_and_bad_sizes_are_refused(tmp_path):
    assert machine._sysfs_caches(tmp_path / "absent") == {}
    assert machine._parse_size("garbage") is None and machine._parse_size("0K") is None
    assert machine._parse_size("512") == 512


def test_caches_sysfs_does_not_list_come_from_sysconf_within_bounds(monkeypatch):
    """Where sysfs lists no cache (a container without /sys, another OS), each level is sysconf's
    own name for it; a size sysconf cannot give (0, -1, an error) or past 2 GiB is the common one."""
    monkeypatch.setattr(machine, "_sysfs_caches", lambda: {})
    asked = []

    def sysconf(name):
        asked.append(name)
        return {"SC_LEVEL1_DCACHE_SIZE": 48 << 10, "SC_LEVEL2_CACHE_SIZE": 2 << 20,
                "SC_LEVEL3_CACHE_SIZE": (2 << 30) - 1}[name]
    monkeypatch.setattr(os, "sysconf", sysconf)
    assert machine.cache_sizes() == {1: 48 << 10, 2: 2 << 20, 3: (2 << 30) - 1}
    assert asked == ["SC_LEVEL1_DCACHE_SIZE", "SC_LEVEL2_CACHE_SIZE", "SC_LEVEL3_CACHE_SIZE"]
    for bad in (0, -1, 2 << 30):
        monkeypatch.setattr(os, "sysconf", lambda name, bad=bad: bad)
        assert machine.cache_sizes() == machine.DEFAULTS
    monkeypatch.setattr(os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert machine.cache_sizes() == machine.DEFAULTS
    monkeypatch.setattr(machine, "_sysfs_caches", lambda: {2: 1 << 20})  # sysfs's size wins where it has one
    monkeypatch.setattr(os, "sysconf", lambda name: 64 << 10)
    assert machine.cache_sizes() == {1: 64 << 10, 2: 1 << 20, 3: 64 << 10}


def test_this_machine_s_values_are_sane_and_reach_the_plan():
    sizes = machine.cache_sizes()
    assert 4 * 1024 <= sizes[1] <= sizes[2] <= max(sizes[2], sizes[3])
    # each level's constant is that level's size (an L1 read as L2 went unseen: the plan's
    # thresholds were only checked against the constants themselves)
    assert (machine.L1D, machine.L2, machine.L3) == (sizes[1], sizes[2], sizes[3]) and machine.L1D < machine.L2
    assert machine.CORES == len(os.sched_getaffinity(0))
    assert plan.FUSE_MIN_BYTES == machine.L2 and plan.BAND_SCRATCH_BYTES == machine.L2 // 2
    assert plan.FUSE_SMALL_MIN_BYTES == 2 * machine.L1D
    assert plan.BALANCE_THREADS == machine.CORES


def test_usable_cores_without_an_affinity_mask_is_the_cpu_count(monkeypatch):
    """Where the OS has no affinity call (macOS) or refuses it, every CPU counts; none known is 1."""
    def refused(pid):
        raise OSError("not permitted")
    monkeypatch.setattr(os, "sched_getaffinity", refused)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert machine.usable_cores() == 6
    monkeypatch.delattr(os, "sched_getaffinity")
    assert machine.usable_cores() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert machine.usable_cores() == 1


@pytest.mark.parametrize("cores,h,c,stride,fused", [
    (2, 56, 144, 1, True),    # 1.8 MB expanded: bigger than L2
    (2, 28, 192, 1, True),    # 602 KB: inside L2, but > 2 x L1d and 28 rows = 14 a core
    (2, 14, 576, 1, False),   # 451 KB, 14 rows: 7 a core, each thread would recompute 2 of 9
    (16, 28, 192, 1, False),  # 28 rows on 16 cores
    (1, 14, 576, 1, True),    # one core: no halo to recompute
    (2, 8, 192, 1, False),    # 48 KB: inside 2 x L1d
    (2, 34, 96, 2, True),     # stride 2: the output's 17 rows count (444 KB)
    (2, 30, 96, 2, False),    # 15 output rows: 7-8 a core (346 KB)
])
def test_which_blocks_are_worth_fusing(monkeypatch, cores, h, c, stride, fused):
    """plan._worth_fusing on a 48 KB-L1d, 1 MB-L2 core (Zen 5), worked by hand."""
    monkeypatch.setattr(plan, "FUSE_MIN_BYTES", 1024 * 1024)
    monkeypatch.setattr(plan, "FUSE_SMALL_MIN_BYTES", 2 * 48 * 1024)
    monkeypatch.setattr(plan, "FUSE_MIN_ROWS", 8)
    monkeypatch.setattr(plan.machine, "CORES", cores)
    oh = (h + stride - 1) // stride
    assert plan._worth_fusing(dict(n=1, h=h, w_=h, c=c, oh=oh)) is fused


@pytest.mark.parametrize("mode,size,want", [
    ("always [madvise] never\n", "2097152\n", 2097152),
    ("[always] madvise never\n", "2097152\n", 2097152),
    ("always madvise [never]\n", "2097152\n", None),   # the kernel never backs memory with them
    ("always [madvise] never\n", "16777216\n", 16777216),  # a 16 MB page (ppc64)
    ("always [madvise] never\n", "3000\n", None),      # not a power of two
    ("always [madvise] never\n", "huge\n", None),
    ("garbage\n", "2097152\n", None),                  # no mode in force
])
def test_huge_page_size_is_read_from_sysfs(tmp_path, mode, size, want):
    (tmp_path / "enabled").write_text(mode)
    (tmp_path / "hpage_pmd_size").write_text(size)
    assert machine.huge_page_bytes(tmp_path) == want


def test_no_transparent_huge_pages_in_sysfs_means_none(tmp_path):
    assert machine.huge_page_bytes(tmp_path / "absent") is None


def test_available_memory_is_the_kernel_s_or_the_cgroup_s_if_less(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n")
    cg = tmp_path / "cg"
    cg.mkdir()
    assert machine.available_memory(meminfo, cg) == 20000000 * 1024  # no cgroup files: the kernel's
    (cg / "memory.max").write_text("max\n")
    (cg / "memory.current").write_text("5\n")
    assert machine.available_memory(meminfo, cg) == 20000000 * 1024  # v2, no limit
    (cg / "memory.max").write_text(f"{8 << 30}\n")
    (cg / "memory.current").write_text(f"{3 << 30}\n")
    assert machine.available_memory(meminfo, cg) == 5 << 30  # a container's 8 GiB, 3 used
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    (v1 / "memory" / "memory.usage_in_bytes").write_text("4487241728\n")
    assert machine.available_memory(meminfo, v1) == 20000000 * 1024
    (v1 / "memory" / "memory.limit_in_bytes").write_text(f"{6 << 30}\n")
    assert machine.available_memory(meminfo, v1) == (6 << 30) - 4487241728
    (v1 / "memory" / "memory.limit_in_bytes").write_text(f"{2 << 30}\n")  # over its limit already
    assert machine.available_memory(meminfo, v1) == 0
    assert machine.available_memory(tmp_path / "none", tmp_path / "none") is None
    assert machine.available_memory() is None or machine.available_memory() > 0  # this machine's
