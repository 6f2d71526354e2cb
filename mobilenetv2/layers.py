"""Layer objects with Keras's names, weights and semantics, computed by the NumPy kernels.

A layer knows its name, the names of the layers that feed it, its weights (in Keras's order
and shapes) and how to compute its output.  Spatial sizes are not fixed at construction: every
layer works on any input size, padding as Keras does for a static input of that size.
Shapes here are per-example ``(H, W, C)`` tuples.
"""
import numpy as np

from mobilenetv2 import numpy_kernels as K


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
        return self._weights

    @weights.setter
    def weights(self, arrays):
        self._weights = arrays
        if self.on_weights_change is not None:
            self.on_weights_change()

    def __init__(self, name, inputs):
        self.name = name
        self.inputs = tuple(inputs)
        self.weights = []

    # -- weights -------------------------------------------------------------------------
    def weight_shapes(self):
        return []

    def count_params(self):
        return int(sum(np.prod(s) for s in self.weight_shapes()))

    def set_weights(self, arrays, dtype=np.float32):
        shapes = self.weight_shapes()
        if len(arrays) != len(shapes):
            raise ValueError(f"layer {self.name!r} takes {len(shapes)} weight arrays "
                             f"({', '.join(self.weight_names)}), got {len(arrays)}")
        out = []
        for wname, shape, a in zip(self.weight_names, shapes, arrays):
            a = np.asarray(a)
            if tuple(a.shape) != tuple(shape):
                raise ValueError(f"layer {self.name!r} weight {wname!r}: expected shape "
                                 f"{tuple(shape)}, got {tuple(a.shape)}")
            if not np.isfinite(a).all():
                raise ValueError(f"layer {self.name!r} weight {wname!r} contains NaN or inf")
            if wname == "moving_variance" and (a < 0).any():  # sqrt(var + eps) would be NaN
                raise ValueError(f"layer {self.name!r} weight 'moving_variance' has negative values "
                                 f"(as low as {a.min():g}); a variance is never negative")
            out.append(np.ascontiguousarray(a, dtype=dtype))
        self.weights = out

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
    """Keras Conv2D without bias; 'same' padding is TF-SAME, 'valid' none."""

    weight_names = ("kernel",)

    def __init__(self, name, inputs, cin, cout, kernel=1, stride=1, padding="same"):
        super().__init__(name, inputs)
        self.cin, self.cout, self.kernel, self.stride, self.padding = cin, cout, kernel, stride, padding

    def weight_shapes(self):
        return [(self.kernel, self.kernel, self.cin, self.cout)]

    def pads(self, h, w):
        if self.padding == "valid":
            return (0, 0, 0, 0)
        return same_pads(h, self.kernel, self.stride) + same_pads(w, self.kernel, self.stride)

    def output_shape(self, shape):
        h, w, _ = shape
        if self.padding == "same":
            return (-(-h // self.stride), -(-w // self.stride), self.cout)
        return ((h - self.kernel) // self.stride + 1, (w - self.kernel) // self.stride + 1, self.cout)

    def macs(self, shape):
        h, w, _ = self.output_shape(shape)
        return h * w * self.kernel * self.kernel * self.cin * self.cout

    def __call__(self, x):
        (kernel,) = self.weights
        if self.kernel == 1 and self.stride == 1:
            return K.pointwise(x, kernel[0, 0])
        return K.conv2d(x, kernel, self.stride, self.pads(x.shape[1], x.shape[2]))


class DepthwiseConv2D(Layer):
    """Keras DepthwiseConv2D 3x3, depth multiplier 1, without bias."""

    weight_names = ("kernel",)

    def __init__(self, name, inputs, channels, stride=1, padding="same"):
        super().__init__(name, inputs)
        self.channels, self.stride, self.padding = channels, stride, padding

    def weight_shapes(self):
        return [(3, 3, self.channels, 1)]

    def pads(self, h, w):
        if self.padding == "valid":
            return (0, 0, 0, 0)
        return same_pads(h, 3, self.stride) + same_pads(w, 3, self.stride)

    def output_shape(self, shape):
        h, w, c = shape
        if self.padding == "same":
            return (-(-h // self.stride), -(-w // self.stride), c)
        return ((h - 3) // self.stride + 1, (w - 3) // self.stride + 1, c)

    def macs(self, shape):
        h, w, c = self.output_shape(shape)
        return h * w * 9 * c

    def __call__(self, x):
        (kernel,) = self.weights
        return K.depthwise3x3(x, kernel[:, :, :, 0], self.stride, self.pads(x.shape[1], x.shape[2]))


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
    """ReLU capped at 6 (Keras ``ReLU(6.0)``)."""

    def __call__(self, x):
        return K.relu6(x)


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
    def output_shape(self, shape):
        return (shape[2],)

    def __call__(self, x):
        return K.global_avg_pool(x)


class GlobalMaxPooling2D(GlobalAveragePooling2D):
    def __call__(self, x):
        return K.global_max_pool(x)


class Dense(Layer):
    """Keras Dense with bias; ``activation`` is 'softmax' or None."""

    weight_names = ("kernel", "bias")

    def __init__(self, name, inputs, cin, cout, activation=None):
        super().__init__(name, inputs)
        self.cin, self.cout, self.activation = cin, cout, activation

    def weight_shapes(self):
        return [(self.cin, self.cout), (self.cout,)]

    def output_shape(self, shape):
        return (self.cout,)

    def macs(self, shape):
        return self.cin * self.cout

    def __call__(self, x):
        y = K.dense(x, *self.weights)
        return K.softmax(y) if self.activation == "softmax" else y
