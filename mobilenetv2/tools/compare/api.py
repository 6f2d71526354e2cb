"""``compare(other, ...)``: where another framework's MobileNetV2 first leaves our float64
reference by more than rounding, and why.  See mobilenetv2/tools/compare/__init__.py."""
import os
import sys

import numpy as np

from mobilenetv2 import files
from mobilenetv2.network import arch
from mobilenetv2.tools.compare import mapping as M
from mobilenetv2.tools.compare import weights as W
from mobilenetv2.tools.compare.diagnose import diagnose
from mobilenetv2.errors import WeightsError, is_finite
from mobilenetv2.tools.compare.errors import CompareError
from mobilenetv2.tools.compare.inputs import MAX_IMAGES, make_input
from mobilenetv2.tools.compare.metrics import DEFAULT_FACTOR, layer_row, metrics, noise_floor
from mobilenetv2.tools.compare.quant import own_weights, quant_info
from mobilenetv2.tools.compare.reference import NO_PATCH, Reference

SCHEMA = "mobilenetv2.compare/1"


def open_other(other, mapping_input=None, mapping_layout=None):
    """OTHER as an OtherModel: a path (.onnx, .tflite, an OpenVINO IR .xml, .npz, a folder of
    .npy) or a live torch / Keras / OpenVINO model object."""
    if isinstance(other, (str, bytes, os.PathLike)):
        path = files.path_str(other)
        if not os.path.exists(path):
            raise CompareError(f"OTHER {path!r} does not exist")
        low = path.lower()
        if low.endswith(".onnx"):
            from mobilenetv2.tools.compare.onnx_reader import read_onnx
            return read_onnx(path)
        if low.endswith(".tflite"):
            from mobilenetv2.tools.compare.tflite_reader import read_tflite
            return read_tflite(path)
        if low.endswith(".xml"):
            from mobilenetv2.tools.compare.openvino_reader import read_openvino
            return read_openvino(path)
        if low.endswith(".npz") or os.path.isdir(path):
            from mobilenetv2.tools.compare.dump_reader import read_dump
            return read_dump(path, mapping_input or "input", mapping_layout)
        raise CompareError(f"OTHER {path!r}: compare reads .onnx, .tflite, .xml (OpenVINO IR), .npz or a "
                           "folder of .npy files")
    from mobilenetv2.tools.compare.object_reader import read_object
    return read_object(other)


class _Progress:
    def __init__(self, enabled, total):
        self.enabled, self.total, self.done = enabled, max(total, 1), 0

    def __call__(self, label):
        if not self.enabled:
            return
        self.done = min(self.done + 1, self.total)
        width = 30
        filled = int(width * self.done / self.total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {label[:60]:<60}")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\r" + " " * 96 + "\r")
            sys.stderr.flush()


def _rows(ref_trace, floors, other_out, matches, other, factor, patch=NO_PATCH):
    rows = []
    for m in matches:
        if m.layer not in ref_trace:
            continue
        want = ref_trace[m.layer]
        got, read_as = M.to_nhwc(other_out[m.tensor], want.shape, other.layout_of(m.tensor))
        if m.layer in patch.other_fn:
            got = patch.other_fn[m.layer](got)
        if m.layer in patch.ref_fn:
            want = patch.ref_fn[m.layer](want)
        row = layer_row(m.layer, got, want, floors[m.layer], factor, m.how)
        row["tensor"], row["layout"] = m.tensor, read_as
        rows.append(row)
    return rows


KEPT_BYTES = 8 + 4  # per value of every layer, at least: the float64 reference's and our float32 engine's


def _check_memory(layers, x):
    """An InsufficientMemory where the batch ``x`` certainly needs more memory than this machine has
    now, before anything runs: compare keeps every layer of both sides (a file may declare a
    4096x4096 input: its run was killed by the kernel, no word said, past 24 GB)."""
    from mobilenetv2.engines import machine
    from mobilenetv2.errors import InsufficientMemory
    available = machine.available_memory()
    if available is None:
        return
    per_image = sum(int(np.prod(s)) for s in arch.output_shapes(layers, x.shape[1:]).values())
    needed = len(x) * per_image * KEPT_BYTES
    if needed > available:
        n, h, w = x.shape[:3]
        raise InsufficientMemory(
            f"out of memory for comparing {n} image(s) at {h}x{w}: compare keeps every layer of the reference "
            f"in float64 and float32 (and OTHER's), at "
            f"least {needed / 2**30:.1f} GiB, and {available / 2**30:.1f} GiB is available; compare fewer images "
            "(--random 1) or a model of a smaller input size")


