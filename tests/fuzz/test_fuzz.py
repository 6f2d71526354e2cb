"""The fuzz suite under pytest: the CI profile by default (about 360 cases, under a minute on
two cores); the long one with ``-m fuzz_long`` or MNV2_FUZZ_PROFILE=long.  The seed is
MNV2_FUZZ_SEED (default 0): a failing case is replayed by its seed, kind and index.

Before trusting a green run, the harness is shown to catch each failure it claims to: a leak of
the sentinel, a foreign exception, a crash, a hang and a file left behind."""
import os
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases  # noqa: E402
import harness  # noqa: E402
import run as runner  # noqa: E402


def _no_failures(results):
    failures = [r for r in results if r["outcome"] not in ("ok", "refused")]
    assert not failures, "\n".join(f"{r['kind']}#{r['index']} {r['label']}: {r['outcome']}: {r['detail'][:500]}"
                                   for r in failures[:10])


def _profile(name, request):
    seed = int(os.environ.get("MNV2_FUZZ_SEED", "0"))
    results, skipped, seconds = runner.run(name, seed=seed, workers=2, log=lambda line: None)
    lines = []
    runner.report(results, skipped, seconds, print_fn=lines.append)
    request.node.user_properties.append(("fuzz", "\n".join(lines)))
    print("\n".join(lines))
    want = sum(n for kind, n in harness.PROFILES[name].items() if kind not in skipped)
    assert len(results) == want
    _no_failures(results)
    # every kind met both accepted and refused inputs (a generator that only makes garbage, or
    # only good files, tests little)
    table = harness.summarize(results)
    for kind, row in table.items():
        assert row.get("refused", 0) > 0, kind
    return results


def test_fuzz_ci_profile(request):
    if os.environ.get("MNV2_FUZZ_PROFILE") == "long":
        pytest.skip("MNV2_FUZZ_PROFILE=long: the long profile runs instead")
    _profile("ci", request)


@pytest.mark.fuzz_long
def test_fuzz_long_profile(request):
    if os.environ.get("MNV2_FUZZ_PROFILE") != "long" and "fuzz_long" not in (request.config.getoption("-m") or ""):
        pytest.skip("the long fuzz profile runs with -m fuzz_long or MNV2_FUZZ_PROFILE=long")
    _profile("long", request)


# -- the harness catches what it claims to ----------------------------------------------------
def _make_nothing(ctx):
    return "selftest"


def _leak(ctx):
    import h5py
    import numpy as np
    path = ctx.folder / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("d", shape=(64,), dtype="<f4", external=[(str(ctx.sentinel), 0, 256)])
    with h5py.File(path, "r") as f:
        ctx.seen.append(np.asarray(f["d"][()]).tobytes())
    return {"outputs": ["x.h5"]}


def _foreign(ctx):
    raise KeyError("a library's error")


def _crash(ctx):
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang(ctx):
    time.sleep(600)


def _left(ctx):
    (ctx.folder / "partial.part").write_bytes(b"x")


def _left_in_tmp(ctx):
    import tempfile
    tempfile.mkstemp()


def _refused(ctx):
    from mobilenetv2.errors import WeightsError
    raise WeightsError("refused properly")


def _python_open_of_the_fifo_sentinel(ctx):
    os.close(os.open(ctx.fifo, os.O_RDONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("run, outcome", [
    (_leak, "leak"), (_foreign, "foreign"), (_crash, "signal"), (_hang, "hang"), (_left, "left"),
    (_left_in_tmp, "left"), (_refused, "refused"), (_python_open_of_the_fifo_sentinel, "leak"),
])
def test_the_harness_sees_each_failure(monkeypatch, run, outcome):
    monkeypatch.setitem(harness.TIMEOUTS, "selftest", 3.0)
    [result] = harness.run_cases([("selftest", 0)], {"selftest": (_make_nothing, run)}, seed=0, workers=1)
    assert result["outcome"] == outcome, result


def test_a_bare_value_error_from_the_package_s_code_is_foreign(tmp_path):
    """Refused means mobilenetv2.Error (what a user catches), or the system's OSError met in the
    package's code; a ValueError the package raised bare is not one of them."""
    from mobilenetv2.errors import ArgumentError
    code = compile("def bare():\n    raise ValueError('bare')\n"
                   "def missing(path):\n    open(path)\n"
                   "def own():\n    raise ArgumentError('own')\n",
                   str(harness.PACKAGE / "model.py"), "exec")
    ns = {"ArgumentError": ArgumentError}
    exec(code, ns)
    seen = {}
    for name, args in (("bare", ()), ("missing", (tmp_path / "nope",)), ("own", ())):
        try:
            ns[name](*args)
        except Exception as exc:
            seen[name] = harness.package_error(exc)
    assert seen == {"bare": False, "missing": True, "own": True}
