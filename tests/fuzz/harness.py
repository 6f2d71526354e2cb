"""Run fuzz cases, each in a forked child with a memory limit and a timeout, and judge them.

A case is ``(kind, index)``: the child builds its input from ``random.Random(seed, kind, index)``
inside a folder of its own (so every run with the same seed makes the same inputs), runs the
package on it and reports one outcome:

  ok        the package accepted the input
  refused   the package raised its own error (mobilenetv2.errors.Error, or an OSError the system
            raised in the package's own code, such as FileNotFoundError for a missing path)
  foreign   any other exception (a library's RuntimeError, KeyError, TypeError, a bare ValueError
            even from the package's own code, ...)
  signal    the child died of a signal (a crash)
  hang      the child did not finish within the timeout (it is killed)
  leak      the sentinel file's bytes showed up in an output, or Python opened the sentinel
  left      a file was left behind (a temporary file, a partial output, anything in $TMPDIR)
  harness   the case generator itself failed (a bug in the fuzz suite, not the package)

Only ok and refused pass.  The sentinel is a file of random bytes every hostile input points at
(external storage, external links, virtual datasets); a second sentinel is a FIFO, which blocks
whoever opens it for reading, so a C-level open of it shows up as a hang.
"""
import json
import os
import random
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent.parent / "mobilenetv2"
MEMORY_LIMIT = 3 << 30  # address space a case may add to its child: far above any valid case (~0.6 GB)


def _address_space():
    """This process's mapped address space in bytes (/proc/self/statm's first field), 0 where unknown."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


PROFILES = {  # cases per kind
    "ci": {"hdf5": 60, "keras": 30, "safetensors": 30, "image": 50, "array": 40, "cli": 25, "download": 20,
           "hf": 25, "compare": 20, "onnx": 24, "tflite": 24, "openvino": 12},
    "long": {"hdf5": 1500, "keras": 600, "safetensors": 1000, "image": 1200, "array": 800, "cli": 400,
             "download": 300, "hf": 800, "compare": 500, "onnx": 400, "tflite": 400, "openvino": 200},
}
TIMEOUTS = {"cli": 60.0, "download": 30.0, "openvino": 40.0}
# files a runtime writes in $TMPDIR on import, whatever the input: not left by the package
RUNTIME_FILES = {".ses"}  # ONNX Runtime's telemetry session id
DEFAULT_TIMEOUT = 20.0


def package_error(exc):
    """True for the package's own exceptions: its Error classes (every ValueError the package
    raises is one), or an OSError that the system raised in the package's own code (an open() of
    a missing path: FileNotFoundError, with the file's name).  A bare ValueError is foreign even
    from the package's code: a user catching mobilenetv2.Error would miss it."""
    from mobilenetv2.errors import Error
    if isinstance(exc, Error):
        return True
    if isinstance(exc, OSError):
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)
    return False


class Context:
    """What a case generator gets: its random source, its folder, and the sentinels."""

    def __init__(self, rng, folder, sentinel, fifo, shared):
        self.rng, self.folder, self.sentinel, self.fifo, self.shared = rng, folder, sentinel, fifo, shared
        self.seen = []  # bytes the case produced (arrays, messages, stdout): checked for leaks


def _leaked(ctx, sentinel_bytes, opened):
    if opened:
        return True
    blob = b"".join(ctx.seen)
    return any(sentinel_bytes[i:i + 16] in blob for i in range(0, len(sentinel_bytes) - 16, 256))


def _child(kind, index, seed, folder, sentinel, fifo, shared, out_fd, generators):
    import faulthandler
    faulthandler.disable()  # pytest's handler would print a crash to the parent's terminal
    # on top of what the forked child maps already: a pytest process that collected the whole
    # suite holds torch's, JAX's and OpenVINO's libraries (over 3 GiB of address space where torch
    # is installed), and a fixed limit left a case no room for its thread stacks or its images
    limit = _address_space() + MEMORY_LIMIT
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(folder)
    tmp = folder / "TMPDIR"
    tmp.mkdir()
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    opened, watching = [], []
    sentinel_names = {str(sentinel), str(fifo)}
    sentinel_bytes = sentinel.read_bytes()

    def audit(event, args):  # Python-level opens of a sentinel while the package runs
        if watching and event == "open" and args and str(args[0]) in sentinel_names:
            opened.append(str(args[0]))

    sys.addaudithook(audit)
    rng = random.Random(f"{seed}/{kind}/{index}")
    ctx = Context(rng, folder, sentinel, fifo, shared)
    make, run = generators[kind]
    label, inputs, outputs = "", [], []
    try:
        label = make(ctx)
    except BaseException as exc:  # noqa: B902  a generator's own failure: the harness must be fixed
        os.write(out_fd, (json.dumps({"outcome": "harness", "label": "", "outputs": [],
                                      "detail": f"make failed: {type(exc).__name__}: {exc}"}) + "\n").encode())
        return
    try:
        inputs = sorted(p.name for p in folder.iterdir())
        os.write(out_fd, (json.dumps({"inputs": inputs, "label": label}) + "\n").encode())
        watching.append(True)
        result = run(ctx) or {}
        outcome, detail, outputs = "ok", str(result.get("detail", "")), result.get("outputs", [])
    except BaseException as exc:  # noqa: B902  every escape is judged
        ctx.seen.append(str(exc).encode("utf8", "replace"))
        if package_error(exc):
            outcome, detail = "refused", f"{type(exc).__name__}: {exc}"
        else:
            outcome = "foreign"
            detail = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_tb(exc.__traceback__)[-3:])
    watching.clear()
    if _leaked(ctx, sentinel_bytes, opened):
        outcome, detail = "leak", f"sentinel reached the output ({opened or 'content'}); was {outcome}: {detail}"
    left = sorted(str(p.relative_to(folder)) for p in tmp.rglob("*") if p.name not in RUNTIME_FILES)
    if left:
        outcome, detail = "left", f"left in TMPDIR: {left[:5]}; was {outcome}: {detail}"
    os.write(out_fd, (json.dumps({"outcome": outcome, "detail": detail[:2000], "label": label,
                                  "outputs": outputs if outcome == "ok" else []}) + "\n").encode())


