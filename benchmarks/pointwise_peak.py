"""How close the pointwise (1x1) kernel comes to this core's FMA peak, measured two ways.

    python benchmarks/pointwise_peak.py [--variant 1.0_224] [--json PATH]

1. The peak: our own loop of 12 independent FMA chains (csrc/peak.c) of the ISA the kernels use
   (16-lane AVX-512 or 8-lane AVX2; MNV2_FORCE_ISA picks), best of 5 runs; the AVX2 figure too.
2. Each distinct pointwise shape of the variant, alone: f32_pointwise on one thread over a
   64-byte-aligned input, timed in a loop (its weights and input stay in cache between calls).
3. The same layers inside a whole 1-thread inference (model.profile: caches as they are in a
   real run); a layer fused into an inverted-residual block op has no time of its own there, so
   those blocks are reported whole (expand + depthwise + project).
Prints a table, writes JSON (default benchmarks/results/pointwise-peak-<time>.json).
"""
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _args.py: the scripts' shared arguments
import _args  # noqa: E402  (puts the checkout's package on the path where it is not installed)

from mobilenetv2 import MobileNetV2  # noqa: E402
from mobilenetv2.network import arch, layers as L  # noqa: E402
from mobilenetv2.engines import native  # noqa: E402
from mobilenetv2.tools.benchmark import cpu_model, fma_peak_gflops  # noqa: E402
from mobilenetv2.engines.plan import aligned_empty  # noqa: E402
from mobilenetv2.network.variants import parse_variant  # noqa: E402


def peak_gflops(isa=None):
    """Our FMA loop's GFLOP/s on one core (mobilenetv2.tools.benchmark.fma_peak_gflops, longer rounds)."""
    return fma_peak_gflops(isa, rounds=20_000_000)


def _filled(shape, rng):
    a = aligned_empty(int(np.prod(shape))).reshape(shape)
    a[...] = rng.uniform(-1, 1, shape)
    return a


def kernel_gflops(rows, cin, cout, min_seconds=0.2):
    """One thread, f32_pointwise with bias and ReLU6 over all rows, median of 5 timed loops."""
    lib, ffi = native.lib, native.ffi
    rng = np.random.default_rng(0)
    x, w, b = _filled((rows, cin), rng), _filled((cin, cout), rng), _filled((cout,), rng)
    y = aligned_empty(rows * cout)
    packed = aligned_empty(lib.f32_pointwise_packed_floats(cin, cout))
    ptr = native.as_float_ptr
    lib.f32_pointwise_pack(ptr(w), ptr(b), cin, cout, ptr(packed))
    args = (ptr(x), ptr(packed), ffi.NULL, ptr(y), cin, cout, 0, rows, 1)
    lib.f32_pointwise(*args)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.02:
        lib.f32_pointwise(*args)
        calls += 1
    loops = max(1, int(calls * min_seconds / 0.02 / 5))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(loops):
            lib.f32_pointwise(*args)
        times.append((time.perf_counter() - start) / loops)
    return 2 * rows * cin * cout / float(np.median(times)) / 1e9


