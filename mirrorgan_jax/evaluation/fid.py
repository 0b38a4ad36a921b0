"""Fréchet Inception Distance arithmetic, as pytorch-fid computes it (docs/official-differences.md,
"Evaluation").

The feature extractor (pytorch-fid's InceptionV3 pool3, 2048-d) lives elsewhere; this module only
turns activations into statistics and statistics into a distance:

- `activation_statistics(acts)`: mean and unbiased covariance, as `np.mean(acts, 0)` and
  `np.cov(acts, rowvar=False)` in pytorch-fid's `calculate_activation_statistics`.
- `ActivationStatistics`: the same statistics accumulated batch by batch in float64, so 30,000
  activations never have to be held at once.
- `frechet_distance(mu1, sigma1, mu2, sigma2)`: pytorch-fid's `calculate_frechet_distance`
  (matrix square root of sigma1 @ sigma2 with `scipy.linalg.sqrtm`, an `eps` offset on the
  diagonals when the product is singular, and the imaginary-part check with atol 1e-3).
- `save_statistics` / `load_statistics`: reference statistics in pytorch-fid's `.npz` layout
  (keys `mu`, `sigma`), so `bird_val.npz` / `coco_val.npz` files of DM-GAN and DF-GAN load as-is.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import scipy
import scipy.linalg

# SciPy 1.16 rewrote sqrtm: `disp` is deprecated there (it only controlled a printed warning and
# the extra error estimate) and the new version prints nothing. Older SciPy needs disp=False to
# stay silent, exactly as pytorch-fid calls it.
_SQRTM_TAKES_DISP = tuple(int(p) for p in scipy.__version__.split(".")[:2]) < (1, 16)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """`scipy.linalg.sqrtm(a, disp=False)[0]` without SciPy's singular-matrix warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        if _SQRTM_TAKES_DISP:
            root, _ = scipy.linalg.sqrtm(a, disp=False)
        else:
            root = scipy.linalg.sqrtm(a)
    return root


def _as_activations(acts: Any, what: str) -> np.ndarray:
    a = np.asarray(acts)
    if a.ndim != 2:
        raise ValueError(f"{what}: expected activations of shape [N, D], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what}: expected a numeric array, got dtype {a.dtype}")
    return a


