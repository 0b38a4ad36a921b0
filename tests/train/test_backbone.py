"""Backbone pretraining on rendered attributes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cub, shapes
from mirrorgan_jax import configuration
from mirrorgan_jax.data.shapes import render_dataset
from mirrorgan_jax.networks import Networks
from mirrorgan_jax.train import backbone as pretrain_backbone


class _TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(16, (3, 3), strides=2)(x)  # [B, 16, 16, 16]
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return jnp.mean(nn.relu(x), axis=(1, 2))  # [B, 16]


def _features(variables, images, train):
    net = {"params": variables["params"]["net"], "batch_stats": variables["batch_stats"]}
    pooled, upd = _TinyNet().apply(net, images, train, mutable=["batch_stats"])
    return pooled, upd["batch_stats"]


@pytest.fixture(scope="module")
def pretrained():
    net = _TinyNet().init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), False)
    variables = {
        "params": {"net": net["params"], "unused": jnp.arange(3.0)},
        "batch_stats": net["batch_stats"],
    }
    train = render_dataset("train", 512, 0, 32)
    test = render_dataset("test", 128, 0, 32)
    out, report = pretrain_backbone.pretrain(
        _features, variables, train, test, steps=150, batch_size=32, lr=1e-2, seed=0
    )
    return variables, out, report


def test_pretraining_learns_attributes(pretrained):
    _, _, report = pretrained
    assert report["test"]["field/colour0"] > 0.4  # chance 1/7
    assert report["steps"] == 150 and np.isfinite(report["final_loss"])


def test_pretraining_updates_only_what_the_features_use(pretrained):
    before, after, _ = pretrained
    np.testing.assert_array_equal(after["params"]["unused"], before["params"]["unused"])
    kernel0 = before["params"]["net"]["Conv_0"]["kernel"]
    assert not np.allclose(after["params"]["net"]["Conv_0"]["kernel"], kernel0)
    mean0 = before["batch_stats"]["BatchNorm_0"]["mean"]
    assert not np.allclose(after["batch_stats"]["BatchNorm_0"]["mean"], mean0)
    assert jax.tree.structure(after) == jax.tree.structure(before)


@pytest.mark.parametrize("stage", ["damsm", "stream"])
def test_stage_features_keep_the_variable_layout(stage):
    """The stages' features (traced only): pooled [B, C] float32, and BN statistics in the
    structure they came in (a nested or missing collection would recompile every step)."""
    nets = Networks.from_config(shapes.get_config("test"), n_words=30)
    if stage == "damsm":
        variables = nets.init_image_encoder(jax.random.key(0), abstract=True)
        features = pretrain_backbone.damsm_trunk_features(nets)
        width = nets.image_encoder.tiny_widths[-1]
    else:
        variables = nets.init_caption_cnn(jax.random.key(0), abstract=True)
        features = pretrain_backbone.stream_backbone_features(nets)
        width = 128  # resnet_tiny
    size = nets.image_sizes[-1]
    for train in (True, False):
        pooled, stats = jax.eval_shape(
            lambda v, x, train=train: features(v, x, train),
            variables,
            jax.ShapeDtypeStruct((3, size, size, 3), jnp.float32),
        )
        assert pooled.shape == (3, width) and pooled.dtype == jnp.float32
        assert jax.tree.structure(stats) == jax.tree.structure(variables["batch_stats"])


def test_config_checks():
    config = cub.get_config()
    config.backbone_pretrain.steps = 10
    with pytest.raises(configuration.ConfigError, match="only the 'shapes' data set"):
        configuration.validate(config)
    config = shapes.get_config("test")
    config.backbone_pretrain.steps = 10
    config.backbone_pretrain.num_images = config.data.shapes.num_train + 1
    with pytest.raises(configuration.ConfigError, match="num_images"):
        configuration.validate(config)
    config.backbone_pretrain.update(num_images=4, steps=-1)
    with pytest.raises(configuration.ConfigError, match="steps=-1"):
        configuration.validate(config)
