"""The machine constants the plan derives its thresholds from: read, not assumed."""
import os

from mobilenetv2 import machine, plan


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


def test_this_machine_s_values_are_sane_and_reach_the_plan():
    sizes = machine.cache_sizes()
    assert 4 * 1024 <= sizes[1] <= sizes[2] <= max(sizes[2], sizes[3])
    assert machine.CORES == len(os.sched_getaffinity(0))
    assert plan.FUSE_MIN_BYTES == machine.L2 and plan.BAND_SCRATCH_BYTES == machine.L2 // 2
    assert plan.BALANCE_THREADS == machine.CORES
