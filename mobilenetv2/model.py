"""The MobileNetV2 model object: Keras's constructor arguments, layers, weights and forward pass."""
import collections
import copy
import math
import os
import threading
import warnings
import weakref

import numpy as np

from mobilenetv2 import files
from mobilenetv2.network import arch
from mobilenetv2.engines import machine
from mobilenetv2.network.arch import MAX_SIZE, MIN_SIZE
from mobilenetv2.network import layers as L
from mobilenetv2.engines import native
from mobilenetv2.engines import pool as threadpool
from mobilenetv2.errors import (ArgumentError, InsufficientMemory, as_array, check_option, flag, is_items, is_whole,
                                real)
from mobilenetv2.engines.plan import PackedWeights, Plan, Unsupported

OFFICIAL_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
OFFICIAL_ROWS = (96, 128, 160, 192, 224)
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
ENGINES = ("auto", "c", "numpy")
TOP_POOLINGS = ("global", "7x7")


_FINITE_CHUNK = 1 << 16  # values _require_finite checks at a time (a 64 KiB temporary)


def _require_finite(x):
    """An ArgumentError where the C-contiguous ``x`` holds NaN or inf, checked a chunk at a time:
    np.isfinite(x) of a whole batch is a temporary a quarter of a float32 batch's size."""
    flat = x.reshape(-1)
    for start in range(0, flat.size, _FINITE_CHUNK):
        if not np.isfinite(flat[start:start + _FINITE_CHUNK]).all():
            raise ArgumentError("input contains NaN or inf")


def _out_of_memory(x, needed=None, available=None, what="its activation buffers take"):
    n, h, w = x.shape[:3]
    need = f": {what} {needed / 2**30:.1f} GiB, {available / 2**30:.1f} GiB is available" \
        if needed is not None else ""
    return InsufficientMemory(f"out of memory for a batch of {n} at {h}x{w}{need}; use a smaller batch "
                              "(predict(x, batch_size=...))")


def _refuse(x, needed, extra, available, dtype, about=""):
    """An InsufficientMemory where a run's ``needed`` bytes of buffers and ``extra`` bytes of the
    input's copy in ``dtype`` (0: none is made) exceed ``available`` (None: unknown).  (Raised
    here, never held in a variable: a frame of its traceback holding it is a reference cycle,
    which keeps the model, its threads and plans, until the cycle collector runs.)"""
    if available is None:
        return
    if extra > available:  # the copy alone, said as such
        raise _out_of_memory(x, extra, available, f"a copy of it as {dtype.name} takes")
    if needed + extra > available:
        what = f"its activation buffers and a {dtype.name} copy of it take" if extra else "its activation buffers take"
        raise _out_of_memory(x, needed + extra, available, what + about)


# Bounds on what a model may be built with.  Each keeps one model inside what a machine holds,
# far above anything MobileNetV2 is used at:
MAX_ALPHA = 4.0         # ~3x the widest published (1.4); 4.0 has ~16x 1.0's weights (~55 M, 440 MB in float64)
MAX_CLASSES = 100_000   # the dense head is last_channels x classes: 100k x 1280 = 1 GB in float64
MAX_RUNS = 100_000      # profile() timing runs



def _check_alpha(alpha):
    """alpha as a float; a NumPy float narrower than Python's (float32, float16) that is one of
    OFFICIAL_ALPHAS at its own precision is that alpha: np.float32(0.35) is 0.35, as Keras's
    ``alpha not in [0.35, ...]`` (compared in float32) takes it, not 0.3499999940395355."""
    value = real(alpha)
    if value is None:
        raise ArgumentError(f"alpha must be a positive number (the width multiplier), got {alpha!r}")
    if not (math.isfinite(value) and 0 < value <= MAX_ALPHA):
        raise ArgumentError(f"alpha must be a positive number at most {MAX_ALPHA:g} (the width multiplier; the "
                            f"published ones are {', '.join(map(str, OFFICIAL_ALPHAS))}), got {alpha!r}")
    narrow = np.asarray(alpha).dtype
    if narrow.kind == "f" and narrow.itemsize < 8:
        value = next((a for a in OFFICIAL_ALPHAS if narrow.type(a) == narrow.type(value)), value)
    return value


def _check_weights(weights, none_too=True):
    """'imagenet' or a path (str, bytes, os.PathLike), else an ArgumentError saying that weights
    takes those (and None, ``none_too``: where the caller takes it).  A string that is no
    file and reads as a keyword misspelt ('none', 'Imagenet', '') is refused as one, not looked
    for as a file name (FileNotFoundError: 'none'): Python's word for no weights is None."""
    wrong = ("weights must be 'imagenet', None (no weights: Python's None) or the path of a weights file" if none_too
             else "weights must be 'imagenet' or the path of a weights file")
    if not isinstance(weights, (str, bytes, os.PathLike)):
        raise ArgumentError(f"{wrong}, got {weights!r:.60}")
    if "\0" in files.path_str(weights):  # (os.open's own ValueError: "embedded null byte")
        raise ArgumentError(f"{wrong}; a path has no NUL character, got {weights!r:.60}")
    if isinstance(weights, str) and weights != "imagenet" and weights.strip().lower() in ("imagenet", "none", "") \
            and not os.path.lexists(weights):
        raise ArgumentError(f"{wrong}, got {weights!r}")


def check_top_pooling(top_pooling):
    """'global' or '7x7' (TF-slim's head), else an ArgumentError."""
    return check_option(top_pooling, TOP_POOLINGS, "top_pooling must be 'global' or '7x7' (TF-slim's head)")


def _check_dtype(dtype):
    """float32 or float64, named by a string, NumPy's type or dtype (or Python's float); nothing
    else, not even what np.dtype turns into float64 (None) or a near-miss name ('float33')."""
    if isinstance(dtype, str):
        try:
            dt = np.dtype(dtype)  # 'float32', 'f4', 'double', ...
        except TypeError:
            dt = None
    elif dtype is float or dtype is np.float32 or dtype is np.float64 or isinstance(dtype, np.dtype):
        dt = np.dtype(dtype)
    else:
        dt = None
    if dt is None or dt not in DTYPES:  # (np.dtype compares equal to None: None is float64 to it)
        raise ArgumentError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt



