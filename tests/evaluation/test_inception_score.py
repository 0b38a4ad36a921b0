"""Inception Score against known values and an explicit per-image loop."""

import math

import numpy as np
import pytest

from mirrorgan_jax.evaluation.inception_score import inception_score, inception_score_from_logits


def _loop_inception_score(probs, splits):
    n = len(probs)
    scores = []
    for i in range(splits):
        part = probs[i * n // splits : (i + 1) * n // splits]
        marginal = [sum(row[c] for row in part) / len(part) for c in range(len(part[0]))]
        kls = []
        for row in part:
            kls.append(
                sum(p * math.log(p / q) for p, q in zip(row, marginal, strict=True) if p > 0)
            )
        scores.append(math.exp(sum(kls) / len(kls)))
    mean = sum(scores) / splits
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / splits)
    return mean, std


def test_uniform_predictions_score_one():
    mean, std = inception_score(np.full((100, 7), 1 / 7), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_balanced_one_hot_scores_number_of_classes():
    c = 5
    probs = np.tile(np.eye(c), (20, 1))  # each split of 10 rows holds every class twice
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(c, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_matches_explicit_loop_with_uneven_splits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(103, 6)) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mean, std = inception_score(probs, splits=10)
    ref_mean, ref_std = _loop_inception_score(probs.tolist(), 10)
    assert mean == pytest.approx(ref_mean, rel=1e-10)
    assert std == pytest.approx(ref_std, rel=1e-8)
    assert std > 0


def test_logits_helper_drops_background_logit():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 51)).astype(np.float32)
    logits[:, 0] = 50.0  # a dominant background logit must not matter once dropped
    kept = logits[:, 1:].astype(np.float64)
    probs = np.exp(kept - kept.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    got = inception_score_from_logits(logits, splits=4, drop_background=True)
    ref = _loop_inception_score(probs.tolist(), 4)
    assert got == pytest.approx(ref, rel=1e-6)
    # with the background kept, nearly all mass is on class 0 -> score ~ 1
    assert inception_score_from_logits(logits, splits=4)[0] == pytest.approx(1.0, abs=1e-6)


def test_rng_permutes_rows_before_splitting():
    probs = np.concatenate([np.tile(np.eye(2), (5, 1)), np.full((10, 2), 0.5)])
    assert inception_score(probs, splits=2) == pytest.approx((1.5, 0.5))
    rng = np.random.default_rng(3)
    perm = np.random.default_rng(3).permutation(20)
    assert inception_score(probs, splits=2, rng=rng) == pytest.approx(
        inception_score(probs[perm], splits=2)
    )


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(np.ones((10, 3)), splits=2)
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.full((3, 2), 0.5), splits=10)
