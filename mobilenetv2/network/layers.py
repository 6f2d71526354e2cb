"""Layer objects with Keras's names, weights and semantics, computed by the NumPy kernels.

A layer knows its name, the names of the layers that feed it, its weights (in Keras's order
and shapes) and how to compute its output.  Spatial sizes are not fixed at construction: every
layer works on any input size, padding as Keras does for a static input of that size.
Shapes here are per-example ``(H, W, C)`` tuples.
"""
import numpy as np

from mobilenetv2.engines import numpy_kernels as K
from mobilenetv2.errors import ArgumentError, WeightsError


def same_pads(size, kernel, stride):
    """TF-SAME padding of one spatial axis: (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def correct_pads(size, kernel=3):
    """Keras ``imagenet_utils.correct_pad`` for a static size: one axis, (before, after)."""
    adjust = 1 - size % 2
    return kernel // 2 - adjust, kernel // 2


class Layer:
    """Base class.  ``inputs`` are the names of the layers this one reads."""

    weight_names = ()
    on_weights_change = None  # set by the model that owns the layer: told of every replacement

    @property
    def weights(self):
        """The weights, in Keras's order, as a tuple of read-only arrays: change them through
        ``set_weights`` (or by assigning this property), which the compiled C plans follow; an
        edit in place would reach the NumPy engine only, so it raises instead."""
        return self._weights

    @weights.setter
    def weights(self, arrays):
        self.set_weights(arrays)

    def __init__(self, name, inputs):
        self.name = name
        self.inputs = tuple(inputs)
        self._weights = ()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("on_weights_change", None)  # the owning model's method: it sets it again
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        for w in self._weights:  # unpickled arrays come back writable
            w.setflags(write=False)

    # -- weights -------------------------------------------------------------------------
    def weight_shapes(self):
        return []

    def count_params(self):
        return int(sum(np.prod(s) for s in self.weight_shapes()))

    def set_weights(self, arrays, dtype=None):
        """Replace the weights by copies of ``arrays`` (checked against the layer's shapes, and
        finite) in ``dtype``: by default the dtype the layer has (float32 for a new layer)."""
        self.replace_weights(self.checked_weights(arrays, dtype))

    def replace_weights(self, checked):
        """Take ``checked`` (what checked_weights returned) as the weights."""
        self._weights = checked
        if self.on_weights_change is not None:
            self.on_weights_change()

    def checked_weights(self, arrays, dtype=None):
        """Read-only copies of ``arrays`` in ``dtype`` as set_weights would take them, checked
        (shapes, finite, variances), or a WeightsError; the layer is not changed."""
        if dtype is None:
            dtype = self._weights[0].dtype if self._weights else np.float32
        arrays = list(arrays)
        shapes = self.weight_shapes()
        if len(arrays) != len(shapes):
            raise WeightsError(f"layer {self.name!r} takes {len(shapes)} weight arrays "
                               f"({', '.join(self.weight_names)}), got {len(arrays)}")
        out = []
        for wname, shape, a in zip(self.weight_names, shapes, arrays):
            a = np.asarray(a)
            if tuple(a.shape) != tuple(shape):
                raise WeightsError(f"layer {self.name!r} weight {wname!r}: expected shape "
                                   f"{tuple(shape)}, got {tuple(a.shape)}")
            # Real numbers (ml_dtypes' bfloat16 too); not complex (it lost its imaginary part), strings
            # (NumPy's TypeError), dates or objects.
            if not np.can_cast(a.dtype, np.float64, "same_kind"):
                raise WeightsError(f"layer {self.name!r} weight {wname!r}: expected real numbers, got dtype {a.dtype}")
            if not np.isfinite(a).all():
                raise WeightsError(f"layer {self.name!r} weight {wname!r} contains NaN or inf")
            if wname == "moving_variance" and (a < 0).any():  # sqrt(var + eps) would be NaN
                raise WeightsError(f"layer {self.name!r} weight 'moving_variance' has negative values "
                                   f"(as low as {a.min():g}); a variance is never negative")
            try:
                with np.errstate(over="raise"):
                    a = np.array(a, dtype=dtype, order="C", copy=True)  # never the caller's array
            except FloatingPointError:  # (it became inf)
                raise WeightsError(f"layer {self.name!r} weight {wname!r} has values beyond the range of "
                                   f"{np.dtype(dtype).name}, the model's dtype (as large as {np.abs(a).max():g})") from None
            a.setflags(write=False)
            out.append(a)
        return tuple(out)

    def get_weights(self):
        return [w.copy() for w in self.weights]

    # -- shapes and cost -----------------------------------------------------------------
    def output_shape(self, *shapes):
        return shapes[0]

    def macs(self, *shapes):
        return 0

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


class InputLayer(Layer):
    def __init__(self, name="input_layer"):
        super().__init__(name, ())

    def __call__(self, x):
        return x


class Conv2D(Layer):
    """Keras Conv2D, without bias unless ``use_bias``; 'same' padding is TF-SAME, 'valid' none,
    'symmetric' kernel // 2 zeros on every side (PyTorch's ``padding=k // 2``)."""

    weight_names = ("kernel",)

    def __init__(self, name, inputs, cin, cout, kernel=1, stride=1, padding="same", use_bias=False):
        super().__init__(name, inputs)
        self.cin, self.cout, self.kernel, self.stride, self.padding = cin, cout, kernel, stride, padding
        self.use_bias = use_bias
        if use_bias:
            self.weight_names = ("kernel", "bias")

    def weight_shapes(self):
        return [(self.kernel, self.kernel, self.cin, self.cout)] + ([(self.cout,)] if self.use_bias else [])

    def pads(self, h, w):
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "symmetric":
            return (self.kernel // 2,) * 4
        return same_pads(h, self.kernel, self.stride) + same_pads(w, self.kernel, self.stride)

    def output_shape(self, shape):
        h, w, _ = shape
        if self.padding == "same":
            return (-(-h // self.stride), -(-w // self.stride), self.cout)
        top, bottom, left, right = self.pads(h, w)
        return ((h + top + bottom - self.kernel) // self.stride + 1,
                (w + left + right - self.kernel) // self.stride + 1, self.cout)

    def macs(self, shape):
        h, w, _ = self.output_shape(shape)
        return h * w * self.kernel * self.kernel * self.cin * self.cout

    def __call__(self, x):
        kernel, bias = self.weights[0], (self.weights[1] if self.use_bias else None)
        if bias is not None:
            bias = bias.astype(x.dtype, copy=False)
        if self.kernel == 1 and self.stride == 1:
            return K.pointwise(x, kernel[0, 0], bias=bias)
        return K.conv2d(x, kernel, self.stride, self.pads(x.shape[1], x.shape[2]), bias=bias)


class DepthwiseConv2D(Layer):
    """Keras DepthwiseConv2D 3x3, depth multiplier 1, without bias, with an optional
    ``dilation`` (taps ``dilation`` pixels apart: DeepLab's atrous convolution).  Padding 'same'
    is TF-SAME for the dilated window, 'valid' none, 'symmetric' ``dilation`` zeros on every side
    (PyTorch's ``padding=dilation``)."""

    weight_names = ("kernel",)

    def __init__(self, name, inputs, channels, stride=1, padding="same", dilation=1):
        super().__init__(name, inputs)
        self.channels, self.stride, self.padding, self.dilation = channels, stride, padding, dilation

    def weight_shapes(self):
        return [(3, 3, self.channels, 1)]

    def pads(self, h, w):
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "symmetric":
            return (self.dilation,) * 4
        span = 2 * self.dilation + 1
        return same_pads(h, span, self.stride) + same_pads(w, span, self.stride)

    def output_shape(self, shape):
        h, w, c = shape
        if self.padding == "same":
            return (-(-h // self.stride), -(-w // self.stride), c)
        top, bottom, left, right = self.pads(h, w)
        span = 2 * self.dilation + 1
        return ((h + top + bottom - span) // self.stride + 1, (w + left + right - span) // self.stride + 1, c)

    def macs(self, shape):
        h, w, c = self.output_shape(shape)
        return h * w * 9 * c

    def __call__(self, x):
        (kernel,) = self.weights
        return K.depthwise3x3(x, kernel[:, :, :, 0], self.stride, self.pads(x.shape[1], x.shape[2]),
                              dilation=self.dilation)


class BatchNormalization(Layer):
    weight_names = ("gamma", "beta", "moving_mean", "moving_variance")

    def __init__(self, name, inputs, channels, epsilon=K.BN_EPSILON):
        super().__init__(name, inputs)
        self.channels, self.epsilon = channels, epsilon

    def weight_shapes(self):
        return [(self.channels,)] * 4

    def __call__(self, x):
        return K.batchnorm(x, *self.weights, eps=self.epsilon)


class ReLU(Layer):
    """ReLU capped at ``max_value`` (Keras ``ReLU(6.0)``), or plain max(x, 0) when it is None."""

    def __init__(self, name, inputs, max_value=6.0):
        super().__init__(name, inputs)
        if max_value not in (6.0, None):
            raise ArgumentError(f"ReLU {name!r}: max_value must be 6.0 or None, got {max_value!r}")
        self.max_value = max_value

    def __call__(self, x):
        return K.relu6(x) if self.max_value is not None else K.relu(x)


class ZeroPadding2D(Layer):
    """Keras ZeroPadding2D with ``correct_pad``'s amounts for the (static) input size."""

    def pads(self, h, w):
        return correct_pads(h) + correct_pads(w)

    def output_shape(self, shape):
        h, w, c = shape
        top, bottom, left, right = self.pads(h, w)
        return (h + top + bottom, w + left + right, c)

    def __call__(self, x):
        return K.zero_pad(x, self.pads(x.shape[1], x.shape[2]))


class Add(Layer):
    def __call__(self, a, b):
        return K.add(a, b)


class GlobalAveragePooling2D(Layer):
    """Mean over H and W: (H, W, C) -> (C,), or (1, 1, C) with ``keepdims``."""

    def __init__(self, name, inputs, keepdims=False):
        super().__init__(name, inputs)
        self.keepdims = keepdims

    def output_shape(self, shape):
        return (1, 1, shape[2]) if self.keepdims else (shape[2],)

    def __call__(self, x):
        y = K.global_avg_pool(x)
        return y[:, None, None, :] if self.keepdims else y


class GlobalMaxPooling2D(GlobalAveragePooling2D):
    def __call__(self, x):
        return K.global_max_pool(x)


class Dense(Layer):
    """Keras Dense with bias over the last axis (of (C,) or of every pixel of (H, W, C));
    ``activation`` is 'softmax' or None."""

    weight_names = ("kernel", "bias")

    def __init__(self, name, inputs, cin, cout, activation=None):
        super().__init__(name, inputs)
        self.cin, self.cout, self.activation = cin, cout, activation

    def weight_shapes(self):
        return [(self.cin, self.cout), (self.cout,)]

    def output_shape(self, shape):
        return tuple(shape[:-1]) + (self.cout,)

    def macs(self, shape):
        return int(np.prod(shape[:-1], dtype=np.int64)) * self.cin * self.cout

    def __call__(self, x):
        y = K.dense(x, *self.weights)
        return K.softmax(y) if self.activation == "softmax" else y


class AveragePooling2D(Layer):
    """TF-slim's head pooling: a ``pool`` x ``pool`` average, stride 1, VALID, the window shrunk to
    the input where the input is smaller (``_reduced_kernel_size_for_small_input``).  On a 7x7 map it
    is the global average; on a 10x10 map (320x320 input) it gives a 4x4 grid."""

    def __init__(self, name, inputs, pool=7):
        super().__init__(name, inputs)
        self.pool = pool

    def window(self, h, w):
        return min(self.pool, h), min(self.pool, w)

    def output_shape(self, shape):
        h, w, c = shape
        kh, kw = self.window(h, w)
        return (h - kh + 1, w - kw + 1, c)

    def __call__(self, x):
        return K.avg_pool(x, *self.window(x.shape[1], x.shape[2]))


class ResizeBilinear(Layer):
    """Bilinear resize of the first input to the spatial size of the second, as PyTorch's
    ``interpolate(mode='bilinear')`` computes it (``align_corners`` as given).  From a 1x1 map it
    is a broadcast (DeepLabV3's image-pooling branch)."""

    def __init__(self, name, inputs, align_corners=False):
        super().__init__(name, inputs)
        self.align_corners = align_corners

    def output_shape(self, shape, like):
        return (like[0], like[1], shape[2])

    def __call__(self, x, like):
        return K.resize_bilinear(x, like.shape[1], like.shape[2], self.align_corners)


class Concatenate(Layer):
    """Channel concatenation of the inputs, in order."""

    def output_shape(self, *shapes):
        return tuple(shapes[0][:2]) + (sum(s[2] for s in shapes),)

    def __call__(self, *xs):
        return np.concatenate(xs, axis=-1)
