"""Hiding AVX-512 through CPUID faulting (native.hide_avx512, ``mobilenetv2 bench --hide-avx512``).

Hiding is for the life of a process, so each check runs in a child Python.  What the child sees is
read by its own CPUID instruction (a few bytes of machine code run through ctypes), not through
our dispatch, so the test does not trust the code it checks."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mobilenetv2.engines import native
from mobilenetv2.errors import ArgumentError


def _cpuid_fault():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return "cpuid_fault" in line.split()
    except OSError:
        pass
    return False


def _require_hiding():
    if not native.available():
        pytest.skip("the C extension is not built")
    if "avx512" not in native.isas():
        pytest.skip("this CPU has no AVX-512 to hide")
    if not _cpuid_fault():
        pytest.skip("this kernel or CPU cannot trap CPUID (no cpuid_fault in /proc/cpuinfo)")

# leaf7_ebx(): EBX of CPUID leaf 7, subleaf 0, by the instruction itself:
# push rbx; mov eax, 7; xor ecx, ecx; cpuid; mov eax, ebx; pop rbx; ret
PROBE = textwrap.dedent("""
    import ctypes, mmap, threading
    code = bytes.fromhex("53b80700000031c90fa289d85bc3")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    leaf7_ebx = ctypes.CFUNCTYPE(ctypes.c_uint32)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    def avx512f():
        return bool(leaf7_ebx() >> 16 & 1)
    def in_new_thread(f):
        out = []
        t = threading.Thread(target=lambda: out.append(f()))
        t.start()
        t.join()
        return out[0]
""")


def _uncapped_env():
    """This environment without a cap on our ISA: a child must see the CPU as it is.  A cap
    (MNV2_FORCE_ISA=avx2 runs the suite as an AVX2-only CPU would) is not the hiding under test
    and would put the child's kernels on AVX2 or scalar before it hides anything."""
    return {k: v for k, v in os.environ.items() if k not in ("MNV2_FORCE_ISA", "MNV2_FORCE_SCALAR")}


