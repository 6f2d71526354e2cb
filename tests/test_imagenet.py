"""decode_predictions and the shipped class table, against Keras's own class index."""
import json

import numpy as np
import pytest

from conftest import require_shared
from mobilenetv2 import decode_predictions
from mobilenetv2.imagenet import class_table


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
