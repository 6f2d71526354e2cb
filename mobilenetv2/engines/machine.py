"""What this machine offers the plan: data cache sizes, the cores this process may use and the
size of a transparent huge page.

Read once at import from Linux's sysfs (/sys/devices/system/cpu/cpu0/cache), else from
``os.sysconf``, else common sizes; the usable cores from ``os.sched_getaffinity`` (a container or
``taskset`` may allow fewer than the machine has), else ``os.cpu_count()``.  The plan derives its
fusion thresholds and band sizes from these instead of constants measured on one machine.
"""
import os
from pathlib import Path

DEFAULTS = {1: 32 * 1024, 2: 1024 * 1024, 3: 8 * 1024 * 1024}  # bytes: a common x86 core
_SYSCONF = {1: "SC_LEVEL1_DCACHE_SIZE", 2: "SC_LEVEL2_CACHE_SIZE", 3: "SC_LEVEL3_CACHE_SIZE"}


def _parse_size(text):
    """sysfs's '48K', '1024K', '32M' (or plain bytes) in bytes; None if unreadable."""
    text = text.strip().upper()
    scale = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" else text
    return int(digits) * scale if digits.isdigit() and int(digits) > 0 else None


def _sysfs_caches(root=Path("/sys/devices/system/cpu/cpu0/cache")):
    """{level: bytes} of the data (or unified) caches sysfs lists for cpu0."""
    found = {}
    try:
        entries = sorted(root.glob("index*"))
    except OSError:
        return found
    for entry in entries:
        try:
            level = int((entry / "level").read_text())
            kind = (entry / "type").read_text().strip()
            size = _parse_size((entry / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and size and level in DEFAULTS:
            found.setdefault(level, size)
    return found


def cache_sizes():
    """{1: L1d bytes, 2: L2 bytes, 3: L3 bytes} of this machine (per core for L1 and L2)."""
    sizes = _sysfs_caches()
    for level, name in _SYSCONF.items():
        if level not in sizes:
            try:
                value = os.sysconf(name)
            except (ValueError, OSError, AttributeError):
                value = -1
            sizes[level] = value if 0 < value < 2 ** 31 else DEFAULTS[level]
    return sizes


def usable_cores():
    """The cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def huge_page_bytes(root=Path("/sys/kernel/mm/transparent_hugepage")):
    """Bytes of a transparent huge page where the kernel backs memory with them on request (THP
    mode 'always' or 'madvise'); None where it never does or sysfs does not say."""
    try:
        mode = (root / "enabled").read_text()
        size = int((root / "hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return None
    if "[never]" in mode or "[" not in mode or size < 4096 or size & (size - 1):
        return None
    return size


CACHE = cache_sizes()
L1D, L2, L3 = CACHE[1], CACHE[2], CACHE[3]
CORES = usable_cores()
HUGE_PAGE = huge_page_bytes()


def available_memory(meminfo=Path("/proc/meminfo"), cgroup=Path("/sys/fs/cgroup")):
    """Bytes of memory a new allocation can have now: the kernel's MemAvailable (without
    swapping), or less where this process's memory cgroup (a container's limit; v2 memory.max
    less memory.current, v1 memory.limit_in_bytes less usage) leaves less.  None where neither
    says.  Read at each call: it changes."""
    found = []
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for limit, used in (("memory.max", "memory.current"),
                        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            cap = (cgroup / limit).read_text().strip()
            if cap != "max" and int(cap) < 1 << 60:  # v1 writes 'no limit' as a huge number
                found.append(max(int(cap) - int((cgroup / used).read_text()), 0))
            break
        except (OSError, ValueError):
            continue
    return min(found) if found else None
