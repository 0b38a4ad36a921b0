"""Differentiable augmentation of the discriminators' inputs (DiffAugment, Zhao et al.,
NeurIPS 2020; not in the official code): the real and the fake images a D sees are augmented
the same way in distribution, each image independently, in both the D and the G loss, and the
gradient flows through the augmentation to G.

Policies (a comma-separated `train.diffaugment` string, applied in the given order):
  translation  shift by up to 1/8 of the side in x and y, zero (mid-grey) padding;
  cutout       zero a square of half the side at a random place;
  color        random brightness, saturation and contrast, as the reference implementation.
`translation` moves objects by less than the distance between the positions the shapes
captions name, but `color` changes what colour words describe: it suits data sets whose captions
do not name colours.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def translation(x: Array, key: Array, ratio: float = 0.125) -> Array:
    """x [B, H, W, C] shifted per image by up to `ratio` of its side, zero padded."""
    b, h, w, c = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ky, kx = jax.random.split(key)
    dy = jax.random.randint(ky, (b,), -sh, sh + 1)
    dx = jax.random.randint(kx, (b,), -sw, sw + 1)
    padded = jnp.pad(x, ((0, 0), (sh, sh), (sw, sw), (0, 0)))

    def shift(image, oy, ox):
        return jax.lax.dynamic_slice(image, (sh - oy, sw - ox, 0), (h, w, c))

    return jax.vmap(shift)(padded, dy, dx)


def cutout(x: Array, key: Array, ratio: float = 0.5) -> Array:
    """x [B, H, W, C] with a (ratio*H) x (ratio*W) square per image set to 0, centred anywhere
    in the image (so it may be cut by the border)."""
    b, h, w, _ = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ky, kx = jax.random.split(key)
    cy = jax.random.randint(ky, (b, 1, 1), 0, h)
    cx = jax.random.randint(kx, (b, 1, 1), 0, w)
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    top, left = cy - ch // 2, cx - cw // 2  # the square's corner; it may lie outside
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return jnp.where(inside[..., None], jnp.zeros((), x.dtype), x)


def color(x: Array, key: Array) -> Array:
    """Random brightness (+U(-0.5, 0.5)), saturation (x U(0, 2)) and contrast (x U(0.5, 1.5))
    per image, in the reference's order and ranges (images in [-1, 1])."""
    b = x.shape[0]
    kb, ks, kc = jax.random.split(key, 3)
    x = x + (jax.random.uniform(kb, (b, 1, 1, 1), x.dtype) - 0.5)
    mean = jnp.mean(x, axis=3, keepdims=True)
    x = (x - mean) * (jax.random.uniform(ks, (b, 1, 1, 1), x.dtype) * 2.0) + mean
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) * (jax.random.uniform(kc, (b, 1, 1, 1), x.dtype) + 0.5) + mean


POLICIES: dict[str, Callable[[Array, Array], Array]] = {
    "translation": translation,
    "cutout": cutout,
    "color": color,
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """'translation,cutout' -> ('translation', 'cutout'); '' -> (); unknown names refused."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(
            f"unknown augmentation {unknown[0]!r} in {policy!r}; expected a comma-separated "
            f"subset of {tuple(POLICIES)}"
        )
    return names


def augment(x: Array, key: Array, policy: tuple[str, ...]) -> Array:
    """x [B, H, W, C] through each augmentation of `policy` with its own key (identity for ())."""
    for i, name in enumerate(policy):
        x = POLICIES[name](x, jax.random.fold_in(key, i))
    return x
