"""Every figure the bench derives, worked by hand from made-up timings; its labels and its JSON.

Nothing here times anything or asserts a speed: the functions that turn call times into the
table's figures are fed hand-made times, and the small runs of ``main`` are only read for what
they record and say."""
import json
import math

import numpy as np
import pytest

from mobilenetv2 import MobileNetV2
from mobilenetv2.engines import native
from mobilenetv2.network.variants import PUBLISHED, VARIANTS
from mobilenetv2.tools import benchmark

# The paper's Table 2 (expansion t, channels c, repeats n, stride s), Keras's channel rounding
TABLE2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
          (6, 320, 1, 1))


def _divisible(v, d=8):
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


def macs_by_hand(alpha, res):
    """Multiply-accumulates of MobileNetV2 with its 1000-class head, walked from Table 2: the 3x3
    stem (stride 2), each block's 1x1 expansion, 3x3 depthwise and 1x1 projection, the 1x1 to
    1280 (1280 x alpha past 1.0) and the dense layer; SAME padding, so a stride-2 map is ceil(h/2)."""
    h, c = math.ceil(res / 2), _divisible(32 * alpha)
    total = h * h * 3 * 3 * 3 * c
    for t, ch, n, s in TABLE2:
        out = _divisible(int(ch * alpha))
        for i in range(n):
            if t != 1:
                total += h * h * c * (c * t)
            h = math.ceil(h / (s if i == 0 else 1))
            total += h * h * 9 * (c * t) + h * h * (c * t) * out
            c = out
    last = _divisible(1280 * alpha) if alpha > 1 else 1280
    return total + h * h * c * last + last * 1000


def test_the_macs_the_gflops_come_from_are_the_architecture_s_and_the_published_table_s():
    """GFLOP/s = 2 x MACs per image: the MACs the bench takes (the model's own count) are the ones
    walked by hand from Table 2, and the TF-slim table's figures rounded down (1.0_224: 300.8 M,
    published 300; 0.35_96: 11.9 M, published 11; 0.35_224: 59.3 M, published 59)."""
    assert macs_by_hand(1.0, 224) == 300_774_272
    assert macs_by_hand(0.35, 96) == 11_934_128
    for alpha, res in VARIANTS:
        mine = macs_by_hand(alpha, res)
        assert MobileNetV2((res, res, 3), alpha=alpha, weights=None).macs() == mine, (alpha, res)
        assert mine // 10 ** 6 == PUBLISHED[alpha, res][0], (alpha, res)


def test_published_top1_is_the_tf_slim_table():
    """The chart's y values: TF-slim's MobileNetV2 table (research/slim/nets/mobilenet/README.md),
    repeated in keras.applications.mobilenet_v2's docstring."""
    slim = {"1.4_224": 75.0, "1.3_224": 74.4, "1.0_224": 71.8, "1.0_192": 70.7, "1.0_160": 68.8,
            "1.0_128": 65.3, "1.0_96": 60.3, "0.75_224": 69.8, "0.75_192": 68.7, "0.75_160": 66.4,
            "0.75_128": 63.2, "0.75_96": 58.8, "0.5_224": 65.4, "0.5_192": 63.9, "0.5_160": 61.0,
            "0.5_128": 57.7, "0.5_96": 51.2, "0.35_224": 60.3, "0.35_192": 58.2, "0.35_160": 55.7,
            "0.35_128": 50.8, "0.35_96": 45.5}
    from mobilenetv2.network.variants import parse_variant
    assert {name: PUBLISHED[parse_variant(name)][2] for name in slim} == slim and len(PUBLISHED) == 22


def test_row_figures_worked_by_hand():
    """Five calls of a batch of 8 on 2 threads, 1, 2, 3, 4 and 10 ms: median 3, p10 1.4 and p90
    7.6 (linear between the sorted times), min 1; 8 images in 3 ms = 2666.7 img/s (images, not
    batches); 2 x 11,934,128 x 8 flops in 3 ms = 63.65 GFLOP/s; against a 100 GFLOP/s core x 2
    threads, 31.8 %."""
    got = benchmark.row_figures([[1e-3, 2e-3], [3e-3, 4e-3, 10e-3]], batch=8, macs=11_934_128,
                                threads=2, peak_per_core=100.0, cores=2)
    assert got["median_ms"] == pytest.approx(3.0) and got["min_ms"] == pytest.approx(1.0)
    assert got["p10_ms"] == pytest.approx(1.4) and got["p90_ms"] == pytest.approx(7.6)
    assert got["runs"] == 5
    assert got["img_per_s"] == pytest.approx(8000 / 3)
    assert got["gflops"] == pytest.approx(2 * 11_934_128 * 8 / 3e-3 / 1e9)
    assert got["percent_of_peak"] == pytest.approx(100 * (2 * 11_934_128 * 8 / 3e-3 / 1e9) / 200)
    assert got["macs_per_image"] == 11_934_128
    # the raw times, per round, in ms: every figure above can be recomputed from the JSON
    assert got["times_ms_by_round"] == [pytest.approx([1.0, 2.0]), pytest.approx([3.0, 4.0, 10.0])]
    # 4 threads on 2 cores: the peak is the 2 cores' (the threads share them)
    four = benchmark.row_figures([[3e-3]], batch=1, macs=1_000_000, threads=4, peak_per_core=100.0, cores=2)
    assert four["percent_of_peak"] == pytest.approx(100 * (2e6 / 3e-3 / 1e9) / 200)
    assert four["img_per_s"] == pytest.approx(1000 / 3)
    # NumPy's BLAS picks its own threads, and without a peak there is no share of it
    assert benchmark.row_figures([[3e-3]], 1, 1_000_000, None, 100.0, 2)["percent_of_peak"] is None
    assert benchmark.row_figures([[3e-3]], 1, 1_000_000, 1, None, 2)["percent_of_peak"] is None
    # a round that timed nothing (fewer runs than rounds) is an empty list
    assert benchmark.row_figures([[], [2e-3]], 1, 1, 1, None, 2)["times_ms_by_round"] == [[], pytest.approx([2.0])]


