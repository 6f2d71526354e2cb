"""The report of a comparison: a terminal table, a JSON file, a plot (matplotlib optional)."""
import json
import math
import os

from mobilenetv2.tools.compare.errors import require
from mobilenetv2 import files
from mobilenetv2.errors import OutputPathError


def _num(v, fmt="{:.2e}"):
    return "-" if v is None else fmt.format(v)


def format_table(report, all_layers=False):
    """The table as text: every layer up to the first divergent one and a few after (all with
    ``all_layers``), the first divergent layer marked ``>>``, then the verdict and diagnosis."""
    rows = report["layers"]
    first = report["first_divergent_layer"]
    idx = next((i for i, r in enumerate(rows) if r["layer"] == first), None)
    shown = rows if all_layers or idx is None else rows[:idx + 4]
    name_w = max([len(r["layer"]) for r in shown] + [5])
    lines = [f"OTHER:   {report['other']['source']} ({report['other']['kind']}, input {report['other']['input_layout']})",
             *([f"         runs on {report['other']['runtime']}"] if report["other"].get("runtime") else []),
             f"weights: {report['weights']['source']}",
             f"         cannot detect: {report['weights']['cannot_detect']}",
             f"input:   {report['input']['source']}, shape {report['input']['shape']} (NHWC)",
             f"floor:   {report['floor']}; a layer diverges above {report['factor']:g} x its floor"]
    if report.get("head") == "softmax":
        lines.append("head:    OTHER's predictions are probabilities (rows sum to 1): compared with the "
                     "softmax of the reference's logits")
    for u in report.get("unmapped") or []:
        lines.append(f"unmapped: {u['layer']} has no counterpart in OTHER ({u['why']})")
    lines.append("")
    head = f"   {'layer':<{name_w}}  {'max abs':>9}  {'rel L2':>9}  {'cosine':>10}  {'floor':>9}  {'x floor':>9}"
    lines += [head, "-" * len(head)]
    for r in shown:
        mark = ">> " if r["layer"] == first else ("   " if r["agrees"] else " ! ")
        ratio = "-" if r["ratio"] is None else (f"{r['ratio']:.1f}" if r["ratio"] < 1e4 else f"{r['ratio']:.1e}")
        cos = "-" if r["cosine"] is None else f"{r['cosine']:.8f}"
        lines.append(f"{mark}{r['layer']:<{name_w}}  {_num(r['max_abs'])}  {_num(r['rel_l2'])}  {cos:>10}  "
                     f"{_num(r['floor_rel_l2'])}  {ratio:>9}" + (f"  {r['note']}" if r.get("note") else ""))
    if len(shown) < len(rows):
        lines.append(f"   ... {len(rows) - len(shown)} more layers (--all to show them)")
    dep = report.get("deployed")
    if dep:
        ins = dep["instrumented"]
        against = ("bit-equal" if ins["bit_equal"] else
                   f"rel L2 {_num(ins['rel_l2'])}, max abs {_num(ins['max_abs'])}")
        ratio = (f"{dep['ratio']:.3g} x its floor" + ("" if dep["agrees"] else f", above {report['factor']:g} x")
                 if dep["ratio"] is not None else dep.get("note", "-"))
        lines.append(f"deployed: {dep['layer']} with OTHER compiled as it is (its own outputs only): "
                     f"rel L2 {_num(dep['rel_l2'])} = {ratio}; against the run above: {against}" +
                     ("" if ins["agrees"] else " (not judged: the run above leaves this floor too)"))
    lines.append("")
    if report["agrees"]:
        worst = max(rows, key=lambda r: r["ratio"] or 0)
        lines.append(f"AGREES: all {len(rows)} compared layers within {report['factor']:g} x their float32 noise floor "
                     f"(worst {worst['layer']}: {worst['ratio']:.1f} x)")
        if report.get("unmapped"):
            lines.append(f"  not compared: {len(report['unmapped'])} layer(s) with no counterpart in OTHER "
                         "(unmapped, above)")
        return "\n".join(lines)
    r = rows[idx]
    d = report["diagnosis"]
    if d and d["cause"] == "deployed_kernels":
        lines.append(f"DIVERGES at {first} as deployed: rel L2 {dep['rel_l2']:.3e} = {dep['ratio']:.3g} x its "
                     f"floor {dep['floor_rel_l2']:.2e}, where the run with every tensor requested agrees "
                     f"({dep['instrumented']['ratio']:.3g} x)")
    else:
        lines.append(f"DIVERGES at {first} ({r['how']}): " + (
            r.get("note") or f"rel L2 {r['rel_l2']:.3e} = {r['ratio']:.3g} x its floor {r['floor_rel_l2']:.2e}"))
    for k, d in enumerate([d] + d.get("further", []) if d else []):
        if k and k == 1 and d["cause"] == "precision" and "precision" in report["diagnosis"]["also"]:
            lines.append(f"found first, at {d['layer']} (the rounding the cause above was diagnosed with):")
        elif k and d["cause"] == "deployed_kernels":
            lines.append(f"and as deployed, where the run above agrees at {d['layer']}:")
        elif k:
            lines.append(f"next divergent layer with the causes above applied: {d['layer']}")
        also = f" (also: {', '.join(d['also'])})" if d["also"] else ""
        at = f" at {d['layer']}" if k == 0 and d["layer"] != first else ""
        lines.append(f"cause: {d['cause']}{also}{at}" + (f", in {d['scope']}" if d.get("scope") not in (None, "this layer") else ""))
        for u in d.get("unmapped_before") or []:
            lines.append(f"  note: {u['layer']} has no counterpart in OTHER ({u['why']}), right before this layer")
        if d["cause"] == "unexplained" and not d["evidence"]:
            lines.append("  no candidate reduced the error")
        if d["cause"] == "deployed_kernels":
            e = d["evidence"][0]
            lines.append(f"  OTHER compiled as it is computes {d['layer']} otherwise than the copy compare reads "
                         f"every tensor of (rel L2 {_num(e['detail']['rel_l2_vs_instrumented'])} between them): "
                         "the kernels it is deployed with differ from the graph compared layer by layer")
            continue
        for e in d["evidence"]:
            b, a = e["before"], e["after"]
            label = "closest (not confirmed)" if d["cause"] == "unexplained" else "confirmed"
            lines.append(f"  {label}: {e['applied']}")
            before = (f"rel L2 {_num(b['rel_l2'])} = {_num(b['ratio'], '{:.3g}')} x floor"
                      if _finite(b["rel_l2"]) else "the shapes differ")
            lines.append(f"    before: {before};  with it applied to the float64 reference: rel L2 "
                         f"{_num(a['rel_l2'])} = {_num(a['ratio'], '{:.3g}')} x floor")
            lines += _weight_lines(e["detail"].get("layers") if e["cause"] in ("bias_correction", "different_weights")
                                   else None)
        if d.get("equivalent"):
            lines.append(f"  {len(d['equivalent'])} more patch(es) of this kind equally confirmed (listed in the JSON)")
        fix = d.get("after_fix")
        if fix:
            floor = "" if fix.get("floor", "float32") == "float32" else f" its {fix['floor'].split(' (')[0]} floor"
            worst = (f" (worst {fix['worst_layer']}: {fix['worst_ratio']:.2g} x{floor})"
                     if fix.get("worst_ratio") is not None else "")
            lines.append(f"  with the diagnosis applied, every compared layer agrees{worst}" if fix["agrees"] else
                         f"  with the diagnosis applied, the next divergent layer is {fix['first_divergent_layer']}")
        lines.append(f"  ({d['tried']} suspected defects tried)")
    return "\n".join(lines)


