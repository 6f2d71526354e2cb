"""Prepare one benchmark run on a lent machine that cannot download anything (the tool library's
``device`` machine: a 16-core Xeon, Python 3.12, no network, 64 MiB of files per call).

    python benchmarks/device_kit.py [--variants 1.0_224,0.35_96] [--python 3.12] [--dest .device]

Builds ``DEST`` (a folder git ignores; it is added to .git/info/exclude if it is not) holding
  - ``site.tar.xz``: the peers that machine lacks (OpenVINO, LiteRT) and cffi, unpacked from their
    manylinux wheels for ``--python`` and cut to what a CPU run loads (OpenVINO's GPU and NPU
    plugins, its TensorFlow/PyTorch/Paddle/JAX/GGUF frontends and C headers, LiteRT's WebGPU
    accelerator, vendor plugins and tools are left out: 80 MB of wheels become about 25 MB);
  - ``shared/peers``: the synthetic-weight ``.tflite`` files of ``--variants`` (LiteRT's models),
    and ``shared/tools/synthetic_weights.py`` (the weights every engine then computes with),
copies of ``../shared`` that never enter the repository.  It refuses when the kit plus the tracked
files would pass the 64 MiB a call may carry, and prints the call to make:
``benchmarks/device_run.sh`` there unpacks the kit, builds the extension, runs the kernel and ISA
tests and ``bench.py`` (threads 1, 2, 4, 8, 16, batch 1 and 8, engines interleaved) into $OUT.
Two kits (1.0_224 + 0.35_96, then 1.4_224 + 0.5_160) cover the four variants of issue 10 in two
calls of under 10 minutes.  The wheels come from the package index (pip download), the one
download this needs, made here and never at test or run time.
"""
import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from mobilenetv2.tools.benchmark import shared_dir  # noqa: E402
from mobilenetv2.network.variants import parse_variant, variant_name  # noqa: E402

CARRY_LIMIT = 64 * 2**20  # what one call may carry: the working tree and the carried paths
# what a float32 CPU run of OpenVINO and LiteRT never loads (prefixes inside the wheels)
LEFT_OUT = (
    "openvino/libs/libopenvino_intel_gpu_plugin", "openvino/libs/libopenvino_intel_npu_plugin",
    "openvino/libs/cache.json", "openvino/include/",
    *(f"openvino/libs/libopenvino_{f}_frontend" for f in ("tensorflow", "tensorflow_lite", "pytorch",
                                                         "paddle", "gguf", "jax")),
    *(f"openvino/frontend/{f}/" for f in ("tensorflow", "pytorch", "paddle", "jax")),
    "ai_edge_litert/libLiteRtWebGpuAccelerator", "ai_edge_litert/vendors/", "ai_edge_litert/tools/",
)
# what the kit must still hold for the bench to run its peers
NEEDED = ("openvino/libs/libopenvino_intel_cpu_plugin.so", "openvino/libs/libopenvino_onnx_frontend",
          "openvino/_pyopenvino", "ai_edge_litert/interpreter.py", "cffi/__init__.py", "_cffi_backend")
# the wheels' pure-Python needs that the machine's image lacks
EXTRA = ("pycparser", "openvino-telemetry", "backports.strenum")


def pins():
    """{name: version} of the peers in benchmarks/peers-requirements.txt, plus the cffi here."""
    got = {}
    for line in (HERE / "peers-requirements.txt").read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if name and version:
            got[name] = version
    from importlib.metadata import version
    got["cffi"] = version("cffi")
    return got


def download(names, python, into):
    """pip download of manylinux wheels for CPython ``python`` (one version each, no deps)."""
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                 "manylinux2014_x86_64", "manylinux1_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "-d", str(into)]
    for p in platforms:
        cmd += ["--platform", p]
    done = subprocess.run(cmd + list(names), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"device_kit: pip download failed: {done.stderr.strip().splitlines()[-1:]}")


def site_archive(wheels, dest):
    """The wheels' files, minus LEFT_OUT, as one tar.xz at ``dest``; returns (kept, dropped) bytes."""
    kept = dropped = 0
    names = set()
    with tarfile.open(dest, "w:xz", preset=9) as tar:
        for wheel in sorted(wheels):
            with zipfile.ZipFile(wheel) as z:
                for info in z.infolist():
                    if info.is_dir():
                        continue
                    if info.filename.startswith(LEFT_OUT):
                        dropped += info.file_size
                        continue
                    data = z.read(info)
                    entry = tarfile.TarInfo(info.filename)
                    entry.size = len(data)
                    entry.mode = 0o755 if info.filename.endswith(".so") or ".so." in info.filename else 0o644
                    tar.addfile(entry, io.BytesIO(data))
                    kept += len(data)
                    names.add(info.filename)
    missing = [n for n in NEEDED if not any(f.startswith(n) for f in names)]
    if missing:
        raise SystemExit(f"device_kit: the cut wheels lack {missing}: the wheels changed, update LEFT_OUT")
    return kept, dropped


