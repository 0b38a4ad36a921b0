"""R-precision (DM-GAN protocol) on constructed cases with known answers."""

import numpy as np
import pytest

from mirrorgan_jax.evaluation import r_precision as rp


def test_select_mismatched_captions_never_same_class_and_is_seeded():
    img_cls = np.array([0, 1, 2, 1, 0, 3])
    pool_cls = np.repeat(np.arange(4), 10)  # 10 captions per class
    idx = rp.select_mismatched_captions(img_cls, pool_cls, num=99, rng=np.random.default_rng(0))
    assert idx.shape == (6, 99) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < len(pool_cls)
    assert np.all(pool_cls[idx] != img_cls[:, None])
    # every other class shows up (uniform draws over 30 captions, 99 times)
    assert set(pool_cls[idx[0]]) == {1, 2, 3}
    again = rp.select_mismatched_captions(img_cls, pool_cls, num=99, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(idx, again)


def test_select_mismatched_captions_without_other_classes_raises():
    with pytest.raises(ValueError, match="class 2"):
        rp.select_mismatched_captions(np.array([2]), np.array([2, 2]), 5, np.random.default_rng(0))


def test_all_hits_when_codes_equal_true_captions_and_mismatches_orthogonal():
    n, d, k = 20, 32, 99
    rng = np.random.default_rng(1)
    codes = np.zeros((n, d), np.float32)
    codes[np.arange(n), np.arange(n) % 8] = rng.uniform(0.5, 2.0, n)  # axis 0..7
    candidates = np.zeros((n, k, d), np.float32)
    candidates[:, :, 8:] = rng.normal(size=(n, k, d - 8))  # orthogonal to every code
    out = rp.r_precision(codes, codes.copy(), candidates, folds=10, rng=np.random.default_rng(0))
    for kk in (1, 2, 3):
        assert out[f"top{kk}_mean"] == 1.0 and out[f"top{kk}_std"] == 0.0
    assert out["num_images"] == 20


def test_half_hits_with_fold_std_by_hand():
    # 4 folds of 2 images, no shuffle. Image i: true caption along e0 (cosine 1 with the code
    # for hits, cosine 0 for misses), one mismatch at cosine 0.5 -> ranks known exactly.
    d = 4
    hit = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)  # folds: [1,1] [1,0] [1,0] [0,0]
    codes = np.tile(np.eye(d)[0], (8, 1))
    true = np.where(hit[:, None], np.eye(d)[0], np.eye(d)[1]) * 3.0
    mismatch = (np.eye(d)[0] * 0.5 + np.eye(d)[2] * np.sqrt(0.75))[None, None, :].repeat(8, 0)
    ranks = np.asarray(rp.true_caption_rank(codes, true, mismatch))
    np.testing.assert_array_equal(ranks, np.where(hit, 0, 1))

    out = rp.r_precision(codes, true, mismatch, folds=4, ks=(1, 2))
    per_fold = np.array([1.0, 0.5, 0.5, 0.0])
    assert out["top1_mean"] == pytest.approx(0.5)
    assert out["top1_std"] == pytest.approx(np.sqrt(np.mean((per_fold - 0.5) ** 2)))  # 0.3536
    assert out["top2_mean"] == 1.0 and out["top2_std"] == 0.0


def test_ties_count_as_hits_and_topk_ranks():
    codes = np.array([[1.0, 0.0, 0.0]])
    true = np.array([[2.0, 0.0, 0.0]])
    cands = np.array([[[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [5.0, 0.1, 0.0], [0.0, 1.0, 0.0]]])
    # cosines: true 1; candidates 1 (tie), 0.707, 0.9998, 0 -> nothing strictly above
    assert int(rp.true_caption_rank(codes, true, cands)[0]) == 0
    true_worse = np.array([[1.0, 0.5, 0.0]])  # cosine 0.894: beaten by the tie (1) and 0.9998
    assert int(rp.true_caption_rank(codes, true_worse, cands)[0]) == 2


def test_fold_statistics_shuffle_remainder_and_dmgan_slice():
    ranks = np.array([0, 5, 0, 0, 1, 0, 3, 0, 0, 2, 7])  # N = 11, 3 folds of 3, 2 left out
    perm = np.random.default_rng(7).permutation(11)
    out = rp.r_precision_from_ranks(ranks, folds=3, ks=(1,), rng=np.random.default_rng(7))
    folds = (ranks[perm][:9] < 1).reshape(3, 3).mean(1)
    assert out["num_images"] == 9
    assert out["top1_mean"] == pytest.approx(folds.mean())
    assert out["top1_std"] == pytest.approx(folds.std())
    quirk = rp.r_precision_from_ranks(ranks, folds=3, ks=(1,), dmgan_fold_slice=True)
    assert quirk["top1_mean"] == pytest.approx((ranks[:9] < 1).reshape(3, 3)[:, :2].mean())


def test_shape_errors():
    with pytest.raises(ValueError, match="candidate_sent"):
        rp.true_caption_rank(np.ones((2, 4)), np.ones((2, 4)), np.ones((2, 4)))
