"""Export a model to a float32 ``.tflite`` file with the same weights, for running LiteRT (XNNPACK)
on any variant, without TensorFlow.

The graph is what TensorFlow's converter makes of a Keras MobileNetV2: NHWC throughout, every batch
norm folded into the convolution before it, a ReLU or ReLU6 that is a convolution's only consumer
fused into it, Keras's ZeroPadding2D merged into the depthwise convolution's padding (TFLite's
SAME where the pads are the ones SAME gives, else an explicit PAD and VALID), global pooling as
MEAN (or REDUCE_MAX) over the rows and columns, the head as FULLY_CONNECTED then SOFTMAX.  The
flatbuffer is written here (the TFLite schema's few tables this needs), so exporting needs no
package beyond numpy; running the file needs ``ai-edge-litert`` (``pip install
"mobilenetv2[litert]"``).  Every model family the package builds: Keras's and transformers'
classifiers and backbones, TF-slim's 7x7 head (AVERAGE_POOL_2D, and the dense layer as a 1x1
CONV_2D over its grid), transformers' DeepLabV3 (dilated depthwise convolutions, RESIZE_BILINEAR
with PyTorch's align_corners or half-pixel centers, CONCATENATION).
"""
import os
import struct

import numpy as np

from mobilenetv2 import files
from mobilenetv2.network import arch
from mobilenetv2.network import layers as L
from mobilenetv2.errors import ArgumentError

# TFLite schema (tensorflow/lite/schema/schema.fbs) values this writer uses
_OP = {"ADD": 0, "AVERAGE_POOL_2D": 1, "CONCATENATION": 2, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 4,
       "FULLY_CONNECTED": 9, "RELU": 19, "RELU6": 21, "RESIZE_BILINEAR": 23, "SOFTMAX": 25, "PAD": 34,
       "MEAN": 40, "REDUCE_MAX": 82}
_OPTIONS = {"Conv2DOptions": 1, "DepthwiseConv2DOptions": 2, "Pool2DOptions": 5, "FullyConnectedOptions": 8,
            "SoftmaxOptions": 9, "ConcatenationOptions": 10, "AddOptions": 11, "ResizeBilinearOptions": 15,
            "PadOptions": 22, "ReducerOptions": 27}
_SAME, _VALID = 0, 1
_ACT = {None: 0, "relu": 1, "relu6": 3}
_FLOAT32, _INT32 = 0, 2


# -- a flatbuffer writer: parents first, children after, so every offset points forward ---------------
_SCALAR = {"b": 1, "B": 1, "?": 1, "i": 4, "I": 4, "f": 4}  # struct formats of the scalar fields used


class _Table:
    """A flatbuffer table: fields[slot] = (kind, value) or None; kind a struct format of _SCALAR or
    'table', 'tables' (a vector of tables), 'ints' (of int32), 'bytes' (a Buffer's data) or 'string'."""

    def __init__(self, n_slots):
        self.fields = [None] * n_slots

    def set(self, slot, kind, value):
        self.fields[slot] = (kind, value)
        return self


def _pad_to(buf, align, extra=0):
    """Zero bytes until len(buf) + extra is a multiple of align."""
    buf.extend(bytes((-(len(buf) + extra)) % align))


def _append_table(buf, table, later):
    """Append the table's vtable, then the table (its soffset, 4-byte fields, then 1-byte ones);
    return the table's position and add (field position, kind, value) to ``later`` for each offset
    field, whose target is appended afterwards."""
    present = [(slot, f[0], f[1]) for slot, f in enumerate(table.fields) if f is not None]
    layout, at = [], 4
    for slot, kind, value in sorted(present, key=lambda p: -_SCALAR.get(p[1], 4)):
        size = _SCALAR.get(kind, 4)
        at += (-at) % size
        layout.append((slot, kind, value, at))
        at += size
    inline = at + (-at) % 4
    n = max((slot for slot, _, _ in present), default=-1) + 1
    where = {slot: a for slot, _, _, a in layout}
    vtable = struct.pack(f"<{2 + n}H", 4 + 2 * n, inline, *[where.get(slot, 0) for slot in range(n)])
    _pad_to(buf, 4, len(vtable))  # the table after it on 4 bytes
    buf.extend(vtable)
    tpos = len(buf)
    buf.extend(struct.pack("<i", len(vtable)) + bytes(inline - 4))  # the vtable right before it
    for slot, kind, value, a in layout:
        if kind in _SCALAR:
            struct.pack_into("<" + kind, buf, tpos + a, value)
        else:
            later.append((tpos + a, kind, value))
    return tpos


