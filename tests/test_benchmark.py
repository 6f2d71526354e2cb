"""The benchmark runs, reports consistent numbers and writes its JSON (timing itself is not tested)."""
import json
import time

import pytest

from mobilenetv2.engines import native
from mobilenetv2.tools.benchmark import main, round_order


def test_small_run_writes_consistent_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["--variants", "0.35_96", "--runs", "3", "--warmup", "1", "--numpy-runs", "2",
                 "--engines", "c,numpy", "--threads", "1", "--warmup-seconds", "0.05", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["run"]["warmup"] == {"calls": 1, "seconds": 0.05}
    assert data["run"]["cores"] >= 1 and data["run"]["backend"]
    engines = {r["engine"] for r in data["results"]}
    assert "numpy" in engines
    for r in data["results"]:
        assert r["variant"] == "0.35_96" and r["batch"] == 1
        assert 0 < r["min_ms"] <= r["median_ms"] and r["p10_ms"] <= r["p90_ms"]
        assert r["img_per_s"] == pytest.approx(1000 / r["median_ms"])
        # 0.35_96 is 11.9 M MACs (the published table's 11 M): 2 flops each
        assert r["gflops"] == pytest.approx(2 * 11_934_128 / r["median_ms"] / 1e6)
        assert r["gflops"] > 0 and r["peak_rss_mb"] > 0
        assert r["precision"] == "float32" and r["threads"] in (1, "BLAS") and r["isa"]
    peaks = data["run"]["fma_peak_gflops_per_core"]
    if native.available():
        c_row = next(r for r in data["results"] if r["engine"] == "c")
        assert c_row["isa"] == native.isa()
        assert set(peaks) == set(native.isas()) - {"scalar"}
        if peaks:  # the share of the FMA loop's peak is the two measured numbers' ratio (both are
            # timings: on a busy machine either may be slowed, so no order between them is asserted)
            assert c_row["gflops"] > 0 and all(p > 0 for p in peaks.values())
            assert c_row["percent_of_peak"] == pytest.approx(100 * c_row["gflops"] / max(peaks.values()))
            assert f"{c_row['percent_of_peak']:.0f}%" in capsys.readouterr().out.split("\nc ")[1]
    else:  # the C engine cannot run: the run says so instead of timing it
        assert "c" not in engines
    assert peaks or not native.available() or native.isa() == "scalar"
    numpy_row = next(r for r in data["results"] if r["engine"] == "numpy")
    assert numpy_row["percent_of_peak"] is None  # its BLAS picks its own threads
    # the cache-line round trip between the first CPUs, at the start, the end and around each block
    from mobilenetv2.tools.benchmark import core_pairs
    pairs = {f"{a}-{b}" for a, b in core_pairs()}
    trips = data["run"]["core_round_trip_ns"]
    blocks = [r["core_round_trip_ns"][k] for r in data["results"] for k in ("before", "after")]
    # and around each measurement: one per round that timed the row
    for r in data["results"]:
        own = r["core_round_trip_ns_by_round"]
        assert len(own) == len(r["round_medians_ms"]) == data["run"]["runs"]["rounds"]
        assert [t is not None for t in own] == [m is not None for m in r["round_medians_ms"]]
        blocks += [t[k] for t in own if t for k in ("before", "after")]
    assert all(isinstance(r["cores_apart"], bool) for r in data["results"])
    assert all(r["steal_share"] is None or 0 <= r["steal_share"] <= 1 for r in data["results"])
    if native.available():  # the C row against no float32 peer (NumPy is none): no summary to give
        assert data["run"]["summary"] is None
    for measured in [trips["start"], trips["end"]] + blocks:
        assert set(measured) == pairs
        assert all((ns is not None and ns > 0) == native.available() for ns in measured.values())


def test_warmup_runs_untimed_calls_until_its_time_is_up():
    from mobilenetv2.tools.benchmark import call_times
    calls = []

    def fn():
        calls.append(time.perf_counter())
        time.sleep(0.01)
    times = call_times(fn, runs=3, warmup=2, warmup_seconds=0.1)
    assert len(times) == 3 and all(t >= 0.01 for t in times)
    assert len(calls) > 3 + 2  # more untimed calls than the 2 asked for ...
    assert calls[-3] - calls[0] >= 0.099  # ... until 0.1 s had passed
    calls.clear()
    call_times(fn, runs=1, warmup=2, warmup_seconds=0.0)
    assert len(calls) == 3


def test_fma_peak_is_none_where_the_cpu_lacks_the_isa():
    from mobilenetv2.tools.benchmark import fma_peak_gflops
    assert fma_peak_gflops("scalar") is None
    for isa in ("avx2", "avx512"):
        got = fma_peak_gflops(isa, rounds=100_000, repeats=1)
        assert (got is not None and got > 0) == (native.available() and isa in native.isas())


def test_core_pairs_are_the_first_two_cpus_and_the_first_and_last():
    from mobilenetv2.tools.benchmark import core_pairs
    assert core_pairs([3]) == []
    assert core_pairs([1, 0]) == [(0, 1)]
    assert core_pairs([7, 0, 5, 2]) == [(0, 2), (0, 7)]


def test_cores_apart_flags_a_block_whose_round_trip_rose_past_twice_the_runs_lowest():
    from mobilenetv2.tools.benchmark import cores_apart
    lowest = {"0-1": 53.0, "0-15": 150.0}
    assert cores_apart({"0-1": 59.0}, {"0-1": 320.0}, lowest) == {"0-1": (59.0, 320.0, 53.0)}  # moved apart
    assert cores_apart({"0-1": 341.0}, {"0-1": 62.0}, lowest) == {"0-1": (341.0, 62.0, 53.0)}  # came together
    assert cores_apart({"0-1": 59.0}, {"0-1": 106.0}, lowest) == {}  # 2x the lowest exactly: not flagged
    assert cores_apart({"0-1": 59.0, "0-15": 160.0}, {"0-1": 62.0, "0-15": 340.0}, lowest) == {
        "0-15": (160.0, 340.0, 150.0)}
    assert cores_apart({"0-1": None}, {"0-1": 320.0}, lowest) == {}  # a pair not measured says nothing
    assert cores_apart({}, {}, {}) == {}  # one CPU: no pairs


def _bench_with_round_trips(tmp_path, capsys, monkeypatch, readings):
    """A one-measurement bench (NumPy, round 3 of 3) whose round_trips() read ``readings`` (ns
    between CPUs 0 and 1): the run's start, the block's before, the measurement's before and
    after, the block's after, the run's end.  (what it printed, its JSON)"""
    from mobilenetv2.tools import benchmark
    measured = iter([{"0-1": ns} for ns in readings])
    monkeypatch.setattr(benchmark, "round_trips", lambda: next(measured))
    out = tmp_path / "b.json"
    assert main(["--variants", "0.35_96", "--runs", "2", "--warmup", "1", "--engines", "numpy",
                 "--numpy-runs", "1", "--warmup-seconds", "0", "--json", str(out)]) == 0
    return capsys.readouterr().out, json.loads(out.read_text())


def test_a_block_whose_cores_moved_apart_is_flagged_in_the_table_and_json(tmp_path, capsys, monkeypatch):
    printed, data = _bench_with_round_trips(tmp_path, capsys, monkeypatch, [50.0, 50.0, 60.0, 60.0, 400.0, 55.0])
    assert "# 0.35_96 batch 1: the cache-line round trip between CPUs 0-1 went 50 -> 400 ns (lowest of the run 50)" \
        in printed
    assert "own measurements" not in printed
    assert [r["cores_apart"] for r in data["results"]] == [True]
    assert [r["rounds_cores_apart"] for r in data["results"]] == [[]]
    assert data["results"][0]["core_round_trip_ns_by_round"] == [None, None, {"before": {"0-1": 60.0},
                                                                               "after": {"0-1": 60.0}}]
    assert data["run"]["core_round_trip_ns"] == {"start": {"0-1": 50.0}, "end": {"0-1": 55.0}}


def test_a_row_whose_own_measurement_saw_the_cores_apart_is_flagged(tmp_path, capsys, monkeypatch):
    """The host can move the vCPUs apart and back inside a block: the round trip around each
    measurement flags the row though the block's before and after look alike."""
    printed, data = _bench_with_round_trips(tmp_path, capsys, monkeypatch, [50.0, 52.0, 330.0, 55.0, 51.0, 53.0])
    assert ("# 0.35_96 batch 1: the cache-line round trip went past twice the run's lowest around these "
            "multi-thread rows' own measurements, though not around the block: numpy BLAS round 3 "
            "(0-1 330 -> 55 ns) (lowest 0-1 50 ns)") in printed
    assert "# 0.35_96 batch 1: the cache-line round trip between" not in printed
    (row,) = data["results"]
    assert row["cores_apart"] is True and row["rounds_cores_apart"] == [2]


def test_a_one_thread_row_is_not_excused_by_cores_apart(tmp_path, capsys, monkeypatch):
    """Two vCPUs on two dies slow the threads that meet, not a row of one thread: such a row in a
    block whose round trip rose is not flagged, so the summary does not count it as excused (a
    1-thread row behind was counted among '2 of the 2 behind flagged')."""
    from mobilenetv2.engines import native
    from mobilenetv2.tools import benchmark
    if not native.available():
        pytest.skip("the C extension is not built")
    calls = iter(range(10 ** 6))
    monkeypatch.setattr(benchmark, "round_trips", lambda: {"0-1": 50.0 if next(calls) < 2 else 400.0})
    out = tmp_path / "b.json"
    assert main(["--variants", "0.35_96", "--runs", "2", "--warmup", "1", "--engines", "c", "--threads", "1,2",
                 "--warmup-seconds", "0", "--json", str(out)]) == 0
    assert "# 0.35_96 batch 1: the cache-line round trip between CPUs 0-1 went 50 -> 400 ns" in capsys.readouterr().out
    rows = {r["threads"]: r for r in json.loads(out.read_text())["results"]}
    assert rows[1]["cores_apart"] is False and rows[2]["cores_apart"] is True


def test_cpu_jiffies_and_steal_share_read_proc_stat_as_the_kernel_writes_it():
    from mobilenetv2.tools.benchmark import cpu_jiffies, steal_share
    # user nice system idle iowait irq softirq steal guest guest_nice (guest counted in user)
    assert cpu_jiffies("cpu  100 0 50 800 10 0 5 35 20 0\ncpu0 50 0 25 400 5 0 2 18 10 0\n") == (1000, 35)
    assert cpu_jiffies("cpu 1 2 3 4 5 6 7\n") == (28, 0)  # a kernel without the steal column
    assert cpu_jiffies("intr 1 2 3\n") is None and cpu_jiffies("") is None and cpu_jiffies("cpu 1 x\n") is None
    assert steal_share((1000, 35), (1200, 55)) == pytest.approx(0.1)
    assert steal_share((1000, 35), (1000, 35)) is None  # no tick passed
    assert steal_share(None, (1200, 55)) is None and steal_share((1000, 35), None) is None
    got = cpu_jiffies()  # this machine's own (Linux, where the tests run)
    assert got is None or (got[0] > 0 and 0 <= got[1] <= got[0])


def test_a_block_the_host_stole_from_is_flagged(tmp_path, capsys, monkeypatch):
    from mobilenetv2.tools import benchmark
    readings = iter([(1000, 10), (1100, 10), (1300, 50), (1400, 51)])  # run start, block before/after, run end
    monkeypatch.setattr(benchmark, "cpu_jiffies", lambda text=None: next(readings))
    out = tmp_path / "b.json"
    assert main(["--variants", "0.35_96", "--runs", "2", "--warmup", "1", "--engines", "numpy",
                 "--numpy-runs", "1", "--warmup-seconds", "0", "--json", str(out)]) == 0
    assert "# 0.35_96 batch 1: the host ran other work on our CPUs for 20 % of their time" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [r["steal_share"] for r in data["results"]] == [pytest.approx(0.2)]
    assert data["run"]["steal_share"] == pytest.approx(41 / 400)


def test_ahead_summary_counts_rows_ahead_and_the_flagged_ones_behind():
    from mobilenetv2.tools.benchmark import ahead_summary

    def row(engine, ratio, apart=False, steal=0.0):
        return {"engine": engine, "speedup_vs_best_peer": ratio, "cores_apart": apart, "steal_share": steal}
    rows = [row("c", 1.25), row("c", 0.92, apart=True), row("c", 1.02), row("c", 0.98, steal=0.2),
            row("c", 0.99, steal=0.01), row("litert", 1.0), row("numpy", None)]
    assert ahead_summary(rows) == ("C vs the best float32 peer: ahead in 2 of 5 rows (0.92x-1.25x); "
                                   "2 of the 3 behind flagged (cores apart or CPU time stolen)")
    assert ahead_summary(rows[:1] + rows[2:3]) == "C vs the best float32 peer: ahead in 2 of 2 rows (1.02x-1.25x)"
    assert ahead_summary([row("c", 0.9)]).endswith("; none of the 1 behind flagged")
    assert ahead_summary([row("c", None), row("ort", 1.0)]) is None  # no peer ran: no summary


def test_core_round_trip_refuses_what_it_cannot_measure():
    import os
    from mobilenetv2.tools.benchmark import core_round_trip_ns
    allowed = sorted(os.sched_getaffinity(0))
    outside = max(allowed) + 1
    assert core_round_trip_ns(allowed[0], allowed[0]) is None  # one CPU with itself: no line moves
    assert core_round_trip_ns(allowed[0], outside) is None
    assert core_round_trip_ns(outside, allowed[0]) is None
    assert core_round_trip_ns(-1, allowed[0]) is None
    if len(allowed) >= 2:
        assert core_round_trip_ns(allowed[0], allowed[1], rounds=0) is None


@pytest.mark.skipif(not native.available(), reason="the round trip is timed by the C extension (csrc/peak.c)")
def test_core_round_trip_is_timed_and_bounded():
    import os
    from mobilenetv2.tools.benchmark import core_round_trip_ns
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip(f"the round trip needs two CPUs; this process may run on {allowed} only")
    a, b = allowed[0], allowed[-1]
    for rounds in (1, 1000):
        got = core_round_trip_ns(a, b, rounds)
        # a line's round trip between two cores: tens to hundreds of nanoseconds; up to two time
        # slices where another process holds a CPU (a shared machine), never zero
        assert got is not None and 1.0 < got < 50e6
    start = time.perf_counter()
    assert core_round_trip_ns(a, b, 10**9) is not None  # a billion rounds asked: stops at half a second
    assert time.perf_counter() - start < 5.0


def test_unknown_variant_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["--variants", "2.0_224"])
    assert "unknown variant '2.0_224'" in capsys.readouterr().err