def _epsilon_everywhere(ref, patch):
    from mobilenetv2.network import layers as L
    from mobilenetv2.tools.compare.reference import Patch, clone
    e = patch.detail["epsilon"]
    return Patch("bn_epsilon", patch.text, {x.name: (lambda layer: clone(layer, epsilon=e)) for x in ref.layers
                                            if isinstance(x, L.BatchNormalization) and x.epsilon != 0.0})


MAX_DIAGNOSES = 4  # the first divergent layer, then up to 3 more found with the earlier causes applied


def _diagnose_one(ref, row, rows, base, matches, other_out, floors, o, factor, bar):
    """Diagnose the layer of ``row`` with the defects of ``base`` applied; return (diagnosis,
    base with this layer's defect added or None if unexplained, next divergent row or None)."""
    layer = row["layer"]
    match = next(m for m in matches if m.layer == layer)
    other_arr, _ = M.to_nhwc(other_out[match.tensor], ref.base()[layer].shape, o.layout_of(match.tensor))
    floor = row["floor_rel_l2"]

    def score(patch):
        try:
            want = ref.trace(patch, stop=layer)[layer]
        except WeightsError:  # weights rounded to float16 past its range (inf): not what OTHER ran
            return (np.inf, np.inf)
        got = patch.other_fn[layer](other_arr) if layer in patch.other_fn else other_arr
        if layer in patch.ref_fn:
            want = patch.ref_fn[layer](want)
        if np.shape(got) != np.shape(want):
            return (np.inf, np.inf)
        e = metrics(got, want)["rel_l2"]
        measured = ref.floors(patch, stop=layer, names=(layer,))  # a patch rounding activations: its own floor
        return (e / (measured[layer][0] if measured and layer in measured else floor), e)
    score.factor = factor
    i = next(k for k, r in enumerate(rows) if r["layer"] == layer)
    previous = rows[i - 1]["layer"] if i else None
    d = diagnose(ref, layer, score, other_arr, np.shape(other_arr), base=base, previous=previous, progress=bar)
    lo = ref.index[previous] if previous else 0
    gap = [u for u in ref.unmapped if u["layer"] in ref.index and lo < ref.index[u["layer"]] < ref.index[layer]]
    if gap:  # what OTHER does not run right before this layer: said whatever the cause found
        d["unmapped_before"] = gap
    patch = d.pop("patch")
    alternatives = d.pop("alternatives", [])
    if patch is None:  # unexplained: nothing applied, the schema's keys there all the same
        d.update(equivalent=[], scope=None, after_fix=None)
        return d, None, None
    bar("checking every layer with the diagnosis applied")

    def next_divergent(p):
        fixed = _rows(ref.trace(p), ref.floors(p, names=floors) or floors, other_out, matches, o, factor, p)
        return next((r for r in fixed if not r["agrees"]), None)

    def touches(p):
        return frozenset(p.layers), p.input_fn is None
    nxt = next_divergent(patch)
    # equally confirmed here but touching other layers (pads on the stem only, or on every
    # stride-2 conv): keep the one that explains the most layers after it
    tried = {touches(patch)}
    found = d["evidence"][0]  # (a patch has its evidence) listed as equivalent if an alternative replaces it
    for ev, alt in alternatives:
        if nxt is None or len(tried) > 6:
            break
        if touches(alt) in tried:
            continue
        tried.add(touches(alt))
        n2 = next_divergent(alt)
        if n2 is None or ref.index[n2["layer"]] > ref.index[nxt["layer"]]:
            nxt, patch, d["evidence"] = n2, alt, [ev]
    d["equivalent"] = [e["applied"] for e in [found] + [e for e, _ in alternatives]
                       if e["applied"] != d["evidence"][0]["applied"]][:8]
    d["scope"] = "this layer"
    if nxt is not None and d["cause"] == "bn_epsilon" and not d["also"]:
        everywhere = patch + _epsilon_everywhere(ref, patch)  # the same epsilon in every batch norm?
        n2 = next_divergent(everywhere)
        if n2 is None or ref.index[n2["layer"]] > ref.index[nxt["layer"]]:
            nxt, patch, d["scope"] = n2, everywhere, "every batch norm"
            d["evidence"][0]["applied"] += "; the same in every batch norm"
    fixed = _rows(ref.trace(patch), ref.floors(patch, names=floors) or floors, other_out, matches, o, factor, patch)
    worst = max(fixed, key=lambda r: -1 if r["ratio"] is None else r["ratio"])
    d["after_fix"] = {"agrees": nxt is None, "first_divergent_layer": None if nxt is None else nxt["layer"],
                      "worst_layer": worst["layer"], "worst_ratio": worst["ratio"],
                      "floor": "float32" if patch.steps is None else f"measured {_rounded_kind(patch)} (quant.py)"}
    return d, patch, nxt


