"""OTHER as the comparison sees it: a list of nodes in a small op vocabulary, and a way to run it.

Every reader (ONNX, TFLite, a tensor dump, a live torch/Keras object) produces an ``OtherModel``:

- ``nodes``: ``Node`` objects in execution order, ``op`` one of ``conv`` (attrs: ``weight`` OIHW or
  None, ``bias``, ``group``, ``stride``), ``bn`` (``gamma``, ``beta``, ``mean``, ``var``, ``eps``),
  ``relu``, ``clip`` (``lo``, ``hi``), ``add`` (two activations), ``affine`` (a Mul/Add/Sub/Div by
  a constant), ``pad``, ``reshape`` (Transpose, Reshape, Flatten, Squeeze, Identity), ``pool``
  (``kind`` 'average' or 'max' over the whole map, or 'window': an average pooling window
  (``kernel``), TF-slim's 7x7 head), ``dense`` (``weight`` (out, in), ``bias``), ``softmax``, ``qdq`` (a
  QuantizeLinear -> DequantizeLinear pair: the values rounded onto an integer grid), ``other``;
  a conv or dense whose weights are computed at run time has ``weight`` None (and ``computed``, the
  op and tensor, where the reader can name them); one read from a quantized graph carries
  ``weight_q`` / ``bias_q``, the graph's own quantization of its weights (``QParams``), its
  ``weight`` being their dequantized values;
- ``run(x)``: the named tensors OTHER computed for an NHWC float32 batch ``x`` (transposed to
  OTHER's input layout by the reader);
- ``input_layout`` ('NCHW' or 'NHWC'), ``input_hw`` ((H, W) or None where dynamic),
  ``activation_layout`` (the layout of OTHER's feature maps), and ``fixed_input`` (a dump's
  own input, NHWC, or None where OTHER can be run on any input).
"""
from dataclasses import dataclass, field

import numpy as np

from mobilenetv2.tools.compare.errors import CompareError


@dataclass
class QParams:
    """An integer grid: value = (q - zero_point) * scale, q in [qmin, qmax]; ``scale`` and
    ``zero_point`` per tensor (scalars) or per channel along ``axis``.  ``fq_range``: (lo, hi) where
    an OpenVINO FakeQuantize rounds onto the grid (it computes in float32 from them: quant.activation_fn)."""
    scale: object
    zero_point: object
    qmin: int
    qmax: int
    axis: int = 1
    fq_range: object = None

    @classmethod
    def of(cls, scale, zero_point, dtype, axis=1):
        info = np.iinfo(dtype)
        zp = np.zeros_like(np.asarray(scale), np.int64) if zero_point is None else np.asarray(zero_point, np.int64)
        return cls(np.asarray(scale, np.float64), zp, int(info.min), int(info.max), axis)

    @property
    def bits(self):
        return int(np.log2(self.qmax - self.qmin + 1))

    def dequantize(self, q):
        q = np.asarray(q, np.float64)
        s, z = self.scale, self.zero_point
        if np.ndim(s):
            shape = [1] * q.ndim
            shape[self.axis] = -1
            s, z = s.reshape(shape), z.reshape(shape)
        return (q - z) * s


@dataclass
class Node:
    op: str
    inputs: list
    output: str
    name: str = ""
    attrs: dict = field(default_factory=dict)


@dataclass
class OtherModel:
    kind: str
    source: str
    nodes: list
    input_layout: str
    input_hw: object
    activation_layout: str
    runner: object = None
    fixed_input: object = None
    fixed_tensors: dict = None
    non_float: dict = None           # a dump's arrays of integers or booleans, not compared: name -> dtype
    fixed_batch: int = None          # the batch size OTHER's input declares, where static (it runs that many at a time)
    fused_activations: bool = False  # a conv op may carry its BN and ReLU6 (TFLite)
    layouts: dict = None             # tensor name -> 'NCHW' / 'NHWC' where the reader knows it
    tensor_names: list = None        # names OTHER's run() returns where it has no nodes (a Keras model)
    keras_weights: object = None     # Keras layer name -> its weight arrays (a Keras model)
    quant: dict = None               # tensor name -> QParams: OTHER's values there lie on that grid
    input_quant: object = None       # QParams of the rounding OTHER applies to its input, or None
    input_quant_tensor: str = None   # the tensor OTHER writes that rounding to, where the reader knows it
    input_affine: object = None      # (a, b) per channel: OTHER computes a * x + b from its input x itself
                                     # before its first layer (a PrePostProcessor's mean/scale), or None
    input_resize: str = None         # the tensor of OTHER's own resize of its input before its first
                                     # conv (an OpenVINO Interpolate, an ONNX Resize), or None
    input_resize_op: str = None      # what op that resize is, for the report ("an ONNX Resize (linear)")
    affine_before_resize: object = None  # (a, b) per channel: the part of input_affine OTHER computes
                                     # ahead of input_resize, undone on its resized tensor (the
                                     # reference's input), or None
    float_rounding: dict = None      # tensor name -> 'bfloat16' / 'float16': OTHER rounds it there (Casts)
    outputs: list = None             # OTHER's own output tensors (its graph's outputs), where the reader knows them
    runtime: str = None              # how OTHER was run, where the reader chose settings (OpenVINO's precision)
    deployed: object = None          # x -> {output tensor: array}: OTHER run as it is deployed, where
                                     # run() requests every tensor of a copy the runtime compiles otherwise

    def layout_of(self, tensor):
        return (self.layouts or {}).get(tensor) or self.activation_layout

    def run(self, x):
        if self.runner is None:
            return dict(self.fixed_tensors)
        return self.runner(x)