def _child(body, *flags):
    return subprocess.run([sys.executable, *flags, "-c", PROBE + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=120, env=_uncapped_env())


def test_hidden_in_this_thread_and_in_threads_started_later():
    _require_hiding()
    done = _child("""
        import json
        import mobilenetv2  # the public names, as the README gives them
        from mobilenetv2.engines import native
        out = {"before": avx512f(), "backend_before": mobilenetv2.backend()}
        mobilenetv2.hide_avx512()
        mobilenetv2.hide_avx512()  # a second call changes nothing
        out.update(after=avx512f(), thread=in_new_thread(avx512f), backend=mobilenetv2.backend(),
                   isas=native.isas(), hidden=native.avx512_hidden())
        print(json.dumps(out))
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["before"] is True and out["backend_before"] == "C AVX-512"
    assert out["after"] is False and out["thread"] is False
    assert out["backend"] == "C AVX2" and out["isas"] == ["scalar", "avx2"] and out["hidden"] is True


def test_a_real_segfault_still_ends_the_process():
    """Only CPUID is emulated: any other fault reaches the disposition there was before, the
    default action (killed by SIGSEGV) or Python's faulthandler."""
    _require_hiding()
    body = """
        from mobilenetv2.engines import native
        native.hide_avx512()
        assert not avx512f()
        ctypes.string_at(0)
    """
    done = _child(body)
    if "libasan" in os.environ.get("LD_PRELOAD", ""):  # .ci/asan: AddressSanitizer's handler was there
        assert "AddressSanitizer: SEGV" in done.stderr, done.stderr[-2000:]
        assert done.returncode in (-signal.SIGSEGV, -signal.SIGABRT)
        return
    assert done.returncode == -signal.SIGSEGV, (done.returncode, done.stderr[-2000:])
    done = _child(body, "-X", "faulthandler")
    assert done.returncode == -signal.SIGSEGV
    assert "Segmentation fault" in done.stderr and "string_at" in done.stderr
    # a three-argument (SA_SIGINFO) handler, as sanitizers and crash reporters install: here
    # libc's _exit, so reaching it ends the process with status 11 (SIGSEGV's number, its first
    # argument); a fault not passed on would return to the faulting load and repeat forever
    installed = """
        libc = ctypes.CDLL(None, use_errno=True)
        class Sigaction(ctypes.Structure):  # glibc's struct sigaction on x86-64
            _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16),
                        ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]
        sa = Sigaction(handler=ctypes.cast(libc._exit, ctypes.c_void_p).value, flags=4)  # SA_SIGINFO
        assert libc.sigaction(11, ctypes.byref(sa), None) == 0, ctypes.get_errno()
    """
    done = _child(textwrap.dedent(installed) + textwrap.dedent(body))
    assert done.returncode == signal.SIGSEGV, (done.returncode, done.stderr[-2000:])


def test_the_hidden_network_gives_the_same_bits():
    """With AVX-512 hidden the C kernels run AVX2, whose every output has the same order of
    operations: the same bytes as the AVX-512 run in this process."""
    _require_hiding()
    from mobilenetv2 import MobileNetV2
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
    rng = np.random.default_rng(3)
    model.set_weights([rng.uniform(0.5, 1.5, shape) if "variance" in name else rng.standard_normal(shape) * 0.2
                       for layer in model.weighted_layers() for name, shape in zip(layer.weight_names, layer.weight_shapes())])
    x = rng.uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    with native.use_isa("avx512"):  # whatever MNV2_FORCE_ISA this process runs under
        here = model.predict(x)
        assert native.backend() == "C AVX-512"
    done = _child("""
        import sys, numpy as np
        from mobilenetv2 import MobileNetV2
        from mobilenetv2.engines import native
        native.hide_avx512()
        model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
        rng = np.random.default_rng(3)
        model.set_weights([rng.uniform(0.5, 1.5, shape) if "variance" in name else rng.standard_normal(shape) * 0.2
                               for layer in model.weighted_layers() for name, shape in zip(layer.weight_names, layer.weight_shapes())])
        x = rng.uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
        model.threads = 2
        y = model.predict(x)
        assert native.backend() == "C AVX2", native.backend()
        sys.stdout.write(y.astype(np.float32).tobytes().hex())
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    there = np.frombuffer(bytes.fromhex(done.stdout.strip()), np.float32).reshape(here.shape)
    assert np.array_equal(here, there)


def test_bench_runs_every_engine_with_avx512_hidden_and_says_so(tmp_path):
    _require_hiding()
    out = tmp_path / "b.json"
    done = subprocess.run([sys.executable, "-m", "mobilenetv2", "bench", "--hide-avx512", "--variants", "0.35_96",
                           "--engines", "c", "--threads", "1", "--runs", "3", "--rounds", "1", "--warmup", "0",
                           "--warmup-seconds", "0", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env=_uncapped_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "AVX-512 hidden from every engine" in done.stdout
    data = json.loads(out.read_text())
    assert data["run"]["avx512_hidden"] is True and data["run"]["cpu_isa"] == "avx2"
    assert data["run"]["backend"] == "C AVX2"
    assert set(data["run"]["fma_peak_gflops_per_core"]) == {"avx2"}
    assert [r["isa"] for r in data["results"]] == ["avx2"]


def test_hiding_without_the_extension_says_so_on_any_machine(monkeypatch):
    monkeypatch.setattr(native, "lib", None)
    with pytest.raises(ArgumentError, match=r"^hiding AVX-512 needs the C extension, which is not available"):
        native.hide_avx512()


def test_hiding_refuses_where_it_cannot(monkeypatch):
    """No AVX-512 to hide, or no CPUID faulting: an ArgumentError that says so, nothing hidden
    (the C calls are stubbed, so this runs on any machine)."""
    if not native.available():
        with pytest.raises(ArgumentError, match="needs the C extension"):
            native.hide_avx512()
        return

    class Stub:
        def __init__(self, rc):
            self.rc, self.calls = rc, 0

        def mnv2_avx512_hidden(self):
            return 0

        def mnv2_isa_detected(self):
            return 2

        def mnv2_hide_avx512(self):
            self.calls += 1
            return self.rc

    stub = Stub(-1)
    monkeypatch.setattr(native, "lib", stub)
    with pytest.raises(ArgumentError, match="cannot trap CPUID"):
        native.hide_avx512()
    assert stub.calls == 1
    stub = Stub(0)  # the C side hid it: no error
    monkeypatch.setattr(native, "lib", stub)
    assert native.hide_avx512() is None and stub.calls == 1
    monkeypatch.setattr(native, "isas", lambda: ["scalar", "avx2"])
    with pytest.raises(ArgumentError, match="no AVX-512 to hide"):
        native.hide_avx512()
    assert stub.calls == 1


def test_bench_hide_avx512_error_is_one_line(monkeypatch, capsys):
    from mobilenetv2.tools import benchmark

    def refuse():
        raise ArgumentError("this CPU (or its OS) has no AVX-512 to hide: it runs AVX2 code already")

    monkeypatch.setattr(native, "hide_avx512", refuse)
    assert benchmark.main(["--hide-avx512", "--variants", "0.35_96", "--engines", "c"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mobilenetv2 bench: error: --hide-avx512: ")


def test_segmentation_bench_hides_avx512_from_both_engines(tmp_path):
    _require_hiding()
    pytest.importorskip("onnxruntime", reason="the segmentation bench times ONNX Runtime (pip install onnxruntime)")
    done = subprocess.run([sys.executable, "-m", "mobilenetv2", "bench", "--segmentation", "random", "--hide-avx512",
                           "--size", "65", "--threads", "1", "--runs", "2", "--warmup", "1", "--rounds", "1",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, env=_uncapped_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "AVX-512 hidden from both engines" in done.stdout and "C core C AVX2" in done.stdout
    report = json.loads(next(tmp_path.glob("segmentation-*.json")).read_text())
    assert report["avx512_hidden"] is True and report["backend"] == "C AVX2"
    assert report["agreement_rel_l2"] < 1e-4