def tracked_bytes():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return sum((ROOT / f).stat().st_size for f in files.decode().split("\0") if f and (ROOT / f).is_file())


MARKER = ".device_kit"  # written first into every kit folder: the only kind --dest replaces


def check_dest(dest):
    """``dest`` may be replaced whole: a folder inside the checkout that git tracks nothing in, and
    absent, empty or a kit made here (an earlier one's VARIANTS file counts); else SystemExit."""
    if ROOT not in dest.parents:
        raise SystemExit(f"device_kit: --dest must be a folder inside the checkout {ROOT}, got {dest}")
    rel = dest.relative_to(ROOT).as_posix()
    tracked = subprocess.run(["git", "ls-files", "-z", "--", rel], cwd=ROOT, capture_output=True,
                             check=True).stdout.split(b"\0")[0]
    if tracked:
        raise SystemExit(f"device_kit: --dest {rel} holds files git tracks ({tracked.decode()}), and the "
                         "kit's folder is replaced whole: name a new folder such as .device")
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir() or dest.is_symlink():
            raise SystemExit(f"device_kit: --dest {rel} exists and is not a folder: name a new folder")
        if any(dest.iterdir()) and not ((dest / MARKER).is_file() or (dest / "VARIANTS").is_file()):
            raise SystemExit(f"device_kit: --dest {rel} is a folder that no device_kit.py made, and the "
                             "kit's folder is replaced whole: name a new folder, or empty that one")


def ensure_ignored(dest):
    rel = dest.resolve().relative_to(ROOT)
    if subprocess.run(["git", "check-ignore", "-q", str(rel)], cwd=ROOT).returncode == 0:
        return
    exclude = ROOT / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as f:
        f.write(f"/{rel.as_posix()}/\n")
    print(f"# added /{rel.as_posix()}/ to .git/info/exclude (the kit never enters the repository)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="1.0_224,0.35_96",
                   help="comma list: whose LiteRT .tflite files travel (1.4_224's is 24 MB)")
    p.add_argument("--python", default="3.12", help="the Python version of the machine the kit is for")
    p.add_argument("--dest", default=".device", help="the kit's folder, inside the checkout: new, empty or an "
                   "earlier kit (it is replaced whole; one holding files git tracks, or others, is refused)")
    args = p.parse_args(argv)
    try:
        variants = [variant_name(*parse_variant(v.strip())) for v in args.variants.split(",") if v.strip()]
    except ValueError as exc:
        raise SystemExit(f"device_kit: --variants: {exc}") from None
    if not variants:
        raise SystemExit("device_kit: --variants names none")
    dest = Path(os.path.abspath(ROOT / args.dest))  # a link itself, not where it points
    check_dest(dest)
    shared = shared_dir()
    if shared is None:
        raise SystemExit("device_kit: ../shared (or $MOBILENETV2_SHARED) is absent: the .tflite files "
                         "and synthetic weights come from there")
    tflites = [shared / "peers" / f"mobilenet_v2_{v}_synthetic.tflite" for v in variants]
    for t in tflites:
        if not t.is_file():
            raise SystemExit(f"device_kit: no {t.name} in {shared / 'peers'}")
    ensure_ignored(dest)
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "shared" / "peers").mkdir(parents=True)
    (dest / MARKER).write_text("a kit of benchmarks/device_kit.py: --dest replaces this folder whole\n")
    (dest / "shared" / "tools").mkdir(parents=True)
    versions = pins()
    with tempfile.TemporaryDirectory() as tmp:
        download([f"{n}=={versions[n]}" for n in ("openvino", "ai-edge-litert", "cffi")] + list(EXTRA),
                 args.python, tmp)
        kept, dropped = site_archive(list(Path(tmp).glob("*.whl")), dest / "site.tar.xz")
        wheel_bytes = sum(w.stat().st_size for w in Path(tmp).glob("*.whl"))
    for t in tflites:
        shutil.copy2(t, dest / "shared" / "peers" / t.name)
    shutil.copy2(shared / "tools" / "synthetic_weights.py", dest / "shared" / "tools")
    (dest / "VARIANTS").write_text(",".join(variants) + "\n")
    kit = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    total = kit + tracked_bytes()
    print(f"# wheels for CPython {args.python}: {wheel_bytes / 1e6:.1f} MB; unpacked {kept / 1e6:.0f} MB kept, "
          f"{dropped / 1e6:.0f} MB left out; site.tar.xz {(dest / 'site.tar.xz').stat().st_size / 1e6:.1f} MB")
    print(f"# kit {dest}: {kit / 2**20:.1f} MiB; with the tracked files {total / 2**20:.1f} MiB "
          f"of the {CARRY_LIMIT // 2**20} MiB a call carries; variants {','.join(variants)}")
    if total > CARRY_LIMIT:
        shutil.rmtree(dest)
        raise SystemExit("device_kit: over what one call carries: pass fewer --variants")
    rel = dest.relative_to(ROOT).as_posix()
    print(f'# the call: run(command="KIT={rel} bash benchmarks/device_run.sh", carry=["{rel}"], timeout_s=590)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