def _row(engine, median, rounds, threads=1, batch=1, variant="0.35_96"):
    return {"engine": engine, "variant": variant, "batch": batch, "threads": threads, "median_ms": median,
            "round_medians_ms": rounds, "precision": benchmark.PRECISION[engine]}


def test_vs_best_peer_and_its_rounds_worked_by_hand():
    """The ratio is the fastest float32 peer's median over the row's at the same variant, batch
    and threads; the bf16 row, faster than all, never counts; each round's ratio is that round's
    fastest peer over the row's, the range printed beside it."""
    rows = [_row("c", 2.0, [2.0, 2.5, 1.8]),
            _row("ort", 3.0, [3.0, 2.0, 3.2]),
            _row("litert", 2.4, [2.6, 2.4, None]),      # no runs in the third round
            _row("openvino", 2.8, [2.8, 2.9, 2.7]),
            _row("openvino-bf16", 1.0, [1.0, 1.0, 1.0]),  # reduced precision: never the best peer
            _row("c", 1.5, [1.5, 1.5, 1.5], threads=2),  # another thread count: peers of its own
            _row("ort", 1.2, [1.2, 1.2, 1.2], threads=2),
            _row("litert", 9.0, [9.0, 9.0, 9.0], batch=8),  # another batch
            _row("c", 20.0, [20.0, 20.0, 20.0], variant="1.0_224"),  # no peer at this variant
            _row("numpy", 50.0, [50.0, None, None], threads="BLAS")]
    benchmark.compare_with_peers(rows, 3)
    c1 = rows[0]
    assert c1["best_peer"] == "litert" and c1["speedup_vs_best_peer"] == pytest.approx(2.4 / 2.0)
    # round 1: min(3.0, 2.6, 2.8) / 2.0; round 2: min(2.0, 2.4, 2.9) / 2.5; round 3: min(3.2, 2.7) / 1.8
    assert c1["speedup_vs_best_peer_by_round"] == [pytest.approx(2.0 / 2.5), pytest.approx(2.7 / 1.8)]
    bf16 = rows[4]
    assert bf16["best_peer"] == "litert" and bf16["speedup_vs_best_peer"] == pytest.approx(2.4)
    assert rows[5]["best_peer"] == "ort" and rows[5]["speedup_vs_best_peer"] == pytest.approx(1.2 / 1.5)
    assert rows[5]["speedup_vs_best_peer_by_round"] == [pytest.approx(0.8), pytest.approx(0.8)]
    assert rows[1]["speedup_vs_best_peer"] == pytest.approx(2.4 / 3.0)  # a peer against the best of them
    assert rows[7]["speedup_vs_best_peer"] == pytest.approx(1.0) and rows[7]["best_peer"] == "litert"
    for r in rows[8:]:
        assert r["speedup_vs_best_peer"] is None and r["best_peer"] is None
        assert r["speedup_vs_best_peer_by_round"] is None
    # the summary's count: the C rows with a peer, 1.2x ahead at 1 thread and 0.8x behind at 2
    for r in rows:
        r.update(cores_apart=False, steal_share=None)
    assert benchmark.ahead_summary(rows) == ("C vs the best float32 peer: ahead in 1 of 2 rows (0.80x-1.20x); "
                                             "none of the 1 behind flagged")