def main(argv=None):
    p = _args.parser(__doc__, __file__)
    p.add_argument("--variant", type=_args.variant, default="1.0_224", help="(default %(default)s)")
    p.add_argument("--runs", type=_args.count(1), default=50,
                   help="whole-network runs for the in-run column (default %(default)s)")
    p.add_argument("--json", type=_args.output_path,
                   help="output path (default: benchmarks/results/pointwise-peak-<time>.json)")
    args = p.parse_args(argv)
    if not native.available() or native.isa() == "scalar":
        print(f"needs the C extension with AVX2+FMA or AVX-512 (backend: {native.backend()})", file=sys.stderr)
        return 2
    alpha, size = parse_variant(args.variant)
    model = MobileNetV2((size, size, 3), alpha=alpha, weights=None, threads=1)
    x = np.random.default_rng(1).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    model(x)
    ops = model.profile(x, runs=args.runs)
    peak = peak_gflops()
    peak_avx2 = peak_gflops("avx2")
    whole = 2 * model.macs() / sum(r["seconds"] for r in ops) / 1e9

    # every pointwise layer (1x1 conv or dense) of the network, by shape
    out_shapes = arch.output_shapes(model.layers, (size, size, 3))
    shapes = {}
    for layer in model.layers:
        if isinstance(layer, L.Dense) or (isinstance(layer, L.Conv2D) and layer.kernel == 1):
            rows = int(np.prod(out_shapes[layer.name][:-1]))
            s = shapes.setdefault((rows, layer.cin, layer.cout), dict(layers=0, in_run=[]))
            s["layers"] += 1
    for r in ops:  # the layers that run as ops of their own
        if r["kind"] == "pointwise":
            rows, rest = r["shape"].split("x")
            shapes[(int(rows),) + tuple(int(v) for v in rest.split("->"))]["in_run"].append(r["seconds"])
    table = []
    for (rows, cin, cout), s in shapes.items():
        macs = rows * cin * cout
        in_run = 2 * macs / float(np.median(s["in_run"])) / 1e9 if s["in_run"] else None
        table.append(dict(shape=f"{rows}x{cin}->{cout}", layers=s["layers"], macs=macs,
                          alone_gflops=kernel_gflops(rows, cin, cout), in_run_gflops=in_run))

    macs = sum(t["macs"] * t["layers"] for t in table)
    alone_s = sum(t["macs"] * t["layers"] * 2 / (t["alone_gflops"] * 1e9) for t in table)
    own = [r for r in ops if r["kind"] == "pointwise"]
    blocks = [r for r in ops if r["kind"] == "block"]
    summary = dict(variant=args.variant, cpu=cpu_model(), isa=native.isa(), peak_gflops=peak,
                   peak_avx2_gflops=peak_avx2, network_gflops=whole,
                   pointwise_macs=macs, alone_gflops=2 * macs / alone_s / 1e9,
                   in_run_gflops=2 * sum(r["macs"] for r in own) / sum(r["seconds"] for r in own) / 1e9,
                   in_run_layers=len(own),
                   fused_blocks=len(blocks), fused_block_gflops=(
                       2 * sum(r["macs"] for r in blocks) / sum(r["seconds"] for r in blocks) / 1e9
                       if blocks else None))

    def pct(g):
        return f"{g:>11.1f} {100 * g / peak:>5.0f}%" if g is not None else f"{'(fused)':>11} {'':>6}"

    print(f"# {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%S%z}  {cpu_model()}, 1 thread, {args.variant}")
    lanes = 16 if native.isa() == "avx512" else 8
    print(f"# kernels: {native.backend()}; our FMA peak loop (12 chains x {lanes} lanes, csrc/peak.c): "
          f"{peak:.1f} GFLOP/s (AVX2 loop: {peak_avx2:.1f})")
    print(f"# whole network, 1 thread, in run: {whole:.1f} GFLOP/s = {100 * whole / peak:.0f}% of the peak")
    print(f"{'rows x cin -> cout':>22} {'layers':>6} {'alone GF/s':>10} {'% peak':>6} {'in run GF/s':>11} {'% peak':>6}")
    for t in table:
        print(f"{t['shape']:>22} {t['layers']:>6} {t['alone_gflops']:>10.1f} "
              f"{100 * t['alone_gflops'] / peak:>5.0f}% {pct(t['in_run_gflops'])}")
    print(f"{'all pointwise (MAC-weighted)':>29} {summary['alone_gflops']:>10.1f} "
          f"{100 * summary['alone_gflops'] / peak:>5.0f}% {pct(summary['in_run_gflops'])}"
          f"  (in run: the {len(own)} layers with ops of their own)")
    if blocks:
        print(f"# {len(blocks)} fused blocks in the run (expand + depthwise + project): "
              f"{summary['fused_block_gflops']:.1f} GFLOP/s, "
              f"{100 * summary['fused_block_gflops'] / peak:.0f}% of peak")
    _args.write_json(_args.json_path(args.json, "pointwise-peak"), {"summary": summary, "shapes": table}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
