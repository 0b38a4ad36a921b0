"""hyperparameters.py: every training hyperparameter comes from the config key of its name."""

import dataclasses

import pytest

from configs import cub, shapes
from mirrorgan_jax import configuration, hyperparameters


@pytest.mark.parametrize("get_config", [cub.get_config, lambda: shapes.get_config("test")])
def test_each_field_is_its_config_key(get_config):
    config = get_config()
    for build, section in (
        (hyperparameters.gan, config.train),
        (hyperparameters.damsm, config.damsm),
        (hyperparameters.stream, config.stream),
    ):
        hyper = build(config)
        for field in dataclasses.fields(hyper):
            if field.name == "gammas":
                assert hyper.gammas == (section.gamma1, section.gamma2, section.gamma3)
            elif field.name == "freeze_trunk":
                assert hyper.freeze_trunk is hyperparameters.damsm_freeze_trunk(config)
            else:
                assert getattr(hyper, field.name) == section[field.name], field.name


def test_a_changed_key_reaches_the_step():
    config = shapes.get_config("test")
    config.train.lr_d, config.damsm.freeze_trunk = 1e-5, True
    assert hyperparameters.gan(config).lr_d == 1e-5
    assert hyperparameters.damsm(config).freeze_trunk is True


@pytest.mark.parametrize("preset", ["", "shape_aware", "long", "quick", "test"])
def test_every_shapes_preset_validates(preset):
    config = shapes.get_config(preset)
    configuration.validate(config)
    assert hyperparameters.gan(config).adversarial_loss == (
        "hinge" if preset in ("shape_aware", "long") else "bce"
    )


@pytest.mark.parametrize(
    "trunk_weights, freeze_trunk, frozen",
    [("", None, False), ("inception_v3.pth", None, True), ("inception_v3.pth", False, False),
     ("", True, True)],
)  # fmt: skip
def test_the_trunk_is_frozen_by_default_exactly_when_imagenet_weights_are_given(
    trunk_weights, freeze_trunk, frozen
):
    config = cub.get_config()
    config.damsm.trunk_weights, config.damsm.freeze_trunk = trunk_weights, freeze_trunk
    assert hyperparameters.damsm(config).freeze_trunk is frozen
