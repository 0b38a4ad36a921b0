"""Shapes semantic-accuracy metrics: label canonicalisation, metric bookkeeping with a fake
classifier, and a tiny real training run (32 px, a few hundred steps) of the classifier."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mirrorgan_jax.data.schema import ATTRIBUTE_FIELDS, NUM_ATTRIBUTES
from mirrorgan_jax.data.shapes_captions import swap_objects
from mirrorgan_jax.evaluation import shapes_metrics as sm
from mirrorgan_jax.torch_import.common import WeightMismatchError

F = {name: i for i, name in enumerate(ATTRIBUTE_FIELDS)}


def row(**kw) -> np.ndarray:
    """One attribute row; fields not given are -1."""
    a = np.full(NUM_ATTRIBUTES, -1, np.int64)
    for k, v in kw.items():
        a[F[k]] = v
    return a


def single(colour, shape, size, position) -> np.ndarray:
    return row(num_objects=1, colour0=colour, shape0=shape, size0=size, position0=position)


def pair(c0, s0, z0, c1, s1, z1, relation) -> np.ndarray:
    return row(
        num_objects=2, colour0=c0, shape0=s0, size0=z0, colour1=c1, shape1=s1, size1=z1,
        relation=relation,
    )  # fmt: skip


# ----------------------------------------------------------------------------- labels


def test_canonical_attributes_matches_swap_objects():
    rows = np.stack(
        [
            single(1, 2, 0, 4),
            pair(0, 1, 0, 2, 3, 1, 0),  # left of: already canonical
            pair(0, 1, 0, 2, 3, 1, 1),  # right of -> swapped, left of
            pair(4, 5, 1, 6, 0, 0, 2),  # above: canonical
            pair(4, 5, 1, 6, 0, 0, 3),  # below -> swapped, above
        ]
    )
    canon = sm.canonical_attributes(rows)
    np.testing.assert_array_equal(canon[[0, 1, 3]], rows[[0, 1, 3]])
    np.testing.assert_array_equal(canon[2], swap_objects(rows[2]))
    np.testing.assert_array_equal(canon[4], swap_objects(rows[4]))
    assert canon[2, F["relation"]] == 0 and canon[4, F["relation"]] == 2
    np.testing.assert_array_equal(sm.canonical_attributes(canon), canon)  # idempotent
    np.testing.assert_array_equal(rows[2], pair(0, 1, 0, 2, 3, 1, 1))  # input not modified
    with pytest.raises(ValueError, match="attributes"):
        sm.canonical_attributes(np.zeros((3, 4), np.int64))


# ----------------------------------------------------------------------------- bookkeeping


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
    only_singles = sm.attribute_accuracy(preds[:3], targets[:3])
    assert np.isnan(only_singles["relation"]) and np.isnan(only_singles["field/colour1"])


def test_evaluate_attributes_with_fake_classifier(monkeypatch):
    """Batching (with a padded last batch), order and features, with a fake predictor that
    reads each image's row index from its first pixel."""
    rng = np.random.default_rng(0)
    n = 7
    targets = np.stack([single(i % 7, i % 6, i % 2, i % 5) for i in range(n)])
    preds = targets.copy()
    preds[[1, 4], F["shape0"]] = (preds[[1, 4], F["shape0"]] + 1) % 6
    images = rng.uniform(-1, 1, (n, 8, 8, 3)).astype(np.float32)
    images[:, 0, 0, 0] = np.arange(n) / 10.0
    batches = []

    def fake_make_predict_fn(classifier_vars, model=None):
        assert classifier_vars == {"params": "fake"}

        def predict(batch):
            batch = np.asarray(batch)
            batches.append(batch.shape[0])
            idx = np.clip(np.round(batch[:, 0, 0, 0] * 10).astype(int), 0, n - 1)
            return preds[idx].astype(np.int32), np.stack([idx, 2 * idx], 1).astype(np.float32)

        return predict

    monkeypatch.setattr(sm, "make_predict_fn", fake_make_predict_fn)
    out = sm.evaluate_attributes({"params": "fake"}, images, targets, batch_size=3)
    assert batches == [3, 3, 3]  # 7 images: the last batch is padded to 3
    np.testing.assert_array_equal(out["predictions"], preds)
    np.testing.assert_array_equal(out["features"][:, 0], np.arange(n))
    assert out["shape"] == pytest.approx(5 / 7) and out["all_correct"] == pytest.approx(5 / 7)
    assert out["colour"] == 1.0 and out["position"] == 1.0
    with pytest.raises(ValueError, match="N = 7"):
        sm.evaluate_attributes({"params": "fake"}, images[:5], targets)


def test_domain_fid():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 6))
    assert sm.domain_fid(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = sm.domain_fid(a, a + np.array([2.0, 0, 0, 0, 0, 0]))
    assert shifted == pytest.approx(4.0, abs=1e-6)  # a pure mean shift: |mu1 - mu2|^2


# ----------------------------------------------------------------------------- tiny training


@pytest.fixture(scope="module")
def tiny():
    """A classifier trained briefly at 32 px (the whole test budget: well under a minute)."""
    return sm.train_classifier(
        num_train=2000, steps=200, batch_size=32, image_size=32, seed=0, num_test=300
    )


def test_tiny_training_learns(tiny):
    _, report = tiny
    test = report["test"]
    assert test["colour"] > 0.9  # chance: 1/7 per object
    assert test["num_objects"] > 0.95
    assert test["layout"] > 0.8  # chance 1/5 (position) and 1/2 (canonical relation)
    assert 0.0 <= test["all_correct"] <= 1.0
    assert report["image_size"] == 32 and report["steps"] == 200


def test_save_load_and_evaluate(tiny, tmp_path):
    variables, report = tiny
    path = tmp_path / "classifier.npz"
    sm.save_classifier(path, variables, report)
    loaded, loaded_report = sm.load_classifier(path)
    assert loaded_report["test"]["colour"] == pytest.approx(report["test"]["colour"])
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    model = sm.classifier_from_variables(loaded)
    assert model.image_size == 32

    # The same real test images score as in training; 64 px renders are resized to 32.
    images, attrs = sm.render_dataset("test", 300, 1234, 32)
    out = sm.evaluate_attributes(loaded, images / 127.5 - 1.0, attrs)
    assert out["colour"] == pytest.approx(report["test"]["colour"])
    assert out["features"].shape == (300, model.feature_dim)
    images64, attrs64 = sm.render_dataset("test", 100, 1234, 64)
    np.testing.assert_array_equal(attrs64, attrs[:100])
    assert sm.evaluate_attributes(loaded, images64 / 127.5 - 1.0, attrs64)["colour"] > 0.8
    noise = np.random.default_rng(2).uniform(-1, 1, (300, 32, 32, 3))
    fake = sm.evaluate_attributes(loaded, noise, attrs)
    assert sm.domain_fid(out["features"], fake["features"]) > 10 * sm.domain_fid(
        out["features"][:150], out["features"][150:]
    )
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sm.load_classifier(tmp_path / "nowhere.npz")
    with np.load(path) as f:
        flat = {k: f[k] for k in f.files if k != "params/head_relation/bias"}
    np.savez(tmp_path / "broken.npz", **flat)
    with pytest.raises(WeightMismatchError, match="head_relation"):
        sm.load_classifier(tmp_path / "broken.npz")
    del flat["__meta__"]
    np.savez(tmp_path / "other.npz", **flat)
    with pytest.raises(ValueError, match="not a saved shapes attribute classifier"):
        sm.load_classifier(tmp_path / "other.npz")
