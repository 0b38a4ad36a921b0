"""The shapes attribute classifier: prediction bookkeeping with a fake classifier, and a tiny
real training run (32 px, a few hundred steps), saved, loaded and scored again."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mirrorgan_jax.data.shapes import render_dataset
from mirrorgan_jax.evaluation import shapes_classifier as sc
from mirrorgan_jax.evaluation.shapes_metrics import domain_fid
from mirrorgan_jax.torch_import.common import WeightMismatchError
from tests.attribute_rows import F, single


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

    monkeypatch.setattr(sc, "make_predict_fn", fake_make_predict_fn)
    out = sc.evaluate_attributes({"params": "fake"}, images, targets, batch_size=3)
    assert batches == [3, 3, 3]  # 7 images: the last batch is padded to 3
    np.testing.assert_array_equal(out["predictions"], preds)
    np.testing.assert_array_equal(out["features"][:, 0], np.arange(n))
    assert out["shape"] == pytest.approx(5 / 7) and out["all_correct"] == pytest.approx(5 / 7)
    assert out["colour"] == 1.0 and out["position"] == 1.0
    with pytest.raises(ValueError, match="N = 7"):
        sc.evaluate_attributes({"params": "fake"}, images[:5], targets)


@pytest.fixture(scope="module")
def tiny():
    """A classifier trained briefly at 32 px (a small share of the suite's time)."""
    return sc.train_classifier(
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
    sc.save_classifier(path, variables, report)
    loaded, loaded_report = sc.load_classifier(path)
    assert loaded_report["test"]["colour"] == pytest.approx(report["test"]["colour"])
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    model = sc.classifier_from_variables(loaded)
    assert model.image_size == 32

    # The same real test images score as in training; 64 px renders are resized to 32.
    images, attrs = render_dataset("test", 300, 1234, 32)
    out = sc.evaluate_attributes(loaded, images / 127.5 - 1.0, attrs)
    assert out["colour"] == pytest.approx(report["test"]["colour"])
    assert out["features"].shape == (300, model.feature_dim)
    images64, attrs64 = render_dataset("test", 100, 1234, 64)
    np.testing.assert_array_equal(attrs64, attrs[:100])
    assert sc.evaluate_attributes(loaded, images64 / 127.5 - 1.0, attrs64)["colour"] > 0.8
    noise = np.random.default_rng(2).uniform(-1, 1, (300, 32, 32, 3))
    fake = sc.evaluate_attributes(loaded, noise, attrs)
    assert domain_fid(out["features"], fake["features"]) > 10 * domain_fid(
        out["features"][:150], out["features"][150:]
    )
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sc.load_classifier(tmp_path / "nowhere.npz")
    with np.load(path) as f:
        flat = {k: f[k] for k in f.files if k != "params/head_relation/bias"}
    np.savez(tmp_path / "broken.npz", **flat)
    with pytest.raises(WeightMismatchError, match="head_relation"):
        sc.load_classifier(tmp_path / "broken.npz")
    del flat["__meta__"]
    np.savez(tmp_path / "other.npz", **flat)
    with pytest.raises(ValueError, match="not a saved shapes attribute classifier"):
        sc.load_classifier(tmp_path / "other.npz")
