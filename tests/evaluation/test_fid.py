"""FID arithmetic against independent references (closed forms, eigen-decompositions)."""

import numpy as np
import pytest

from mirrorgan_jax.evaluation import fid


def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _reference_fid(mu1, s1, mu2, s2):
    # Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), the latter symmetric PSD: use eigh only.
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr = np.sum(np.sqrt(np.clip(inner, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr)


def test_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_random_covariances_match_eigen_reference_and_are_symmetric():
    rng = np.random.default_rng(1)
    d = 24
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    expected = _reference_fid(mu1, s1, mu2, s2)
    d12 = fid.frechet_distance(mu1, s1, mu2, s2)
    d21 = fid.frechet_distance(mu2, s2, mu1, s1)
    assert d12 == pytest.approx(expected, rel=1e-7)
    assert d21 == pytest.approx(d12, rel=1e-7)
    assert d12 > 0


def test_statistics_match_numpy_and_fid_of_identical_sets_is_zero():
    rng = np.random.default_rng(2)
    acts = rng.normal(size=(200, 8)).astype(np.float32) * 3 + 1
    mu, sigma = fid.activation_statistics(acts)
    assert mu.dtype == np.float64 and sigma.shape == (8, 8)
    np.testing.assert_allclose(mu, acts.astype(np.float64).mean(0), rtol=1e-12)
    centred = acts.astype(np.float64) - acts.astype(np.float64).mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / (200 - 1), rtol=1e-10)
    assert abs(fid.fid_from_activations(acts, acts)) < 1e-6
    other = rng.normal(size=(200, 8)).astype(np.float32) * 3 + 2
    assert fid.fid_from_activations(acts, other) > 1.0


def test_streaming_equals_batch_including_merge():
    import jax.numpy as jnp

    rng = np.random.default_rng(3)
    acts = (rng.normal(size=(157, 12)) * 0.5 + 100.0).astype(np.float32)  # large offset
    mu, sigma = fid.activation_statistics(acts)

    acc = fid.ActivationStatistics()
    for start in range(0, 157, 40):  # uneven last batch; JAX input
        acc.update(jnp.asarray(acts[start : start + 40]))
    mu_s, sigma_s = acc.statistics()
    assert acc.count == 157
    np.testing.assert_allclose(mu_s, mu, rtol=1e-12)
    np.testing.assert_allclose(sigma_s, sigma, rtol=1e-8, atol=1e-12)

    a, b = fid.ActivationStatistics(12), fid.ActivationStatistics(12)
    a.update(acts[:50])
    b.update(acts[50:90])
    b.update(acts[90:])
    a.merge(b)
    mu_m, sigma_m = a.statistics()
    np.testing.assert_allclose(mu_m, mu, rtol=1e-12)
    np.testing.assert_allclose(sigma_m, sigma, rtol=1e-8, atol=1e-12)

    with pytest.raises(ValueError, match="expected 12"):
        a.update(np.zeros((3, 5)))


def test_singular_product_uses_eps_offset():
    rng = np.random.default_rng(4)
    acts = rng.normal(size=(4, 10))  # rank 3 covariance in 10-d
    mu, sigma = fid.activation_statistics(acts)
    d = fid.frechet_distance(mu, sigma, mu, sigma)
    assert np.isfinite(d) and abs(d) < 1e-2


def test_non_finite_root_retries_with_eps_on_both_diagonals(monkeypatch):
    calls = []
    real_sqrtm = fid._sqrtm

    def fake_sqrtm(a):
        calls.append(a.copy())
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(fid, "_sqrtm", fake_sqrtm)
    s1, s2 = np.diag([1.0, 0.0]), np.diag([4.0, 0.0])
    d = fid.frechet_distance(np.zeros(2), s1, np.zeros(2), s2, eps=1e-2)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], np.diag([1.01 * 4.01, 0.01 * 0.01]))
    expected = 1.0 + 4.0 - 2 * (np.sqrt(1.01 * 4.01) + 0.01)
    assert d == pytest.approx(expected, rel=1e-12)


def test_imaginary_component_raises():
    with pytest.raises(ValueError, match="imaginary component"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), -np.eye(2))


def test_save_load_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(5)
    mu, sigma = rng.normal(size=6), _random_spd(rng, 6)
    path = tmp_path / "ref.npz"
    fid.save_statistics(path, mu, sigma)
    with np.load(path) as f:  # pytorch-fid layout
        assert sorted(f.files) == ["mu", "sigma"]
    mu2, sigma2 = fid.load_statistics(path)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)

    bad = tmp_path / "bad.npz"
    np.savez(bad, m=mu, s=sigma)
    with pytest.raises(KeyError, match="bad.npz"):
        fid.load_statistics(bad)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        fid.load_statistics(tmp_path / "missing.npz")
