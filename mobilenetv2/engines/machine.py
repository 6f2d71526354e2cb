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


def _read(path):
    with open(path) as f:  # (not Path.read_text: this runs on every NumPy predict)
        return f.read()


def _cgroup_folders(base, path):
    """The folders of cgroup ``path`` (as /proc/self/cgroup gives it) and of every cgroup above it,
    innermost first, under the hierarchy mounted at ``base``.  Folders not in this mount (a
    container whose cgroup is not namespaced sees the host's path but has its own cgroup mounted
    as the root) are skipped; a path out of the mount ('/..', outside a namespace) is not followed."""
    parts = [p for p in path.strip().split("/") if p and p != "."]
    if ".." in parts:
        parts = []
    return [os.path.join(base, *parts[:k]) for k in range(len(parts), -1, -1)]


_SELF_CGROUP = Path("/proc/self/cgroup")
_OWN_CGROUPS = {}  # pid -> _own_cgroups(_SELF_CGROUP): read once per process (half the cost of a call)


def _own_cgroups(proc_cgroup):
    """{'v2': path, 'v1': path} of this process's memory cgroups, from /proc/self/cgroup's
    'id:controllers:path' lines; '/' for a hierarchy it does not name.  This process's own are
    read once (a forked child reads its own again)."""
    if proc_cgroup == _SELF_CGROUP:
        pid = os.getpid()
        own = _OWN_CGROUPS.get(pid)
        if own is None:  # (threads may race here: each reads the same and stores it)
            own = _read_own_cgroups(proc_cgroup)
            _OWN_CGROUPS.clear()
            _OWN_CGROUPS[pid] = own
        return own
    return _read_own_cgroups(proc_cgroup)


def _read_own_cgroups(proc_cgroup):
    found = {"v2": "/", "v1": "/"}
    try:
        lines = _read(proc_cgroup).splitlines()
    except (OSError, UnicodeDecodeError):
        return found
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        if fields[0] == "0" and not fields[1]:
            found["v2"] = fields[2] or "/"
        elif "memory" in fields[1].split(","):
            found["v1"] = fields[2] or "/"
    return found


def available_memory(meminfo=Path("/proc/meminfo"), cgroup=Path("/sys/fs/cgroup"),
                     proc_cgroup=_SELF_CGROUP):
    """Bytes of memory a new allocation can have now: the kernel's MemAvailable (without
    swapping), or less where a memory cgroup leaves less: this process's own (where
    ``proc_cgroup`` says: a systemd service's MemoryMax=, a job scheduler's cgroup, a container's)
    or any above it (v2 memory.max less memory.current, v1 memory.limit_in_bytes less usage).
    None where none says.  Read at each call: it changes."""
    found = []
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    own = _own_cgroups(proc_cgroup)
    for base, limit, used, version in ((cgroup, "memory.max", "memory.current", "v2"),
                                       (cgroup / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "v1")):
        read = False
        for folder in _cgroup_folders(base, own[version]):
            try:
                cap = _read(os.path.join(folder, limit)).strip()
                read = True
                if cap != "max" and int(cap) < 1 << 60:  # v1 writes 'no limit' as a huge number
                    found.append(max(int(cap) - int(_read(os.path.join(folder, used))), 0))
            except (OSError, ValueError):
                continue
        if read:  # cgroup v2, or else v1
            break
    return min(found) if found else None
