"""R-precision, following DM-GAN's implementation of the AttnGAN protocol
(`MinfengZhu/DM-GAN code/trainer.py`, `code/datasets.py`).

`DM-GAN:code/trainer.py:419-493` and `code/datasets.py:get_mis_caption`: for each generated image
i, the DAMSM image code v_i is compared by cosine similarity with 100 sentence embeddings: its true
caption's (candidate 0) and those of 99 captions drawn at random, with replacement, from images of
OTHER classes in the split. The image is a hit when the true caption scores highest
(`torch.argmax(scores) == 0`, so a tie goes to the true caption). The hits of the 30,000 images
are shuffled and cut into 10 folds of 3,000; the result is the mean and (population) std of the
per-fold precision.

Pieces, so the caller can run the encoders batch by batch:
- `select_mismatched_captions`: indices of the 99 other-class captions per image.
- `true_caption_rank`: jnp, jit-able; per image, how many candidates beat the true caption.
- `r_precision_from_ranks`: the fold statistics for top-k, k in `ks` (top-1 is the protocol's).
- `r_precision`: all of it for arrays already in memory.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np


def select_mismatched_captions(
    class_ids_of_images: Any,
    caption_pool_class_ids: Any,
    num: int = 99,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Indices [N, num] into the caption pool, each a caption of a class other than the image's.

    class_ids_of_images: [N] class of each generated image (its caption's image class).
    caption_pool_class_ids: [M] class of every caption in the split's pool (the image class of the
      caption). Draws are uniform over the pool's other-class captions, with replacement, like
      DM-GAN (which draws an image of another class, then one of its captions: the same law when
      every image has the same number of captions). `rng` defaults to `np.random.default_rng(0)`.
    """
    img_cls = np.asarray(class_ids_of_images)
    pool_cls = np.asarray(caption_pool_class_ids)
    if img_cls.ndim != 1 or pool_cls.ndim != 1:
        raise ValueError(
            "select_mismatched_captions: expected 1-D class ids, got shapes "
            f"{img_cls.shape} (images) and {pool_cls.shape} (caption pool)"
        )
    if num < 1:
        raise ValueError(f"select_mismatched_captions: num must be >= 1, got {num}")
    if rng is None:
        rng = np.random.default_rng(0)

    out = np.empty((img_cls.shape[0], num), np.int64)  # [N, num]
    for cls in np.unique(img_cls):
        rows = np.flatnonzero(img_cls == cls)
        others = np.flatnonzero(pool_cls != cls)
        if others.size == 0:
            raise ValueError(
                f"select_mismatched_captions: the caption pool has no caption outside class {cls} "
                f"(pool of {pool_cls.shape[0]} captions); R-precision needs other classes"
            )
        out[rows] = others[rng.integers(0, others.size, size=(rows.size, num))]
    return out


def cosine_scores(image_codes: Any, sentence_codes: Any) -> jnp.ndarray:
    """Cosine similarity [B, K] of image codes [B, D] with K sentence codes each [B, K, D].

    As DM-GAN: (v . t) / max(|v| |t|, 1e-8).
    """
    v = jnp.asarray(image_codes)
    t = jnp.asarray(sentence_codes)
    dots = jnp.einsum("bd,bkd->bk", v, t)  # [B, K]
    v_norm = jnp.linalg.norm(v, axis=-1, keepdims=True)  # [B, 1]
    t_norm = jnp.linalg.norm(t, axis=-1)  # [B, K]
    return dots / jnp.maximum(v_norm * t_norm, 1e-8)


def true_caption_rank(image_codes: Any, true_sent: Any, candidate_sent: Any) -> jnp.ndarray:
    """Number of mismatched captions scoring strictly above the true one, int32 [B].

    image_codes [B, D] (DAMSM cnn_code), true_sent [B, D], candidate_sent [B, K, D]. Rank 0 is a
    top-1 hit (ties go to the true caption, as `argmax == 0` does); rank < k is a top-k hit.
    """
    v = jnp.asarray(image_codes)
    t = jnp.asarray(true_sent)
    c = jnp.asarray(candidate_sent)
    if v.ndim != 2 or t.shape != v.shape or c.ndim != 3 or c.shape[::2] != v.shape:
        raise ValueError(
            "true_caption_rank: expected image_codes [B, D], true_sent [B, D], candidate_sent "
            f"[B, K, D]; got {v.shape}, {t.shape}, {c.shape}"
        )
    # One score matrix with the true caption as candidate 0, as DM-GAN builds rnn_code.
    scores = cosine_scores(v, jnp.concatenate([t[:, None, :], c], axis=1))  # [B, 1 + K]
    return jnp.sum(scores[:, 1:] > scores[:, :1], axis=1).astype(jnp.int32)


def r_precision_from_ranks(
    ranks: Any,
    folds: int = 10,
    ks: Sequence[int] = (1, 2, 3),
    rng: np.random.Generator | None = None,
    dmgan_fold_slice: bool = False,
) -> dict[str, float]:
    """Per-fold top-k precision statistics from ranks [N] (see `true_caption_rank`).

    The hits are permuted with `rng` (the protocol shuffles; None keeps the given order), cut into
    `folds` folds of N // folds (a remainder of N % folds images is left out), and averaged per
    fold. dmgan_fold_slice=True reproduces DM-GAN's `R[i*3000:(i+1)*3000-1]`, which averages
    only the first size - 1 entries of each fold.

    Returns {"top{k}_mean", "top{k}_std"} for every k (std over folds, ddof 0, as np.std) and
    "num_images" (the N used).
    """
    r = np.asarray(ranks)
    if r.ndim != 1:
        raise ValueError(f"r_precision_from_ranks: expected ranks [N], got shape {r.shape}")
    n = r.shape[0]
    if folds < 1 or n < folds:
        raise ValueError(f"r_precision_from_ranks: need 1 <= folds <= N, got folds={folds}, N={n}")
    size = n // folds
    if dmgan_fold_slice and size < 2:
        raise ValueError("r_precision_from_ranks: dmgan_fold_slice needs folds of >= 2 images")
    if any(k < 1 for k in ks):
        raise ValueError(f"r_precision_from_ranks: every k must be >= 1, got {tuple(ks)}")
    if rng is not None:
        r = r[rng.permutation(n)]

    used = size - 1 if dmgan_fold_slice else size
    fold_ranks = r[: folds * size].reshape(folds, size)[:, :used]  # [folds, used]
    result: dict[str, float] = {"num_images": float(folds * size)}
    for k in ks:
        per_fold = np.mean(fold_ranks < k, axis=1)  # [folds]
        result[f"top{k}_mean"] = float(np.mean(per_fold))
        result[f"top{k}_std"] = float(np.std(per_fold))
    return result


def r_precision(
    image_codes: Any,
    true_sent: Any,
    candidate_sent: Any,
    folds: int = 10,
    ks: Sequence[int] = (1, 2, 3),
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """R-precision (mean and std over folds, per k) of image codes [N, D] against their true
    caption embeddings [N, D] and mismatched ones [N, K, D] (K = 99 in the protocol).

    `rng` shuffles the images before the folds are cut (None: the given order).
    """
    ranks = np.asarray(true_caption_rank(image_codes, true_sent, candidate_sent))
    return r_precision_from_ranks(ranks, folds=folds, ks=ks, rng=rng)