def _append(buf, kind, value, later):
    """Append an offset field's target; return the position the field points to."""
    if kind == "table":
        return _append_table(buf, value, later)
    if kind == "bytes":  # a Buffer's data: 16-byte aligned (the schema's force_align)
        _pad_to(buf, 16, 4)
        pos = len(buf)
        buf.extend(struct.pack("<I", len(value)))
        buf.extend(value)
        return pos
    _pad_to(buf, 4)
    pos = len(buf)
    if kind == "tables":
        buf.extend(struct.pack("<I", len(value)) + bytes(4 * len(value)))
        later.extend((pos + 4 + 4 * i, "table", t) for i, t in enumerate(value))
    elif kind == "ints":
        buf.extend(struct.pack(f"<I{len(value)}i", len(value), *value))
    elif kind == "string":
        data = value.encode()
        buf.extend(struct.pack("<I", len(data)) + data + b"\0")
    else:
        raise AssertionError(kind)
    return pos


def _serialize(root, identifier=b"TFL3"):
    """The flatbuffer whose root is table ``root``, with a file identifier."""
    buf = bytearray(8)
    buf[4:8] = identifier
    stack = [(0, "table", root)]
    while stack:
        pos, kind, value = stack.pop()
        later = []
        target = _append(buf, kind, value, later)
        struct.pack_into("<I", buf, pos, target - pos)
        stack.extend(reversed(later))
    _pad_to(buf, 16)
    return bytes(buf)


# -- the graph ---------------------------------------------------------------------------------------
def _same_pads(size, span, stride):
    """TFLite's SAME padding of one axis (before, after) for a window of ``span`` input pixels."""
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


class _Graph:
    """Tensors, buffers and operators of one subgraph, as the tables the writer takes."""

    def __init__(self):
        self.tensors, self.buffers, self.operators, self.codes = [], [_Table(3)], [], []

    def tensor(self, name, shape, data=None, dtype=_FLOAT32):
        """A new tensor's index; ``data`` (a numpy array) makes it a constant with a buffer."""
        t = _Table(11).set(0, "ints", [int(d) for d in shape]).set(1, "b", dtype).set(3, "string", name)
        if data is not None:
            raw = np.ascontiguousarray(data, np.int32 if dtype == _INT32 else np.float32)
            assert raw.shape == tuple(shape), (name, raw.shape, shape)
            t.set(2, "I", len(self.buffers))
            self.buffers.append(_Table(3).set(0, "bytes", raw.astype(raw.dtype.newbyteorder("<")).tobytes()))
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, name, inputs, outputs, options=None, options_type=None, version=1):
        code = _OP[name]
        if (code, version) not in self.codes:
            self.codes.append((code, version))
        o = _Table(14).set(0, "I", self.codes.index((code, version))).set(1, "ints", inputs).set(2, "ints", outputs)
        if options is not None:
            o.set(3, "B", _OPTIONS[options_type]).set(4, "table", options)
        self.operators.append(o)

    def model(self, inputs, outputs, description):
        """The Model table: one subgraph, with the one SignatureDef TensorFlow's converter writes
        ("serving_default"), its input and output named "input" and "output" as in the ONNX export
        (LiteRT's signature runner and ai-edge-quantizer's calibration find a model by it)."""
        codes = [_Table(4).set(0, "b", min(code, 127)).set(2, "i", version).set(3, "i", code)
                 for code, version in self.codes]
        subgraph = (_Table(6).set(0, "tables", self.tensors).set(1, "ints", inputs).set(2, "ints", outputs)
                    .set(3, "tables", self.operators).set(4, "string", "main"))
        (i,), (o,) = inputs, outputs
        signature = (_Table(5).set(0, "tables", [_Table(2).set(0, "string", "input").set(1, "I", i)])
                     .set(1, "tables", [_Table(2).set(0, "string", "output").set(1, "I", o)])
                     .set(2, "string", "serving_default").set(4, "I", 0))
        return (_Table(8).set(0, "I", 3).set(1, "tables", codes).set(2, "tables", [subgraph])
                .set(3, "string", description).set(4, "tables", self.buffers).set(7, "tables", [signature]))