def _pointwise_peak():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "pointwise_peak.py"
    spec = importlib.util.spec_from_file_location("pointwise_peak", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pointwise_peak_covers_every_pointwise_layer(tmp_path, capsys, monkeypatch):
    from mobilenetv2 import MobileNetV2
    from mobilenetv2.network import arch, layers as L
    from mobilenetv2.engines import plan as P
    if not native.available() or native.isa() == "scalar":
        pytest.skip("the peak report needs the C extension with AVX2+FMA or AVX-512")
    monkeypatch.setattr(P, "STEM_FUSE_MIN_BYTES", float("inf"))  # the first block stays separate too
    monkeypatch.setattr(P, "FUSE_SMALL_MIN_BYTES", float("inf"))  # and the blocks inside L2
    out = tmp_path / "p.json"
    assert _pointwise_peak().main(["--variant", "0.35_96", "--runs", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
    pointwise = [layer for layer in model.layers if isinstance(layer, L.Dense) or
                 (isinstance(layer, L.Conv2D) and layer.kernel == 1)]
    assert sum(s["layers"] for s in data["shapes"]) == len(pointwise) == 35
    macs = arch.layer_macs(model.layers, (96, 96, 3))
    assert data["summary"]["pointwise_macs"] == sum(macs[layer.name] for layer in pointwise)
    assert data["summary"]["peak_gflops"] > 0
    for s in data["shapes"]:  # 0.35_96 fuses no block (its expanded tensors are small)
        assert s["alone_gflops"] > 0 and s["in_run_gflops"] > 0
    assert data["summary"]["in_run_layers"] == 35 and data["summary"]["fused_blocks"] == 0
    assert "% peak" in capsys.readouterr().out


def test_openvino_is_pinned_to_float32_and_bf16_only_when_asked(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    if not native.available():
        pytest.skip("compares the C core's row with OpenVINO's: the C extension is not built")
    out = tmp_path / "b.json"
    assert main(["--variants", "0.35_96", "--runs", "2", "--warmup", "1", "--rounds", "1",
                 "--engines", "openvino", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(r["engine"], r["precision"]) for r in data["results"]] == [("openvino", "float32")]
    assert main(["--variants", "0.35_96", "--runs", "2", "--warmup", "1", "--rounds", "1",
                 "--engines", "c,openvino", "--bf16", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert {(r["engine"], r["precision"]) for r in rows} == {
        ("c", "float32"), ("openvino", "float32"), ("openvino-bf16", "bfloat16")}
    c = next(r for r in rows if r["engine"] == "c")
    ov = next(r for r in rows if r["engine"] == "openvino")
    assert c["speedup_vs_best_peer"] == pytest.approx(ov["median_ms"] / c["median_ms"])  # bf16 never the peer


FAKE_OPENVINO = """
# A stand-in for OpenVINO's CPU plugin: records the precision hint asked for and reports back
# {reports!r} (None: what was asked), as a plugin that defaults to bfloat16 might.
import time
__version__ = "0.0-fake"


class _Compiled:
    def __init__(self, config):
        self.config = config

    def get_property(self, name):
        return {reports!r} or self.config[name]

    def create_infer_request(self):
        return self

    def infer(self, inputs):
        time.sleep(0.002 if self.config["INFERENCE_PRECISION_HINT"] == "f32" else 0.001)
        if not hasattr(self, "y"):  # the network's output, as the bench checks before timing
            from mobilenetv2.tools.benchmark import reference_output
            x = inputs[0]
            self.y = reference_output(0.35, x.shape[1], len(x))
        return {{"output": self.y}}


class Core:
    def compile_model(self, path, device, config):
        assert device == "CPU" and config["INFERENCE_NUM_THREADS"] >= 1
        return _Compiled(config)
"""


@pytest.mark.parametrize("reports", [None, "bf16"])
def test_openvino_rows_are_the_precision_asked_for_with_a_stand_in_plugin(reports, tmp_path, monkeypatch, capsys):
    """Where OpenVINO is not installed (CI) the same logic, on a stand-in plugin in the children's
    path: the float32 row asks for f32 and the --bf16 row for bf16, each labelled so, the bf16 row
    never the best peer (its 1 ms against the f32 row's 2); a plugin that runs bfloat16 whatever
    it is asked (reports "bf16") gets no float32 row, and the bench says why."""
    pytest.importorskip("onnx")
    if not native.available():
        pytest.skip("compares the C core's row with OpenVINO's: the C extension is not built")
    import sys
    fake = tmp_path / "fake"
    (fake / "openvino").mkdir(parents=True)
    (fake / "openvino" / "__init__.py").write_text(FAKE_OPENVINO.format(reports=reports))
    monkeypatch.syspath_prepend(str(fake))  # the spawned children get the parent's sys.path
    monkeypatch.delitem(sys.modules, "openvino", raising=False)
    out = tmp_path / "b.json"
    assert main(["--variants", "0.35_96", "--runs", "4", "--warmup", "1", "--rounds", "1", "--engines",
                 "c,openvino", "--bf16", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {(r["engine"], r["precision"]): r for r in data["results"]}
    if reports is None:
        assert set(rows) == {("c", "float32"), ("openvino", "float32"), ("openvino-bf16", "bfloat16")}
        assert rows["openvino-bf16", "bfloat16"]["median_ms"] < rows["openvino", "float32"]["median_ms"]
        assert rows["c", "float32"]["speedup_vs_best_peer"] == pytest.approx(
            rows["openvino", "float32"]["median_ms"] / rows["c", "float32"]["median_ms"])
    else:
        assert ("openvino", "float32") not in rows
        assert "OpenVINO ran at precision bf16, not f32 as asked" in data["skipped"]["openvino"]
    assert "bf16 rows are reduced precision" in capsys.readouterr().out or reports == "bf16"


def test_plot_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    if not native.available():
        pytest.skip("plots the C core's rows: the C extension is not built")
    png = tmp_path / "chart.png"
    assert main(["--variants", "0.35_96,0.5_96", "--runs", "2", "--warmup", "1", "--rounds", "1",
                 "--engines", "c", "--threads", "1", "--json", str(tmp_path / "b.json"),
                 "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plot_writes_exactly_the_path_given_and_refuses_a_folder_before_timing(tmp_path, capsys, monkeypatch):
    """matplotlib's savefig writes 'chart.png' when given 'chart', and '/tmp.png' for a folder
    '/tmp' (after the whole bench had run): the plot goes to the path as given, in the format its
    suffix names, and a folder is refused before anything is timed."""
    pytest.importorskip("matplotlib")
    from mobilenetv2.tools import benchmark
    rows = [dict(engine=e, variant=v, batch=1, threads=1, median_ms=ms)
            for e, v, ms in [("c", "0.35_96", 0.3), ("c", "0.5_96", 0.4), ("litert", "0.35_96", 0.4)]]
    header = {"cpu": "test CPU", "date": "2026-12-04"}
    assert benchmark.plot(rows, str(tmp_path / "chart"), header) == str(tmp_path / "chart")
    assert (tmp_path / "chart").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    benchmark.plot(rows, str(tmp_path / "chart.svg"), header)
    assert b"<svg" in (tmp_path / "chart.svg").read_bytes()[:1000]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart", "chart.svg"]

    def no_timing(*args, **kw):
        raise AssertionError("timed before refusing the plot path")
    monkeypatch.setattr(benchmark, "_model", no_timing)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(SystemExit):
        main(["--variants", "0.35_96", "--engines", "c", "--plot", str(folder)])
    assert "--plot path" in capsys.readouterr().err and not any(folder.iterdir())
    assert not (tmp_path / "folder.png").exists()


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kw):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kw)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(SystemExit):
        main(["--variants", "0.35_96", "--plot", "x.png"])
    assert "--plot needs matplotlib" in capsys.readouterr().err


def _script(name):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interleaved_times_c_on_every_simd_isa(capsys, tmp_path):
    if not native.available() or native.isa() == "scalar":
        pytest.skip("needs the C extension with a SIMD ISA")
    out_json = tmp_path / "i.json"
    assert _script("interleaved").main(["--variants", "0.35_96", "--rounds", "2", "--gap", "0.5",
                                        "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "0.5 ms gap before each call" in out
    line = next(row for row in out.splitlines() if row.startswith("0.35_96:"))
    report = json.loads(out_json.read_text())
    assert report["gap_ms"] == 0.5 and report["rounds"] == 2
    for isa in native.isas()[1:]:
        assert f"C {isa} " in line
        got = report["variants"]["0.35_96"][f"C {isa}"]
        assert 0 < got["min_ms"] <= got["p10_ms"] <= got["median_ms"]
        assert f"C {isa} {got['min_ms']:.3f} / {got['p10_ms']:.3f}" in line


def test_accuracy_reports_every_isa_against_float64(tmp_path):
    if not native.available():
        pytest.skip("needs the C extension")
    out = tmp_path / "a.json"
    assert _script("accuracy").main(["--variant", "0.35_96", "--json", str(out)]) == 0
    errors = json.loads(out.read_text())["errors"]
    runs = [errors[f"C {isa}"] for isa in native.isas()]
    assert all(r == runs[0] for r in runs)  # the same bits, so the same error, on every ISA
    assert 0 < runs[0]["max_rel"] < 1e-4


def test_bench_segmentation_times_c_and_onnx_runtime_on_the_same_model(tmp_path, capsys):
    """`mobilenetv2 bench --segmentation`: the DeepLabV3 model (random weights, a small input to stay
    quick) on the C core and on ONNX Runtime running its ONNX export; both agree to float32
    rounding and the JSON has one row per engine and thread count."""
    pytest.importorskip("onnxruntime", reason="the segmentation bench times ONNX Runtime (pip install onnxruntime)")
    if not native.available():
        pytest.skip("the segmentation bench times the C core: the C extension is not built")
    from mobilenetv2.cli import main as cli
    args = ["bench", "--segmentation", "random", "--size", "65", "--threads", "1,2", "--runs", "2",
            "--warmup", "1", "--rounds", "1", "--out", str(tmp_path)]
    assert cli(args) == 0
    out = capsys.readouterr().out
    report = json.loads(next(tmp_path.glob("segmentation-*.json")).read_text())
    assert report["weights"] == "random" and report["size"] == 65
    assert sorted((r["engine"], r["threads"]) for r in report["rows"]) == [("c", 1), ("c", 2), ("ort", 1), ("ort", 2)]
    assert all(r["median_ms"] > 0 for r in report["rows"])
    assert report["agreement_rel_l2"] < 1e-4
    assert "C core vs ONNX Runtime outputs" in out


def test_bench_segmentation_refuses_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the segmentation bench times ONNX Runtime")
    from mobilenetv2.cli import main as cli
    assert cli(["bench", "--segmentation", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mobilenetv2 bench: error:")


def test_bench_segmentation_refuses_a_classification_checkpoint(tmp_path, capsys, monkeypatch):
    """A classifier's folder was timed and reported as DeepLabV3 (JSON "model": "deeplabv3_...")."""
    pytest.importorskip("onnxruntime", reason="the segmentation bench times ONNX Runtime")
    from conftest import require_shared
    from mobilenetv2.cli import main as cli
    folder = str(require_shared("hf", "mobilenet_v2_0.35_96"))
    monkeypatch.chdir(tmp_path)
    assert cli(["bench", "--segmentation", folder, "--size", "65", "--threads", "1", "--runs", "1",
                "--warmup", "0", "--rounds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MobileNetV2ForImageClassification, not a segmentation model" in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,says", [
    (["--threads", "a"], "comma list of whole numbers"), (["--threads", "0"], "--threads must each be"),
    (["--size", "5"], "--size must be from 32"), (["--runs", "0"], "--runs must be from 1"),
    (["--rounds", "0"], "--rounds must be from 1"), (["--warmup", "-1"], "--warmup must be from 0"),
    (["--lockstep", "-1"], "--lockstep must be from 0"), (["--out", "AFILE"], "is a file")])
def test_bench_segmentation_refuses_bad_arguments_before_timing(args, says, tmp_path, capsys, monkeypatch):
    """Each was an internal error (threads 0, rounds 0, lockstep -1), an empty report (runs 0,
    warmup -1) or an error after all the timing (--out a file) before."""
    from mobilenetv2.tools import benchmark_segmentation
    from mobilenetv2.cli import main as cli

    def no_model(*a, **kw):
        raise AssertionError("built the model before refusing the arguments")
    monkeypatch.setattr(benchmark_segmentation, "load_model", no_model)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "AFILE").write_bytes(b"")
    with pytest.raises(SystemExit) as info:  # the parser's exit, status 2, as the process gives it
        cli(["bench", "--segmentation", "random", "--size", "65"] + args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["AFILE"]


def test_huge_pages_script_times_both_sides_and_their_memory(capsys, tmp_path):
    if not native.available():
        pytest.skip("needs the C extension (the packed weights are the C plan's)")
    from mobilenetv2.engines import machine
    out_json = tmp_path / "h.json"
    assert _script("huge_pages").main(["--variants", "0.35_96", "--calls", "3", "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert report["huge_page"] == machine.HUGE_PAGE and report["calls"] == 3
    assert [(r["variant"], r["threads"], r["order"]) for r in report["speed"]] == \
        [("0.35_96", 1, "huge+plain"), ("0.35_96", 1, "plain+huge")]
    for r in report["speed"]:
        assert r["huge_ms"] > 0 and r["plain_ms"] > 0 and r["ratio"] > 0
    (mem,) = report["memory"]
    assert mem["variant"] == "0.35_96" and mem["rss_mb_huge"] > 10 and mem["rss_mb_plain"] > 10
    out = capsys.readouterr().out
    assert f"huge page {machine.HUGE_PAGE} bytes" in out


@pytest.mark.parametrize("argv", [["--calls", "0"], ["--variants", "2.0_224"], ["--threads", "one"],
                                  ["--threads", "0"]])
def test_huge_pages_script_refuses_bad_arguments(argv):
    if not native.available():  # (the run without the extension does not copy benchmarks/ either)
        pytest.skip("needs the C extension (the packed weights are the C plan's)")
    with pytest.raises(SystemExit) as exc:
        _script("huge_pages").main(argv)
    assert exc.value.code == 2


def test_oversubscribed_script_ab_times_both_checkouts_under_a_pinned_hog(capsys, tmp_path):
    """--other: this checkout against another (here itself) in alternating fresh processes, with a
    busy process pinned to one of this process's CPUs; each pair's ratio from the two sides'
    medians."""
    if not native.available():  # (the run without the extension does not copy benchmarks/ either)
        pytest.skip("needs the C extension (the script times the C plan)")
    import os
    from pathlib import Path
    here = Path(__file__).resolve().parent.parent
    cpu = min(os.sched_getaffinity(0))
    out_json = tmp_path / "o.json"
    assert _script("oversubscribed").main(["--variant", "0.35_96", "--threads", "2", "--batches", "4", "--runs", "3",
                                           "--hogs", "1", "--hog-cpus", str(cpu), "--other", str(here),
                                           "--pairs", "2", "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert report["hog_cpus"] == [cpu] and report["other"] == str(here)
    (row,) = report["rows"]
    assert (row["batch"], row["threads"]) == (4, 2) and len(row["this"]) == len(row["other"]) == 2
    ratios = sorted(a["median_ms"] / b["median_ms"] for a, b in zip(row["this"], row["other"]))
    assert row["ratio"] == pytest.approx(sum(ratios) / 2)  # the median of two
    assert all(len(r) and r["median_ms"] > 0 for r in row["this"] + row["other"])
    assert f"pinned to CPUs [{cpu}]" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--hog-cpus", "x"], ["--hog-cpus", "100000"], ["--runs", "0"],
                                  ["--pairs", "0"], ["--hogs", "-1"], ["--other", "/nonexistent"]])
def test_oversubscribed_script_refuses_bad_arguments(argv):
    if not native.available():
        pytest.skip("needs the C extension (the script times the C plan)")
    with pytest.raises(SystemExit) as exc:
        _script("oversubscribed").main(argv)
    assert exc.value.code == 2


def _benchmarks_script(name):
    from pathlib import Path
    if not (Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py").exists():
        pytest.skip("benchmarks/ is not in this copy (the run without the extension copies the package "
                    "and tests only)")
    return _script(name)


def test_cross_die_reads_a_bench_json_s_rounds_by_their_own_round_trips(tmp_path, capsys, monkeypatch):
    """cross_die.py --from-bench: each multi-thread row's rounds sorted by the round trip measured
    before and after that round's own measurement (one die: both under 150 ns; across: both over
    200; one that moved, one not timed, or one without a reading left out); 1-thread and NumPy
    rows skipped; a file that is no bench JSON is one line and exit 1."""
    cross_die = _benchmarks_script("cross_die")

    def trips(b, a):
        return {"before": {"0-1": b}, "after": {"0-1": a}}
    rows = [{"variant": "0.35_96", "batch": 1, "threads": 2, "engine": "c",
             "round_medians_ms": [0.18, 0.29, 0.19, 0.30, 0.25, None],
             "core_round_trip_ns_by_round": [trips(55, 60), trips(330, 340), trips(58, 57), trips(350, 320),
                                             trips(60, 330), None]},
            {"variant": "0.35_96", "batch": 1, "threads": 2, "engine": "litert",
             "round_medians_ms": [0.24, 0.50], "core_round_trip_ns_by_round": [trips(56, 59), trips(None, 340)]},
            {"variant": "0.35_96", "batch": 1, "threads": 1, "engine": "c",
             "round_medians_ms": [0.31], "core_round_trip_ns_by_round": [trips(330, 330)]},
            {"variant": "0.35_96", "batch": 1, "threads": "BLAS", "engine": "numpy",
             "round_medians_ms": [5.0], "core_round_trip_ns_by_round": [trips(55, 55)]}]
    got = cross_die.from_bench({"results": rows})
    assert got == [{"variant": "0.35_96", "batch": 1, "threads": 2, "engine": "c", "near_ms": pytest.approx(0.185),
                    "near_rounds": 2, "far_ms": pytest.approx(0.295), "far_rounds": 2},
                   {"variant": "0.35_96", "batch": 1, "threads": 2, "engine": "litert", "near_ms": 0.24,
                    "near_rounds": 1, "far_ms": None, "far_rounds": 0}]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"run": {"cpu": "x", "date": "d"}, "results": rows}))
    monkeypatch.setattr("sys.argv", ["cross_die.py", "--from-bench", str(path)])
    cross_die.main()
    out = capsys.readouterr().out
    assert "1.59x" in out and "0.185 (2)" in out and "- (0)" in out
    (tmp_path / "bad.json").write_text('{"results": 3}')
    monkeypatch.setattr("sys.argv", ["cross_die.py", "--from-bench", str(tmp_path / "bad.json")])
    with pytest.raises(SystemExit, match="is no bench JSON with round trips per round"):
        cross_die.main()


def test_scaling_table_by_hand():
    """Medians over each thread count's processes, speedup over 1 thread, excess over perfect
    scaling us(T) - us(1)/T; the whole plan first, then the ops by their excess at the most threads."""
    got = {1: [{"a": ["pointwise", 4e-6], "b": ["depthwise", 8e-6], "(whole plan)": ["plan", 12e-6]},
               {"a": ["pointwise", 6e-6], "b": ["depthwise", 8e-6], "(whole plan)": ["plan", 14e-6]},
               {"a": ["pointwise", 5e-6], "b": ["depthwise", 9e-6], "(whole plan)": ["plan", 13e-6]}],
           4: [{"a": ["pointwise", 3e-6], "b": ["depthwise", 2e-6], "(whole plan)": ["plan", 5e-6]},
               {"a": ["pointwise", 3e-6], "b": ["depthwise", 2e-6], "(whole plan)": ["plan", 5e-6]},
               {"a": ["pointwise", 3e-6], "b": ["depthwise", 2e-6], "(whole plan)": ["plan", 5e-6], "c": ["x", 1.0]}]}
    rows = _benchmarks_script("scaling").table(got)
    assert [r["op"] for r in rows] == ["(whole plan)", "a", "b"]  # "c": not in every process
    plan, a, b = rows
    assert a["us"] == pytest.approx({1: 5.0, 4: 3.0}) and b["us"] == pytest.approx({1: 8.0, 4: 2.0})
    assert a["speedup"][4] == pytest.approx(5 / 3) and b["speedup"][4] == pytest.approx(4.0)
    assert a["excess_us"][4] == pytest.approx(3 - 5 / 4) and b["excess_us"][4] == pytest.approx(0.0)
    assert plan["us"] == pytest.approx({1: 13.0, 4: 5.0}) and plan["excess_us"][1] == pytest.approx(0.0)


def test_scaling_script_profiles_every_thread_count(tmp_path, capsys):
    if not native.available():
        pytest.skip("needs the C extension (the script profiles the C plan)")
    out_json = tmp_path / "s.json"
    assert _benchmarks_script("scaling").main(["--variant", "0.35_96", "--threads", "2", "--rounds", "1",
                                               "--runs", "3", "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert report["threads"] == [1, 2] and report["variant"] == "0.35_96"
    assert [len(report["raw"][t]) for t in ("1", "2")] == [1, 1]
    ops = {r["op"]: r for r in report["ops"]}
    assert report["ops"][0]["op"] == "(whole plan)" and len(ops) > 10 and "global_average_pooling2d" in ops
    for t in ("1", "2"):  # one process per count: the plan's time is its ops' sum
        assert ops["(whole plan)"]["us"][t] == pytest.approx(
            sum(r["us"][t] for k, r in ops.items() if k != "(whole plan)"), rel=1e-6)
    assert "excess over perfect scaling" in capsys.readouterr().out


_REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def _exit_status(call):
    """The exit status of a script's ``main``: its return value, or its SystemExit's code (the
    parser's refusal)."""
    try:
        return call()
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("script,argv", [
    ("scaling", ["--threads", "0"]), ("scaling", ["--threads", "x"]), ("scaling", ["--threads", "100000"]),
    ("scaling", ["--rounds", "0"]), ("scaling", ["--variant", "2.0_224"]),
    ("balance", ["--threads", "0"]), ("balance", ["--threads", "x"]), ("balance", ["--variants", "9.9_1"]),
    ("balance", ["--cores", "0"]),
    ("plan_ab", []), ("plan_ab", ["--set", "NO_SUCH=1"]), ("plan_ab", ["--set", "MAX_BAND"]),
    ("plan_ab", ["--set", "MAX_BAND=x"]), ("plan_ab", ["--set", "FUSE_MIN_BYTES=nan"]),
    ("plan_ab", ["--set", "FUSE_MIN_BYTES=-1"]), ("plan_ab", ["--set", "MAX_BAND=0"]),
    ("plan_ab", ["--set", "MAX_BAND=inf"]), ("plan_ab", ["--set", "MAX_BAND=2.5"]),
    ("plan_ab", ["--set", "BALANCE_THREADS=-2"]), ("plan_ab", ["--set", "ALIGN=32"]),
    ("plan_ab", ["--set", "MAX_BAND=2", "--threads", "0"]), ("plan_ab", ["--set", "MAX_BAND=2", "--batches", ""]),
    ("plan_ab", ["--set", "MAX_BAND=2", "--variants", "9.9_1"]), ("plan_ab", ["--set", "MAX_BAND=2", "--seconds", "0"]),
    ("settle", ["--variant", "9.9_1"]), ("settle", ["--threads", "0"]), ("settle", ["--every", "0"]),
    ("settle", ["--seconds", "1", "--every", "2"]), ("settle", ["--seconds", "7200"]),
    ("huge_pages", ["--calls", "0"]), ("huge_pages", ["--threads", "one"]),
    ("pointwise_peak", ["--variant", "nope"]), ("pointwise_peak", ["--runs", "0"]),
    ("interleaved", ["--variants", "nope"]), ("interleaved", ["--rounds", "0"]), ("interleaved", ["--batch", "0"]),
    ("interleaved", ["--gap", "-1"]), ("interleaved", ["--gap", "nan"]),
    ("accuracy", ["--variant", "nope"]),
    ("cross_die", ["--variants", "nope"]), ("cross_die", ["--threads", "0"]), ("cross_die", ["--blocks", "0"]),
    ("cross_die", ["--runs", "0"]), ("cross_die", ["--other", "/nonexistent"]),
    ("cross_die", ["--near-ns", "300", "--far-ns", "200"]),
    ("oversubscribed", ["--variant", "nope"]), ("oversubscribed", ["--threads", "0"]),
    ("oversubscribed", ["--threads", "x"]), ("oversubscribed", ["--batches", "0"]), ("oversubscribed", ["--runs", "0"]),
    ("oversubscribed", ["--hog-cpus", "x"]), ("oversubscribed", ["--other", "/nonexistent"]),
    ("plan_cache", ["--threads", "0"]), ("plan_cache", ["--batches", "0"]), ("plan_cache", ["--sizes", "0"]),
    ("stem_fusion", ["--variants", "nope"]), ("stem_fusion", ["--threads", "0"]), ("stem_fusion", ["--rounds", "0"]),
    ("profile_ab", ["--other", str(_REPO), "--variant", "nope"]),
    ("profile_ab", ["--other", str(_REPO), "--threads", "0"]),
    ("profile_ab", ["--other", str(_REPO), "--runs", "0"]), ("profile_ab", ["--other", str(_REPO), "--pairs", "0"]),
    ("profile_ab", ["--other", "/nonexistent"]), ("profile_ab", []),
    ("batch_bench", ["--images", "0"]), ("batch_bench", ["--batch-size", "0"]), ("batch_bench", ["--rounds", "0"]),
    ("batch_bench", ["--size", "5"]),
    ("segmentation_ab", ["--other", str(_REPO), "--size", "0"]),
    ("segmentation_ab", ["--other", str(_REPO), "--rounds", "0"]),
    ("segmentation_ab", ["--other", str(_REPO), "--hf", "/nonexistent"]),
    ("segmentation_ab", ["--other", "/nonexistent"]),
    ("bench", ["--segmentation", "/nonexistent"]), ("bench", ["--variants", "nope"]),
    ("bench_segmentation", ["--segmentation", "/nonexistent"]), ("bench_segmentation", ["--hf", "/nonexistent"])])
def test_benchmark_scripts_refuse_bad_arguments(script, argv, capsys, tmp_path, monkeypatch):
    """Every script answers a bad argument with one line on stderr and exit status 2: no
    traceback, no usage block, nothing started (no hang: segmentation_ab's --hf was a
    RuntimeError in its children and a parent waiting on their pipes)."""
    monkeypatch.chdir(tmp_path)  # a script that went on would write its JSON here, not into the checkout
    assert _exit_status(lambda: _benchmarks_script(script).main(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


_NEEDS = {"profile_ab": ["--other", str(_REPO)], "segmentation_ab": ["--other", str(_REPO)],
          "plan_ab": ["--set", "MAX_BAND=2"]}


@pytest.mark.parametrize("script", ["pointwise_peak", "interleaved", "accuracy", "cross_die", "oversubscribed",
                                    "plan_cache", "stem_fusion", "profile_ab", "batch_bench", "scaling", "balance",
                                    "plan_ab", "settle", "huge_pages", "bench"])
def test_benchmark_scripts_refuse_a_json_in_a_missing_folder_before_any_work(script, capsys, tmp_path, monkeypatch):
    """--json into a folder that does not exist: one line and exit 2 from the parser, before any
    model is built or process started; the folder is not made (bench.py's check, for all)."""
    from mobilenetv2.tools import benchmark

    def no_work(*a, **kw):
        raise AssertionError("started work before refusing --json")
    monkeypatch.setattr(benchmark, "_model", no_work)
    monkeypatch.setattr("mobilenetv2.MobileNetV2.__init__", no_work)
    monkeypatch.setattr("subprocess.run", no_work)
    missing = tmp_path / "missing" / "x.json"
    assert _exit_status(lambda: _benchmarks_script(script).main(_NEEDS.get(script, []) + ["--json", str(missing)])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0], err
    assert not missing.parent.exists()


def test_bench_segmentation_script_refuses_a_missing_out_folder_and_says_its_default(tmp_path, capsys):
    """benchmarks/bench_segmentation.py --out: an existing folder (the package command's check);
    its help gives its own default, benchmarks/results/, not the command's current folder."""
    script = _benchmarks_script("bench_segmentation")
    assert _exit_status(lambda: script.main(["--hf", "random", "--out", str(tmp_path / "missing")])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0], err
    assert not (tmp_path / "missing").exists()
    with pytest.raises(SystemExit) as exc:
        script.main(["--help"])
    assert exc.value.code == 0
    assert "benchmarks/results/" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("script,argv", [
    ("plan_cache", ["--batches", "1", "--sizes", "1", "--threads", "1"]),
    ("oversubscribed", ["--threads", "1", "--batches", "1", "--runs", "1"]),
    ("cross_die", ["--variants", "0.35_96", "--threads", "2", "--blocks", "1", "--runs", "1"])])
def test_benchmark_scripts_write_their_json_in_results_by_default(script, argv, tmp_path, capsys, monkeypatch):
    """cross_die.py, oversubscribed.py and plan_cache.py wrote into the current folder: their JSON
    goes to benchmarks/results/ (here the module's RESULTS, pointed at a temporary folder) under a
    timestamped name, as the other scripts' (cross_die's children and round trips faked)."""
    import types
    module = _benchmarks_script(script)
    assert module._args.RESULTS == _REPO / "benchmarks" / "results"
    monkeypatch.setattr(module._args, "RESULTS", tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    if script == "cross_die":
        monkeypatch.setattr(module, "native", types.SimpleNamespace(available=lambda: True))
        monkeypatch.setattr(module, "core_pairs", lambda: [(0, 1)])
        monkeypatch.setattr(module, "core_round_trip_ns", lambda a, b: 60.0)
        monkeypatch.setattr(module, "child", lambda root, variants, threads, batch, runs: {"0.35_96 2": 0.2})
    assert _exit_status(lambda: module.main(argv)) == 0
    (written,) = (tmp_path / "results").iterdir()
    assert written.name.startswith(script.replace("_", "-") + "-") and written.suffix == ".json"
    assert json.loads(written.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


def _broken_checkout(folder, body):
    (folder / "mobilenetv2").mkdir(parents=True)
    (folder / "mobilenetv2" / "__init__.py").write_text(body)
    return str(folder)


@pytest.mark.parametrize("body,says", [('raise ImportError("this checkout is broken")', "this checkout is broken"),
                                       ("import os; os._exit(3)", "stopped without a reply")])
def test_segmentation_ab_says_in_one_line_that_a_child_failed(body, says, tmp_path, capsys, monkeypatch):
    """A serving process that cannot start (an exception) or dies without a word: one line in the
    parent, no child traceback, no wait for ever on its pipe (both were a hang)."""
    pytest.importorskip("onnxruntime", reason="segmentation_ab.py times ONNX Runtime")
    from conftest import require_shared
    checkpoint = require_shared("hf", "deeplabv3_mobilenet_v2_1.0_513")
    other = _broken_checkout(tmp_path / "other", body)
    script = _benchmarks_script("segmentation_ab")
    monkeypatch.setitem(__import__("sys").modules, "segmentation_ab", script)  # what the spawned children import
    status = _exit_status(lambda: script.main(
        ["--other", other, "--hf", str(checkpoint), "--size", "33", "--rounds", "1", "--warmup", "0"]))
    # SystemExit's message, which Python prints as the one line on stderr (exit status 1)
    assert isinstance(status, str) and len(status.splitlines()) == 1 and says in status, status
    assert "Traceback" not in capsys.readouterr().err


def test_profile_ab_says_in_one_line_that_a_child_failed(tmp_path, capsys):
    """The other checkout's process fails: its last line (the exception), not its traceback."""
    other = _broken_checkout(tmp_path / "other", 'raise ImportError("this checkout is broken")')
    status = _exit_status(lambda: _benchmarks_script("profile_ab").main(
        ["--other", other, "--variant", "0.35_96", "--pairs", "1", "--runs", "1", "--json", str(tmp_path / "p.json")]))
    assert isinstance(status, str) and len(status.splitlines()) == 1 and "this checkout is broken" in status, status
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_balance_shares_worked_by_hand():
    """benchmarks/balance.py cuts an op as csrc/plan.c does: 14 rows on 8 threads 1,2,2,2,1,2,2,2;
    196 pixels 24 or 25; 10 panels in 4 pixel chunks 5 cells of 40 each; a fused block at stride 2
    (8 input rows, 4 output rows) on 2 threads recomputes input row 4 for both halves (rows 0-4
    and 4-7: 5 and 4 of 8), its other MACs by output rows."""
    balance = _benchmarks_script("balance")
    rows = balance.op_shares(dict(split_rows=14), "depthwise", 14.0, 8, None)
    assert rows.tolist() == [1, 2, 2, 2, 1, 2, 2, 2]
    pixels = balance.op_shares(dict(split_pixels=1, oh=14, ow=14), "pointwise", 196.0, 8, None)
    assert sorted(set(pixels.tolist())) == [24, 25] and pixels.sum() == 196
    cells = balance.op_shares(dict(split_panels=1, panel_pixels=1, cout=160, n=1, oh=7, ow=7), "pointwise",
                              40.0, 8, lambda np_, px, t: 4 if (np_, px, t) == (10, 49, 8) else None)
    assert cells.tolist() == [5.0] * 8
    block = dict(split_rows=4, n=1, h=8, w_=8, c=2, ce=3, stride=2, pad_top=0, has_expand=True)
    inside = balance.input_side_macs(block, "block")
    assert inside == 8 * 8 * 2 * 3
    halves = balance.op_shares(block, "block", inside + 100.0, 2, None)
    assert halves.tolist() == pytest.approx([50 + inside * 5 / 8, 50 + inside * 4 / 8])


def test_balance_script_models_the_real_plan(tmp_path, capsys):
    """On one thread the busiest share is all the work (efficiency 1); on more, no better than
    even; the plan as on 16 cores has as many stages at every thread count."""
    if not native.available():
        pytest.skip("needs the C extension (the script reads the C plan)")
    out_json = tmp_path / "b.json"
    assert _benchmarks_script("balance").main(["--variants", "0.35_96", "--threads", "1,2,16", "--cores", "16",
                                               "--stages", "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert report["cores"] == 16
    one, two, sixteen = report["variants"]["0.35_96"]
    assert one["efficiency"] == pytest.approx(1.0) and one["busiest_macs"] == pytest.approx(one["even_macs"])
    assert two["even_macs"] == pytest.approx(one["even_macs"] / 2)
    assert 0 < sixteen["efficiency"] <= two["efficiency"] <= 1.0 + 1e-12
    assert len(one["stages"]) == len(sixteen["stages"]) > 10
    out = capsys.readouterr().out
    assert "not a timing" in out and "busiest share" in out


def test_balance_lines_taken_over_worked_by_hand():
    """Two ops on one buffer, 2 threads: A splits 4 rows of 16 channels (a line a row: thread 0
    lines 0-1, thread 1 lines 2-3), B 2 pixels of 64 channels (4 lines a pixel: 0-3 and 4-7).  Over
    the second run thread 1 takes lines 2-3 back from thread 0 in A, thread 0 takes them in B: 4 of
    12.  A 1-pixel op of 32 channels split by panels: one line each, nothing taken over."""
    balance = _benchmarks_script("balance")
    a = dict(y_addr=0, split_rows=4, n=1, oh=4, ow=1, c=16, cout=16)
    b = dict(y_addr=0, split_pixels=1, split_rows=2, n=1, oh=2, ow=1, c=64, cout=64)
    assert balance.op_writes(a, "pointwise", 2, None) == [(0, 0, 128), (1, 128, 256)]
    assert balance.op_writes(b, "depthwise", 2, None) == [(0, 0, 256), (1, 256, 512)]
    kinds = [dict(kind="pointwise"), dict(kind="depthwise")]
    assert balance.lines_taken_over([a, b], kinds, 2, None) == dict(lines_written=12, lines_taken_over=4)
    assert balance.lines_taken_over([a, b], kinds, 1, None) == dict(lines_written=12, lines_taken_over=0)
    panels = dict(y_addr=0, split_panels=1, n=1, oh=1, ow=1, c=8, cout=32)
    assert balance.op_writes(panels, "pointwise", 2, None) == [(0, 0, 64), (1, 64, 128)]
    assert balance.lines_taken_over([panels], [dict(kind="pointwise")], 2, None)["lines_taken_over"] == 0


def test_balance_lines_of_the_real_plan_stay_with_their_thread(tmp_path):
    """The arena puts each tensor's 2-thread split at its buffer's middle (mobilenetv2/engines/plan.py's
    _Buffer): in 0.35_96's plan at 2 threads at most 10 % of the lines a run writes were written
    last by the other thread (a third with every tensor at its buffer's start), none at 1."""
    if not native.available():
        pytest.skip("needs the C extension (the script reads the C plan)")
    out_json = tmp_path / "b.json"
    assert _benchmarks_script("balance").main(["--variants", "0.35_96", "--threads", "1,2", "--lines",
                                               "--json", str(out_json)]) == 0
    one, two = json.loads(out_json.read_text())["variants"]["0.35_96"]
    assert one["lines_taken_over"] == 0 and one["lines_written"] == two["lines_written"] > 10_000
    assert 0 < two["lines_taken_over"] <= 0.10 * two["lines_written"]


def test_plan_ab_script_times_two_plans_with_the_same_bits(tmp_path, capsys):
    """benchmarks/plan_ab.py with every pointwise weight taken as too big for L2: B splits more
    pointwise convs by panels than A, gives A's bits (the kernels fix the order of operations),
    and the plan module's constants are as they were afterwards."""
    if not native.available():
        pytest.skip("needs the C extension (the script times the C plan)")
    from mobilenetv2.engines import plan as P
    before = P.WEIGHTS_CACHED_BYTES
    out_json = tmp_path / "ab.json"
    assert _benchmarks_script("plan_ab").main(["--set", "WEIGHTS_CACHED_BYTES=0", "--variants", "0.35_96",
                                               "--threads", "1,2", "--batches", "1,3", "--seconds", "0.05",
                                               "--json", str(out_json)]) == 0
    assert P.WEIGHTS_CACHED_BYTES == before
    report = json.loads(out_json.read_text())
    assert report["b"] == {"WEIGHTS_CACHED_BYTES": 0} and report["a"]["WEIGHTS_CACHED_BYTES"] == before
    assert report["same_bits"] is True
    rows = report["results"]
    assert [(r["threads"], r["batch"]) for r in rows] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    plans = rows[0]["plans"]
    assert plans["b"]["by_panels"] > plans["a"]["by_panels"] and plans["b"]["ops"] == plans["a"]["ops"]
    for r in rows:
        assert r["pairs"] >= 5 and r["a_median_ms"] > 0 and r["b_median_ms"] > 0 and r["b_over_a"] > 0
    assert "same bits: yes" in capsys.readouterr().out


def test_settle_intervals_worked_by_hand():
    """Calls starting at 0.0, 0.5, 1.2, 1.9 and 4.1 s in 1-second intervals: [0, 1) holds the first
    two (median of 10 and 30 ms: 20), [1, 2) the next two, [2, 3) and [3, 4) none (left out),
    [4, 5) the last."""
    rows = _benchmarks_script("settle").intervals([0.0, 0.5, 1.2, 1.9, 4.1], [0.010, 0.030, 0.040, 0.040, 0.005], 1.0)
    assert [(s, n) for s, _, _, n in rows] == [(0.0, 2), (1.0, 2), (4.0, 1)]
    assert [m for _, m, _, _ in rows] == pytest.approx([0.020, 0.040, 0.005])
    assert rows[0][2] == pytest.approx(0.012)  # p10 of 10 and 30 ms, linear as NumPy's percentile
    assert _benchmarks_script("settle").intervals([], [], 1.0) == []


def test_settle_script_times_intervals(tmp_path, capsys):
    if not native.available():
        pytest.skip("needs the C extension (the script times the C plan)")
    out_json = tmp_path / "s.json"
    assert _benchmarks_script("settle").main(["--variant", "0.35_96", "--seconds", "0.4", "--every", "0.2",
                                              "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    rows = report["intervals"]
    assert 1 <= len(rows) <= 3 and all(r["calls"] >= 1 and 0 < r["p10_ms"] <= r["median_ms"] for r in rows)
    assert report["last_over_first"] == pytest.approx(rows[-1]["median_ms"] / rows[0]["median_ms"])
    assert "last interval's median / first's" in capsys.readouterr().out


def _device_kit():
    return _benchmarks_script("device_kit")


def _wheel(path, files):
    import zipfile
    with zipfile.ZipFile(path, "w") as z:
        for name, size in files.items():
            z.writestr(name, b"x" * size)
    return path


def test_device_kit_keeps_what_a_cpu_run_loads_and_nothing_else(tmp_path):
    """The kit's site archive: every file of the wheels but the GPU/NPU plugins, unused frontends,
    headers and LiteRT's tools, with the shared libraries executable."""
    import tarfile
    kit = _device_kit()
    kept = {"openvino/libs/libopenvino_intel_cpu_plugin.so": 300, "openvino/libs/libopenvino_onnx_frontend.so.2641": 50,
            "openvino/_pyopenvino.cpython-312-x86_64-linux-gnu.so": 40, "openvino/__init__.py": 7,
            "ai_edge_litert/interpreter.py": 20, "cffi/__init__.py": 5, "_cffi_backend.cpython-312-x86_64-linux-gnu.so": 9}
    dropped = {"openvino/libs/libopenvino_intel_gpu_plugin.so": 1000, "openvino/libs/libopenvino_intel_npu_plugin.so": 100,
               "openvino/libs/libopenvino_pytorch_frontend.so.2641": 70, "openvino/include/ov.h": 3,
               "ai_edge_litert/tools/x.py": 11, "ai_edge_litert/libLiteRtWebGpuAccelerator.so": 13}
    wheels = [_wheel(tmp_path / "a.whl", {k: v for k, v in {**kept, **dropped}.items() if k.startswith("openvino")}),
              _wheel(tmp_path / "b.whl", {k: v for k, v in {**kept, **dropped}.items() if not k.startswith("openvino")})]
    got_kept, got_dropped = kit.site_archive(wheels, tmp_path / "site.tar.xz")
    assert (got_kept, got_dropped) == (sum(kept.values()), sum(dropped.values()))
    with tarfile.open(tmp_path / "site.tar.xz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == set(kept)
    assert all(m.size == kept[n] for n, m in members.items())
    assert members["openvino/libs/libopenvino_intel_cpu_plugin.so"].mode == 0o755
    assert members["openvino/libs/libopenvino_onnx_frontend.so.2641"].mode == 0o755
    assert members["cffi/__init__.py"].mode == 0o644


def test_device_kit_refuses_wheels_that_lost_a_needed_file(tmp_path):
    kit = _device_kit()
    wheel = _wheel(tmp_path / "a.whl", {"openvino/libs/libopenvino_intel_cpu_plugin.so": 3, "cffi/__init__.py": 1})
    with pytest.raises(SystemExit, match="libopenvino_onnx_frontend"):
        kit.site_archive([wheel], tmp_path / "site.tar.xz")


@pytest.mark.parametrize("argv, says", [(["--variants", "2.0_224"], "--variants"), (["--variants", ","], "names none"),
                                        (["--dest", "/tmp"], "inside the checkout")])
def test_device_kit_refuses_bad_arguments_before_downloading(argv, says):
    kit = _device_kit()
    with pytest.raises(SystemExit, match=says):
        kit.main(argv)


@pytest.mark.parametrize("dest, says", [("weights", "holds files git tracks (weights/"),
                                        ("tests", "holds files git tracks (tests/"),
                                        (".", "inside the checkout")])
def test_device_kit_never_replaces_a_folder_of_the_checkout(dest, says, monkeypatch):
    """--dest weights (any folder inside the checkout) was wiped whole before the download: the
    registry's tracked files went with it.  A folder git tracks anything in is refused before
    anything is written or downloaded (what would write or download fails the test here)."""
    import re
    from pathlib import Path
    kit = _device_kit()

    def must_not(*args, **kw):
        raise AssertionError("device_kit went on to write or download")
    for name in ("ensure_ignored", "download", "pins"):
        monkeypatch.setattr(kit, name, must_not)
    monkeypatch.setattr(kit.shutil, "rmtree", must_not)
    root = Path(__file__).resolve().parent.parent
    before = sorted(p.name for p in (root / "weights").iterdir())
    with pytest.raises(SystemExit, match=re.escape(says)):
        kit.main(["--dest", dest, "--variants", "0.35_96"])
    assert sorted(p.name for p in (root / "weights").iterdir()) == before


def test_device_kit_replaces_only_an_empty_folder_or_an_earlier_kit(tmp_path, monkeypatch):
    """An untracked folder holding anything but a kit (results, a venv) is refused too; an empty
    one or a kit made before (its marker, or an older kit's VARIANTS) may be replaced."""
    import subprocess
    kit = _device_kit()
    monkeypatch.setattr(kit, "ROOT", tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "tracked").mkdir()
    (tmp_path / "tracked" / "a.txt").write_text("a")
    subprocess.run(["git", "-C", str(tmp_path), "add", "tracked/a.txt"], check=True)
    with pytest.raises(SystemExit, match=r"--dest tracked holds files git tracks \(tracked/a.txt\)"):
        kit.check_dest(tmp_path / "tracked")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text("{}")
    with pytest.raises(SystemExit, match="a folder that no device_kit.py made"):
        kit.check_dest(tmp_path / "results")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit, match="exists and is not a folder"):
        kit.check_dest(tmp_path / "afile")
    for name, marker in (("new", None), ("empty", ""), ("kit", kit.MARKER), ("old_kit", "VARIANTS")):
        if marker is not None:
            (tmp_path / name).mkdir()
            if marker:
                (tmp_path / name / marker).write_text("x")
                (tmp_path / name / "site.tar.xz").write_text("x")
        kit.check_dest(tmp_path / name)  # no SystemExit


def _device_run_stubbed(tmp_path, call_seconds):
    """device_run.sh on a kit of nothing, with a python that answers its -c questions and a
    timeout that records each step's limit and runs nothing: [(limit, what)], and its output."""
    import subprocess
    import sys
    import tarfile
    from pathlib import Path
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    kit_dir = tmp_path / "kit"
    kit_dir.mkdir(exist_ok=True)
    tarfile.open(kit_dir / "site.tar.xz", "w:xz").close()
    (kit_dir / "VARIANTS").write_text("0.35_96\n")
    (bin_ / "timeout").write_text('#!/bin/bash\necho "$1 ${2##*/} $3 $4" >> "$LOG"\n')
    (bin_ / "py").write_text('#!/bin/bash\ncase "$*" in\n  *sched_getaffinity*) echo 16 ;;\n'
                             '  *"print(\',\'.join"*) echo 1,2,4,8,16 ;;\n'
                             f'  *tarfile*) "{sys.executable}" "$@" ;;\n  *) exit 0 ;;\nesac\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    log = tmp_path / f"log{call_seconds}"
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(["bash", str(root / "benchmarks" / "device_run.sh")], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": f"{bin_}:/usr/bin:/bin", "LOG": str(log), "KIT": str(kit_dir),
                                          "OUT": str(tmp_path / "out"), "PYTHON": str(bin_ / "py"),
                                          "CALL_SECONDS": str(call_seconds)})
    words = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    steps = [(int(w[0]), w[3] if w[2] == "-m" else w[2]) for w in words]  # limit, script (or module)
    return steps, done


def test_device_run_cuts_each_step_to_what_is_left_of_the_call(tmp_path):
    """device_run.sh's steps had limits of their own only: with settle.py and balance.py added they
    came to 52 s of build + 90 + 50 + 30 + 360 + 60, past the 590 s call.  Each limit is now cut
    to what is left of CALL_SECONDS less 10 s (the stubs take no time: the bench's 360 s becomes
    290 of a 300 s call), and with nothing left each step is skipped, saying so."""
    _device_kit()
    steps, done = _device_run_stubbed(tmp_path, 590)
    assert done.returncode == 0, done.stdout[-500:]
    assert steps == [(90, "pytest"), (50, "benchmarks/settle.py"), (30, "benchmarks/balance.py"),
                     (360, "benchmarks/bench.py"), (60, "benchmarks/scaling.py")]
    steps, done = _device_run_stubbed(tmp_path, 300)
    assert [s for s, _ in steps] == [90, 50, 30, 290, 60]
    steps, done = _device_run_stubbed(tmp_path, 5)
    assert steps == [] and done.returncode == 124
    for name in ("tests", "settle", "balance", "bench", "scaling"):
        assert f"# {name}: skipped, no time left of the call's 5 s" in done.stdout


@pytest.mark.parametrize("argv, says", [(["--only", "bogus"], "no such mutant: bogus"),
                                        (["--only", "cli:99999"], "no such mutant: cli:99999"),
                                        (["--module", "cli", "--only", "hf:5"], "no such mutant: hf:5")])
def test_mutation_only_with_an_id_it_does_not_know_says_so(argv, says):
    """mutation.py --only with a mistyped id ran nothing and printed '0/0 mutants killed', exit 0
    (--c --only said 'no such mutant'); now both do, exit 1, before anything runs."""
    import re
    with pytest.raises(SystemExit, match=re.escape(says)):
        _benchmarks_script("mutation").main(argv)


def test_mutation_runs_its_tests_on_the_shared_data_the_user_names(tmp_path, monkeypatch, capsys):
    """The mutants' tests were always pointed at ../shared beside the checkout: in a clone made
    elsewhere (/tmp) every test needing shared/ skipped and 5 of 8 preprocessing mutants
    'survived'.  $MOBILENETV2_SHARED is passed on, and a missing folder is said before any run."""
    mutation = _benchmarks_script("mutation")
    monkeypatch.setenv("MOBILENETV2_SHARED", str(tmp_path))
    assert mutation.shared_folder() == tmp_path
    monkeypatch.setenv("MOBILENETV2_SHARED", str(tmp_path / "absent"))
    with pytest.raises(SystemExit):
        mutation.main(["--only", "bogus"])
    assert "no shared test data at" in capsys.readouterr().err


def test_device_run_without_a_kit_says_so(tmp_path):
    import subprocess
    from pathlib import Path
    _device_kit()
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(["bash", str(root / "benchmarks" / "device_run.sh")], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "KIT": str(tmp_path / "none"), "OUT": str(tmp_path / "out")})
    assert done.returncode == 2
    assert "no kit at" in done.stdout and "device_kit.py" in done.stdout


def test_the_output_digest_is_the_c_output_on_every_isa_and_thread_count(tmp_path):
    """The header's SHA-256 of the C engine's output (what two machines' runs compare) is that of
    predict() on the benchmark's weights and input on every ISA this CPU has, at 1 and 3 threads,
    and the output it hashes is the network's answer: close to the float64 engine's."""
    import hashlib

    import numpy as np

    from mobilenetv2 import MobileNetV2
    from mobilenetv2.tools.benchmark import _input, _model

    if not native.available():
        pytest.skip("the C extension is not built: no C output to digest")
    out = tmp_path / "b.json"
    assert main(["--variants", "0.35_96", "--runs", "2", "--warmup", "1", "--rounds", "1",
                 "--engines", "c", "--threads", "1", "--warmup-seconds", "0", "--json", str(out)]) == 0
    digest = json.loads(out.read_text())["run"]["c_output_sha256_16"]["0.35_96"]
    model, x = _model(0.35, 96), _input(96, 1)
    for isa in native.isas():
        with native.use_isa(isa):
            for threads in (1, 3):
                model.threads = threads
                y = model.predict(x)
                assert hashlib.sha256(y.astype(np.float32).tobytes()).hexdigest()[:16] == digest, (isa, threads)
    ref = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, dtype="float64")
    ref.set_weights([w.astype(np.float64) for w in model.get_weights()])
    np.testing.assert_allclose(y, ref.predict(x.astype(np.float64)), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("n,rounds", [(1, 1), (4, 2), (20, 2), (20, 3), (8, 8), (3, 5)])
def test_each_round_visits_every_measurement_once_starting_further_on(n, rounds):
    """round_order: every round is the whole list once (a rotation), round 0 the list itself;
    with 20 measurements in 2 rounds the second starts at the 11th (C at 1 thread leads only the
    first), and no measurement leads two rounds unless there are more rounds than measurements."""
    configs = [("engine", i) for i in range(n)]
    orders = [round_order(configs, r, rounds) for r in range(rounds)]
    assert orders[0] == configs
    for order in orders:
        assert sorted(order) == configs
        k = configs.index(order[0])
        assert order == configs[k:] + configs[:k]
    leaders = [order[0] for order in orders]
    assert len(set(leaders)) == min(n, rounds)
    if (n, rounds) == (20, 2):
        assert leaders == [("engine", 0), ("engine", 10)]


def test_output_check_refuses_another_network_and_takes_float32_noise():
    """The check every engine passes before it is timed, against outputs built by hand."""
    import numpy as np
    from mobilenetv2.tools.benchmark import MAX_REL_L2, check_output
    rng = np.random.default_rng(0)
    ref = rng.dirichlet(np.ones(1000), size=2).astype(np.float32)
    noisy = ref * (1 + rng.normal(0, 1e-5, ref.shape))  # float32 engines: 0.5-2e-5 apart
    err, why = check_output(noisy, ref)
    assert why is None and 0 < err < 3e-5
    other = rng.dirichlet(np.ones(1000), size=2)  # another network's probabilities
    err, why = check_output(other, ref)
    assert err > MAX_REL_L2 and "does not compute the benchmarked network" in why
    assert "shape" in check_output(ref[:, :999], ref)[1]
    swapped = ref.copy()  # the top class moved, the rest the same: small L2, wrong answer
    best = ref.argmax(axis=1)
    swapped[0, best[0]], swapped[0, (best[0] + 1) % 1000] = ref[0, (best[0] + 1) % 1000], ref[0, best[0]]
    if np.linalg.norm(swapped - ref) / np.linalg.norm(ref) <= MAX_REL_L2:
        assert "top class differs" in check_output(swapped, ref)[1]
    tie = ref.copy()  # two classes within 1e-6: either may come out on top
    tie[1, (best[1] + 1) % 1000] = ref[1, best[1]] * (1 + 1e-7)
    assert check_output(tie, np.where(tie == tie[1, (best[1] + 1) % 1000], ref[1, best[1]], tie))[1] is None


def test_a_peer_computing_another_network_is_not_timed(tmp_path, monkeypatch, capsys):
    """LiteRT timed a .tflite of another network (alpha 0.1, same shapes) and came out fastest:
    now every engine's output is checked against the C engine's first, and this one is refused."""
    pytest.importorskip("ai_edge_litert", reason="LiteRT is a benchmark peer, not a test extra")
    if not native.available():
        pytest.skip("the check compares with the C engine's output")
    from mobilenetv2 import MobileNetV2
    from mobilenetv2.tools.tflite_export import export_tflite
    fake = tmp_path / "shared"
    (fake / "peers").mkdir(parents=True)
    # the bench's model without shared/tools is the random init: the file is another network
    import numpy as np
    other = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
    other.set_weights([w * np.float32(1.5) for w in other.get_weights()])
    export_tflite(other, fake / "peers" / "mobilenet_v2_0.35_96_synthetic.tflite")
    monkeypatch.setenv("MOBILENETV2_SHARED", str(fake))
    out = tmp_path / "b.json"
    assert main(["--variants", "0.35_96", "--runs", "3", "--warmup", "1", "--rounds", "1", "--engines", "c,litert",
                 "--threads", "1", "--warmup-seconds", "0", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["engine"] for r in data["results"]] == ["c"]
    assert data["results"][0]["speedup_vs_best_peer"] is None
    why = data["skipped"]["litert 0.35_96 1"]
    assert why.startswith("mismatch: its output is") and "not timed" in why
    assert "# skipped litert 0.35_96 1: mismatch" in capsys.readouterr().out


def test_rows_record_what_each_engine_ran_with(tmp_path):
    """Each row: the engine's version and settings as read back, its output's distance from the
    C engine's, the per-round medians and the ratio's range; the run: the command, the CPU's
    family/model, the extension's and csrc's digests, the runs and rounds."""
    out = tmp_path / "b.json"
    assert main(["--variants", "0.35_96", "--runs", "4", "--warmup", "1", "--rounds", "2", "--engines", "c,numpy",
                 "--numpy-runs", "2", "--threads", "1", "--warmup-seconds", "0", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    run = data["run"]
    assert run["command"][:2] == ["mobilenetv2", "bench"] and "--rounds" in run["command"]
    assert run["runs"] == {"batch1": 4, "batch8": 3, "numpy": 2, "rounds": 2}
    assert run["versions"]["mobilenetv2"] and "csrc_sha256_16" in run["provenance"]
    for r in data["results"]:
        assert len(r["round_medians_ms"]) == 2 and all(m > 0 for m in r["round_medians_ms"])
        assert r["settings"]["version"] and r["oversubscribed"] is False
        if r["engine"] == "c":
            assert r["output_rel_l2_vs_c"] == 0.0 and r["settings"]["threads"] == 1
        else:
            assert 0 <= r["output_rel_l2_vs_c"] < 1e-4


def test_threads_past_the_cores_are_said_and_marked(tmp_path, capsys):
    if not native.available():
        pytest.skip("times the C engine's rows: the C extension is not built")
    from mobilenetv2.engines import machine
    out = tmp_path / "b.json"
    t = machine.CORES + 1
    assert main(["--variants", "0.35_96", "--runs", "2", "--warmup", "1", "--rounds", "1", "--engines", "c",
                 "--threads", f"1,{t}", "--warmup-seconds", "0", "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"--threads {t} exceeds the {machine.CORES} cores" in err
    rows = {r["threads"]: r for r in json.loads(out.read_text())["results"]}
    assert rows[1]["oversubscribed"] is False and rows[t]["oversubscribed"] is True


def test_bench_segmentation_names_the_checkpoints_depth_multiplier(tmp_path, capsys, monkeypatch):
    """A 0.5 DeepLabV3 checkpoint was printed and written as 'DeepLabV3-MobileNetV2 1.0'; and the
    ONNX export it times is not left in the temporary folder (every run left 8 MB there)."""
    import tempfile
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    pytest.importorskip("onnxruntime", reason="the segmentation bench times ONNX Runtime (pip install onnxruntime)")
    if not native.available():
        pytest.skip("the segmentation bench times the C core: the C extension is not built")
    from mobilenetv2 import save_pretrained
    from mobilenetv2.cli import main as cli
    from mobilenetv2.hf import HFMobileNetV2
    from mobilenetv2.formats.hf_config import HFConfig
    folder = tmp_path / "half"
    save_pretrained(HFMobileNetV2(HFConfig(depth_multiplier=0.5, output_stride=8, head="segmentation",
                                           id2label={i: str(i) for i in range(3)}, image_size=65)), folder)
    assert cli(["bench", "--segmentation", str(folder), "--size", "65", "--threads", "1", "--runs", "1",
                "--warmup", "0", "--rounds", "1", "--out", str(tmp_path)]) == 0
    assert "DeepLabV3-MobileNetV2 0.5, 65x65" in capsys.readouterr().out
    assert json.loads(next(tmp_path.glob("segmentation-*.json")).read_text())["model"] == "deeplabv3_mobilenet_v2_0.5"
    assert list((tmp_path / "tmp").iterdir()) == []


# One thread's batch-1 medians of the 22 variants (ms), as a Zen 5 gave them on 2026-12-06: the
# points crowd (1.0_160 at 1.530 ms and 0.75_192 at 1.663 lie a few pixels apart, and so do 0.5_96
# and 0.35_128), and every label at the same place beside its point wrote names over each other.
CROWDED_MS = {"1.4_224": 5.680, "1.3_224": 4.869, "1.0_224": 2.772, "1.0_192": 2.096, "1.0_160": 1.530,
              "1.0_128": 1.096, "1.0_96": 0.643, "0.75_224": 2.180, "0.75_192": 1.663, "0.75_160": 1.166,
              "0.75_128": 0.744, "0.75_96": 0.452, "0.5_224": 1.009, "0.5_192": 0.732, "0.5_160": 0.545,
              "0.5_128": 0.372, "0.5_96": 0.247, "0.35_224": 0.660, "0.35_192": 0.503, "0.35_160": 0.384,
              "0.35_128": 0.255, "0.35_96": 0.184}


def test_plot_labels_name_their_own_points_and_never_overlap(tmp_path, monkeypatch):
    """Each C point's label stands clear of every other label and every other C point's marker,
    and near its own point (within 30 points), on the crowded chart of all 22 variants."""
    pytest.importorskip("matplotlib")
    from matplotlib.text import Text

    from mobilenetv2 import files
    from mobilenetv2.tools import benchmark
    from mobilenetv2.network.variants import PUBLISHED, parse_variant
    rows = [dict(engine="c", variant=v, batch=1, threads=1, median_ms=ms) for v, ms in CROWDED_MS.items()]
    seen = {}

    def keep(fig, path, dpi):
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        for t in ax.texts:
            t.update_positions(renderer)
            seen[t.get_text()] = (Text.get_window_extent(t, renderer), ax.transData.transform(t.xy),
                                  fig.dpi / 72, t.xy)
        return path
    monkeypatch.setattr(files, "save_figure", keep)
    benchmark.plot(rows, str(tmp_path / "chart.png"), {"cpu": "test CPU", "date": "2026-12-06"})
    assert sorted(seen) == sorted(CROWDED_MS)
    for name, (box, (x, y), px_per_pt, anchor) in seen.items():
        # the label points at its own variant: its latency and published top-1
        assert tuple(anchor) == (CROWDED_MS[name], PUBLISHED[parse_variant(name)][2])
        for other, (box2, (x2, y2), _, _) in seen.items():
            if other == name:
                continue
            assert not box.overlaps(box2), (name, other)
            assert not box.contains(x2, y2), f"{name}'s label covers {other}'s point"
        # the label's nearest edge is within 30 points of its point
        dx = max(box.x0 - x, 0, x - box.x1)
        dy = max(box.y0 - y, 0, y - box.y1)
        assert (dx * dx + dy * dy) ** 0.5 < 30 * px_per_pt, name


def test_plot_labels_with_no_free_place_take_the_first():
    """Labels that find every place taken (a dozen variants at one point) go beside the point
    at the first place instead of failing the whole plot."""
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mobilenetv2.tools import benchmark
    fig, ax = plt.subplots()
    ax.plot([1, 2], [50, 60])
    benchmark._label_points(fig, ax, [(f"v{i}", 1.5, 55.0) for i in range(12)])
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"v{i}" for i in range(12))
    assert all(t.xy == (1.5, 55.0) for t in ax.texts)
    assert sum(t.xyann == (6, -2) for t in ax.texts) >= 12 - 8  # past the eight places: the first
    plt.close(fig)
