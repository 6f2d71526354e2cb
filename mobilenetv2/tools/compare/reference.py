"""The float64 reference, run with or without a suspected defect applied, and its float32 twin.

A ``Patch`` is one suspected defect of OTHER reproduced on our side: it replaces some layers by
modified copies (other pads, another epsilon, ReLU for ReLU6, rounded weights), transforms the
input (a permutation, a transposition, an affine map), rounds layers' outputs (``post``: int8
activations on OTHER's grid), or transforms OTHER's tensor at a layer (a shifted class axis).
Layers are copied, never changed: the model stays as it was.

A patch that rounds activations (``steps``) makes a float32 noise floor meaningless: a value
near a rounding boundary lands on either side of it by float32 rounding alone, a whole step
apart, and such flips multiply through the layers after it.  So each layer of such a patch is
run from OTHER's own tensors at its inputs (where OTHER has them), and its floor is measured
(``Reference.floors``): the same patch run by our float32 engine against float64, and never
below one step at one value of the layer's tensor.
"""
import copy
from dataclasses import dataclass, field

import numpy as np

from mobilenetv2.network import layers as L


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


class ClipReLU(L.ReLU):
    """min(max(x, lo), hi), a bound of None none: a ReLU6 a converter wrote with other bounds
    (Clip(0, 4), a Clip with no lower bound)."""

    def __init__(self, name, inputs, lo, hi):
        super().__init__(name, inputs)
        self.lo, self.hi = lo, hi

    def __call__(self, x):
        return np.clip(x, -np.inf if self.lo is None else self.lo,
                       np.inf if self.hi is None else self.hi).astype(x.dtype, copy=False)


class Bypass:
    """A layer OTHER does not run (a residual Add left out): its output is its input number
    ``keep``, unchanged."""

    def __init__(self, layer, keep):
        self.name, self.inputs, self.keep = layer.name, layer.inputs, keep

    def __call__(self, *xs):
        return xs[self.keep]


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
    post: dict = field(default_factory=dict)     # Keras name -> function(layer's output) -> rounded output
    steps: dict = None                           # Keras name -> the rounding step there: floors are measured

    def __add__(self, other):
        def compose(f, g):
            return g if f is None else (f if g is None else (lambda x: g(f(x))))
        layers = dict(self.layers)
        for k, fn in other.layers.items():
            first = layers.get(k)
            layers[k] = fn if first is None else (lambda layer, a=first, b=fn: b(a(layer)))
        post = dict(self.post)
        for k, fn in other.post.items():
            post[k] = compose(post.get(k), fn)
        steps = None if self.steps is None and other.steps is None else {**(self.steps or {}), **(other.steps or {})}
        # OTHER rounds its input (precision) last, right before its first conv: after its own map
        inputs = (other.input_fn, self.input_fn) if self.cause == "precision" else (self.input_fn, other.input_fn)
        return Patch(self.cause, self.text + "; " + other.text, layers,
                     compose(*inputs), {**self.other_fn, **other.other_fn},
                     {**self.ref_fn, **other.ref_fn}, {**self.detail, **other.detail}, post, steps)


NO_PATCH = Patch("none", "as is")


def run_layers(layers, x, stop=None, cache=None, start=1, post=None, feed=None):
    """Every layer's output (by name) up to and including ``stop``, each rounded by ``post``
    where it names the layer; layers before index ``start`` are taken from ``cache``.  ``feed``
    ({layer: array}): the layers after a fed layer read that array instead of its output (each
    layer then computed from OTHER's own inputs), while its output is still what is returned."""
    out = {layers[0].name: x}
    flow = out if not feed else dict(out)
    if cache is not None:
        for layer in layers[1:start]:
            out[layer.name] = cache[layer.name]
            if feed:
                flow[layer.name] = feed.get(layer.name, cache[layer.name])
    for layer in layers[start:]:
        y = layer(*[flow[i] for i in layer.inputs])
        out[layer.name] = post[layer.name](y) if post and layer.name in post else y
        if feed:
            flow[layer.name] = feed[layer.name].astype(y.dtype, copy=False) if layer.name in feed else out[layer.name]
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
        self.quant = None  # quant.QuantInfo where OTHER is a quantized graph

    def base(self):
        if self._base is None:
            self._base = run_layers(self.layers, self.x)
        return self._base

    def float32_trace(self):
        """Our own float32 NumPy engine on the same input (the noise floor's other side)."""
        return run_layers(self.model32.layers, self.x.astype(np.float32))

    def patched_layers(self, patch, layers=None):
        layers = list(self.layers if layers is None else layers)
        for name, fn in patch.layers.items():
            i = self.index[name]
            layers[i] = fn(layers[i])
        return layers

    def trace(self, patch=NO_PATCH, stop=None):
        if patch is NO_PATCH:
            return self.base()
        layers = self.patched_layers(patch)
        feed = self._feed(patch)
        if patch.input_fn is not None:
            return run_layers(layers, np.ascontiguousarray(patch.input_fn(self.x)), stop, post=patch.post, feed=feed)
        start = min((self.index[n] for n in list(patch.layers) + list(patch.post)), default=len(layers))
        return run_layers(layers, self.x, stop, cache=self.base(), start=start, post=patch.post, feed=feed)

    def _feed(self, patch):
        """OTHER's own tensors to run each layer from, for a patch that rounds activations (an
        int8 graph's rounding flips values a step either way by its kernels' arithmetic, and
        those flips multiply downstream: each layer is checked on the inputs OTHER gave it)."""
        if patch.steps is None or self.quant is None:
            return None
        return self.quant.forced or None

    def floors(self, patch, stop=None, names=None):
        """{layer: (relative L2 floor, max abs floor)} of a patch that rounds activations (see the
        module's text), at the layers ``names`` (all by default), or None for a patch that does
        not round activations (the float32 floors hold)."""
        if patch.steps is None:
            return None
        from mobilenetv2.tools.compare.metrics import noise_floor
        x = patch.input_fn(self.x) if patch.input_fn is not None else self.x
        t32 = run_layers(self.patched_layers(patch, self.model32.layers), np.ascontiguousarray(x, np.float32),
                         stop, post=patch.post, feed=self._feed(patch))
        t64 = self.trace(patch, stop)
        out = {}
        for name, ref in t64.items():
            if name not in t32 or name == self.layers[0].name or (names is not None and name not in names):
                continue
            rel, mx = noise_floor(t32[name], ref)
            step = patch.steps.get(name)
            if step is not None:
                norm = float(np.linalg.norm(np.asarray(ref, np.float64).ravel()))
                rel, mx = max(rel, step / norm if norm > 0 else 0.0), max(mx, step)
            out[name] = (rel, mx)
        return out

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