def activation_statistics(acts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of activations [N, D] (pytorch-fid's formula).

    Both come back as float64, as `np.cov` returns them. Needs N >= 2.
    """
    a = _as_activations(acts, "activation_statistics")
    if a.shape[0] < 2:
        raise ValueError(f"activation_statistics: need at least 2 activations, got {a.shape[0]}")
    mu = np.mean(a, axis=0, dtype=np.float64)  # [D]
    sigma = np.cov(a, rowvar=False)  # [D, D], divides by N - 1
    return mu, np.atleast_2d(sigma)


class ActivationStatistics:
    """Streaming mean and unbiased covariance of activations, accumulated in float64.

    Keeps the count, the sum and the sum of outer products of the activations minus a fixed shift
    (the mean of the first batch), which keeps the float64 sums well conditioned without changing
    the covariance. `update` accepts numpy or JAX arrays [B, D]; `statistics()` returns the same
    (mu, sigma) as `activation_statistics` on the concatenation of all batches.
    """

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self.count = 0
        self._shift: np.ndarray | None = None  # [D]
        self._sum: np.ndarray | None = None  # [D]
        self._outer: np.ndarray | None = None  # [D, D]

    def update(self, acts: Any) -> None:
        """Adds a batch of activations [B, D]."""
        a = _as_activations(acts, "ActivationStatistics.update").astype(np.float64)
        if self.dim is None:
            self.dim = a.shape[1]
        if a.shape[1] != self.dim:
            raise ValueError(
                f"ActivationStatistics.update: activations have {a.shape[1]} features, "
                f"expected {self.dim} (as the first batch / the constructor said)"
            )
        if a.shape[0] == 0:
            return
        if self._shift is None:
            self._shift = a.mean(axis=0)
            self._sum = np.zeros(self.dim, np.float64)
            self._outer = np.zeros((self.dim, self.dim), np.float64)
        centred = a - self._shift  # [B, D]
        self._sum += centred.sum(axis=0)
        self._outer += centred.T @ centred
        self.count += a.shape[0]

    def merge(self, other: ActivationStatistics) -> None:
        """Adds the activations another accumulator has seen (e.g. from another host)."""
        if other.count == 0:
            return
        if self.count == 0:
            self.dim = other.dim
            self._shift = other._shift.copy()
            self._sum = other._sum.copy()
            self._outer = other._outer.copy()
            self.count = other.count
            return
        if other.dim != self.dim:
            raise ValueError(f"ActivationStatistics.merge: dims differ ({self.dim} vs {other.dim})")
        # Re-express the other's sums around this shift: x - s = (x - s_o) + (s_o - s).
        delta = other._shift - self._shift  # [D]
        s_o = other._sum
        self._outer += (
            other._outer
            + np.outer(s_o, delta)
            + np.outer(delta, s_o)
            + other.count * np.outer(delta, delta)
        )
        self._sum += s_o + other.count * delta
        self.count += other.count

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu [D], sigma [D, D]) in float64, sigma with the unbiased N - 1 denominator."""
        if self.count < 2:
            raise ValueError(
                f"ActivationStatistics.statistics: need at least 2 activations, got {self.count}"
            )
        n = self.count
        mean_c = self._sum / n  # mean of the shifted activations, [D]
        sigma = (self._outer - n * np.outer(mean_c, mean_c)) / (n - 1)
        sigma = 0.5 * (sigma + sigma.T)  # exact symmetry, as np.cov gives
        return self._shift + mean_c, sigma


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), as pytorch-fid computes it.

    d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)). When the square root of
    the product is not finite (singular product), `eps` is added to both diagonals and the root
    recomputed. A complex root whose diagonal has an imaginary part above 1e-3 raises ValueError;
    otherwise the real part is used.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"frechet_distance: mean vectors differ in shape ({mu1.shape} vs {mu2.shape})"
        )
    if sigma1.shape != sigma2.shape:
        raise ValueError(
            f"frechet_distance: covariances differ in shape ({sigma1.shape} vs {sigma2.shape})"
        )
    if sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(
            f"frechet_distance: covariance shape {sigma1.shape} does not fit mean shape {mu1.shape}"
        )

    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))

    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"frechet_distance: imaginary component {m} in sqrt(sigma1 sigma2)")
        covmean = covmean.real

    tr_covmean = np.trace(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_from_activations(acts1: Any, acts2: Any, eps: float = 1e-6) -> float:
    """FID between two activation sets [N1, D] and [N2, D]."""
    mu1, sigma1 = activation_statistics(acts1)
    mu2, sigma2 = activation_statistics(acts2)
    return frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps)


def save_statistics(path: str | os.PathLike, mu: Any, sigma: Any) -> None:
    """Writes reference statistics as pytorch-fid's `.npz` (keys `mu`, `sigma`)."""
    mu = np.asarray(mu)
    sigma = np.asarray(sigma)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"save_statistics({os.fspath(path)!r}): expected mu [D] and sigma [D, D], got "
            f"{mu.shape} and {sigma.shape}"
        )
    with open(path, "wb") as f:  # an open file keeps np.savez from appending '.npz'
        np.savez(f, mu=mu, sigma=sigma)


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads (mu [D], sigma [D, D]) from a pytorch-fid `.npz` file (keys `mu`, `sigma`)."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"FID reference statistics not found: {name!r}")
    with np.load(name) as f:
        missing = [k for k in ("mu", "sigma") if k not in f.files]
        if missing:
            raise KeyError(
                f"{name!r}: FID statistics need keys 'mu' and 'sigma' (pytorch-fid layout); "
                f"missing {missing}, found {sorted(f.files)}"
            )
        mu, sigma = f["mu"][:], f["sigma"][:]
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{name!r}: expected mu [D] and sigma [D, D], got {mu.shape} and {sigma.shape}"
        )
    return mu, sigma
