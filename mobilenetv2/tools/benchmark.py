"""Time MobileNetV2 on this CPU: the C engine, the NumPy engine and installed peers, in one run.

Batch-1 latency (median, 10th/90th percentiles, min over --runs calls after --warmup) and, with
--batch8, batch-8 throughput, for any of the 22 variants and thread counts.  Peers run the same
network: ONNX Runtime and OpenVINO on an ONNX export of the same weights, LiteRT (XNNPACK) on the
float32 .tflite files TensorFlow's converter made in shared/peers, or for any other variant on an
export_tflite of the same weights.  Every row computes in float32 (OpenVINO is pinned to f32:
left alone it runs bfloat16 on CPUs with AVX512_BF16 or AMX); --bf16 adds a labelled bfloat16
OpenVINO row that never counts as a peer.  Prints what ran and a table; writes JSON recording each
row's precision, ISA and thread count; --plot FILE.png draws published top-1 vs latency.

Each measurement runs in fresh child processes, so no engine's thread pool (OpenVINO's and ONNX
Runtime's workers outlive their sessions) competes with the next one for the cores, and "RSS MiB"
is that process's own peak resident memory (VmHWM): Python and NumPy plus the engine.  The runs
of each measurement are split over --rounds rounds that visit every engine in turn, each round
starting further along the list, so a slow spell of a shared machine (or its first minute) lands
on all engines alike; the statistics are over all its runs.
"""
import concurrent.futures
import datetime
import json
import multiprocessing
import os
import platform
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mobilenetv2 import MobileNetV2
from mobilenetv2.engines import machine, native
from mobilenetv2.errors import ArgumentError
from mobilenetv2.network.variants import VARIANTS, parse_variant, variant_name

ENGINES = ("c", "numpy", "ort", "openvino", "litert")
PEERS = ("ort", "openvino", "litert")  # float32 peers: "vs best peer" compares with these only
REDUCED = ("openvino-bf16",)  # reduced-precision rows, only with --bf16, labelled, never "best peer"
PRECISION = {"c": "float32", "numpy": "float32", "ort": "float32", "openvino": "float32",
             "litert": "float32", "openvino-bf16": "bfloat16"}


def cpuinfo():
    """The fields of the first processor in /proc/cpuinfo ({} where there is none)."""
    out = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                if out:
                    break
                continue
            key, _, value = line.partition(":")
            out.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return out


def cpu_model():
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def shared_dir():
    env = os.environ.get("MOBILENETV2_SHARED")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "shared"
    return path if path.is_dir() else None


