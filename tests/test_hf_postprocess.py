"""post_process_semantic_segmentation's resize on the C kernel (float32 logits, extension built)
against its NumPy twin: the same class maps, from the same resized bits."""
import numpy as np
import pytest

from mobilenetv2.processing import hf_processing
from mobilenetv2.engines import native
from mobilenetv2.engines.numpy_kernels import resize_bilinear


@pytest.mark.skipif(not native.available(), reason="the C extension is not built")
@pytest.mark.parametrize("shape,target", [((65, 65, 21), (513, 513)), ((9, 7, 3), (31, 60)), ((1, 1, 4), (5, 3))])
def test_float32_logits_resize_in_c_as_numpy_does(monkeypatch, shape, target):
    logits = np.random.default_rng(sum(shape)).standard_normal((2,) + shape).astype(np.float32)
    resized = hf_processing._resize_logits(logits[:1], *target)
    np.testing.assert_array_equal(resized, resize_bilinear(logits[:1], *target, align_corners=False))
    got = hf_processing.post_process_semantic_segmentation(logits, [target, target])
    monkeypatch.setattr(native, "available", lambda: False)  # the NumPy path
    want = hf_processing.post_process_semantic_segmentation(logits, [target, target])
    assert all(np.array_equal(g, w) and g.shape == target for g, w in zip(got, want))
    # float64 logits keep the NumPy kernel (the golden reference's dtype)
    assert hf_processing._resize_logits(logits[:1].astype(np.float64), *target).dtype == np.float64


def test_target_sizes_are_bounded_before_anything_is_allocated():
    """(10**6, 10**6) tried to allocate 29 TiB (a MemoryError); a float or a 3-tuple went through
    int() or failed inside unpacking.  Each is an ArgumentError now; the bound is a photo's, 64 M
    pixels in all (a side past MAX_TARGET is taken: tests/test_segmentation_walk.py)."""
    from mobilenetv2 import ArgumentError
    from mobilenetv2.processing.preprocessing import MAX_PIXELS, MAX_TARGET
    logits = np.zeros((1, 4, 5, 3), np.float32)
    side = int(np.sqrt(MAX_PIXELS)) + 1
    for bad in [(10 ** 6, 10 ** 6), (0, 5), (5, -1), (side, side), (5.0, 5),
                (True, 5), (5, 5, 5), 7, "ab"]:
        with pytest.raises(ArgumentError, match="target size"):
            hf_processing.post_process_semantic_segmentation(logits, [bad])
    got = hf_processing.post_process_semantic_segmentation(np.concatenate([logits, logits]),
                                                           [np.array([MAX_TARGET, 1]), (1, MAX_TARGET)])
    assert [g.shape for g in got] == [(MAX_TARGET, 1), (1, MAX_TARGET)]
    # the largest map taken, MAX_TARGET a side: MAX_PIXELS exactly (checked, not made: 64 M labels)
    assert MAX_TARGET ** 2 == MAX_PIXELS and hf_processing._target_size((MAX_TARGET, MAX_TARGET)) == (MAX_TARGET,) * 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_maps_are_made_a_few_labels_at_a_time(monkeypatch, dtype):
    """The labels are resized RESIZE_CHUNK_BYTES at a time (all 21 of a 64-megapixel photo were
    5.6 GB at once in float32; in float64 a 3-megapixel photo took 2.1 GB): every resize stays
    within the bound, and the map is still the argmax of the whole resize (NumPy's, here), ties
    and NaN included (the first of equal maxima, the first NaN)."""
    logits = np.random.default_rng(3).standard_normal((2, 9, 7, 21)).astype(dtype)
    logits[0, :, :, [4, 13]] = logits[0].max() + 1       # a tie across chunks: 4 wins
    logits[1, 2, 3, [6, 17]] = np.nan                    # NaN wins, the first one (6, not 17)
    logits[1, 7, 0, 19] = np.nan                         # a NaN in the last chunk only
    target = (37, 50)
    want = [resize_bilinear(logits[i:i + 1], *target, align_corners=False)[0].argmax(axis=-1) for i in range(2)]
    sizes = []
    resize = hf_processing._resize_logits
    monkeypatch.setattr(hf_processing, "_resize_logits", lambda y, th, tw: sizes.append(y.shape[-1]) or resize(y, th, tw))
    monkeypatch.setattr(hf_processing, "RESIZE_CHUNK_BYTES", 5 * 37 * 50 * np.dtype(dtype).itemsize)
    got = hf_processing.post_process_semantic_segmentation(logits, [target, target])
    assert sizes == [5, 5, 5, 5, 1] * 2
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert (got[0] == 4).all() and {6, 19} <= set(np.unique(got[1]))  # where the NaNs spread
    # a bound under one label's resize: one label at a time, the same map
    sizes.clear()
    monkeypatch.setattr(hf_processing, "RESIZE_CHUNK_BYTES", 37 * 50 * np.dtype(dtype).itemsize - 1)
    got = hf_processing.post_process_semantic_segmentation(logits, [target, target])
    assert sizes == [1] * 42 and all(np.array_equal(g, w) for g, w in zip(got, want))