def _rounded_kind(patch):
    """What a patch rounding activations rounds to: its activations' type where named, else its
    weights' (int8)."""
    acts = patch.detail.get("activations")
    return acts if isinstance(acts, str) else patch.detail.get("weights")


def _is_probabilities(a, grid=None):
    """Non-negative values summing to 1 over the class axis (rows, or a grid's channels, NCHW or
    NHWC, as TF-slim's 7x7 head gives above 224): a softmax's output, not logits.  ``grid``: the
    integer grid OTHER stores them on (an int8 softmax: steps of 1/256 from 0), where the sum
    drifts far from 1 (the many small probabilities all round to 0: 0.84 over 1000 classes):
    there, values that are some probability vector's rounding onto the grid, each value within
    half a step of it (the top of the grid: anything above it) and a sum of 1 in those bounds."""
    a = np.atleast_2d(np.asarray(a, np.float64))  # a dump may keep one image's vector unbatched
    if a.ndim not in (2, 4) or not np.all(np.isfinite(a)) or float(a.min()) < 0:
        return False
    if grid is None:
        lo = hi = a
    else:
        step = float(np.max(grid.scale))
        top = (grid.qmax - float(np.max(grid.zero_point))) * step if np.size(grid.scale) == 1 else np.inf
        lo = np.maximum(a - step / 2, 0.0)
        hi = np.where(a >= top - step / 4, np.inf, a + step / 2)
    return any(a.shape[axis] > 1 and float(np.max(lo.sum(axis=axis))) <= 1.0 + 1e-3
               and float(np.min(hi.sum(axis=axis))) >= 1.0 - 1e-3 for axis in {1, a.ndim - 1})


def _defect_first(found):
    """The report's diagnosis from the causes found in order.  Rounding (``precision``) shows at
    the first layer and everywhere after; a defect found once it is applied (pads on one layer
    of an int8 graph) is what the user must fix: it leads, ``precision`` goes to its ``also``."""
    k = next((i for i, d in enumerate(found) if d["cause"] not in ("precision", "unexplained")), None)
    if found[0]["cause"] != "precision" or k is None:
        return dict(found[0], further=found[1:])
    lead = dict(found[k], also=list(found[k]["also"]) + ["precision"] * ("precision" not in found[k]["also"]))
    return dict(lead, further=found[:k] + found[k + 1:])


def _deployed(o, x, matches, other_out, ref_trace, floors, factor):
    """OTHER's final output as it runs deployed (``o.deployed``: compiled as it is, its own outputs
    only) against the run compare instrumented and against the reference on that layer's floor;
    None where the reader runs OTHER one way only.  An output that is a compared tensor seen
    through the ops the mapping looks through (a backbone's Transpose to NHWC) is that layer."""
    if o.deployed is None:
        return None
    made_by = {n.output: n for n in o.nodes}
    mapped = {m.tensor: m for m in matches if m.layer in ref_trace}

    def layer_of(t):
        while t not in mapped and t in made_by and made_by[t].op in ("reshape", "cast") and made_by[t].inputs:
            t = made_by[t].inputs[0]
        return mapped.get(t)
    finals = [(t, layer_of(t)) for t in o.outputs or () if layer_of(t) is not None]
    if not finals:
        return None
    order = list(ref_trace)
    tensor, m = max(finals, key=lambda f: order.index(f[1].layer))
    want = ref_trace[m.layer]
    got, read_as = M.to_nhwc(o.deployed(x)[tensor], want.shape, o.layout_of(tensor))
    seen, _ = M.to_nhwc(other_out[tensor], want.shape, o.layout_of(tensor))
    row = layer_row(m.layer, got, want, floors[m.layer], factor, m.how)
    instrumented = layer_row(m.layer, seen, want, floors[m.layer], factor, m.how)
    vs = metrics(got, seen) if np.shape(got) == np.shape(seen) else {"max_abs": None, "rel_l2": None}
    return dict(row, tensor=tensor, layout=read_as, instrumented={
        "max_abs": vs["max_abs"], "rel_l2": vs["rel_l2"], "bit_equal": bool(np.array_equal(got, seen)),
        "ratio": instrumented["ratio"], "agrees": instrumented["agrees"]})


