"""DiffAugment policies: shapes, what each one changes, and that gradients flow through them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirrorgan_jax.train import augment


def _images(b=4, s=16):
    return jax.random.uniform(jax.random.key(0), (b, s, s, 3), minval=-1.0, maxval=1.0)


def test_translation_shifts_each_image_by_at_most_an_eighth():
    x = jnp.zeros((64, 16, 16, 1)).at[:, 8, 8, 0].set(1.0)  # one bright pixel per image
    y = augment.translation(x, jax.random.key(1))
    where = np.argwhere(np.asarray(y[..., 0]) > 0.5)  # [64, 3]: image, row, col
    assert len(where) == 64  # a 2-px shift of a centred pixel never leaves the image
    shifts = where[:, 1:] - 8
    assert np.abs(shifts).max() == 2 and len({tuple(s) for s in shifts}) > 5


def test_cutout_zeroes_one_square_per_image():
    x = jnp.ones((32, 16, 16, 3))
    y = np.asarray(augment.cutout(x, jax.random.key(2)))
    zeros = (y == 0).all(axis=3).sum(axis=(1, 2))
    assert zeros.max() == 64 and zeros.min() > 0  # an 8 x 8 square, cut by the border at most
    assert set(np.unique(y)) <= {0.0, 1.0}


def test_color_keeps_shape_and_changes_values():
    x = _images()
    y = augment.color(x, jax.random.key(3))
    assert y.shape == x.shape and not np.allclose(y, x)


def test_policy_parsing_and_gradients():
    assert augment.parse_policy("") == ()
    assert augment.parse_policy("translation, cutout") == ("translation", "cutout")
    with pytest.raises(ValueError, match="unknown augmentation 'zoom'"):
        augment.parse_policy("zoom")
    x = _images()
    policy = augment.parse_policy("translation,cutout,color")
    g = jax.grad(lambda v: jnp.sum(augment.augment(v, jax.random.key(4), policy) ** 2))(x)
    assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0
    assert augment.augment(x, jax.random.key(4), ()) is x
