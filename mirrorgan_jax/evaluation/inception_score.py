"""Inception Score arithmetic, as the StackGAN / AttnGAN / DM-GAN evaluation scripts compute it.

`MinfengZhu/DM-GAN eval/IS/bird/inception_score_bird.py get_inception_score`: the class
probabilities [N, C] are cut into `splits` contiguous parts (part i is rows
`i*N//splits : (i+1)*N//splits`); per part, score = exp(mean_x KL(p(y|x) || p(y))) with p(y) the
part's mean prediction; the result is the mean and (population) std of the per-part scores.

For CUB the classifier is Inception-v3 fine-tuned on the 50 test classes with 51 outputs, of which
output 0 is an unused background class: the script takes the softmax of logits[:, 1:]
(`inception_score_from_logits(..., drop_background=True)`). The image preprocessing, the
network and the script's dropping of the last incomplete batch of 64 belong to the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.special


def inception_score(
    probs: Any, splits: int = 10, rng: np.random.Generator | None = None
) -> tuple[float, float]:
    """Mean and std over `splits` parts of exp(E_x KL(p(y|x) || p(y))) for probs [N, C].

    Computed in float64. Terms with p(y|x) = 0 count as 0 (the script's `p * log p` would give
    NaN there; softmax outputs are never exactly 0 in practice, so results agree). If `rng` is
    given, rows are permuted before splitting, as the script shuffles images before inference.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"inception_score: expected probabilities [N, C], got shape {p.shape}")
    n = p.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"inception_score: need 1 <= splits <= N, got splits={splits}, N={n}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("inception_score: probabilities must be finite and non-negative")
    row_sums = p.sum(axis=1)
    if not np.allclose(row_sums, 1.0, atol=1e-3):
        worst = int(np.argmax(np.abs(row_sums - 1.0)))
        raise ValueError(
            f"inception_score: rows must sum to 1 (row {worst} sums to {row_sums[worst]}); "
            "pass logits to inception_score_from_logits instead"
        )
    if rng is not None:
        p = p[rng.permutation(n)]

    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]  # [n_i, C]
        py = np.mean(part, axis=0, keepdims=True)  # [1, C], p(y) over the part
        # p * (log p - log p(y)), with 0 * log 0 = 0
        kl = scipy.special.xlogy(part, part) - scipy.special.xlogy(part, py)  # [n_i, C]
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


def inception_score_from_logits(
    logits: Any,
    splits: int = 10,
    drop_background: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """Inception score from classifier logits [N, C] (softmax in float64).

    drop_background=True drops logit 0 before the softmax, as the CUB script does for its
    51-output fine-tuned Inception (50 bird classes + an unused background class).
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"inception_score_from_logits: expected logits [N, C], got {z.shape}")
    if drop_background:
        if z.shape[1] < 2:
            raise ValueError(
                f"inception_score_from_logits: drop_background needs >= 2 logits, got {z.shape[1]}"
            )
        z = z[:, 1:]
    return inception_score(scipy.special.softmax(z, axis=1), splits=splits, rng=rng)
