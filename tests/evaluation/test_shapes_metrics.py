"""Shapes semantic-accuracy metrics: the bookkeeping of attribute_accuracy and domain_fid."""

from __future__ import annotations

import numpy as np
import pytest

from mirrorgan_jax.data.shapes_captions import swap_objects
from mirrorgan_jax.evaluation import shapes_metrics as sm
from tests.attribute_rows import F, pair, single


def test_attribute_accuracy_exact():
    targets = np.stack(
        [
            single(1, 2, 0, 4),  # 0: all right
            single(1, 2, 0, 4),  # 1: wrong position only
            single(3, 3, 1, 0),  # 2: wrong colour0; colour1/shape1 predictions are ignored
            pair(0, 1, 0, 2, 3, 1, 0),  # 3: all right
            pair(0, 1, 0, 2, 3, 1, 1),  # 4: right, predicted in the other object order
            pair(0, 1, 0, 2, 3, 1, 2),  # 5: wrong shape1 and wrong size0
            pair(5, 4, 1, 6, 0, 0, 2),  # 6: predicted as one object (count wrong)
            pair(5, 4, 1, 6, 0, 0, 0),  # 7: wrong relation (axis)
        ]
    )
    preds = targets.copy()
    preds[1, F["position0"]] = 2
    preds[2, F["colour0"]] = 0
    preds[2, F["colour1"]], preds[2, F["shape1"]] = 5, 5  # undefined in the target
    preds[4] = swap_objects(targets[4])  # same scene, other description
    preds[5, F["shape1"]], preds[5, F["size0"]] = 0, 1
    preds[6, F["num_objects"]] = 1
    preds[7, F["relation"]] = 2
    m = sm.attribute_accuracy(preds, targets)
    assert m["num_objects"] == pytest.approx(7 / 8)
    assert m["colour"] == pytest.approx(7 / 8)
    assert m["shape"] == pytest.approx(7 / 8)
    assert m["size"] == pytest.approx(7 / 8)
    assert m["position"] == pytest.approx(2 / 3)  # rows 0-2 are single-object
    assert m["relation"] == pytest.approx(4 / 5)  # rows 3-7
    assert m["layout"] == pytest.approx(6 / 8)
    assert m["all_correct"] == pytest.approx(3 / 8)  # rows 0, 3, 4
    assert m["field/colour0"] == pytest.approx(7 / 8)
    assert m["field/colour1"] == pytest.approx(5 / 5)
    assert m["field/shape1"] == pytest.approx(4 / 5)
    assert m["field/position0"] == pytest.approx(2 / 3)
    # Per object: 13 target objects, 7 small (all right) and 6 large (row 5's object 1 wrong).
    assert m["shape/small"] == 1.0 and m["shape/large"] == pytest.approx(5 / 6)
    assert m["shape/one_object"] == 1.0 and m["shape/two_objects"] == pytest.approx(9 / 10)
    only_singles = sm.attribute_accuracy(preds[:3], targets[:3])
    assert np.isnan(only_singles["relation"]) and np.isnan(only_singles["field/colour1"])


def test_domain_fid():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 6))
    assert sm.domain_fid(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = sm.domain_fid(a, a + np.array([2.0, 0, 0, 0, 0, 0]))
    assert shifted == pytest.approx(4.0, abs=1e-6)  # a pure mean shift: |mu1 - mu2|^2