def _check_name(name):
    """Keras's model name: None (``mobilenetv2_{alpha:0.2f}_{rows}``) or a string without '/' (and,
    as the exporters write it into the file, one UTF-8 can encode: no lone surrogate)."""
    if name is None:
        return None
    if isinstance(name, str) and "/" not in name:
        try:
            name.encode("utf-8")
            return str(name)
        except UnicodeEncodeError:
            pass
    raise ArgumentError(f"name must be a string without '/' (the model's name, in UTF-8), or None for Keras's "
                        f"'mobilenetv2_<alpha>_<rows>', got {name!r:.60}")


def _check_input_tensor(input_tensor):
    """Keras's input_tensor: None only (this model is no Keras graph to build on a tensor)."""
    if input_tensor is not None:
        raise ArgumentError("input_tensor (a Keras tensor to build the model on) is not taken here: the model is "
                            "not a Keras graph; give the tensor's shape as input_shape=(height, width, channels), "
                            f"got input_tensor={input_tensor!r:.60}")


def _check_classifier_activation(activation):
    """'softmax' or None; 'linear', Keras's name for no activation (``activations.get(None)``), is None."""
    check_option(activation, ("softmax", "linear", None),
                 "classifier_activation must be 'softmax', None or 'linear' (Keras's name for None)")
    return None if activation == "linear" else activation


def _check_classes(classes):
    if not is_whole(classes) or not 1 <= classes <= MAX_CLASSES:
        raise ArgumentError(f"classes must be a positive whole number at most {MAX_CLASSES}, got {classes!r}")
    return int(classes)


def _check_runs(runs):
    if not is_whole(runs) or not 1 <= runs <= MAX_RUNS:
        raise ArgumentError(f"runs must be a whole number from 1 to {MAX_RUNS}, got {runs!r}")
    return int(runs)


def _check_layer_names(layers):
    """features()'s layer names: one name or an iterable of names, at least one."""
    if isinstance(layers, str):
        return [layers]
    if not is_items(layers):
        raise ArgumentError(f"layers must be a layer name or a list of layer names, got {layers!r}")
    layers = list(layers)
    bad = [n for n in layers if not isinstance(n, str)]
    if bad:
        raise ArgumentError(f"layer names must be strings, got {bad[0]!r}")
    if not layers:
        raise ArgumentError("features() needs at least one layer name")
    return layers


def _size_dim(name, d, input_shape):
    """One input_shape entry: None or a whole number (an int-valued float is not silently cut)."""
    if d is None:
        return None
    if is_whole(d):
        return int(d)
    raise ArgumentError(f"input_shape {name} must be a whole number or None, got {d!r} "
                        f"(input_shape={input_shape!r})")


def _input_shape(input_shape, include_top, weights, top_pooling="global"):
    """Keras's ``obtain_input_shape`` for MobileNetV2: returns (H, W, C) with None for any size,
    and the rows of the imagenet weights file to load.  Keras's rule that its head with the imagenet
    weights takes (R, R, 3) for an official R only is its global head's; TF-slim's 7x7 head
    (``top_pooling='7x7'``) takes any static size, as the backbone does (an official square size
    loads its own file, any other the 224 one, with Keras's warning)."""
    if input_shape is None:
        default = 224
    else:
        try:
            if isinstance(input_shape, (str, bytes)):
                raise TypeError
            dims = tuple(input_shape)
        except TypeError:
            raise ArgumentError(f"input_shape must be (height, width, channels), got {input_shape!r}") from None
        if len(dims) != 3:
            raise ArgumentError(f"input_shape must be (height, width, channels), got {input_shape!r}")
        input_shape = tuple(_size_dim(n, d, input_shape) for n, d in zip(("height", "width", "channels"), dims))
        h, w, c = input_shape
        for name, d in (("height", h), ("width", w)):
            if d is not None and not MIN_SIZE <= d <= MAX_SIZE:
                raise ArgumentError(f"input_shape {name} must be at least {MIN_SIZE} and at most {MAX_SIZE}, got {d} "
                                    f"(input_shape={input_shape})")
        if c is None or not 1 <= c <= 4096:
            raise ArgumentError(f"input_shape channels must be a whole number from 1 to 4096, got "
                                f"{input_shape!r}")
        if weights == "imagenet" and c != 3:
            raise ArgumentError(f"the imagenet weights take 3 input channels, input_shape has {c}")
        default = h if (h == w and h in OFFICIAL_ROWS) else 224
    default_shape = (default, default, 3)
    if weights == "imagenet" and include_top and top_pooling == "global":
        if input_shape is not None and input_shape != default_shape:
            raise ArgumentError(f"with include_top=True and weights='imagenet', input_shape must be "
                                f"one of (R, R, 3) for R in {OFFICIAL_ROWS}, got {input_shape} (Keras's global "
                                "head; top_pooling='7x7', TF-slim's head, takes other sizes)")
        return default_shape, default
    if input_shape is None:
        input_shape = default_shape if include_top else (None, None, 3)
    if include_top and None in input_shape[:2]:
        raise ArgumentError("with include_top=True the input_shape must be static (height and width given)")
    h, w = input_shape[:2]
    rows = h if (h == w and h in OFFICIAL_ROWS) else 224
    if weights == "imagenet" and rows != h:
        warnings.warn("input_shape is undefined, non-square, or its size is not one of "
                      f"{OFFICIAL_ROWS}: the weights for 224x224 are loaded", stacklevel=3)
    return input_shape, rows


_LIVE_MODELS = weakref.WeakSet()  # for the fork handler below