def call_times(fn, runs, warmup, warmup_seconds=0.0):
    """Seconds of each of ``runs`` calls of fn after ``warmup`` untimed ones, and more untimed ones
    until ``warmup_seconds`` have passed since the first."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    while time.perf_counter() - start < warmup_seconds:
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def round_order(configs, r, rounds):
    """The order round r of ``rounds`` visits the measurements in: the list rotated to start
    len/rounds further on each round, so the first slot of a run and each slot after a given
    neighbour fall on a different engine each round.  (On the lent 16-core VM the first
    measurement, always C at 1 thread before, ran 1.2x slower than the same plan timed a minute
    later in 2 of 4 runs: the one row behind, both times.)"""
    k = len(configs) * r // rounds
    return configs[k:] + configs[:k]


def summarize(times):
    ms = np.array(times) * 1e3
    return {"median_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)), "min_ms": float(ms.min()), "runs": len(ms)}


def row_figures(times_by_round, batch, macs, threads, peak_per_core, cores):
    """A row's figures from its call times (seconds, one list per round): median, p10, p90 and min
    over all its runs (ms; a call is one batch), images per second (``batch`` images a call),
    GFLOP/s (2 flops per MAC, ``macs`` per image), the share of ``peak_per_core`` GFLOP/s times
    the cores its ``threads`` can use (at most ``cores``; None for ``threads`` None, the NumPy
    engine's BLAS, or without a peak), and the times themselves in ms by round, so that every
    figure can be recomputed from the JSON."""
    stats = summarize([t for r in times_by_round for t in r])
    stats["img_per_s"] = 1e3 * batch / stats["median_ms"]
    stats["gflops"] = 2 * macs * batch / stats["median_ms"] / 1e6
    used = min(threads, cores) if threads is not None else None
    stats["percent_of_peak"] = 100 * stats["gflops"] / (peak_per_core * used) if peak_per_core and used else None
    stats["macs_per_image"] = macs
    stats["times_ms_by_round"] = [[t * 1e3 for t in r] for r in times_by_round]
    return stats


def compare_with_peers(rows, rounds):
    """Set each row's ``speedup_vs_best_peer`` (the fastest float32 peer's median over the row's,
    at the same variant, batch and threads; a bf16 row never counts), ``best_peer`` and
    ``speedup_vs_best_peer_by_round`` (the lowest and highest of the same ratio taken round by
    round from ``round_medians_ms``), None where no peer ran."""
    for r in rows:
        peers = [p for p in rows if p["engine"] in PEERS and PRECISION[p["engine"]] == "float32"
                 and p["variant"] == r["variant"] and p["batch"] == r["batch"] and p["threads"] == r["threads"]]
        r["speedup_vs_best_peer"] = min(p["median_ms"] for p in peers) / r["median_ms"] if peers else None
        r["best_peer"] = min(peers, key=lambda p: p["median_ms"])["engine"] if peers else None
        # the same ratio within each round (each round's medians): how far the machine moved it
        ratios = [min(p["round_medians_ms"][k] for p in peers if p["round_medians_ms"][k]) / r["round_medians_ms"][k]
                  for k in range(rounds) if r["round_medians_ms"][k]
                  and any(p["round_medians_ms"][k] for p in peers)]
        r["speedup_vs_best_peer_by_round"] = [min(ratios), max(ratios)] if ratios else None
    return rows


PEAK_ROUNDS = 4_000_000  # 384 flops a round on AVX-512: about 7 ms at 230 GFLOP/s


def fma_peak_gflops(isa=None, rounds=PEAK_ROUNDS, repeats=5):
    """Our FMA loop's GFLOP/s on one core (csrc/peak.c: twelve independent chains of 16 lanes on
    AVX-512, 8 on AVX2), the best of ``repeats``: the ceiling to read the GFLOP/s column against.
    ``isa``: 'avx512' or 'avx2', default the ISA the kernels use now.  None without the C extension,
    for 'scalar', or where the CPU lacks the ISA."""
    if not native.available():
        return None
    isa = isa or native.isa()
    if isa not in ("avx512", "avx2") or isa not in native.isas():
        return None
    loop, flops = ((native.lib.mnv2_fma_peak_loop512, 384) if isa == "avx512"
                   else (native.lib.mnv2_fma_peak_loop, 192))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        if loop(rounds) < 0:
            return None
        best = max(best, flops * rounds / (time.perf_counter() - start) / 1e9)
    return best


ROUND_TRIP_ROUNDS = 50_000  # at most half a second (csrc/peak.c stops the timed rounds there)


def core_pairs(cpus=None):
    """The CPU pairs whose cache-line round trip the bench records: the first two CPUs this
    process may run on, and the first and the last where there are more (on a many-core CPU the
    last lies on another die more often than not)."""
    cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    pairs = [(cpus[0], cpus[1])] if len(cpus) >= 2 else []
    if len(cpus) > 2:
        pairs.append((cpus[0], cpus[-1]))
    return pairs


def core_round_trip_ns(a, b, rounds=ROUND_TRIP_ROUNDS):
    """Nanoseconds a cache line takes from CPU ``a`` to CPU ``b`` and back (csrc/peak.c: two
    threads bound to them pass a counter ``rounds`` times, at most half a second), or None without
    the C extension, where ``a`` or ``b`` is not a CPU this process may run on, or where a thread
    waited a second for the other.  This is what the C engine's threads pay each time they meet (25-30
    times a run): some 60 ns between cores that share a cache, over 300 where the two vCPUs of a
    virtual machine sit on different dies of the host (AMD EPYC Zen 4, 2026-12-06), which slows
    the C engine's multi-thread rows of one image 1.1-1.8x and the peers' 1.2-2.1x
    (benchmarks/README.md)."""
    if not native.available() or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    if a == b or a not in allowed or b not in allowed or not 1 <= rounds <= 10**9:
        return None
    if max(a, b) >= 1024:  # glibc's cpu_set_t (CPU_SETSIZE), which csrc/peak.c binds the threads with
        return None
    ns = native.lib.mnv2_core_round_trip_ns(a, b, rounds)
    return float(ns) if ns > 0 else None


def round_trips():
    """{"a-b": ns} for core_pairs() (None where a pair could not be measured); {} on one CPU."""
    if not hasattr(os, "sched_getaffinity"):
        return {}
    return {f"{a}-{b}": core_round_trip_ns(a, b) for a, b in core_pairs()}


def cores_apart(before, after, lowest, factor=2.0):
    """The CPU pairs whose round trip ``before`` or ``after`` a block of rows (dicts as round_trips()
    gives) exceeded ``factor`` times the lowest the run saw for the pair (``lowest``, a dict too):
    the block's threads ran on cores apart (two dies of a virtual machine's host) for part of it or
    all of it.  {"a-b": (before, after, lowest)}."""
    out = {}
    for pair, b in before.items():
        a, low = after.get(pair), lowest.get(pair)
        if b and a and low and max(b, a) > factor * low:
            out[pair] = (b, a, low)
    return out


STEAL_FLAG = 0.05  # a block whose CPUs the host took for more than this share of their time is flagged


def cpu_jiffies(text=None):
    """(all, steal): the machine's CPU time since boot in clock ticks, every state summed, and the
    part of it the hypervisor ran something else on our vCPUs (steal), from /proc/stat's first
    line (``text``: that file's content, for tests); None where it cannot be read (not Linux)."""
    try:
        if text is None:
            with open("/proc/stat") as f:
                text = f.readline()
        fields = text.split("\n", 1)[0].split()
        if fields[0] != "cpu":
            return None
        ticks = [int(v) for v in fields[1:]]
    except (OSError, ValueError, IndexError):
        return None
    # user nice system idle iowait irq softirq steal guest guest_nice: guest time is already
    # counted in user and nice, so it is left out of the sum
    return sum(ticks[:8]), (ticks[7] if len(ticks) > 7 else 0)


def steal_share(before, after):
    """The share of the CPUs' time between two cpu_jiffies() readings that the host stole, or
    None where either is missing or no tick passed."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


def ahead_summary(rows):
    """One line on the C engine against its best float32 peer over ``rows`` (the bench's result
    rows): in how many rows it is ahead, the range of its ratios, and how many of the rows behind
    are flagged (their threads' cores apart around their block or one of their own measurements, or
    steal past STEAL_FLAG in their block); None where no C row has a peer."""
    c = [r for r in rows if r["engine"] == "c" and r.get("speedup_vs_best_peer")]
    if not c:
        return None
    ratios = [r["speedup_vs_best_peer"] for r in c]
    behind = [r for r in c if r["speedup_vs_best_peer"] < 1]
    flagged = [r for r in behind if r.get("cores_apart") or (r.get("steal_share") or 0) > STEAL_FLAG]
    line = (f"C vs the best float32 peer: ahead in {len(c) - len(behind)} of {len(c)} rows "
            f"({min(ratios):.2f}x-{max(ratios):.2f}x)")
    if behind:
        line += f"; {len(flagged)} of the {len(behind)} behind flagged (cores apart or CPU time stolen)" \
            if flagged else f"; none of the {len(behind)} behind flagged"
    return line


def describe_round_trips(trips):
    """'CPUs 0-1 62 ns, 0-15 310 ns' for round_trips()' result."""
    return ", ".join(f"CPUs {k} {v:.0f} ns" if v else f"CPUs {k} not measured" for k, v in trips.items())


def peak_rss_mb():
    """This process's peak resident memory since it started (VmHWM: ru_maxrss would carry the
    parent's peak over a fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _converter_file(variant):
    """shared/peers' .tflite of this variant (TensorFlow's converter, the synthetic weights), or None."""
    shared = shared_dir()
    tflite = shared / "peers" / f"mobilenet_v2_{variant}_synthetic.tflite" if shared else None
    return tflite if tflite is not None and tflite.exists() else None


def litert_source(variant):
    """Which file a LiteRT row of this variant times, for the run's header and JSON."""
    return "TensorFlow's converter (shared/peers)" if _converter_file(variant) else "export_tflite"


