"""The real ImageNet backbone (1.0_224, no top) on 101 real photos against Keras's features.

Both weight files in shared/weights hold the same values: one with the official 2018 files'
layer names (matched by order, as Keras does), one with today's names.

README's "Accuracy against Keras" gives the real backbone's figures; the C core and the float64 mode
are held to them here (both are the same on every machine: the C core computes each output by one
fixed sequence of operations on every ISA, thread count and batch, and the float64 mode's distance
from Keras is Keras's own float32 rounding).  The NumPy engine's float32 depends on its BLAS.
"""
import numpy as np
import pytest

from conftest import keras_reference, require_shared
from mobilenetv2 import MobileNetV2
from mobilenetv2.engines import native
from test_keras_reference import MAP_RTOL, POOLED_RTOL, rel_l2

OLD_NAMES = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
NEW_NAMES = "mobilenet_v2_1.0_224_no_top.keras3-names.h5"
FIRST4 = ["block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu"]
# The C core, float32 (README: 5.4e-6 the worst photo, 2.5e-6 the median, 2.8e-6 all 101 together;
# measured 5.43e-6, 2.52e-6 and 2.79e-6 on an AMD EPYC Zen 4, the same bits on every ISA)
C_WORST_RTOL = 6e-6
C_MEDIAN_RTOL = 2.8e-6
C_ALL_RTOL = 3e-6
# The float64 mode on the first 8 photos (measured 1.73e-6; README: 3.2e-6 the worst of all 101)
F64_FIRST8_RTOL = 2.5e-6


def per_photo(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def ref():
    return keras_reference("real_backbone_1.0_224.npz")


@pytest.fixture(scope="module")
def inputs(ref):
    return ref["inputs_uint8"].astype(np.float32) / 127.5 - 1


@pytest.mark.parametrize("filename", [OLD_NAMES, NEW_NAMES])
def test_pooled_features_of_101_photos(ref, inputs, filename):
    model = MobileNetV2((224, 224, 3), alpha=1.0, include_top=False, pooling="avg",
                        weights=require_shared("weights", filename))
    pooled = model.predict(inputs, batch_size=16)
    assert pooled.shape == (101, 1280)
    assert rel_l2(pooled, ref["pooled"]) <= POOLED_RTOL
    if native.available():  # the C core ran it
        errors = per_photo(pooled, ref["pooled"])
        assert errors.max() <= C_WORST_RTOL, errors.max()
        assert np.median(errors) <= C_MEDIAN_RTOL, np.median(errors)
        whole = np.linalg.norm(pooled.astype(np.float64) - ref["pooled"]) / np.linalg.norm(ref["pooled"])
        assert whole <= C_ALL_RTOL, whole


def test_layer_by_layer_path_and_intermediate_maps(ref, inputs):
    model = MobileNetV2((224, 224, 3), alpha=1.0, include_top=False, pooling="avg",
                        weights=require_shared("weights", OLD_NAMES))
    feats = model.features(inputs[:4], FIRST4 + ["global_average_pooling2d"])
    for name in FIRST4:
        assert rel_l2(feats[name], ref[f"{name}_first4"]) <= MAP_RTOL, name
    assert rel_l2(feats["global_average_pooling2d"], ref["pooled"][:4]) <= POOLED_RTOL


def test_float64_reference_mode(ref, inputs):
    model = MobileNetV2((224, 224, 3), alpha=1.0, include_top=False, pooling="avg",
                        weights=require_shared("weights", NEW_NAMES), dtype="float64")
    pooled = model.predict(inputs[:8].astype(np.float64))
    assert pooled.dtype == np.float64
    assert rel_l2(pooled, ref["pooled"][:8]) <= F64_FIRST8_RTOL
