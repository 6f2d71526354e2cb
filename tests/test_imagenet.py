"""decode_predictions and the shipped class table, against Keras's own class index."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import require_shared
from mobilenetv2 import decode_predictions
from mobilenetv2.processing.imagenet import class_table


def test_table_equals_keras_entry_for_entry():
    keras = json.loads(require_shared("imagenet_class_index.json").read_text())
    assert len(keras) == len(class_table()) == 1000
    for i, (wnid, name) in enumerate(class_table()):
        assert [wnid, name] == keras[str(i)], i


def test_table_by_hand():
    table = class_table()
    assert table[0] == ("n01440764", "tench")
    assert table[388] == ("n02510455", "giant_panda")
    assert [i for i, (_, n) in enumerate(table) if n == "crane"] == [134, 517]


def test_decode_orders_and_cuts():
    preds = np.zeros((2, 1000), np.float32)
    preds[0, [388, 5, 999]] = [0.7, 0.2, 0.1]
    preds[1, 0] = 1.0
    out = decode_predictions(preds, top=3)
    assert [(w, n) for w, n, _ in out[0]] == [("n02510455", "giant_panda"), ("n01496331", "electric_ray"),
                                              ("n15075141", "toilet_tissue")]
    np.testing.assert_allclose([s for _, _, s in out[0]], [0.7, 0.2, 0.1])
    assert out[1][0] == ("n01440764", "tench", 1.0) and len(out[1]) == 3
    assert len(decode_predictions(preds)[0]) == 5


def test_decode_rejects_wrong_shapes():
    for bad in (np.zeros(1000), np.zeros((1, 10)), np.zeros((1, 1000, 1))):
        with pytest.raises(ValueError, match=r"\(samples, 1000\)"):
            decode_predictions(bad)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1000, max_size=1000), st.integers(1, 1000))
def test_decode_with_ties_takes_the_best_scores(levels, top):
    """Scores with many ties: the scores returned are the `top` largest, best first, each from
    its own class (which of several tied classes comes first is argsort's choice, as in Keras)."""
    pred = np.array(levels, np.float32) / 4
    out = decode_predictions(pred[None], top=top)[0]
    np.testing.assert_array_equal([s for _, _, s in out], np.sort(pred)[::-1][:top])
    index = {wnid: i for i, (wnid, _) in enumerate(class_table())}
    picked = [index[w] for w, _, _ in out]
    assert len(set(picked)) == top
    assert all(pred[i] == s and class_table()[i][1] == n for i, (_, n, s) in zip(picked, out))


def test_decode_takes_lists_and_rejects_bad_top():
    row = [0.0] * 1000
    row[388] = 1.0
    assert decode_predictions([row], top=1) == [[("n02510455", "giant_panda", 1.0)]]
    assert len(decode_predictions([row], top=5000)[0]) == 1000  # as Keras: at most every class
    for bad in (0, -3, 2.5, True, "5"):
        with pytest.raises(ValueError, match="top must be a positive integer"):
            decode_predictions([row], top=bad)