def _conv_options(depthwise, padding, stride, act, dilation):
    if depthwise:
        return (_Table(7).set(0, "b", padding).set(1, "i", stride).set(2, "i", stride).set(3, "i", 1)
                .set(4, "b", _ACT[act]).set(5, "i", dilation).set(6, "i", dilation))
    return (_Table(7).set(0, "b", padding).set(1, "i", stride).set(2, "i", stride).set(3, "b", _ACT[act])
            .set(4, "i", dilation).set(5, "i", dilation))


def export_tflite(model, path, batch=1, input_size=None):
    """Write ``model`` as a float32 ``.tflite`` file at ``path`` (batch size ``batch``; LiteRT can
    resize it).  ``input_size=(H, W)`` fixes the size of a model that takes any.  Returns the path."""
    batch = arch.export_batch(batch, "export_tflite")
    path = os.path.abspath(files.check_output_path(path, "export_tflite"))
    input_shape = arch.export_input_shape(model, input_size, "export_tflite")
    arch.check_export_bytes(model, "export_tflite")
    arch.check_export_weights(model, "export_tflite")
    shapes = arch.output_shapes(model.layers, input_shape)
    consumers = {}
    for layer in model.layers:
        for i in layer.inputs:
            consumers.setdefault(i, []).append(layer)
    g = _Graph()
    first = model.layers[0].name
    tensor = {first: g.tensor("input", (batch,) + input_shape)}
    pending_pads, fused = {}, {}

    def out_tensor(layer):
        return g.tensor(layer.name, (batch,) + tuple(shapes[layer.name]))

    for layer in model.layers[1:]:
        src = tensor.get(layer.inputs[0]) if layer.inputs else None
        if layer.name in fused:  # a ReLU folded into the convolution before it
            tensor[layer.name] = tensor[fused[layer.name]]
            continue
        if isinstance(layer, L.ZeroPadding2D):
            pending_pads[layer.name] = (layer.pads(*shapes[layer.inputs[0]][:2]), shapes[layer.inputs[0]][:2])
            tensor[layer.name] = src
        elif isinstance(layer, (L.Conv2D, L.DepthwiseConv2D)):
            depthwise = isinstance(layer, L.DepthwiseConv2D)
            after = consumers.get(layer.name, [])
            bn = after[0] if not getattr(layer, "use_bias", False) and len(after) == 1 \
                and isinstance(after[0], L.BatchNormalization) else None
            if bn is None and not getattr(layer, "use_bias", False):
                raise ArgumentError(f"export_tflite: {layer.name!r} has no batch norm or bias after it")
            wk, bias = arch.folded_kernel(layer, bn)
            w = wk[None] if depthwise else wk.transpose(3, 0, 1, 2)  # [1, 3, 3, C] or [O, kh, kw, I]
            last = bn or layer
            act = None
            nxt = consumers.get(last.name, [])
            if len(nxt) == 1 and isinstance(nxt[0], L.ReLU):
                act = "relu6" if nxt[0].max_value == 6.0 else "relu"
                fused[nxt[0].name] = last.name
                named = nxt[0].name  # the tensor holds the activation's output: named after it, as TF's converter does
            else:
                named = last.name
            pads = layer.pads(*shapes[layer.inputs[0]][:2])
            h_in, w_in = shapes[layer.inputs[0]][:2]
            if layer.inputs[0] in pending_pads:  # a ZeroPadding2D before it: its pads, on its input
                zero_pads, (h_in, w_in) = pending_pads.pop(layer.inputs[0])
                pads = tuple(a + b for a, b in zip(zero_pads, pads))
            dilation = getattr(layer, "dilation", 1)
            span = (layer.kernel - 1 if not depthwise else 2) * dilation + 1
            same = _same_pads(h_in, span, layer.stride) + _same_pads(w_in, span, layer.stride)  # (t, b, l, r)
            if pads == same:
                padding = _SAME
            else:
                padding = _VALID
                if any(pads):
                    top, bottom, left, right = pads
                    padded = g.tensor(layer.name + "/pad", (batch, h_in + top + bottom, w_in + left + right,
                                                            shapes[layer.inputs[0]][2]))
                    spec = g.tensor(layer.name + "/paddings", (4, 2),
                                    np.array([[0, 0], [top, bottom], [left, right], [0, 0]]), _INT32)
                    g.op("PAD", [src, spec], [padded], _Table(0), "PadOptions")
                    src = padded
            wt = g.tensor(layer.name + "/kernel", w.shape, w)
            bt = g.tensor(layer.name + "/bias", bias.shape, bias)
            out = g.tensor(named, (batch,) + tuple(shapes[last.name]))
            name = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
            g.op(name, [src, wt, bt], [out], _conv_options(depthwise, padding, layer.stride, act, dilation),
                 "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions",
                 version=2 if depthwise and dilation > 1 else 1)
            tensor[layer.name] = tensor[last.name] = out
        elif isinstance(layer, L.BatchNormalization):
            if layer.name not in tensor:
                raise ArgumentError(f"export_tflite: batch norm {layer.name!r} does not follow a convolution")
        elif isinstance(layer, L.ReLU):
            if layer.max_value not in (None, 6.0):
                raise ArgumentError(f"export_tflite cannot export {layer.name!r}: ReLU with max_value "
                                    f"{layer.max_value}")
            out = out_tensor(layer)
            g.op("RELU6" if layer.max_value == 6.0 else "RELU", [src], [out])
            tensor[layer.name] = out
        elif isinstance(layer, L.Add):
            out = out_tensor(layer)
            g.op("ADD", [tensor[i] for i in layer.inputs], [out], _Table(2).set(0, "b", 0), "AddOptions")
            tensor[layer.name] = out
        elif isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
            axes = g.tensor(layer.name + "/axes", (2,), np.array([1, 2]), _INT32)
            out = out_tensor(layer)
            g.op("REDUCE_MAX" if isinstance(layer, L.GlobalMaxPooling2D) else "MEAN", [src, axes], [out],
                 _Table(1).set(0, "?", bool(layer.keepdims)), "ReducerOptions")
            tensor[layer.name] = out
        elif isinstance(layer, L.Dense):
            kernel, bias = layer.weights
            shape = (batch,) + tuple(shapes[layer.name])
            bt = g.tensor(layer.name + "/bias", bias.shape, bias)
            logits = g.tensor(layer.name + ("/logits" if layer.activation else ""), shape)
            if len(shape) == 2:
                wt = g.tensor(layer.name + "/kernel", (layer.cout, layer.cin), kernel.T)
                g.op("FULLY_CONNECTED", [src, wt, bt], [logits], _Table(6).set(0, "b", 0), "FullyConnectedOptions")
            else:  # over a grid (TF-slim's 7x7 head on a larger input): a 1x1 convolution
                wt = g.tensor(layer.name + "/kernel", (layer.cout, 1, 1, layer.cin), kernel.T[:, None, None])
                g.op("CONV_2D", [src, wt, bt], [logits], _conv_options(False, _VALID, 1, None, 1), "Conv2DOptions")
            out = logits
            if layer.activation == "softmax":
                out = out_tensor(layer)
                g.op("SOFTMAX", [logits], [out], _Table(1).set(0, "f", 1.0), "SoftmaxOptions")
            tensor[layer.name] = out
        elif isinstance(layer, L.AveragePooling2D):
            kh, kw = layer.window(*shapes[layer.inputs[0]][:2])
            out = out_tensor(layer)
            g.op("AVERAGE_POOL_2D", [src], [out],
                 _Table(6).set(0, "b", _VALID).set(1, "i", 1).set(2, "i", 1).set(3, "i", kw).set(4, "i", kh)
                 .set(5, "b", 0), "Pool2DOptions")
            tensor[layer.name] = out
        elif isinstance(layer, L.ResizeBilinear):  # to the size of its second input
            oh, ow = shapes[layer.name][:2]
            size = g.tensor(layer.name + "/size", (2,), np.array([oh, ow]), _INT32)
            out = out_tensor(layer)
            g.op("RESIZE_BILINEAR", [src, size], [out],
                 _Table(4).set(2, "?", bool(layer.align_corners)).set(3, "?", not layer.align_corners),
                 "ResizeBilinearOptions")
            tensor[layer.name] = out
        elif isinstance(layer, L.Concatenate):
            out = out_tensor(layer)
            g.op("CONCATENATION", [tensor[i] for i in layer.inputs], [out],
                 _Table(2).set(0, "i", 3).set(1, "b", 0), "ConcatenationOptions")
            tensor[layer.name] = out
        else:
            raise ArgumentError(f"export_tflite cannot export layer {layer.name!r} ({type(layer).__name__})")
    data = _serialize(g.model([tensor[first]], [tensor[model.layers[-1].name]],
                              f"mobilenetv2 {model.name}"))
    with files.atomic_path(path, suffix=".tflite") as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path