def _deployed_diagnosis(row):
    """``deployed_kernels``: the deployed run leaves the floor at OTHER's final output where the
    instrumented run (the graph compare reads, every tensor requested) agrees there."""
    ins = row["instrumented"]
    return {"layer": row["layer"], "cause": "deployed_kernels", "also": [], "tried": 0, "evidence": [{
        "cause": "deployed_kernels", "layer": row["layer"],
        "applied": "OTHER's final output as compiled with every tensor requested (the graph compare reads) in "
                   "place of its output as compiled as it is (its own outputs only: the kernels it is deployed with)",
        "before": {"rel_l2": row["rel_l2"], "ratio": row["ratio"]},
        "after": {"rel_l2": None, "ratio": ins["ratio"]},
        "detail": {"rel_l2_vs_instrumented": ins["rel_l2"], "max_abs_vs_instrumented": ins["max_abs"]}}]}


def _head_by_names(o, tensors_map):
    """(include_top, pooling) of the reference for OTHER without a graph (a dump, a Keras model):
    the Keras layers its tensors are compared as (the mapping file's, else its tensors' own names)
    say whether it has the classifier ('predictions', or 'Logits' as Keras 2's older files name
    it), and where not whether it pools.  A dump without the classifier then gets a reference
    without one: a variant name loads the _no_top file (it loaded the file with the classifier,
    which the dump has no use for and a user of the backbone alone may not have)."""
    names = set(tensors_map.values()) if tensors_map is not None else set(o.tensor_names or o.fixed_tensors or ())
    if names & {"predictions", "Logits"}:
        return True, None
    pools = {"global_average_pooling2d": "avg", "global_max_pooling2d": "max"}  # Keras's names for pooling=
    return False, next((p for name, p in pools.items() if name in names), None)


def _resized(a, layout):
    """OTHER's resized input (an image batch, in its layout) as NHWC."""
    a = np.asarray(a)
    return M.to_nhwc(a, (a.shape[0],) + ((a.shape[2], a.shape[3], a.shape[1]) if layout == "NCHW" else a.shape[1:]),
                     layout)[0]


def _same_map(m1, m2):
    """Whether two per-channel maps (a, b) are the same: OTHER's whole input map is the one ahead
    of its resize, no map after it."""
    return all(np.array_equal(np.asarray(u).reshape(-1), np.asarray(v).reshape(-1)) for u, v in zip(m1, m2))


class Report(dict):
    """The report (the JSON schema's dict), knowing the files it was made from (``inputs``), which
    ``report.write_json`` and ``write_plot`` do not write over (--json model.onnx replaced the model)."""
    inputs = ()


def input_files(other, weights, images, batch, mapping):
    """The paths compare reads: OTHER (and an IR's .bin beside it), the weights, the images, the
    input batch and the mapping file, as given."""
    paths = [other, weights, batch, mapping] + (list(images) if isinstance(images, (list, tuple)) else [images])
    paths = [files.path_str(p) for p in paths if isinstance(p, (str, bytes, os.PathLike))]
    if paths and paths[0].lower().endswith(".xml"):
        paths.append(os.path.splitext(paths[0])[0] + ".bin")
    return tuple(paths)