def _after_fork_in_child():
    """In a child made by fork(): the parent's threads are gone.  Every model starts over lazily
    (its plan lock is the process's own: MobileNetV2._plan_lock; the pools themselves are
    forgotten by mobilenetv2.engines.pool's own handler)."""
    for model in list(_LIVE_MODELS):
        if model._pool is not None:
            model._pool.forget()  # whichever fork handler runs first: never joined here
        model._pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Watchers:
    """A layer's ``on_weights_change``: tells every model holding the layer (weakly) that its
    weights were replaced."""

    def __init__(self):
        self.models = weakref.WeakSet()

    def __call__(self):
        for model in list(self.models):
            model._weights_changed()


class MobileNetV2:
    """MobileNetV2 with the arguments and meaning of ``keras.applications.MobileNetV2``, in Keras's
    order (``input_tensor`` takes None only: give ``input_shape``; ``classifier_activation`` is
    'softmax', None or 'linear', Keras's None; ``pooling`` applies without the top only).

    ``dtype='float64'`` runs the whole network in float64: a golden reference for checking the
    float32 numerics of other frameworks.  ``engine`` picks what runs ``predict``/``model(x)``:
    ``"auto"`` (the C core where it can serve the model, else NumPy), ``"c"`` (the C core or an
    EngineUnavailable error saying why not) or ``"numpy"``.  ``threads`` is the C core's thread
    count (None: see ``pool.default_threads``).  ``top_pooling='7x7'`` gives the classification
    head TF-slim's 7x7 average pooling instead of the global average: outputs (N, h, w, classes),
    a 1x1 grid where the input is at most 224 on each side, a larger one beyond.

    Calls from several threads on one model take turns.  ``copy.copy(model)`` is a model of its
    own (layers, lock, plans, caches, threads) that runs at the same time as the original: it
    shares the read-only weight arrays and their packed C form, and a weight change to either is
    never the other's.  ``copy.deepcopy(model)`` copies the weights too.
    """

    # The compiled plans kept (least recently used dropped first): at most this many input shapes,
    # and at most this many bytes of their activation buffers (the newest plan is kept whatever
    # its size).  Packed weights are shared by all plans and not counted here.
    _plan_cache_shapes = 8
    _plan_cache_bytes = 256 * 1024 * 1024

    @property
    def plan_cache_shapes(self):
        """How many input shapes' C plans are kept (1 to 1000000; least recently used dropped first)."""
        return self._plan_cache_shapes

    @plan_cache_shapes.setter
    def plan_cache_shapes(self, value):
        if not is_whole(value) or not 1 <= value <= 10 ** 6:
            raise ArgumentError(f"plan_cache_shapes must be a whole number from 1 to 1000000, got {value!r}")
        self._plan_cache_shapes = int(value)
        self._trim_plans()  # a lower bound frees what it no longer allows now, not at the next new shape

    @property
    def plan_cache_bytes(self):
        """How many bytes of activation buffers the kept C plans may hold (the newest is kept whatever its size)."""
        return self._plan_cache_bytes

    @plan_cache_bytes.setter
    def plan_cache_bytes(self, value):
        if not is_whole(value) or value < 0:
            raise ArgumentError(f"plan_cache_bytes must be a whole number of bytes, 0 or more, got {value!r}")
        self._plan_cache_bytes = int(value)
        self._trim_plans()  # a lower bound frees what it no longer allows now, not at the next new shape

    def __init__(self, input_shape=None, alpha=1.0, include_top=True, weights="imagenet", input_tensor=None,
                 pooling=None, classes=1000, classifier_activation="softmax", name=None, dtype="float32",
                 threads=None, top_pooling="global", engine="auto"):
        _check_input_tensor(input_tensor)
        self._name = _check_name(name)
        self.alpha = _check_alpha(alpha)
        self.threads = threads
        self.dtype = _check_dtype(dtype)
        if weights is not None:
            _check_weights(weights)
        if flag(include_top) is None:
            raise ArgumentError(f"include_top must be True or False, got {include_top!r}")
        include_top = flag(include_top)
        check_option(pooling, (None, "avg", "max"), "pooling must be None, 'avg' or 'max'")
        check_top_pooling(top_pooling)
        if top_pooling == "7x7" and not include_top:
            raise ArgumentError("top_pooling='7x7' is TF-slim's classification head: it needs include_top=True "
                                "(without the top, pooling='avg' or 'max' pools the features)")
        classifier_activation = _check_classifier_activation(classifier_activation)
        classes = _check_classes(classes)
        if weights == "imagenet":
            if include_top and classes != 1000:
                raise ArgumentError("with weights='imagenet' and include_top=True, classes must be 1000, "
                                    f"got {classes}")
            if self.alpha not in OFFICIAL_ALPHAS:
                raise ArgumentError(f"imagenet weights exist for alpha in {OFFICIAL_ALPHAS}, got {alpha!r}")
        self.input_shape, self.weights_rows = _input_shape(input_shape, include_top, weights, top_pooling)
        self._name_rows = self.weights_rows if weights == "imagenet" else self.input_shape[0]  # Keras's `rows`
        self.include_top = bool(include_top)
        self.pooling = None if include_top else pooling  # (ignored with the top, as Keras ignores it: the head averages)
        self.top_pooling = top_pooling
        self.classes = int(classes)
        self.classifier_activation = classifier_activation
        layers = arch.build_layers(self.alpha, self.include_top, pooling, self.classes,
                                   classifier_activation, top_pooling)
        if self.input_shape[2] != 3:
            layers[1].cin = self.input_shape[2]
        self._adopt_layers(layers, engine)
        if weights is not None:
            self.load_weights(weights)

    def _adopt_layers(self, layers, engine="auto"):
        """Take ``layers`` (from an arch builder) as this model's graph, with initial weights.
        Every model family (Keras's, transformers') comes through here."""
        self.layers = layers
        self.weights_epoch = 0  # bumped when any layer's weights are replaced: compiled plans rebuild
        self._watch_layers()
        self._by_name = {layer.name: layer for layer in self.layers}
        native.warn_if_missing()
        self._reset_compiled()
        self.engine = engine
        self._init_random_weights()

    # -- layers and weights ----------------------------------------------------------------
    @property
    def name(self):
        """The model's name as Keras names it, ``mobilenetv2_{alpha:0.2f}_{rows}`` (rows: the
        imagenet file's size with weights='imagenet', else the input's height, None where it is
        any), as ``summary()`` prints it: 'mobilenetv2_1.00_224'; or the ``name`` it was built with."""
        name = self.__dict__.get("_name")
        if name is not None:
            return name
        return f"mobilenetv2_{self.alpha:0.2f}_{getattr(self, '_name_rows', self.weights_rows)}"

    def get_layer(self, name=None, index=None):
        """The layer named ``name`` (a Keras layer name such as 'Conv1' or 'block_3_expand'), or at
        position ``index`` (Keras's ``get_layer(index=i)``: ``model.layers[i]``, negative from the
        end): its ``weights`` (a tuple of read-only arrays), ``get_weights()`` and ``set_weights()``.
        An ArgumentError for a name the model does not have, an index out of range, or both."""
        n = len(self.layers)
        if index is not None:
            if name is not None:
                raise ArgumentError(f"get_layer takes a layer's name or its index, not both: got name={name!r:.60} "
                                    f"and index={index!r:.60}")
            if not is_whole(index) or not -n <= index < n:
                raise ArgumentError(f"get_layer: index must be a whole number from {-n} to {n - 1} (this model has "
                                    f"{n} layers), got {index!r:.60}")
            return self.layers[int(index)]
        if name is None:
            raise ArgumentError("get_layer takes a layer's name (get_layer('Conv1')) or index (get_layer(index=1))")
        if is_whole(name):
            raise ArgumentError(f"get_layer takes a layer's name, got {name!r}; the layer at a position is "
                                f"get_layer(index={int(name)}) or model.layers[{int(name)}] ({n} layers)")
        try:
            return self._by_name[name]
        except (KeyError, TypeError):  # (an unhashable name: a list, an array)
            raise ArgumentError(f"no layer named {name!r} in this model (model.layers lists them; "
                                "`mobilenetv2 summary` on the command line)") from None

    def count_params(self):
        """The number of weights (every layer's, batch norms' moving statistics included), as Keras counts them."""
        return sum(layer.count_params() for layer in self.layers)

    def weighted_layers(self):
        """The layers that have weights, in order: the layers whose arrays get_weights() lists."""
        return [layer for layer in self.layers if layer.weight_shapes()]

    def get_weights(self):
        """Every weight array (copies, writable), layer by layer in Keras's order, as Keras's
        ``model.get_weights()`` lists them."""
        return [w for layer in self.weighted_layers() for w in layer.get_weights()]

    def set_weights(self, arrays):
        """Replace every weight by ``arrays``, a list as get_weights() returns (the same count,
        order and shapes; any real dtype, stored in the model's).  All are checked before any is
        taken: a WeightsError or ArgumentError leaves the model as it was."""
        if isinstance(arrays, dict) or not is_items(arrays):
            raise ArgumentError(f"set_weights takes a list of arrays (as get_weights returns), got {arrays!r:.60}")
        arrays = list(arrays)
        need = sum(len(layer.weight_shapes()) for layer in self.weighted_layers())
        if len(arrays) != need:
            raise ArgumentError(f"set_weights takes {need} arrays for this model, got {len(arrays)}")
        i, per_layer = 0, []
        for layer in self.weighted_layers():
            n = len(layer.weight_shapes())
            per_layer.append(arrays[i:i + n])
            i += n
        self._replace_weights(per_layer)

    def _replace_weights(self, per_layer):
        """Every weighted layer's arrays replaced at once: all checked first (a bad array leaves
        the model as it was), then swapped under the plan lock, so a C-engine call running
        meanwhile computes with the old weights or the new, never a mix of the two."""
        layers = self.weighted_layers()
        checked = [layer.checked_weights(arrays, self.dtype) for layer, arrays in zip(layers, per_layer)]
        with self._plan_lock:
            for layer, weights in zip(layers, checked):
                layer.replace_weights(weights)

    @property
    def _plan_lock(self):
        """The lock serializing this model's C runs and weight swaps.  A child forked from C code
        (a library calling fork(), which skips Python's at-fork handlers) inherits it as it was:
        held, if another thread of the parent was running the model, and never released there.
        So the lock belongs to the process that made it, and a process that did not make it
        makes its own (its threads, like the pool's, are the parent's and gone)."""
        if self.__dict__.get("_lock_pid") != os.getpid():
            self._plan_lock = threading.Lock()
        return self.__dict__["_lock"]

    @_plan_lock.setter
    def _plan_lock(self, lock):
        self.__dict__["_lock"], self.__dict__["_lock_pid"] = lock, os.getpid()

    def _init_random_weights(self, seed=0):
        """Keras's initial values: Glorot-uniform kernels, zero biases, identity batch norms."""
        rng = np.random.default_rng(seed)
        for layer in self.weighted_layers():
            arrays = []
            for wname, shape in zip(layer.weight_names, layer.weight_shapes()):
                if wname == "kernel":
                    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
                    if isinstance(layer, L.DepthwiseConv2D):
                        fan_in = fan_out = receptive
                    else:
                        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
                    limit = np.sqrt(6.0 / (fan_in + fan_out))
                    arrays.append(rng.uniform(-limit, limit, shape))
                elif wname in ("gamma", "moving_variance"):
                    arrays.append(np.ones(shape))
                else:
                    arrays.append(np.zeros(shape))
            layer.set_weights(arrays, self.dtype)

    def load_weights(self, weights="imagenet"):
        """Load 'imagenet' (found or downloaded, see mobilenetv2.formats.registry) or a Keras .h5 file."""
        from mobilenetv2.formats import loader, registry
        _check_weights(weights, none_too=False)
        if weights == "imagenet":
            self._check_imagenet_fits()
            path = registry.resolve(self.alpha, self.weights_rows, self.include_top)
        else:
            path = os.fspath(weights)
        expected = [(layer.name, list(zip(layer.weight_names, layer.weight_shapes())))
                    for layer in self.weighted_layers()]
        self._replace_weights(loader.load_by_order(path, expected, context=self.describe()))

    def _check_imagenet_fits(self):
        """An ArgumentError where the imagenet files cannot fit this model, as the constructor says
        with weights='imagenet', before a file is looked for or downloaded (only to be refused)."""
        if self.input_shape[2] != 3:
            raise ArgumentError(f"the imagenet weights take 3 input channels, this model has {self.input_shape[2]}")
        if self.include_top and self.classes != 1000:
            raise ArgumentError(f"the imagenet weights with the top have 1000 classes, this model has {self.classes} "
                                "(build it with include_top=False to load the imagenet backbone)")

    def save_weights(self, path):
        """Save the weights as a Keras 2 ``.h5`` weights file (Keras's names; loads back here and in Keras)."""
        from mobilenetv2.formats import loader
        return loader.save_weights(path, self.layers)

    def describe(self):
        """The model in a few words, as messages name it: 'MobileNetV2 alpha=1 with top (1000 classes)'."""
        top = "with top" if self.include_top else "without top"
        head = ", TF-slim's 7x7 head" if self.top_pooling == "7x7" else ""
        return f"MobileNetV2 alpha={self.alpha:g} {top} ({self.classes} classes{head})" if self.include_top \
            else f"MobileNetV2 alpha={self.alpha:g} {top}"

    # -- shapes and cost -------------------------------------------------------------------
    def _static_shape(self, input_shape=None):
        """The example shape used for shapes and MACs (224x224 where the model takes any size);
        an ``input_shape`` given must be (H, W, C) as ``predict`` would take it."""
        if input_shape is None:
            shape = tuple(self.input_shape)
            return (224, 224, shape[2]) if None in shape else shape
        if not is_items(input_shape) or not hasattr(input_shape, "__len__") or len(input_shape) != 3:
            raise ArgumentError(f"input_shape must be (height, width, channels), got {input_shape!r}")
        h, w, c = (_size_dim(n, d, input_shape) for n, d in zip(("height", "width", "channels"), input_shape))
        if h is None or w is None or not (MIN_SIZE <= h <= MAX_SIZE and MIN_SIZE <= w <= MAX_SIZE):
            raise ArgumentError(f"input_shape height and width must be from {MIN_SIZE} to {MAX_SIZE}, "
                                f"got {input_shape!r}")
        if c != self.input_shape[2] or (None not in self.input_shape[:2] and (h, w) != self.input_shape[:2]):
            raise ArgumentError(f"this model takes inputs of {self.input_shape}, not {input_shape!r}")
        return (h, w, c)

    def macs(self, input_shape=None):
        """Multiply-accumulates of one forward pass (convolutions and the dense head)."""
        return sum(arch.layer_macs(self.layers, self._static_shape(input_shape)).values())

    def summary(self, input_shape=None, print_fn=None):
        """Print every layer with its output shape, parameters and multiply-accumulates, a line at
        a time through ``print_fn`` (None: ``print``, as Keras's summary takes it)."""
        if print_fn is None:
            print_fn = print
        if not callable(print_fn):
            raise ArgumentError(f"print_fn must be a function taking a line, or None (print), got {print_fn!r:.60}")
        shape0 = self._static_shape(input_shape)
        shapes = arch.output_shapes(self.layers, shape0)
        macs = arch.layer_macs(self.layers, shape0)
        rows = [("Layer (type)", "Output Shape", "Param #", "MACs")]
        for layer in self.layers:
            rows.append((f"{layer.name} ({type(layer).__name__})", str((None,) + tuple(shapes[layer.name])),
                         f"{layer.count_params():,}", f"{macs[layer.name]:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        line = "  ".join("{:<%d}" % w if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
        rule = "-" * (sum(widths) + 6)
        total = sum(macs.values())
        print_fn(f'Model: "{self.name}"  {self.describe()}, input {shape0}, {self.dtype.name}')
        print_fn(rule)
        print_fn(line.format(*rows[0]))
        print_fn(rule)
        for r in rows[1:]:
            print_fn(line.format(*r))
        print_fn(rule)
        print_fn(f"Total params: {self.count_params():,}")
        print_fn(f"Total MACs: {total:,} ({total / 1e6:.1f} M)")

    # -- inference -------------------------------------------------------------------------
    def _check_input(self, x, finite=True, convert=True):
        """The input as a C-contiguous batch of the model's dtype, or a ValueError naming what is
        wrong.  finite=False leaves the NaN/inf check to the caller (_forward: the C plan's stem
        as it reads the image, else NumPy before the layers run); convert=False checks the shape
        and dtype only and returns the array as given (predict converts it a chunk at a time)."""
        x = as_array(x, "input")
        if x.dtype.kind != "f":
            hint = " (scale images with preprocess_input first)" if x.dtype.kind in "ui" else ""
            raise ArgumentError(f"input must be a floating-point array, got dtype {x.dtype}{hint}")
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise ArgumentError(f"input must be (N, H, W, C) or (H, W, C), got shape {x.shape}")
        n, h, w, c = x.shape
        want_h, want_w, want_c = self.input_shape
        if c != want_c:
            raise ArgumentError(f"input must have {want_c} channels (NHWC), got shape {x.shape}")
        if h < MIN_SIZE or w < MIN_SIZE:
            raise ArgumentError(f"input height and width must be at least {MIN_SIZE}, got shape {x.shape}")
        if h > MAX_SIZE or w > MAX_SIZE:
            raise ArgumentError(f"input height and width must be at most {MAX_SIZE}, got shape {x.shape}")
        if (want_h is not None and h != want_h) or (want_w is not None and w != want_w):
            raise ArgumentError(f"this model takes inputs of {self.input_shape}, got shape {x.shape}")
        if n == 0:
            raise ArgumentError("input batch is empty")
        return self._converted(x, finite) if convert else x

    def _converted(self, x, finite=True, checked=False):
        """A checked batch (or part of one) as a C-contiguous array of the model's dtype; a value
        beyond the dtype's range (a float64 1e300 for a float32 model) is an ArgumentError saying
        so, not 'NaN or inf'.  finite: also refuse NaN and inf here.  checked: the copy's memory
        was checked already (_check_fits, with the run's)."""
        needed = self._copy_bytes(x)
        if needed:
            if not checked:
                _refuse(x, 0, needed, machine.available_memory(), self.dtype)
            try:
                with np.errstate(over="raise"):
                    x = np.require(x, self.dtype, ("C", "A"))  # an odd address too: the C kernels load floats
            except FloatingPointError:
                big = np.finfo(self.dtype).max
                raise ArgumentError(f"input has values beyond the range of {np.dtype(self.dtype).name} "
                                    f"(|x| > {big:.3g}), the model's dtype") from None
            except MemoryError:  # an address-space limit: the copy's allocation failed
                raise _out_of_memory(x) from None
        if finite:
            _require_finite(x)
        return x

    def _copy_bytes(self, x):
        """Bytes of the copy _converted makes of ``x`` (0: it takes ``x`` as it is)."""
        if x.dtype == self.dtype and x.flags.c_contiguous and x.flags.aligned:
            return 0
        return x.size * self.dtype.itemsize

    def _fitted_input(self, x, wanted=None, finite=True):
        """_check_input, refusing a batch whose run cannot fit (InsufficientMemory) before its copy
        in the model's dtype is made or its values are read for NaN: the run of predict's engine
        (``wanted=None``), or of the NumPy layers keeping the ``wanted`` outputs, with that copy."""
        x = self._check_input(x, finite=False, convert=False)
        extra = self._copy_bytes(x)
        checked = bool(extra or finite or wanted is not None)  # (else _forward or the plan checks, before any read)
        if checked:
            self._check_fits(x.shape, extra, wanted)
        return self._converted(x, finite, checked)

    def _run(self, x, wanted=None, checked=False):
        """Run the layers in order on a checked batch.

        wanted=None returns the last layer's output; otherwise a dict of the named layers'
        outputs, computing nothing after the last of them.  Outputs are freed as soon as no
        later layer reads them.

        The layers run without the plan lock (NumPy calls on one model run in parallel), so
        weights swapped meanwhile (set_weights swaps every layer under that lock) would give a
        mix of old and new: the weights' version is read under the lock before and after, and a
        run that saw a swap runs again, holding the lock (no further swap can starve it).
        checked: the batch's memory was checked for this run already (_check_fits, _forward).
        """
        with self._plan_lock:
            epoch = self.weights_epoch
        out = self._run_layers(x, wanted, checked)
        with self._plan_lock:
            if self.weights_epoch == epoch:
                return out
            return self._run_layers(x, wanted, checked)

    def _run_layers(self, x, wanted, checked=False):
        layers = self.layers
        if wanted is not None:
            last = max(i for i, layer in enumerate(layers) if layer.name in wanted)
            layers = layers[:last + 1]
        if not checked:
            self._check_memory(x, layers, wanted)
        uses = {}
        for layer in layers:
            for i in layer.inputs:
                uses[i] = uses.get(i, 0) + 1
        outputs = {layers[0].name: x}
        kept = {}
        try:
            for layer in layers[1:]:
                y = layer(*[outputs[i] for i in layer.inputs])
                for i in layer.inputs:
                    uses[i] -= 1
                    if uses[i] == 0:
                        del outputs[i]
                outputs[layer.name] = y
                if wanted is not None and layer.name in wanted:
                    kept[layer.name] = y
        except MemoryError:  # an address-space limit: an allocation itself failed
            raise _out_of_memory(x) from None
        return kept if wanted is not None else outputs[layers[-1].name]

    # The NumPy runs' memory needs kept (per input shape and layers asked for): at most this many.
    _memory_cache_size = 256

    def _check_memory(self, x, layers, wanted, extra=0):
        """Refuse a batch whose NumPy run certainly exceeds the memory available, before it runs
        (as _plan does for the C core: Linux lends the address space, then kills the process):
        at least the outputs kept for the caller and the largest layer's inputs and output.
        The values an example needs are worked out once per input shape and layers asked for
        (the network's shapes took 0.2 ms a call), until the weights are replaced.  ``extra``:
        bytes the caller is about to allocate besides (a copy of the input)."""
        available = machine.available_memory()
        if available is None:
            return
        key = (x.shape[1:], None if wanted is None else frozenset(wanted))
        cache = self._memory_needs  # (dict operations are atomic: threads may share it)
        per_example = cache.get(key)
        if per_example is None:
            per_example = arch.run_values(layers, x.shape[1:], wanted)
            if len(cache) >= self._memory_cache_size:
                cache.clear()
            cache[key] = per_example
        _refuse(x, len(x) * x.itemsize * per_example, extra, available, self.dtype)

    def _weights_changed(self):
        self.weights_epoch += 1
        self._memory_needs = {}

    # -- the C engine's compiled state: packed weights, plans per shape, the thread pool -------
    def _reset_compiled(self):
        """Start with nothing compiled and a new lock (at construction and after unpickling):
        packed weights, plans and threads are made on the next float32 run."""
        self._plan_lock = threading.Lock()
        self._plans = collections.OrderedDict()  # input shape -> Plan, least recently used first
        self._packed = None
        self._pool = None
        self._memory_needs = {}  # (example shape, layers kept) -> values per example (_check_memory)
        _LIVE_MODELS.add(self)

    def clear_cache(self):
        """Free the compiled plans, the packed weights and the C threads; the next float32 run
        rebuilds what it needs."""
        with self._plan_lock:
            self._plans.clear()
            self._packed = None
            self._pool = None
            self._memory_needs = {}

    def _c_refusal(self):
        """Why the C core cannot run this model, or None."""
        if not native.available():
            return f"the C extension is not built ({native.missing_reason()})"
        if self.dtype != np.float32:
            return (f"the C core computes in float32 and this model is {self.dtype.name} "
                    "(use engine='numpy' or 'auto')")
        if self.input_shape[2] != 3:
            return f"the C stem takes 3 input channels and this model has {self.input_shape[2]}"
        return None

    @property
    def engine(self):
        """"auto", "c" or "numpy": what runs predict() and model(x) (features() and trace() run
        the NumPy layers, which keep every activation)."""
        return self._engine

    @engine.setter
    def engine(self, value):
        check_option(value, ENGINES, f"engine must be one of {ENGINES}")
        if value == "c":
            reason = self._c_refusal()
            if reason is not None:
                raise native.EngineUnavailable(f"engine='c' cannot run {self.describe()}: {reason}")
        self._engine = value

    def _plan(self, x, extra=0):
        """The C plan for a checked float32 batch's shape (built on first use), or None where the
        NumPy engine runs.  A new plan whose buffers, with ``extra`` bytes the caller is about to
        allocate (a copy of the input), exceed the memory available is refused.  Called with the
        plan lock held."""
        if self._engine == "numpy":
            return None
        reason = self._c_refusal()
        if reason is not None:
            if self._engine == "c":  # (a model pickled where the C extension is built, loaded where it is not)
                raise native.EngineUnavailable(f"engine='c' cannot run {self.describe()}: {reason}")
            return None
        if self._packed is None or self._packed.epoch != self.weights_epoch:
            self._plans.clear()
            self._packed = PackedWeights(self)
        plan = self._plans.get(x.shape)
        if plan is not None:
            self._plans.move_to_end(x.shape)
            return plan
        if extra:  # a copy that cannot fit alone is refused before the plan's buffers are allocated
            _refuse(x, 0, extra, machine.available_memory(), self.dtype)
        try:
            plan = Plan(self, x.shape, self._packed)
        except Unsupported as exc:
            if self._engine == "c":
                raise native.EngineUnavailable(f"engine='c' cannot run {self.describe()}: {exc}") from None
            return None
        except MemoryError:  # the arena's allocation itself failed (an address-space limit, or
            plan = None  # more than Linux lends at all)
        if plan is None:
            self._refuse_unallocated(x, extra)
        # Linux hands out address space it does not have (overcommit): a plan larger than the
        # memory available would be killed while it runs, not refused.  Refused here, before.
        _refuse(x, plan.nbytes, extra, machine.available_memory(), self.dtype)
        self._plans[x.shape] = plan
        self._drop_plans()
        return plan

    def _refuse_unallocated(self, x, extra):
        """The InsufficientMemory for a batch whose plan could not even be allocated, saying how
        much it needs: its buffers grow with the batch, so about the batch size times one image's."""
        try:
            one = Plan(self, (1,) + x.shape[1:], self._packed).nbytes
        except (MemoryError, Unsupported):
            one = None
        if one is not None:
            _refuse(x, one * len(x), extra, machine.available_memory(), self.dtype, " about")
        raise _out_of_memory(x)  # (an address-space limit below what is available)

    def _drop_plans(self):
        """Drop the least recently used plans beyond plan_cache_shapes and plan_cache_bytes (the
        newest is kept whatever its size).  Called with the plan lock held."""
        total = sum(p.nbytes for p in self._plans.values())
        while len(self._plans) > 1 and (len(self._plans) > self.plan_cache_shapes or
                                        total > self.plan_cache_bytes):
            _, old = self._plans.popitem(last=False)
            total -= old.nbytes

    def _trim_plans(self):
        """_drop_plans under the plan lock, where the model has plans yet (not while __init__
        sets the bounds)."""
        if "_plans" in self.__dict__:
            with self._plan_lock:
                self._drop_plans()

    def _check_fits(self, shape, extra=0, wanted=None):
        """An InsufficientMemory where a batch of ``shape`` (checked) cannot run, as its run would
        say, without reading or copying any input: the C plan of that shape is built (and kept),
        or the NumPy run's memory worked out (``wanted``: of the layers up to those names, keeping
        their outputs, as features() and trace() run), with ``extra`` bytes besides (the copy of
        the input about to be made; a plan already kept is counted as in use: it has run, as a rule)."""
        probe = np.broadcast_to(np.zeros((), self.dtype), shape)  # a shape and dtype, no memory
        if wanted is None:
            with self._plan_lock:
                kept = self._plans.get(shape)
                plan = self._plan(probe, extra)  # (a new plan is checked with the copy)
            if plan is not None:
                if plan is kept and extra:
                    _refuse(probe, 0, extra, machine.available_memory(), self.dtype)
                return
        self._check_memory(probe, self.layers, wanted, extra)

    def _thread_pool(self):
        """The model's C thread pool with model.threads threads (a new one after fork or a
        change of model.threads).  Called with the plan lock held."""
        pool = self._pool
        if pool is not None and not pool.usable():
            pool.forget()  # a parent's pool (fork() from C, which no handler saw): never joined
        if pool is None or not pool.usable() or pool.threads != self._threads:
            self._pool = None  # the old pool's threads stop before new ones start
            pool = self._pool = threadpool.Pool(self._threads)
        return pool

    def profile(self, x, runs=30):
        """Time each op of the C plan on ``x`` (model.threads threads): a list of dicts with the
        Keras layer it computes (fused BN/ReLU6/add included), kind, shape, multiply-accumulates
        and median seconds over ``runs`` runs.  Needs the C extension and float32."""
        runs = _check_runs(runs)
        x = self._fitted_input(x)
        with self._plan_lock:
            plan = self._plan(x)
            if plan is None:
                why = self._c_refusal() or ("its engine is 'numpy'" if self._engine == "numpy"
                                            else "the C plan does not take this input")
                raise native.EngineUnavailable(f"profile() times the C plan, which cannot run "
                                               f"{self.describe()}: {why}")
            return plan.profile(x, self._thread_pool(), runs)

    def _forward(self, x):
        """Whole-network forward of a checked batch (its values checked for NaN/inf here: by the C
        plan's stem as it reads them, else before the NumPy layers run): the C plan for float32 where
        the extension is built.  Calls on one model are serialized (one arena per shape)."""
        with self._plan_lock:
            plan = self._plan(x)
            if plan is not None:
                return plan.run(x, self._thread_pool())
        self._check_memory(x, self.layers, None)  # refused before a pass over the values
        _require_finite(x)
        return self._run(x, checked=True)

    @property
    def threads(self):
        """Threads the C engine uses; results are the same for any count.  None (the default)
        means the first of $MNV2_NUM_THREADS, $OMP_NUM_THREADS, the CPUs this process may run
        on, os.cpu_count().  At most pool.max_threads()."""
        return self._threads

    @threads.setter
    def threads(self, value):
        self._threads = threadpool.default_threads() if value is None else threadpool.check_threads(value)
        self._threads_arg = value if value is None else self._threads

    # -- copies and pickling: the weights and settings go, compiled state is rebuilt on first use --
    def _state(self):
        """The settings and the layers as they are now, without compiled state: each layer a
        shallow copy holding the same read-only weight arrays.  Called with the plan lock held, so
        a swap (set_weights, load_weights) is in the copy whole or not at all."""
        state = self.__dict__.copy()
        for key in ("_lock", "_lock_pid", "_plans", "_packed", "_pool", "_memory_needs", "_by_name"):
            state.pop(key, None)
        if state.get("_threads_arg") is None:
            state.pop("_threads", None)  # resolved again where the copy is loaded
        state["layers"] = [copy.copy(layer) for layer in self.layers]
        return state

    def __getstate__(self):
        with self._plan_lock:
            return self._state()

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._threads_arg is None:
            self.threads = None
        self._by_name = {layer.name: layer for layer in self.layers}
        self._reset_compiled()
        self._watch_layers()

    def __copy__(self):
        """A model of its own (layers, lock, plans, caches, threads) that shares this one's
        read-only weight arrays and the C engine's packed form of them: no weights are copied or
        packed again.  A weight change through either model is the other's no more (set_weights
        gives the changed model new arrays), and the two may run at once in different threads.
        (copy.deepcopy, like pickling, copies the weights too and packs them again on first use.)"""
        with self._plan_lock:
            state = self._state()
            current = self._packed is not None and self._packed.epoch == self.weights_epoch
            packed = self._packed.so_far() if current else None
        # everything else is copied deeply (a transformers model's id2label, config, hf_names)
        shared = {id(w): w for layer in state["layers"] for w in layer.weights}
        twin = type(self).__new__(type(self))
        twin.__setstate__(copy.deepcopy(state, shared))
        if packed is not None:
            twin._packed = PackedWeights(twin, packed)
        return twin

    def _watch_layers(self):
        """Each layer tells the models that hold it when its weights are replaced, through weak
        references: a bound method would make every model a reference cycle, kept (its C threads,
        its plans) after its last reference is dropped until Python's cycle collector runs, or for
        good where a service disables it.  (A model's copies have layers of their own: see
        __copy__.)"""
        for layer in self.layers:
            if not isinstance(layer.on_weights_change, _Watchers):
                layer.on_weights_change = _Watchers()
            layer.on_weights_change.models.add(self)

    def __call__(self, x):
        """``model(x)``: predict(x) in one batch (the outputs of the whole batch at once)."""
        return self._forward(self._fitted_input(x, finite=False))

    def predict(self, x, batch_size=32):
        """Outputs for a batch (N, H, W, C) or one image (H, W, C) (a batch of one), run
        ``batch_size`` at a time: an array of the model's dtype, (N, classes) with the top, (N, h, w,
        classes) with TF-slim's 7x7 head, (N, h, w, channels) without the top, (N, channels) with
        ``pooling``.  Float input only (preprocess_input scales images); NaN or inf, a wrong shape or
        an empty batch is an ArgumentError, a batch_size this machine cannot hold InsufficientMemory."""
        if not is_whole(batch_size) or batch_size < 1:
            raise ArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        batch_size = int(batch_size)  # (i + np.uint8(128) wraps or overflows past 255)
        x = self._check_input(x, finite=False, convert=False)
        starts = range(0, len(x), batch_size)
        extra = self._copy_bytes(x[:batch_size])  # (a chunk's copy, where one is made)
        if len(x) > batch_size or extra:  # a chunk too large is refused before any is read or copied
            self._check_fits(x[:batch_size].shape, extra)
        if len(x) > batch_size:  # a NaN in the last chunk fails the call before the first runs
            for i in starts:  # a chunk at a time: memory as batch_size asks, not as the whole input
                self._converted(x[i:i + batch_size])
        outs = [self._forward(self._converted(x[i:i + batch_size], finite=False)) for i in starts]
        if len(outs) == 1 and not np.may_share_memory(outs[0], x):  # one chunk: already an array of its own
            return outs[0]
        return np.concatenate(outs)

    def features(self, x, layers):
        """The named layers' outputs (``layers``: a name or a list of names) as a dict by name, in
        the order asked (a name asked twice is one entry), each (N, h, w, channels) in the model's
        dtype, computing nothing after the last layer needed.  Runs the NumPy layers."""
        layers = _check_layer_names(layers)
        for name in layers:
            self.get_layer(name)
        if self.layers[0].name in layers:
            raise ArgumentError(f"{self.layers[0].name!r} is the input itself, not an activation")
        wanted = set(layers)
        out = self._run(self._fitted_input(x, wanted), wanted, checked=True)
        return {name: out[name] for name in layers}

    def trace(self, x):
        """Every layer's output after the input layer, in order, as a dict by Keras name."""
        wanted = {layer.name for layer in self.layers[1:]}
        return self._run(self._fitted_input(x, wanted), wanted, checked=True)
