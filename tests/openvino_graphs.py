"""An int8 OpenVINO model built op by op with openvino's Python API, as ``nncf.quantize`` writes one
(no NNCF needed): a FakeQuantize on the input and on every activation a layer hands on (its
range calibrated on given images, its zero point an integer), each conv's batch norm folded, its
kernel stored as int8 (per output channel, symmetric, max |w| / 127: a Constant i8, a Convert, a
Multiply by the scales) and its bias a float Add after it.  ``bias_shift`` moves chosen biases by
known amounts (what NNCF's bias correction does), ``kernels`` replaces chosen folded kernels."""
import numpy as np
from openvino import Model, PartialShape, Type
from openvino import opset13 as ops

from mobilenetv2.network import layers as L
from mobilenetv2.engines.numpy_kernels import fold_batchnorm
from mobilenetv2.tools.compare.reference import run_layers

LEVELS = 256


def _c(v):
    return ops.constant(np.asarray(v, np.float32))


def _i64(v):
    return ops.constant(np.asarray(v, np.int64))


def _grid(lo, hi):
    """(lo, hi) widened to hold 0 and moved so that the zero point is an integer (the grid NNCF
    writes), and the grid's scale."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / (LEVELS - 1)
    zp = round(-lo / scale)
    return -zp * scale, (LEVELS - 1 - zp) * scale, scale


def _fq(x, lo, hi):
    lo, hi, scale = _grid(lo, hi)
    return ops.fake_quantize(x, _c(lo), _c(hi), _c(lo), _c(hi), LEVELS), scale


def _int8_kernel(w, shape):
    """``w`` (output channels first) as NNCF stores it: int8, Convert, Multiply by per-channel scales."""
    flat = w.reshape(w.shape[0], -1)
    scale = np.maximum(np.abs(flat).max(axis=1), 1e-12) / 127.0
    q = np.clip(np.round(flat / scale[:, None]), -127, 127).astype(np.int8).reshape(shape)
    deq = ops.multiply(ops.convert(ops.constant(q), Type.f32), _c(scale.reshape((-1,) + (1,) * (len(shape) - 1))))
    return deq, scale


def int8_ir(model, calibration, bias_shift=None, kernels=None):
    """(the ov.Model, {conv / dense name: its bias scale: its input's scale x its kernel's, per
    channel}) of ``model`` quantized as described above, calibrated on ``calibration`` (NHWC)."""
    bias_shift, kernels = bias_shift or {}, kernels or {}
    acts = run_layers(model.layers, np.asarray(calibration, np.float64))
    param = ops.parameter(PartialShape([-1] + list(calibration.shape[1:])), np.float32, name="input")
    x, s_in = _fq(param, calibration.min(), calibration.max())
    t = {model.layers[0].name: (ops.transpose(x, _i64([0, 3, 1, 2])), s_in)}  # NHWC in, NCHW inside
    readers = {}
    for layer in model.layers:
        for i in layer.inputs:
            readers.setdefault(i, []).append(layer)
    pads, scales = {}, {}
    for layer in model.layers[1:]:
        if isinstance(layer, L.BatchNormalization):
            continue  # folded into its conv below
        src, s_src = t[layer.inputs[0]]
        h, w = (acts[layer.inputs[0]].shape + (0, 0))[1:3]  # (a dense layer's input is a vector)
        if isinstance(layer, L.ZeroPadding2D):
            t[layer.name] = (src, s_src)
            pads[layer.name] = layer.pads(h, w)
            continue
        if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D)):
            bn = next(r for r in readers[layer.name] if isinstance(r, L.BatchNormalization))
            k = np.asarray(layer.weights[0], np.float64)
            depthwise = isinstance(layer, L.DepthwiseConv2D)
            k, bias = fold_batchnorm(k[..., 0] if depthwise else k, *(np.asarray(a, np.float64) for a in bn.weights),
                                     eps=bn.epsilon)
            k = kernels.get(layer.name, k)
            bias = bias + bias_shift.get(layer.name, 0.0)
            tp, bt, lf, rt = pads.get(layer.inputs[0]) or layer.pads(h, w)
            if depthwise:  # (kh, kw, C) -> [G, 1, 1, kh, kw]
                deq, sw = _int8_kernel(k.transpose(2, 0, 1), (k.shape[2], 1, 1) + k.shape[:2])
                y = ops.group_convolution(src, deq, [layer.stride] * 2, [tp, lf], [bt, rt], [1, 1])
            else:  # (kh, kw, I, O) -> OIHW
                deq, sw = _int8_kernel(k.transpose(3, 2, 0, 1), k.transpose(3, 2, 0, 1).shape)
                y = ops.convolution(src, deq, [layer.stride] * 2, [tp, lf], [bt, rt], [1, 1])
            scales[layer.name] = s_src * sw
            y = ops.add(y, _c(bias.reshape(1, -1, 1, 1)))
            act = next((r for r in readers[bn.name] if isinstance(r, L.ReLU)), None)
            if act is None:  # a project conv: its output rounded where the next layer reads it
                t[bn.name] = _fq(y, acts[bn.name].min(), acts[bn.name].max())
            else:
                t[bn.name] = (y, None)
            continue
        if isinstance(layer, L.ReLU):
            t[layer.name] = _fq(ops.clamp(src, 0.0, 6.0), 0.0, acts[layer.name].max())
        elif isinstance(layer, L.Add):
            t[layer.name] = _fq(ops.add(src, t[layer.inputs[1]][0]), acts[layer.name].min(), acts[layer.name].max())
        elif isinstance(layer, L.GlobalAveragePooling2D):
            t[layer.name] = _fq(ops.reduce_mean(src, _i64([2, 3]), False), acts[layer.name].min(),
                                acts[layer.name].max())
        elif isinstance(layer, L.Dense):
            k, b = (np.asarray(a, np.float64) for a in layer.weights)
            k = kernels.get(layer.name, k)
            deq, sw = _int8_kernel(k.T, k.T.shape)
            scales[layer.name] = s_src * sw
            y = ops.matmul(src, deq, False, True)
            t[layer.name] = (ops.add(y, _c(b + bias_shift.get(layer.name, 0.0))), None)
    return Model([t[model.layers[-1].name][0]], [param], "int8"), scales
