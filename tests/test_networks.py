"""networks.py: a network whose trunk comes from a file (the DAMSM image encoder's Inception-v3,
the caption CNN's ResNet) gets that trunk exactly as given and draws only its heads, the same
draws as a full initialisation; the trunk's initialisers never run."""

import jax
import numpy as np
import pytest

from configs import shapes
from mirrorgan_jax.models import inception, resnet
from mirrorgan_jax.networks import Networks


@pytest.fixture(scope="module")
def nets():
    return Networks.from_config(shapes.get_config("test"), n_words=30)  # the tiny trunks


def _never_drawn(*args, **kwargs):
    raise AssertionError("a trunk whose weights are given was drawn")


@pytest.mark.parametrize(
    "init, name, trunk_init",
    [
        ("init_image_encoder", "trunk", (inception, "inception_conv_init")),
        ("init_caption_cnn", "resnet", (resnet, "kaiming_fan_out")),
    ],
)
def test_a_given_trunk_is_placed_and_only_the_heads_are_drawn(
    nets, monkeypatch, init, name, trunk_init
):
    full = getattr(nets, init)(jax.random.key(1))
    given = jax.tree.map(
        lambda x: x + 1.0,
        {"params": full["params"][name], "batch_stats": full["batch_stats"][name]},
    )
    monkeypatch.setattr(*trunk_init, _never_drawn)
    with pytest.raises(AssertionError, match="was drawn"):
        getattr(nets, init)(jax.random.key(1))  # the patch does stop a full init
    kwargs = {"trunk" if name == "trunk" else "backbone": given}
    placed = getattr(nets, init)(jax.random.key(1), **kwargs)
    assert jax.tree.structure(placed) == jax.tree.structure(full)
    for collection in ("params", "batch_stats"):
        for got, want in zip(
            jax.tree.leaves(placed[collection][name]), jax.tree.leaves(given[collection])
        ):
            np.testing.assert_array_equal(got, want)
        heads = {k: v for k, v in full[collection].items() if k != name}
        for got, want in zip(
            jax.tree.leaves({k: placed[collection][k] for k in heads}), jax.tree.leaves(heads)
        ):
            np.testing.assert_array_equal(got, want)
    abstract = getattr(nets, init)(jax.random.key(1), abstract=True, **kwargs)
    assert jax.tree.map(np.shape, abstract) == jax.tree.map(np.shape, full)