def image_input(dims, source, shape):
    """(layout, (H, W) or None where a side is dynamic) of an image batch input whose ``dims`` are
    ``shape`` (a side None where dynamic), by the axis that holds its 3 channels: 1 (NCHW) or 3
    (NHWC); else a CompareError naming ``source`` (as for a batch size below 1)."""
    if dims[1] == 3:
        layout, hw = "NCHW", (dims[2], dims[3])
    elif dims[3] == 3:
        layout, hw = "NHWC", (dims[1], dims[2])
    else:
        raise CompareError(f"{source!r}: input shape {shape} has 3 channels neither at axis 1 (NCHW) "
                           "nor at axis 3 (NHWC)")
    if dims[0] is not None and dims[0] < 1:  # (a negative one split the input into no parts at all)
        raise CompareError(f"{source!r}: input shape {shape} declares a batch of {dims[0]} images")
    return layout, None if None in hw else hw


def tensor_layouts(nodes, input_name, input_layout):
    """The layout of each 4-d tensor: a Conv writes NCHW, a Transpose (0,3,1,2) or (0,2,3,1)
    switches, anything else keeps its input's (what tells a 48x48x48 map's axes apart)."""
    lay = {input_name: input_layout}
    for n in nodes:
        src = lay.get(n.inputs[0]) if n.inputs else None
        perm = list(n.attrs.get("perm") or [])
        if n.op == "conv":
            lay[n.output] = "NCHW"
        elif perm == [0, 3, 1, 2]:
            lay[n.output] = "NCHW" if src == "NHWC" else None
        elif perm == [0, 2, 3, 1]:
            lay[n.output] = "NHWC" if src == "NCHW" else None
        elif n.op in ("reshape",) and n.attrs.get("kind") not in ("Identity", "Dropout"):
            lay[n.output] = None
        else:
            lay[n.output] = src
    return lay


def _per_channel_on(value, layout):
    """``value`` (a constant OTHER's arithmetic broadcasts over a 4-d tensor) as one value or
    one per channel, or None where it varies along another axis than ``layout``'s channels (or
    along several); a layout None (not known) takes any 3 values."""
    if value.size == 1:
        return value.reshape(-1)
    shape = (1,) * (4 - value.ndim) + value.shape if value.ndim <= 4 else None
    if value.size != 3 or shape is None or (layout is not None and shape.index(3) != (1 if layout == "NCHW" else 3)):
        return None
    return value.reshape(-1)


def affine_step(n, layout=None):
    """(f, c): node ``n`` computes f * x + c of its input x, per channel of ``layout``, for an
    Add, Sub, Mul or Div by a constant (``affine``) or a batch norm whose statistics are
    constants; None for anything else."""
    if n.op == "bn":
        g, beta, mean, var = (n.attrs.get(k) for k in ("gamma", "beta", "mean", "var"))
        if any(v is None or np.size(v) not in (1, 3) for v in (g, beta, mean, var)):
            return None
        f = np.asarray(g, np.float64).reshape(-1) / np.sqrt(np.asarray(var, np.float64).reshape(-1) + n.attrs["eps"])
        return f, np.asarray(beta, np.float64).reshape(-1) - np.asarray(mean, np.float64).reshape(-1) * f
    if n.op != "affine":
        return None
    v, kind = _per_channel_on(n.attrs["value"], layout), n.attrs["kind"]
    if v is None or (kind == "Div" and not n.attrs["data_first"]):
        return None
    if kind == "Sub":
        return (-np.ones(1), v) if not n.attrs["data_first"] else (np.ones(1), -v)  # v - x, x - v
    if kind == "Add":
        return np.ones(1), v
    return (v if kind == "Mul" else 1.0 / v), np.zeros(1)