def litert_file(model, variant, batch, tmpdir):
    """The .tflite file LiteRT times: TensorFlow's converter's, of the synthetic weights, where
    shared/peers has one for this variant (the four of the README's tables), else our export of
    the same model (export_tflite: the same ops, the same speed; README.md)."""
    tflite = _converter_file(variant)
    if tflite is not None:
        return tflite
    from mobilenetv2.tools.tflite_export import export_tflite
    return Path(export_tflite(model, Path(tmpdir) / f"{variant}_{batch}.tflite", batch=batch))


def _runner(engine, model, x, threads, tmpdir, variant, settings=None):
    """A zero-argument function running one inference of ``engine`` on ``x`` and returning its
    output (every engine hands its output back, as a caller needs it), or a reason string.
    ``settings`` (a dict) receives the engine's version and the settings it runs with, read back
    from the engine where it has them."""
    settings = {} if settings is None else settings
    if engine == "c":
        if not native.available():
            return "the C extension is not built"
        model.threads = threads
        settings.update(version=_package_version(), threads=model.threads, isa=native.isa())
        return lambda: model(x)  # the public call: input checks included, as the peers convert theirs
    if engine == "numpy":
        checked = model._check_input(x)
        settings.update(version=np.__version__, threads="BLAS's own")
        return lambda: model._run(checked)
    if engine in ("ort", "openvino"):
        try:
            from mobilenetv2.tools.onnx_export import export_onnx
            path = export_onnx(model, Path(tmpdir) / f"{variant}_{len(x)}.onnx", batch=len(x))
        except ImportError as exc:
            return str(exc)
        if engine == "ort":
            try:
                import onnxruntime as ort
            except ImportError:
                return "onnxruntime is not installed"
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            try:
                spinning = opts.get_session_config_entry("session.intra_op.allow_spinning")
            except Exception:  # not set: ONNX Runtime's default, spinning on
                spinning = "default (1)"
            settings.update(version=ort.__version__, threads=threads, inter_op_threads=1,
                            execution_mode="sequential", providers=sess.get_providers(), allow_spinning=spinning)
            return lambda: sess.run(None, {"input": x})[0]
        return _openvino(path, x, threads, "f32", settings)
    if engine == "openvino-bf16":
        from mobilenetv2.tools.onnx_export import export_onnx
        path = export_onnx(model, Path(tmpdir) / f"{variant}_{len(x)}.onnx", batch=len(x))
        return _openvino(path, x, threads, "bf16", settings)
    if engine == "litert":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            return "ai-edge-litert is not installed"
        tflite = litert_file(model, variant, len(x), tmpdir)
        interp = Interpreter(model_path=str(tflite), num_threads=threads)
        inp = interp.get_input_details()[0]["index"]
        out = interp.get_output_details()[0]["index"]
        if len(x) != 1:
            interp.resize_tensor_input(inp, list(x.shape))
        interp.allocate_tensors()
        settings.update(version=_dist_version("ai-edge-litert"), threads=threads, file=litert_source(variant))

        def run():
            interp.set_tensor(inp, x)
            interp.invoke()
            return interp.get_tensor(out)
        return run
    raise ValueError(engine)


def _openvino(path, x, threads, precision, settings):
    """OpenVINO's CPU plugin pinned to ``precision`` ('f32' or 'bf16'): left alone it computes in
    bfloat16 on CPUs with AVX512_BF16 or AMX, which is not a float32 result.  Its thread count,
    streams and pinning are read back (it caps the threads at the cores it may use)."""
    try:
        import openvino as ov
    except ImportError:
        return "openvino is not installed"
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                     "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": precision})
    got = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    if not any(name in got for name in {"f32": ("f32", "float32"), "bf16": ("bf16", "bfloat16")}[precision]):
        return f"OpenVINO ran at precision {got}, not {precision} as asked"
    settings.update(version=ov.__version__, precision=got, hint="LATENCY")
    for key, name in (("threads", "INFERENCE_NUM_THREADS"), ("streams", "NUM_STREAMS"),
                      ("cpu_pinning", "ENABLE_CPU_PINNING"), ("hyper_threading", "ENABLE_HYPER_THREADING")):
        try:
            settings[key] = str(compiled.get_property(name))
        except Exception:  # a property this OpenVINO does not have
            pass
    request = compiled.create_infer_request()
    return lambda: next(iter(request.infer({0: x}).values()))


def cpu_isa():
    """The best vector ISA of this CPU as its kernel reports it ('avx512', 'avx2', 'scalar'), or
    'avx2' where --hide-avx512 hid AVX-512 from this process (native.hide_avx512)."""
    if native.avx512_hidden():
        return "avx2"
    flags = set(cpuinfo().get("flags", "").split())
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "scalar"


def engine_isa(engine):
    """What a row's ISA is: the C kernels' level (MNV2_FORCE_ISA may cap it); the NumPy engine's
    BLAS and the peers choose their own kernels up to what the CPU has."""
    if engine == "c":
        return native.isa()
    hidden = " with AVX-512 hidden" if native.avx512_hidden() else ""
    return f"own dispatch (CPU has {cpu_isa()}{hidden})"


def hide_avx512_or_say_why(prog):
    """--hide-avx512 in a bench command: hide AVX-512 from this process (native.hide_avx512), or
    the one-line error (``prog: error: --hide-avx512: ...``) saying why it cannot."""
    from mobilenetv2.errors import ArgumentError
    try:
        native.hide_avx512()
    except ArgumentError as exc:
        return f"{prog}: error: --hide-avx512: {exc}"
    return None


def compiler():
    """The compiler recorded in the built extension's .comment section, and any MNV2_CFLAGS now set."""
    if not native.available():
        return None
    try:
        from mobilenetv2 import _mnv2
        found = re.findall(rb"GCC: \([^)]*\) [0-9.]+|clang version [0-9.]+", Path(_mnv2.__file__).read_bytes())
    except (OSError, AttributeError):
        found = []
    name = found[0].decode() if found else "unknown compiler"
    extra = os.environ.get("MNV2_CFLAGS")
    return name + " with csrc/build_ffi.py's default flags" + (f" (MNV2_CFLAGS={extra!r} now set)" if extra else "")