def test_plot_draws_the_peers_in_colours_of_their_own():
    """The C engine's lines are tab:blue; matplotlib's colour cycle starts at tab:blue too, so the
    first peer drawn (ONNX Runtime) came out in the C engine's colour.  Each engine's points:
    at its own median and the variant's published top-1, in a colour no other engine has."""
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_hex

    from mobilenetv2 import files
    rows = []
    for v, ms in {"0.35_96": 0.4, "0.5_96": 0.5, "0.35_128": 0.6}.items():
        for e, f in (("c", 1), ("ort", 1.3), ("openvino", 1.4), ("litert", 1.2), ("openvino-bf16", 1.1)):
            rows.append(dict(engine=e, variant=v, batch=1, threads=1, median_ms=ms * f))
    seen = {}

    def keep(fig, path, dpi):
        ax = fig.axes[0]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        for line in ax.lines:
            label = line.get_label()
            label = "mobilenetv2 C" if label.startswith("_") else label
            seen.setdefault(label, set()).add(to_hex(line.get_color()))
            pts = set(zip(map(float, line.get_xdata()), map(float, line.get_ydata())))
            seen.setdefault(label + " points", set()).update(pts)
        seen["legend"] = legend
        return path
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(files, "save_figure", keep)
    try:
        benchmark.plot(rows, "chart.png", {"cpu": "test CPU", "date": "2026-12-07"})
    finally:
        monkeypatch.undo()
    names = ["mobilenetv2 C", "ONNX Runtime", "OpenVINO f32", "LiteRT", "OpenVINO bf16 (reduced precision)"]
    assert seen["legend"] == names
    colours = [seen[n] for n in names]
    assert all(len(c) == 1 for c in colours)
    assert len({next(iter(c)) for c in colours}) == len(names), colours
    top1 = {"0.35_96": 45.5, "0.5_96": 51.2, "0.35_128": 50.8}
    for name, engine, f in zip(names, ("c", "ort", "openvino", "litert", "openvino-bf16"), (1, 1.3, 1.4, 1.2, 1.1)):
        want = sorted((ms * f, top1[v]) for v, ms in {"0.35_96": 0.4, "0.5_96": 0.5, "0.35_128": 0.6}.items())
        got = sorted(seen[name + " points"])
        assert got == [(pytest.approx(x), y) for x, y in want], (engine, got)


def _small_run(tmp_path, capsys, argv):
    out = tmp_path / "b.json"
    assert benchmark.main(argv + ["--json", str(out), "--warmup-seconds", "0"]) == 0
    return capsys.readouterr(), json.loads(out.read_text())


def test_the_json_holds_the_runs_every_figure_comes_from(tmp_path, capsys):
    """A publisher can recompute median, p10, p90, min, img/s, GFLOP/s and % peak from the JSON:
    each row has its call times by round and the MACs per image; the warm-up each round had is the
    one recorded (--warmup calls, no more than the round's timed runs)."""
    if not native.available():
        pytest.skip("the C extension is not built")
    printed, data = _small_run(tmp_path, capsys, ["--variants", "0.35_96", "--runs", "5", "--rounds", "2",
                                                  "--warmup", "3", "--engines", "c", "--threads", "1"])
    (row,) = data["results"]
    assert [len(t) for t in row["times_ms_by_round"]] == [2, 3]
    assert row["warmup_calls_by_round"] == [2, 3]  # --warmup 3, capped at each round's 2 and 3 runs
    ms = np.concatenate(row["times_ms_by_round"])
    assert row["median_ms"] == pytest.approx(np.median(ms)) and row["min_ms"] == pytest.approx(ms.min())
    assert row["p10_ms"] == pytest.approx(np.percentile(ms, 10))
    assert row["p90_ms"] == pytest.approx(np.percentile(ms, 90))
    assert row["round_medians_ms"] == [pytest.approx(np.median(t)) for t in row["times_ms_by_round"]]
    assert row["macs_per_image"] == 11_934_128
    assert row["gflops"] == pytest.approx(2 * 11_934_128 / row["median_ms"] / 1e6)
    peak = max(data["run"]["fma_peak_gflops_per_core"].values(), default=None)
    if peak:
        assert row["percent_of_peak"] == pytest.approx(100 * row["gflops"] / peak)
    # what the header says ran is what ran: no batch 8 without --batch8, RSS in MiB
    assert "batch 8" not in printed.out and "median of 5 batch-1 runs in 2 rounds" in printed.out
    assert "RSS MiB" in printed.out and "RSS MB" not in printed.out
    assert data["run"]["units"]["peak_rss_mb"].startswith("MiB")
    assert "at most the round's timed runs" in data["run"]["statistic"]


def test_a_one_thread_block_is_not_said_to_have_multi_thread_rows_apart(tmp_path, capsys, monkeypatch):
    """The round trip between cores slows the threads that meet: a block with only 1-thread rows
    (every block of `--threads 1 --variants all`) was still told 'its multi-thread rows ran on
    cores apart', one such line per variant, about rows the run did not have."""
    if not native.available():
        pytest.skip("the C extension is not built")
    calls = iter(range(10 ** 6))
    monkeypatch.setattr(benchmark, "round_trips", lambda: {"0-1": 50.0 if next(calls) < 2 else 400.0})
    printed, data = _small_run(tmp_path, capsys, ["--variants", "0.35_96", "--runs", "2", "--warmup", "1",
                                                  "--engines", "c", "--threads", "1"])
    assert "multi-thread rows" not in printed.out
    assert [r["cores_apart"] for r in data["results"]] == [False]