def compare(other, weights=None, images=None, random=None, seed=0, batch=None, mapping=None,
            factor=DEFAULT_FACTOR, progress=False):
    """Compare OTHER with the float64 reference layer by layer; return the report (a dict, the
    JSON schema in the README): per-layer metrics, ``agrees``, ``first_divergent_layer`` and a
    ``diagnosis`` confirmed by re-running the reference with the defect applied."""
    if not is_finite(factor) or factor <= 1:
        raise CompareError(f"factor must be a finite number above 1, got {factor!r}")
    factor = float(factor)  # (np.array(30.0) too: the report holds Python's float)
    tensors_map, map_input, map_layout = (M.load_mapping_file(mapping) if mapping is not None
                                                  else (None, None, None))
    o = open_other(other, map_input, map_layout)
    if not o.nodes and o.fixed_input is None and o.tensor_names is None:
        # a graph (or module) none of whose ops compare reads: not a tensor dump, whatever its lack of nodes
        raise CompareError(f"{o.source!r} ({o.kind}) runs no operation compare reads as a layer (no convolution, "
                           "batch norm, activation or pooling): it is no MobileNetV2")
    if o.fixed_input is not None:
        if images is not None or random is not None or batch is not None:
            raise CompareError(f"{o.source!r} is a tensor dump: it carries its own input, so --images, "
                               "--random and an input batch do not apply")
        x, input_desc = o.fixed_input, "the input stored in the dump" + \
            ("" if o.input_layout == "NHWC" else f" (stored {o.input_layout})")
    hw = tuple(o.fixed_input.shape[1:3]) if o.fixed_input is not None else o.input_hw
    if hw is not None and not all(arch.MIN_SIZE <= d <= arch.MAX_SIZE for d in hw):
        # refused before an input of that size is drawn (a file may declare 60000 x 60000), and a
        # dump's before the weights are blamed for fitting no model of its size
        raise CompareError(f"{o.source!r} takes {hw[0]}x{hw[1]} images; a MobileNetV2 takes sides from "
                           f"{arch.MIN_SIZE} to {arch.MAX_SIZE}")
    fixed = o.fixed_batch if o.fixed_input is None and o.fixed_batch and o.fixed_batch > 1 else None
    if fixed is not None and images is None and random is None and batch is None and fixed <= MAX_IMAGES:
        random = fixed  # the default input: one batch of the size OTHER declares (one image did not run)
    if o.fixed_input is None:
        # (an OTHER of any size: images and random ones at 224x224, a batch at its own size)
        x, input_desc = make_input(hw, images, random, seed, batch)
        if hw is None and not all(arch.MIN_SIZE <= d <= arch.MAX_SIZE for d in x.shape[1:3]):
            raise CompareError(f"input batch has shape {x.shape}; a MobileNetV2 takes sides from "
                               f"{arch.MIN_SIZE} to {arch.MAX_SIZE}")
        hw = tuple(x.shape[1:3])
        if fixed is not None and len(x) % fixed:  # before the runtime refuses it in its own words
            raise CompareError(f"{o.source!r} takes batches of {fixed} images (its input's fixed batch size), and "
                               f"the input holds {len(x)}: " + (
                                   f"give a multiple of {fixed} (--random {fixed}, or {fixed} images)"
                                   if fixed <= MAX_IMAGES else f"compare runs at most {MAX_IMAGES} images: export "
                                   "it with a dynamic batch size or a smaller fixed one"))
    other_out, x_ref = None, x
    if o.input_resize is not None:  # OTHER resizes its input itself: the reference starts from its resized tensor
        other_out = o.run(x)
        x_ref = np.asarray(_resized(other_out[o.input_resize], o.layout_of(o.input_resize)), np.float32)
        hw = tuple(x_ref.shape[1:3])
        input_desc += (f"; OTHER resizes it to {hw[0]}x{hw[1]} before its first conv ({o.input_resize_op}): "
                       f"the reference is given OTHER's resized tensor {o.input_resize!r}")
        if o.affine_before_resize is not None:  # a per-channel a * x + b commutes with a resize (its weights sum to 1)
            a, b = (np.asarray(v, np.float64).reshape(-1) for v in o.affine_before_resize)
            x_ref = np.asarray((x_ref - b) / a, np.float32)
            input_desc += (", its mean/scale ahead of the resize undone on it (a per-channel map commutes with a "
                           "resize): the mean/scale is checked as without a resize" +
                           (", together with OTHER's map after the resize"
                            if not _same_map(o.input_affine, o.affine_before_resize) else ""))
    o.nodes = M.head_convs_as_dense(o.nodes)
    pool = next((n for n in o.nodes if n.op == "pool"), None)
    unread = M.unread_head(o) if o.nodes else []
    if o.nodes:
        # a head OTHER computes with ops not read as a dense layer: compared where it ends, as OTHER's
        # final output, against the head of the weights given (none to compare it with otherwise)
        include_top = M.has_head(o) or (bool(unread) and weights is not None)
        # without a head, Keras pools as asked (pooling='avg' or 'max'): the reference pools as
        # OTHER does; with one, Keras averages, and a max pooling in OTHER is a defect the diagnosis names
        pooling = None if pool is None or include_top else ("max" if pool.attrs.get("kind") == "max" else "avg")
    else:
        include_top, pooling = _head_by_names(o, tensors_map)
    # TF-slim's head (a 7x7 average pooling window, then the logits): the reference's too
    top_pooling = "7x7" if include_top and pool is not None and pool.attrs.get("kind") == "window" else "global"
    other_model = None  # OTHER's own weights, where the reference's are the user's: compared per layer
    if weights is not None:
        m64, m32, wdesc, cannot = W.from_user(weights, hw, include_top, pooling, top_pooling=top_pooling)
        if o.nodes:
            other_model = W.own_model(o, hw, include_top and M.has_head(o), pooling, top_pooling)
        elif o.keras_weights is not None:  # a Keras model stores its own weights too: compared per layer
            other_model = W.own_keras_model(o, hw)
    elif o.nodes:
        try:  # OTHER's arrays (NaN, inf, a variance below zero) are checked as a weights file's are
            m64, m32, wdesc, cannot = W.from_other(o, hw, include_top, pooling, top_pooling)
        except WeightsError as exc:
            raise CompareError(f"{o.source!r}: its own weights cannot be the reference's ({exc}); name the "
                               "reference weights with --weights to compare it with them") from None
    elif o.keras_weights is not None:
        m64, m32, wdesc, cannot = W.from_keras_object(o, hw)
    else:
        raise CompareError(f"{o.source!r} is a tensor dump and carries no weights: name the reference "
                           "weights with --weights (a Keras .h5, a Hugging Face folder or a variant name)")
    if o.input_resize is not None:
        cannot += (f"; OTHER's own resize of its input ({o.input_resize_op}, before its first conv): the "
                   "reference starts from OTHER's resized tensor")
    _check_memory(m64.layers, x_ref)  # before OTHER runs (every tensor kept) and the reference does
    ref = Reference(m64, m32, x_ref)
    unmapped = []  # Keras layers OTHER's graph has no counterpart of
    if o.non_float:  # a dump's integer arrays named as (or mapped to) Keras layers: left out, they hid a layer
        wanted = set(tensors_map) if tensors_map is not None else {layer.name for layer in m64.layers}
        ints = sorted(k for k in o.non_float if k in wanted)
        if ints:
            raise CompareError(f"dump {o.source!r}: array {ints[0]!r} is {o.non_float[ints[0]]}"
                               + (f" (and {len(ints) - 1} more)" if len(ints) > 1 else "")
                               + "; compare compares float tensors: dump the layers' float values (an int8 "
                               "tensor dequantized with its scale and zero point)")
    if tensors_map is not None:
        matches = M.map_by_names(tensors_map, m64.layers, "mapping file")
    elif not o.nodes:
        names = {layer.name for layer in m64.layers}
        matches = M.map_by_names({k: k for k in (o.tensor_names or o.fixed_tensors) if k in names}, m64.layers,
                                 "by name (OTHER's tensor is named as the Keras layer)")
        if not matches:
            raise CompareError(f"dump {o.source!r}: no array is named as a Keras layer; give a --mapping "
                               'file {"input": NAME, "tensors": {ARRAY: KERAS_LAYER}}')
    else:
        matches = M.map_by_topology(o, m64.layers, unmapped)
    if unread and not any(layer.name == "predictions" for layer in m64.layers):
        unmapped.append({"layer": "predictions", "why": (
            f"OTHER computes past its pooling with ops not read as a dense layer ({', '.join(unread[:6])}"
            f"{', ...' if len(unread) > 6 else ''}), and the reference has no head: its final output is not "
            "compared; name weights with the classifier (--weights) to compare it")})
    if not matches:  # nothing compared would read as agreeing
        raise CompareError("the mapping maps none of OTHER's tensors to a Keras layer: nothing to compare; "
                           'give {"tensors": {OTHER_NAME: KERAS_LAYER, ...}}')
    for m in matches:
        if m.layer == m64.layers[0].name:
            raise CompareError("the mapping names the input layer; map it with the \"input\" key instead")
    ref.quant = quant_info(o, matches, m64.layers)
    ref.unmapped = unmapped
    ref.other_weights = own_weights(o, m64.layers) if o.nodes else {}
    ref.other_model = other_model
    ref.input_affine = o.input_affine
    bar = _Progress(progress, 5 + 40)
    bar("running OTHER")
    other_out = o.run(x) if other_out is None else other_out
    seen = other_out.get(o.input_quant_tensor) if ref.quant is not None and o.input_quant_tensor else None
    if seen is not None:  # OTHER's rounded input: its side where float32 rounds a tie either way
        ref.quant.input_seen = M.to_nhwc(seen, ref.x.shape, o.layout_of(o.input_quant_tensor))[0]
    missing = [m.tensor for m in matches if m.tensor not in other_out]
    if missing:
        raise CompareError(f"OTHER has no tensor(s) {missing[:5]} named in the mapping")
    head = None
    top = next((m for m in matches if m.layer == "predictions"), None)
    if top is not None and any(layer.name == "predictions" for layer in m64.layers):
        # OTHER's final output compared as OTHER computes it: probabilities against the
        # reference's softmax, logits against its logits (anything else is a defect at the head)
        head = "softmax" if _is_probabilities(other_out[top.tensor], (o.quant or {}).get(top.tensor)) else "logits"
        for model in (m64, m32):
            model.get_layer("predictions").activation = "softmax" if head == "softmax" else None
    bar("running the float64 reference")
    ref_trace = ref.base()
    bar("running our float32 engine (noise floor)")
    ref32 = ref.float32_trace()
    floors = {m.layer: noise_floor(ref32[m.layer], ref_trace[m.layer]) for m in matches}
    if ref.quant is not None:  # what an int8 reference runs each layer from: OTHER's own tensors
        ref.quant.forced = {m.layer: np.asarray(M.to_nhwc(other_out[m.tensor], ref_trace[m.layer].shape,
                                                          o.layout_of(m.tensor))[0], np.float64)
                            for m in matches if m.layer in ref_trace}
        ref.quant.forced = {k: v for k, v in ref.quant.forced.items() if v.shape == ref_trace[k].shape}
    rows = _rows(ref_trace, floors, other_out, matches, o, factor)
    first = next((r for r in rows if not r["agrees"]), None)
    bar("running OTHER as deployed")
    deployed = _deployed(o, x, matches, other_out, ref_trace, floors, factor)
    report = Report({
        "schema": SCHEMA,
        "other": {"source": o.source if isinstance(o.source, str) else repr(o.source), "kind": o.kind,
                  "input_layout": o.input_layout, "runtime": o.runtime},
        "weights": {"source": wdesc, "cannot_detect": cannot},
        "input": {"source": input_desc, "shape": list(x.shape)},
        "factor": float(factor),
        "floor": "our float32 NumPy engine's relative L2 error against float64 at each layer, same input",
        "layers": rows,
        "unmapped": unmapped,
        "head": head,
        "deployed": deployed,
        "agrees": first is None,
        "first_divergent_layer": None if first is None else first["layer"],
        "diagnosis": None,
    })
    report.inputs = input_files(other, weights, images, batch, mapping)
    further = []
    base, row = NO_PATCH, first
    while row is not None and len(further) < MAX_DIAGNOSES:
        d, base, row = _diagnose_one(ref, row, rows, base, matches, other_out, floors, o, factor, bar)
        further.append(d)
        if base is None:
            break
    if further:
        report["diagnosis"] = _defect_first(further)
    if deployed is not None and deployed["instrumented"]["agrees"] and not deployed["agrees"]:
        if report["diagnosis"] is None:
            report.update(agrees=False, first_divergent_layer=deployed["layer"],
                          diagnosis=dict(_deployed_diagnosis(deployed), further=[]))
        else:
            report["diagnosis"]["further"].append(_deployed_diagnosis(deployed))
    bar.close()
    return report