def git_commit():
    """The checkout's commit (with '+changes' if the tree differs), or None outside git."""
    import subprocess
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+changes" if dirty else "")) or None


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


def _package_version():
    from mobilenetv2 import __version__
    return __version__


def versions():
    """The installed versions (package metadata) of NumPy, Python, this package and the peers;
    each row's ``settings.version`` is the one its engine actually imported."""
    out = {"numpy": np.__version__, "python": platform.python_version(), "mobilenetv2": _package_version()}
    for name in ("onnxruntime", "openvino", "onnx", "ai-edge-litert"):
        v = _dist_version(name)
        if v is not None:
            out[name] = v
    return out


def cpu_identity():
    """Family, model, stepping, microcode and flags of CPU 0 (/proc/cpuinfo): a masked model
    name ('AMD EPYC') still says which core it is."""
    info = cpuinfo()
    return {k: info[k] for k in ("cpu family", "model", "stepping", "microcode", "flags") if k in info}


def _tree_digest(root, pattern):
    """16 hex digits of the SHA-256 of the files matching ``pattern`` under ``root`` (names and
    bytes, sorted), or None where there are none."""
    import hashlib
    files = sorted(Path(root).glob(pattern)) if root else []
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def provenance():
    """What the C extension is: the SHA-256 of the built module and of csrc/ as it is in the
    checkout now (a rebuild after editing csrc/ changes the first; a tree edited since the build
    shows as csrc differing from what a fresh build of it would be)."""
    out = {}
    try:
        from mobilenetv2 import _mnv2
        out["extension_sha256_16"] = _tree_digest(Path(_mnv2.__file__).parent, Path(_mnv2.__file__).name)
    except (ImportError, OSError, AttributeError):
        pass
    out["csrc_sha256_16"] = _tree_digest(Path(__file__).resolve().parents[2] / "csrc", "*.[ch]")
    return out


def parse_args(argv):
    from mobilenetv2.errors import OneLineArgumentParser
    p = OneLineArgumentParser(prog="mobilenetv2 bench", description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="1.0_224,0.35_96", help="comma list like 1.0_224,0.35_96, or 'all' (default %(default)s)")
    p.add_argument("--threads", default="1,2", help="comma list of thread counts (default %(default)s)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma list from {','.join(ENGINES)} (default: all)")
    p.add_argument("--runs", type=int, default=200,
                   help="timed batch-1 calls per measurement (default %(default)s; batch 8: a quarter, at least 3)")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls before each measurement's runs (default %(default)s)")
    p.add_argument("--warmup-seconds", type=float, default=0.5,
                   help="... and untimed calls until this long has passed (a fresh process's first "
                        "tenths of a second, threads and caches settling, are not what a service sees; default %(default)s)")
    p.add_argument("--numpy-runs", type=int, default=10, help="timed calls for the slow NumPy engine (default %(default)s)")
    p.add_argument("--batch8", action="store_true", help="also time batch-8 throughput")
    p.add_argument("--rounds", type=int, default=3,
                   help="split each measurement's runs over this many rounds through all engines (default %(default)s)")
    p.add_argument("--bf16", action="store_true",
                   help="also time OpenVINO in bfloat16 (a labelled reduced-precision row, never a 'best peer')")
    p.add_argument("--hide-avx512", action="store_true",
                   help="hide AVX-512 (and AMX) from every engine through CPUID faulting, ours included: "
                        "an AVX2-only CPU emulated on this one's cores and caches (Linux, x86-64)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw published top-1 vs measured batch-1 latency (needs matplotlib)")
    p.add_argument("--json", help="output JSON path (default: bench-<time>.json in the current folder)")
    p.add_argument("--segmentation", metavar="DIR",
                   help="time a transformers DeepLabV3 checkpoint (DIR, or 'random') against ONNX Runtime "
                        "instead (mobilenetv2 bench --segmentation DIR --help)")
    args = p.parse_args(argv)
    from mobilenetv2.files import check_output_path
    for name in ("json", "plot"):  # before minutes of timing, not after
        if getattr(args, name) is not None:
            try:
                setattr(args, name, check_output_path(getattr(args, name), f"--{name}"))
            except OSError as exc:
                p.error(str(exc))
    if not 0 <= args.warmup_seconds <= 60:
        p.error(f"--warmup-seconds must be from 0 to 60, got {args.warmup_seconds}")
    check_counts(p, args, ("runs", "numpy_runs", "rounds"), ("warmup",))
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            p.error("--plot needs matplotlib (pip install 'mobilenetv2[plot]')")
    names = [variant_name(*v) for v in VARIANTS] if args.variants == "all" else args.variants.split(",")
    try:
        args.variants = [(name, parse_variant(name)) for name in names]
    except ValueError as exc:
        p.error(str(exc))
    args.threads = parse_threads(p, args.threads)
    args.engines = args.engines.split(",")
    for e in args.engines:
        if e not in ENGINES + REDUCED:
            p.error(f"unknown engine {e!r}; choose from {', '.join(ENGINES + REDUCED)}")
    if args.bf16 and "openvino-bf16" not in args.engines:
        args.engines.append("openvino-bf16")
    return args


def parse_threads(p, text):
    """--threads: a comma list of thread counts, each from 1 to pool.max_threads(); else the
    parser's one-line error."""
    try:
        return thread_counts(text)
    except ArgumentError as exc:
        p.error(f"--threads {exc}")


def thread_counts(text):
    """The thread counts of a comma list, each from 1 to pool.max_threads(); else an
    ArgumentError saying what was wrong (for the option's name to go in front)."""
    from mobilenetv2.engines.pool import max_threads
    try:
        threads = [int(t) for t in text.split(",")]
    except ValueError:
        raise ArgumentError(f"takes a comma list of whole numbers, got {text!r}") from None
    bad = [t for t in threads if not 1 <= t <= max_threads()]
    if bad:
        raise ArgumentError(f"must each be from 1 to {max_threads()} (4 per core here, at least 64), got {bad[0]}")
    return threads


def check_counts(p, args, positive, nonnegative=()):
    """Each named count of ``args`` up to 100000: from 1 for ``positive``, from 0 for
    ``nonnegative``; else the parser's one-line error."""
    for names, low in ((positive, 1), (nonnegative, 0)):
        for name in names:
            if not low <= getattr(args, name) <= 100_000:
                p.error(f"--{name.replace('_', '-')} must be from {low} to 100000, got {getattr(args, name)}")