def input_affine(nodes, input_name, layouts=None):
    """(a, b), each one value or one per channel: OTHER maps its input x to a * x + b by its
    own arithmetic before anything else reads it (each node an ``affine_step``: an OpenVINO
    PrePostProcessor's mean/scale, an ONNX export's ``(x - mean) / std`` or ``x / 127.5 - 1``, a
    BatchNormalization on the input); layout changes and casts between are looked through.
    ``layouts`` (tensor -> layout, where known) tells a per-channel constant from one along
    another axis.  None where OTHER's first op on its input is not such arithmetic, or where its
    arithmetic there is not one (v / x, a constant along the image's height)."""
    readers = {}
    for n in nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)
    a, b, seen, t = np.ones(1), np.zeros(1), False, input_name
    while len(readers.get(t, [])) == 1:
        n = readers[t][0]
        if n.op in ("reshape", "cast"):
            t = n.output
            continue
        step = affine_step(n, (layouts or {}).get(t))
        if step is None and n.op == "affine":
            return None  # arithmetic on the input that is no per-channel affine map (v / x)
        if step is None:
            break
        f, c = step
        a, b, seen, t = a * f, b * f + c, True, n.output
    if seen and not (np.all(np.isfinite(a)) and np.all(a != 0) and np.all(np.isfinite(b))):
        return None  # a map that loses the image (a Mul by 0) explains nothing
    return (a, b) if seen else None


RESIZE_OPS = {"Interpolate": "an OpenVINO Interpolate (a PrePostProcessor's resize writes one)",
              "Resize": "an ONNX Resize", "Upsample": "an ONNX Upsample",
              "RESIZE_BILINEAR": "a TFLite RESIZE_BILINEAR",
              "RESIZE_NEAREST_NEIGHBOR": "a TFLite RESIZE_NEAREST_NEIGHBOR"}


def input_resize(nodes, input_name):
    """The node of the resize (an OpenVINO Interpolate, an ONNX Resize or Upsample, a TFLite
    RESIZE_*) OTHER applies to its input before its first conv, through layout changes, casts,
    arithmetic by constants and rounding; or None (a resize after a conv is a layer of OTHER's)."""
    seen = {input_name}
    for n in nodes:
        if n.op == "conv":
            return None
        if n.inputs and n.inputs[0] in seen:
            if n.op == "other" and n.attrs.get("kind") in RESIZE_OPS:
                return n
            if n.op in ("reshape", "cast", "affine", "qdq"):
                seen.add(n.output)
    return None


def input_maps(other, input_name, resize=True):
    """Set OTHER's ``input_resize`` (its resized tensor, ``input_resize_op`` saying what op it is:
    ``RESIZE_OPS`` and its ``mode`` where the reader gives one) and ``input_affine`` from its nodes, and
    return the tensor the reference's input stands for: OTHER's resized tensor where it resizes
    its input itself, else its input.  ``resize`` False: a resize is not taken (an int8 input,
    whose own resize could not be undone on a float tensor); the map on the input alone is read.  A per-channel a * x + b commutes with a resize (each output
    is a weighted sum of inputs whose weights sum to 1), so where OTHER maps its input by
    (a1, b1) before the resize and by (a2, b2) after it, it computes (a2 a1) R(x) + (a2 b1 + b2):
    ``input_affine`` is that whole map, ``affine_before_resize`` (a1, b1), which the reference's
    input, OTHER's resized tensor, is mapped back by to R(x)."""
    layouts = other.layouts or {}
    node = input_resize(other.nodes, input_name) if resize else None
    if node is None:
        other.input_affine = input_affine(other.nodes, input_name, layouts)
        return input_name
    other.input_resize = node.output
    mode = node.attrs.get("mode")
    other.input_resize_op = RESIZE_OPS[node.attrs["kind"]] + (f", mode {mode}" if mode else "")
    before = input_affine(other.nodes, input_name, layouts)
    after = input_affine(other.nodes, node.output, layouts)
    if before is None:
        other.input_affine = after
        return node.output
    (a1, b1), (a2, b2) = before, after or (np.ones(1), np.zeros(1))
    other.input_affine, other.affine_before_resize = (a2 * a1, a2 * b1 + b2), before
    return node.output
