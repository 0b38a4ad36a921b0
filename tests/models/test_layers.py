"""models/layers.py: the PyTorch-exact bilinear resize and the PyTorch initialisers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mirrorgan_jax.models.layers import resize_bilinear, torch_uniform


def test_resize_known_values():
    @jax.jit
    def run(ramp, sq):
        return (
            resize_bilinear(ramp, (4, 2), align_corners=False)[0, :, 0, 0],
            resize_bilinear(ramp, (4, 2), align_corners=True)[0, :, 0, 0],
            resize_bilinear(sq, (1, 3))[0, 0, :, 0],
            jax.image.resize(sq, (1, 1, 3, 1), "bilinear", antialias=True)[0, 0, :, 0],
        )

    ramp = jnp.asarray([0.0, 1.0])[None, :, None, None] * jnp.ones((1, 2, 2, 1))  # along H
    sq = (jnp.arange(8.0) ** 2)[None, None, :, None]  # x = i**2 along W
    up_false, up_true, down, antialiased = run(ramp, sq)
    np.testing.assert_allclose(up_false, [0.0, 0.25, 0.75, 1.0], atol=1e-7)
    np.testing.assert_allclose(up_true, [0.0, 1 / 3, 2 / 3, 1.0], atol=1e-6)
    # Downsampling 8 -> 3 without antialiasing: each output mixes only its two nearest inputs
    # (src = 8/3 * (d + 0.5) - 0.5 = 0.833, 3.5, 6.167).
    np.testing.assert_allclose(down, [5 / 6, 12.5, 36 * 5 / 6 + 49 / 6], rtol=1e-6)
    assert np.max(np.abs(np.asarray(antialiased) - np.asarray(down))) > 0.1


def test_resize_matches_jax_without_antialias():
    x = jax.random.normal(jax.random.key(1), (2, 37, 29, 3))

    @jax.jit
    def run(x):
        out = []
        for size in [(64, 64), (17, 11)]:
            ref = jax.image.resize(x, (2, *size, 3), "bilinear", antialias=False)
            out.append((resize_bilinear(x, size), ref))
        corners = resize_bilinear(x, (50, 41), align_corners=True)
        return out, corners[:, [0, -1]][:, :, [0, -1]]

    pairs, corners = run(x)
    for ours, ref in pairs:
        np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(corners, x[:, [0, -1]][:, :, [0, -1]], rtol=1e-6)
    assert resize_bilinear(x, (37, 29)) is x


def test_torch_uniform_bounds():
    values = torch_uniform(0.25)(jax.random.key(0), (1000,))
    assert values.dtype == jnp.float32 and values.shape == (1000,)
    assert float(jnp.min(values)) >= -0.25 and float(jnp.max(values)) <= 0.25
    assert float(jnp.max(values)) > 0.2 and float(jnp.min(values)) < -0.2  # spans the range
    np.testing.assert_allclose(float(jnp.mean(values)), 0.0, atol=0.02)