def synthetic_weights():
    """shared/tools/synthetic_weights.py's weight function (the weights the LiteRT .tflite files
    were made with), or None where shared/ is absent."""
    shared = shared_dir()
    path = shared / "tools" / "synthetic_weights.py" if shared else None
    if path is None or not path.exists():
        return None
    import importlib.util
    spec = importlib.util.spec_from_file_location("_mnv2_synthetic_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.synthetic_weight


def with_synthetic_weights(model):
    """``model`` with the synthetic weights set where shared/ has them (else as it was)."""
    fn = synthetic_weights()
    if fn is not None:
        model.set_weights([fn(layer.name, wname, shape) for layer in model.weighted_layers()
                           for wname, shape in zip(layer.weight_names, layer.weight_shapes())])
    return model


def _model(alpha, res):
    """The benchmarked network: the synthetic weights where shared/ has them, so every engine
    (LiteRT's .tflite files included) computes with the same numbers; else the random init."""
    return with_synthetic_weights(MobileNetV2((res, res, 3), alpha=alpha, weights=None))


def _input(res, batch):
    """The benchmark's input: the same for every engine and every run."""
    return np.random.default_rng(0).uniform(-1, 1, (batch, res, res, 3)).astype(np.float32)


def output_digest(alpha, res):
    """The first 16 hex digits of the SHA-256 of the C engine's float32 output (the 1000
    probabilities) for the benchmark's batch-1 input and weights, or None where the C engine does
    not run.  The C kernels fix every output's order of operations, so this is the same on every
    ISA, thread count and x86 CPU: runs on two machines with the synthetic weights and the same
    NumPy (which draws the input and the weights) can be compared by this value."""
    if not native.available():
        return None
    import hashlib
    y = _model(alpha, res).predict(_input(res, 1))
    return hashlib.sha256(np.ascontiguousarray(y, dtype=np.float32).tobytes()).hexdigest()[:16]


# Every float32 peer of the same network and input lands 0.5-2e-5 (relative L2 of the 1000
# probabilities) from the C engine (4 variants, batch 1 and 8, Zen 4, 2026-12-05); another
# network (another alpha in the .tflite) is of order 1 away.
MAX_REL_L2 = 3e-4


def reference_output(alpha, res, batch):
    """What every engine must compute before it is timed: the C engine's float32 output for the
    benchmark's input (the NumPy engine's where the C extension is not built)."""
    model = _model(alpha, res)
    if not native.available():
        model.engine = "numpy"
    return np.asarray(model.predict(_input(res, batch)), np.float32)


def check_output(got, expected):
    """(relative L2 error against ``expected``, or None where the shapes differ; a reason string
    where the engine does not compute the benchmarked network, else None)."""
    got = np.asarray(got, np.float64)
    if got.shape != expected.shape:
        return None, f"its output has shape {got.shape}, the network's is {expected.shape}"
    err = float(np.linalg.norm(got - expected) / max(np.linalg.norm(expected), 1e-30))
    if not np.isfinite(err) or err > MAX_REL_L2:
        return err, (f"its output is {err:.2e} (relative L2) from the C engine's for the same input: "
                     "it does not compute the benchmarked network, so it is not timed")
    flat, ref = got.reshape(-1, got.shape[-1]), expected.reshape(-1, expected.shape[-1])
    top = np.take_along_axis(ref, flat.argmax(axis=-1)[:, None], axis=-1)[:, 0]
    if np.any(top < ref.max(axis=-1) * (1 - 1e-3)):  # its top class is not the C engine's (nor a near tie)
        return err, "its top class differs from the C engine's for the same input: not timed"
    return err, None


def _measure(name, alpha, res, batch, engine, threads, runs, warmup, warmup_seconds, tmpdir, hide_avx512=False,
             expected=None):
    """One measurement (run in its own process): (call times, peak RSS MiB, settings, relative L2
    error of its output against ``expected``), or a reason string if skipped.  hide_avx512: first
    hide AVX-512 from this process (before any engine looks at the CPU).  The engine's output is
    checked against ``expected`` before it is timed: an engine computing something else (another
    file, another precision) is not timed."""
    if hide_avx512:
        native.hide_avx512()
    model = _model(alpha, res)
    x = _input(res, batch)
    settings = {}
    run = _runner(engine, model, x, max(threads, 1), tmpdir, name, settings)
    if isinstance(run, str):
        return run
    err = None
    if expected is not None:
        err, wrong = check_output(run(), expected)
        if wrong and PRECISION[engine] == "float32":
            return "mismatch: " + wrong
    return call_times(run, runs, min(warmup, runs), warmup_seconds), peak_rss_mb(), settings, err


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--segmentation" or a.startswith("--segmentation=") for a in argv):
        from mobilenetv2.tools import benchmark_segmentation  # the DeepLabV3 model at 513 vs ONNX Runtime
        return benchmark_segmentation.main(argv)
    args = parse_args(argv)
    if args.hide_avx512:  # here too: the peak loop, the digests and the header see what the children see
        why = hide_avx512_or_say_why("mobilenetv2 bench")
        if why:
            print(why, file=sys.stderr)
            return 2
        # NumPy's OpenBLAS picks its kernels as it loads, before a child could hide anything
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"
    now = datetime.datetime.now(datetime.timezone.utc)
    header = {"date": now.isoformat(timespec="seconds"), "cpu": cpu_model(), "cpu_id": cpu_identity(),
              "cores": machine.CORES, "cpus_online": os.cpu_count(),
              "backend": native.backend(), "cpu_isa": cpu_isa(), "commit": git_commit(), "compiler": compiler(),
              "provenance": provenance(), "versions": versions(), "kernel": platform.release(),
              "command": ["mobilenetv2", "bench"] + list(argv),
              "environment": {k: v for k, v in os.environ.items()
                              if k.startswith(("MNV2_", "OMP_", "OPENBLAS_", "MKL_")) or k == "MOBILENETV2_SHARED"},
              "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
              "weights": "synthetic (shared/tools)" if synthetic_weights() else "random init",
              "avx512_hidden": native.avx512_hidden(),
              "warmup": {"calls": args.warmup, "seconds": args.warmup_seconds},
              "runs": {"batch1": args.runs, "batch8": max(3, args.runs // 4), "numpy": args.numpy_runs,
                       "rounds": args.rounds},
              "statistic": "median of each row's runs (all rounds pooled, times_ms_by_round); p10/p90 beside; "
                           "the ratio's range over the rounds (each round's medians) in speedup_vs_best_peer_by_round; "
                           "each round warms up for --warmup calls, at most the round's timed runs "
                           "(warmup_calls_by_round), and then until --warmup-seconds have passed",
              "units": {"median_ms": "ms per call (one batch)", "img_per_s": "images (not batches) per second",
                        "gflops": "2 x macs_per_image x batch / median, in GFLOP/s",
                        "percent_of_peak": "gflops / (fma_peak_gflops_per_core's best x min(threads, cores))",
                        "peak_rss_mb": "MiB (VmHWM / 1024) of the measuring process"},
              "output_check": f"every engine's output checked against the C engine's before timing "
                              f"(relative L2 <= {MAX_REL_L2:g} and the same top class, float32 rows)",
              "note": "one shared machine: compare ratios within one run; each row timed in its own process"}
    # each SIMD ISA's FMA peak on one core, measured here before the children start
    peaks = {isa: fma_peak_gflops(isa) for isa in ("avx512", "avx2")}
    header["fma_peak_gflops_per_core"] = peaks = {isa: g for isa, g in peaks.items() if g}
    top = max(peaks.values()) if peaks else None
    header["core_round_trip_ns"] = {"start": round_trips()}
    run_jiffies = cpu_jiffies()
    print(f"# {header['date']}  {header['cpu']}, {header['cores']} cores, mobilenetv2 engine: {header['backend']}")
    if peaks:
        print("# FMA peak of one core (our loop, csrc/peak.c): " +
              ", ".join(f"{isa} {g:.0f} GFLOP/s" for isa, g in peaks.items()) +
              f"; '% peak' = GFLOP/s over the best of them times the threads (at most the {header['cores']} cores)")
    if header["core_round_trip_ns"]["start"]:
        print("# cache-line round trip between cores (where the threads meet; csrc/peak.c): " +
              describe_round_trips(header["core_round_trip_ns"]["start"]) +
              " (some 60 ns within a die, 300+ across dies; it is measured again for each block of rows)")
    if header["avx512_hidden"]:
        print("# AVX-512 hidden from every engine (--hide-avx512, CPUID faulting): an AVX2-only CPU "
              "emulated on this one, whose cores, caches and clocks are not an AVX2-only CPU's")
    print(f"# C extension built by: {header['compiler']}; weights: {header['weights']}")
    print("# " + ", ".join(f"{k} {v}" for k, v in header["versions"].items()))
    if "c" in args.engines:
        digests = {name: output_digest(alpha, res) for name, (alpha, res) in args.variants}
        header["c_output_sha256_16"] = digests = {k: v for k, v in digests.items() if v}
        if digests:
            print("# C output, batch 1, SHA-256 (16 hex; the same on every ISA and x86 CPU): " +
                  ", ".join(f"{k} {v}" for k, v in digests.items()))
    if "litert" in args.engines:
        header["litert_model"] = {name: litert_source(name) for name, _ in args.variants}
        print("# LiteRT runs: " + ", ".join(f"{k} {v}" for k, v in header["litert_model"].items()))
    over = [t for t in args.threads if t > machine.CORES]
    if over:
        print(f"# warning: --threads {','.join(map(str, over))} exceeds the {machine.CORES} cores this process "
              "may use: those rows are oversubscribed (OpenVINO caps its threads at the cores; each row's "
              "settings record what its engine runs with)", file=sys.stderr)
    counts = f"{args.runs} batch-1 runs" + (f" ({max(3, args.runs // 4)} at batch 8)" if args.batch8 else "")
    if "numpy" in args.engines:
        counts += f", NumPy {args.numpy_runs}" + (f" ({max(3, args.numpy_runs // 4)})" if args.batch8 else "")
    print(f"# each row: median of {counts} in {args.rounds} rounds, engines in turn; every engine's output "
          "checked against the C engine's first")
    rows, skipped = [], {}
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmpdir:
        for name, (alpha, res) in args.variants:
            macs = MobileNetV2((res, res, 3), alpha=alpha, weights=None).macs()
            for batch in ([1, 8] if args.batch8 else [1]):
                configs = [(engine, threads) for engine in args.engines
                           for threads in (args.threads if engine != "numpy" else [0])]
                times = {config: [] for config in configs}
                times_by_round = {config: [[] for _ in range(args.rounds)] for config in configs}
                warmups = {config: [0] * args.rounds for config in configs}
                by_round = {config: {} for config in configs}
                trips_by_round = {config: {} for config in configs}  # around each measurement
                rss = {config: 0.0 for config in configs}
                info = {config: ({}, None) for config in configs}
                expected = reference_output(alpha, res, batch)
                trips = round_trips()  # where this block's threads meet: within a die or across
                jiffies = cpu_jiffies()  # and how much of our CPUs' time the host takes meanwhile
                # --rounds rounds, each timing every engine for its share of the runs in turn, so a
                # slow spell of the shared machine falls on all of them rather than on one
                for r in range(args.rounds):
                    for engine, threads in round_order(configs, r, args.rounds):
                        if engine in skipped or (engine, name, batch) in skipped:
                            continue
                        runs = args.numpy_runs if engine == "numpy" else args.runs
                        if batch > 1:
                            runs = max(3, runs // 4)
                        share = runs * (r + 1) // args.rounds - runs * r // args.rounds
                        if share == 0:
                            continue
                        trips_before = round_trips()  # the host may move our vCPUs inside a block
                        try:
                            with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                                got = pool.submit(_measure, name, alpha, res, batch, engine, threads, share,
                                                  args.warmup, args.warmup_seconds, tmpdir,
                                                  args.hide_avx512, expected).result()
                        except Exception as exc:  # one engine failing on one variant: the run goes on
                            got = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
                        trips_by_round[engine, threads][r] = {"before": trips_before, "after": round_trips()}
                        if isinstance(got, str):  # not installed (every variant), or this variant's failure
                            one = got.startswith(("mismatch", "failed"))
                            skipped[(engine, name, batch) if one else engine] = got
                            continue
                        times[engine, threads] += got[0]
                        times_by_round[engine, threads][r] = list(got[0])
                        warmups[engine, threads][r] = min(args.warmup, share)  # as _measure warms up
                        by_round[engine, threads][r] = float(np.median(got[0])) * 1e3
                        rss[engine, threads] = max(rss[engine, threads], got[1])
                        info[engine, threads] = (got[2], got[3])
                # each block's medians as it finishes, on stderr: a run cut short (a time limit, a
                # lent machine taken back) still leaves what it measured in its log
                done = [f"{e} {t}T {summarize(times[e, t])['median_ms']:.3f}" for e, t in configs if times[e, t]]
                trips_after = round_trips()
                stolen = steal_share(jiffies, cpu_jiffies())
                print(f"# measured {name} batch {batch} (ms): " + ", ".join(done) +
                      (f"; round trip before {describe_round_trips(trips)}, after {describe_round_trips(trips_after)}"
                       if trips else "") + (f"; steal {100 * stolen:.1f} %" if stolen is not None else ""),
                      file=sys.stderr, flush=True)
                for engine, threads in configs:
                    if not times[engine, threads]:
                        continue
                    stats = row_figures(times_by_round[engine, threads], batch, macs,
                                        threads if engine != "numpy" else None, top, machine.CORES)
                    settings, err = info[engine, threads]
                    stats.update(engine=engine, variant=name, batch=batch,
                                 threads=threads if engine != "numpy" else "BLAS",
                                 oversubscribed=engine != "numpy" and threads > machine.CORES,
                                 settings=settings, output_rel_l2_vs_c=err,
                                 round_medians_ms=[by_round[engine, threads].get(k) for k in range(args.rounds)],
                                 precision=PRECISION[engine], isa=engine_isa(engine),
                                 warmup_calls_by_round=warmups[engine, threads],
                                 peak_rss_mb=rss[engine, threads],
                                 core_round_trip_ns={"before": trips, "after": trips_after},
                                 core_round_trip_ns_by_round=[trips_by_round[engine, threads].get(k)
                                                              for k in range(args.rounds)],
                                 steal_share=stolen)
                    rows.append(stats)
    header["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    header["core_round_trip_ns"]["end"] = round_trips()
    header["steal_share"] = steal_share(run_jiffies, cpu_jiffies())
    compare_with_peers(rows, args.rounds)
    line = "{:<14} {:<8} {:<6} {:>5} {:>5} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6} {:>20} {:>8}"
    print(line.format("engine", "variant", "prec", "thr", "batch", "median ms", "p10 ms", "p90 ms", "img/s",
                      "GFLOP/s", "% peak", "vs best peer (rounds)", "RSS MiB"))
    for r in rows:
        ratio = f"{r['speedup_vs_best_peer']:.2f}x" if r["speedup_vs_best_peer"] else "-"
        if r["speedup_vs_best_peer_by_round"] and r["speedup_vs_best_peer"]:
            ratio += " ({:.2f}-{:.2f})".format(*r["speedup_vs_best_peer_by_round"])
        print(line.format(r["engine"], r["variant"], {"float32": "f32", "bfloat16": "bf16"}[r["precision"]],
                          r["threads"], r["batch"], f"{r['median_ms']:.2f}",
                          f"{r['p10_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['img_per_s']:.1f}", f"{r['gflops']:.1f}",
                          f"{r['percent_of_peak']:.0f}%" if r["percent_of_peak"] else "-", ratio, f"{r['peak_rss_mb']:.0f}"))
    # blocks whose threads' cores moved apart (or were apart): their multi-thread rows, every engine's
    lowest = {}
    for trips in [header["core_round_trip_ns"]["start"], header["core_round_trip_ns"]["end"]] + \
            [r["core_round_trip_ns"][k] for r in rows for k in ("before", "after")] + \
            [t[k] for r in rows for t in r["core_round_trip_ns_by_round"] if t for k in ("before", "after")]:
        for pair, ns in trips.items():
            if ns:
                lowest[pair] = min(ns, lowest.get(pair, ns))
    flagged, moved = set(), {}
    for r in rows:
        apart = cores_apart(r["core_round_trip_ns"]["before"], r["core_round_trip_ns"]["after"], lowest)
        # the row's own measurements: the placement can move and come back within a block; only
        # rows of more than one thread (NumPy's BLAS threads included) slow down for it
        own = {k: cores_apart(t["before"], t["after"], lowest)
               for k, t in enumerate(r["core_round_trip_ns_by_round"]) if t}
        r["rounds_cores_apart"] = [k for k, a in own.items() if a]
        many = r["threads"] == "BLAS" or r["threads"] > 1
        r["cores_apart"] = many and (bool(apart) or bool(r["rounds_cores_apart"]))
        if not apart and many and r["rounds_cores_apart"]:
            moved.setdefault((r["variant"], r["batch"]), []).append(
                f"{r['engine']} {r['threads']}{'T' if r['threads'] != 'BLAS' else ''} " + ", ".join(
                    f"round {k + 1} (" + ", ".join(f"{pair} {b:.0f} -> {a:.0f} ns" for pair, (b, a, low) in own[k].items())
                    + ")" for k in r["rounds_cores_apart"]))
        if apart and many and (r["variant"], r["batch"]) not in flagged:  # a block of 1-thread rows: nothing to say
            flagged.add((r["variant"], r["batch"]))
            print(f"# {r['variant']} batch {r['batch']}: the cache-line round trip between CPUs " +
                  ", ".join(f"{pair} went {b:.0f} -> {a:.0f} ns (lowest of the run {low:.0f})"
                            for pair, (b, a, low) in apart.items()) +
                  ": its multi-thread rows ran on cores apart for part of the time (every engine's are slower so: on a "
                  "2-vCPU Zen 4 guest the C engine's of one image 1.1-1.8x, the peers' 1.2-2.1x) "
                  "(JSON: cores_apart; benchmarks/cross_die.py)")
    for (variant, batch), which in moved.items():
        print(f"# {variant} batch {batch}: the cache-line round trip went past twice the run's lowest around "
              f"these multi-thread rows' own measurements, though not around the block: {'; '.join(which)} "
              f"(lowest {', '.join(f'{pair} {ns:.0f} ns' for pair, ns in lowest.items())}): they ran on cores apart "
              "for part of the time (JSON: rounds_cores_apart)")
    stolen = {(r["variant"], r["batch"]): r["steal_share"] for r in rows if (r["steal_share"] or 0) > STEAL_FLAG}
    for (variant, batch), share in stolen.items():
        print(f"# {variant} batch {batch}: the host ran other work on our CPUs for {100 * share:.0f} % of their "
              "time during this block (steal, /proc/stat): the rows in it ran on CPUs shared with other work (JSON: steal_share)")
    summary = header["summary"] = ahead_summary(rows)
    if summary:
        print(f"# {summary}")
    skipped = {" ".join(map(str, k)) if isinstance(k, tuple) else k: why for k, why in skipped.items()}
    for engine, why in skipped.items():  # "ort" for every variant, "ort 1.0_224 8" for one
        print(f"# skipped {engine}: {why}")
    if any(r["oversubscribed"] for r in rows):
        print(f"# rows with more threads than the {machine.CORES} usable cores are oversubscribed "
              "(JSON: oversubscribed, settings.threads)")
    # Where the user said, else the current folder: never inside the installed package.
    out = Path(args.json) if args.json else Path.cwd() / f"bench-{now:%Y%m%dT%H%M%SZ}.json"
    from mobilenetv2.files import atomic_write
    with atomic_write(out, suffix=".json") as f:
        f.write(json.dumps({"run": header, "results": rows, "skipped": skipped}, indent=2).encode())
    print(f"# wrote {out}")
    if any(r["precision"] != "float32" for r in rows):
        print("# bf16 rows are reduced precision: shown for reference, never counted as a best peer")
    if args.plot:
        print(f"# wrote {plot(rows, args.plot, header)}")
    return 0


def _label_points(fig, ax, names):
    """Name each C point beside it, at the first of a few places where its label meets no label
    placed before it and no other C point's marker: the 22 variants' points crowd (1.0_160 and
    0.75_192 lie a few pixels apart), and labels written over each other, or over a neighbour's
    marker, named the wrong point or none.  A label set off from its point gets a leader line."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox
    fig.canvas.draw()  # until the figure has been drawn once, every text's extent is the unit box
    renderer = fig.canvas.get_renderer()
    r = 3.5 * fig.dpi / 72  # a marker's radius (6 points across), in pixels
    markers = [Bbox.from_extents(x - r, y - r, x + r, y + r)
               for x, y in (ax.transData.transform((ms, top1)) for _, ms, top1 in names)]
    offsets = ((6, -2), (-6, -2), (12, 9), (-12, 9), (12, -13), (-12, -13), (0, 14), (0, -18))
    placed = []
    order = sorted(range(len(names)), key=lambda i: -names[i][2])
    for i in order:
        name, ms, top1 = names[i]
        others = placed + markers[:i] + markers[i + 1:]
        for tried in offsets + (None,):
            at = offsets[0] if tried is None else tried  # crowded everywhere: the first place
            lead = dict(arrowprops=dict(arrowstyle="-", lw=0.6, color="0.3", shrinkB=3)) if abs(at[1]) > 2 else {}
            label = ax.annotate(name, (ms, top1), textcoords="offset points", xytext=at, fontsize=7,
                                ha="left" if at[0] > 0 else "right" if at[0] < 0 else "center", va="center", **lead)
            # the words alone (an Annotation's own extent takes in its leader line, which reaches
            # the point), where they stand once drawn
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer)
            if tried is None or not any(box.overlaps(other) for other in others):
                break
            label.remove()
        placed.append(box)


def plot(rows, path, header):
    """The paper's accuracy-vs-cost chart with measured cost: each variant's published top-1
    (variants.PUBLISHED) against its batch-1 median latency at the lowest thread count measured;
    the C engine as one line per width multiplier, peers as open markers where they ran."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mobilenetv2.network.variants import PUBLISHED
    ones = [r for r in rows if r["batch"] == 1 and r["engine"] != "numpy"]
    if not ones:
        raise ArgumentError("--plot needs batch-1 rows of the C engine or a peer")
    threads = min(r["threads"] for r in ones)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    names = []
    # each engine its own colour (matplotlib's cycle starts at the C engine's tab:blue)
    style = {"c": ("o", "mobilenetv2 C", "tab:blue"), "ort": ("s", "ONNX Runtime", "tab:orange"),
             "openvino": ("^", "OpenVINO f32", "tab:green"), "litert": ("D", "LiteRT", "tab:red"),
             "openvino-bf16": ("v", "OpenVINO bf16 (reduced precision)", "tab:purple")}
    for engine, (marker, label, colour) in style.items():
        pts = [(r["median_ms"], parse_variant(r["variant"]), r["variant"])
               for r in ones if r["engine"] == engine and r["threads"] == threads]
        if not pts:
            continue
        if engine != "c":
            ax.plot([p[0] for p in pts], [PUBLISHED[p[1]][2] for p in pts], marker=marker, label=label,
                    linestyle="none", markersize=8, fillstyle="none", color=colour)
            continue
        # the C engine: one line per width multiplier across resolutions, as the paper draws them
        for i, alpha in enumerate(sorted({p[1][0] for p in pts})):
            line = sorted((p[1][1], p[0], PUBLISHED[p[1]][2], p[2]) for p in pts if p[1][0] == alpha)
            ax.plot([q[1] for q in line], [q[2] for q in line], marker=marker, color=colour,
                    label=label if i == 0 else None, linewidth=1)
            names += [(name, ms, top1) for res, ms, top1, name in line]
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 0.2, 0.5, 1, 2, 5 ms: plain numbers,
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # not 2x10^-1 over 3x10^-1
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"median latency, batch 1, {threads} thread(s), ms (log)")
    ax.set_ylabel("published ImageNet top-1, %")
    hidden = ", AVX-512 hidden" if header.get("avx512_hidden") else ""
    isa = f" ({header['cpu_isa']}{hidden})" if header.get("cpu_isa") else ""
    commit = f", commit {header['commit']}" if header.get("commit") else ""
    ax.set_title(f"MobileNetV2 variants: accuracy vs latency\n{header['cpu']}{isa}, {header['date']}{commit}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _label_points(fig, ax, names)
    from mobilenetv2.files import save_figure
    try:
        return save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
