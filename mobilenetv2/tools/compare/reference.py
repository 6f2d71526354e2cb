"""The float64 reference, run with or without a suspected defect applied, and its float32 twin.

A ``Patch`` is one suspected defect of OTHER reproduced on our side: it replaces some layers by
modified copies (other pads, another epsilon, ReLU for ReLU6, rounded weights), transforms the
input (a permutation, a transposition, an affine map), or transforms OTHER's tensor at a layer
(a shifted class axis).  Layers are copied, never changed: the model stays as it was.
"""
import copy
from dataclasses import dataclass, field

import numpy as np

from mobilenetv2 import layers as L


def clone(layer, **attrs):
    """A copy of ``layer`` with attributes replaced (``weights=`` included); the model that owns
    ``layer`` is not told (the copy is not part of it)."""
    c = copy.copy(layer)
    c.on_weights_change = None
    for k, v in attrs.items():
        setattr(c, k, v)
    return c


class PlainReLU(L.ReLU):
    """max(x, 0) with no cap: what a converter writes when it loses ReLU6's bound."""

    def __call__(self, x):
        return np.maximum(x, 0.0).astype(x.dtype, copy=False)


def fixed_pads(pads):
    return lambda h, w: tuple(pads)


@dataclass
class Patch:
    cause: str                       # one of diagnose.CAUSES
    text: str                        # what was applied, for the report
    layers: dict = field(default_factory=dict)   # name -> function(layer) -> replacement layer
    input_fn: object = None          # NHWC batch -> NHWC batch
    other_fn: dict = field(default_factory=dict)  # Keras name -> function(OTHER's array) -> array
    ref_fn: dict = field(default_factory=dict)    # Keras name -> function(reference's array) -> array
    detail: dict = field(default_factory=dict)   # values for the JSON report (fitted epsilon, ...)

    def __add__(self, other):
        def compose(f, g):
            return g if f is None else (f if g is None else (lambda x: g(f(x))))
        layers = dict(self.layers)
        for k, fn in other.layers.items():
            first = layers.get(k)
            layers[k] = fn if first is None else (lambda layer, a=first, b=fn: b(a(layer)))
        return Patch(self.cause, self.text + "; " + other.text, layers,
                     compose(self.input_fn, other.input_fn), {**self.other_fn, **other.other_fn},
                     {**self.ref_fn, **other.ref_fn}, {**self.detail, **other.detail})


NO_PATCH = Patch("none", "as is")


def run_layers(layers, x, stop=None, cache=None, start=1):
    """Every layer's output (by name) up to and including ``stop``; layers before index ``start``
    are taken from ``cache``."""
    out = {layers[0].name: x}
    if cache is not None:
        for layer in layers[1:start]:
            out[layer.name] = cache[layer.name]
    for layer in layers[start:]:
        out[layer.name] = layer(*[out[i] for i in layer.inputs])
        if layer.name == stop:
            break
    return out


class Reference:
    """The float64 model and the input; ``trace(patch)`` runs the model with a patch applied,
    reusing the unpatched outputs before the first layer the patch changes."""

    def __init__(self, model64, model32, x):
        self.model = model64
        self.model32 = model32
        self.x = np.asarray(x, np.float64)
        self.layers = model64.layers
        self.index = {layer.name: i for i, layer in enumerate(self.layers)}
        self._base = None

    def base(self):
        if self._base is None:
            self._base = run_layers(self.layers, self.x)
        return self._base

    def float32_trace(self):
        """Our own float32 NumPy engine on the same input (the noise floor's other side)."""
        return run_layers(self.model32.layers, self.x.astype(np.float32))

    def patched_layers(self, patch):
        layers = list(self.layers)
        for name, fn in patch.layers.items():
            i = self.index[name]
            layers[i] = fn(layers[i])
        return layers

    def trace(self, patch=NO_PATCH, stop=None):
        if patch is NO_PATCH:
            return self.base()
        layers = self.patched_layers(patch)
        if patch.input_fn is not None:
            return run_layers(layers, np.ascontiguousarray(patch.input_fn(self.x)), stop)
        start = min((self.index[n] for n in patch.layers), default=len(layers))
        return run_layers(layers, self.x, stop, cache=self.base(), start=start)

    def unit_of(self, name):
        """The convolution (or dense) layer whose unit (conv -> BN -> ReLU6 -> add) ``name`` is in."""
        layer = self.layers[self.index[name]]
        while not isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Dense, L.InputLayer)):
            if isinstance(layer, L.Add):
                layer = self.layers[self.index[layer.inputs[1]]]
            elif isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
                return layer
            else:
                layer = self.layers[self.index[layer.inputs[0]]]
        return layer

    def reader_of(self, name, kind):
        return next((x for x in self.layers if name in x.inputs and isinstance(x, kind)), None)