WEIGHT_LINES = 8  # layers listed under a weights cause (the JSON's detail lists them all)


def _weight_lines(layers):
    """A line per layer whose weights differ from the reference's (weight_diff.LayerDiff.report)."""
    out = []
    for x in (layers or [])[:WEIGHT_LINES]:
        parts = ([f"{x['max_bias_shift_in_bias_scales']:.3g} x its bias scale"]
                 if x["max_bias_shift_in_bias_scales"] is not None else []) + \
                ([f"{100 * x['max_bias_shift_of_max_bias']:.3g} % of its largest bias"]
                 if x["max_bias_shift_of_max_bias"] is not None else [])
        kernel = (f"{x['kernel_values_off']} of {x['kernel_values']} kernel values off" if x["kernel_values_off"]
                  else "kernel within rounding of the reference's")
        bias = (f"; {x['bias_channels_shifted']} bias channel(s) moved, by up to {x['max_bias_shift']:.3g}" +
                (f" ({', '.join(parts)})" if parts else "")) if x["bias_channels_shifted"] else ""
        out.append(f"    {x['layer']}: {kernel}{bias}")
    if layers and len(layers) > WEIGHT_LINES:
        out.append(f"    ... {len(layers) - WEIGHT_LINES} more layers (listed in the JSON)")
    return out


def _finite(v):
    return v is not None and math.isfinite(v)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def refuse_an_input(inputs, path, what):
    """Refuse to write over a file a report is made from (``inputs``, api.input_files: OTHER, its
    weights, an image, the input batch, the mapping): --json model.onnx replaced the model."""
    for given in inputs:
        try:
            same = os.path.samefile(path, given)
        except OSError:  # either missing: not the same file
            same = False
        if same:
            raise OutputPathError(f"--{what} {path!r} is a file compare read ({given!r}): writing the report "
                                  "there would replace it; give another file name")


def write_json(report, path):
    path = files.check_output_path(path, "json")
    refuse_an_input(getattr(report, "inputs", ()), path, "json")
    data = json.dumps(_clean(report), indent=2).encode()
    with files.atomic_write(path, suffix=".json") as f:
        f.write(data)
    return os.path.abspath(path)


def write_plot(report, path):
    """Relative L2 per layer against the noise floor and the factor line, log scale."""
    require("matplotlib", "--plot", "plot")
    refuse_an_input(getattr(report, "inputs", ()), files.check_output_path(path, "plot"), "plot")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = report["layers"]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.16), 4.5))
    err = [r["rel_l2"] if r["rel_l2"] else float("nan") for r in rows]
    floor = [r["floor_rel_l2"] for r in rows]
    ax.semilogy(xs, err, "o-", ms=3, label="OTHER vs float64 (rel L2)")
    ax.semilogy(xs, floor, "-", color="gray", label="float32 noise floor")
    ax.semilogy(xs, [f * report["factor"] for f in floor], "--", color="gray", lw=0.8,
                label=f"{report['factor']:g} x floor")
    first = report["first_divergent_layer"]
    if first is not None:
        i = next(i for i, r in enumerate(rows) if r["layer"] == first)
        cause = report["diagnosis"]["cause"] if report["diagnosis"] else ""
        ax.axvline(i, color="red", lw=1)
        ax.annotate(f"{first}: {cause}", (i, err[i] if err[i] == err[i] else floor[i]), color="red",
                    xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["layer"] for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("relative L2 error")
    ax.set_title(f"{os.path.basename(report['other']['source'])} vs the float64 reference")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return files.save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