def run_cases(cases, generators, seed, workers=2, log=None):
    """Run ``cases`` ([(kind, index)]) ``workers`` at a time; returns a list of result dicts."""
    root = Path(tempfile.mkdtemp(prefix="mnv2-fuzz-"))
    sentinel = root / "sentinel.bin"
    sentinel.write_bytes(random.Random(f"{seed}/sentinel").randbytes(8192))
    fifo = root / "sentinel.fifo"
    os.mkfifo(fifo)
    shared = root / "shared"
    shared.mkdir()
    pending, running, results = list(cases), {}, []
    try:
        while pending or running:
            while pending and len(running) < workers:
                kind, index = pending.pop(0)
                folder = root / f"{kind}-{index}"
                folder.mkdir()
                r, w = os.pipe()
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:  # the child: never returns
                    code = 0
                    try:
                        os.close(r)
                        devnull = os.open(os.devnull, os.O_RDWR)
                        os.dup2(devnull, 0)
                        os.dup2(os.open(folder.parent / f"{kind}-{index}.log", os.O_WRONLY | os.O_CREAT, 0o600), 1)
                        os.dup2(1, 2)
                        _child(kind, index, seed, folder, sentinel, fifo, shared, w, generators)
                    except BaseException:
                        code = 3
                    finally:
                        os._exit(code)
                os.close(w)
                running[pid] = dict(kind=kind, index=index, folder=folder, fd=r, buf=b"",
                                    start=time.monotonic(), timeout=TIMEOUTS.get(kind, DEFAULT_TIMEOUT))
            _poll(running, results, root, log)
    finally:
        for pid in list(running):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        shutil.rmtree(root, ignore_errors=True)
    return results


def _poll(running, results, root, log):
    fds = {info["fd"]: pid for pid, info in running.items()}
    ready, _, _ = select.select(list(fds), [], [], 0.05)
    for fd in ready:
        chunk = os.read(fd, 65536)
        running[fds[fd]]["buf"] += chunk
    now = time.monotonic()
    for pid, info in list(running.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        timed_out = not done and now - info["start"] > info["timeout"]
        if timed_out:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        elif not done:
            continue
        while True:  # the rest of what the child wrote
            try:
                chunk = os.read(info["fd"], 65536)
            except OSError:
                break
            if not chunk:
                break
            info["buf"] += chunk
        os.close(info["fd"])
        del running[pid]
        messages = [json.loads(line) for line in info["buf"].decode().splitlines() if line.strip()]
        head = next((m for m in messages if "inputs" in m), {"inputs": [], "label": ""})
        final = next((m for m in messages if "outcome" in m), None)
        if timed_out:
            result = {"outcome": "hang", "detail": f"no answer in {info['timeout']:.0f} s"}
        elif os.WIFSIGNALED(status):
            result = {"outcome": "signal", "detail": f"killed by signal {os.WTERMSIG(status)}"}
        elif final is None:
            result = {"outcome": "foreign", "detail": f"the child exited with {os.WEXITSTATUS(status)} "
                                                        "without an answer"}
        else:
            result = final
        extra = sorted(set(p.name for p in info["folder"].iterdir()) - set(head["inputs"]) - {"TMPDIR"})
        extra = [name for name in extra if name not in result.get("outputs", [])]
        if extra and result["outcome"] in ("ok", "refused"):
            result = {"outcome": "left", "detail": f"files left behind: {extra[:5]}; was {result['outcome']}"}
        result.update(kind=info["kind"], index=info["index"], label=head.get("label", ""))
        results.append(result)
        if log is not None and result["outcome"] not in ("ok", "refused"):
            log(result)
        shutil.rmtree(info["folder"], ignore_errors=True)


def summarize(results):
    """{kind: {outcome: count}} and the total per outcome."""
    table = {}
    for r in results:
        row = table.setdefault(r["kind"], {})
        row[r["outcome"]] = row.get(r["outcome"], 0) + 1
    return table


def refusal_classes(results):
    out = {}
    for r in results:
        if r["outcome"] == "refused":
            name = r["detail"].split(":", 1)[0]
            out[name] = out.get(name, 0) + 1
    return out
