"""Config validation: `validate(config)` turns a bad value into an error naming the key, the
value and what is allowed, before anything runs. Modules are built from a config in
`networks.py`, training hyperparameters in `hyperparameters.py`.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from mirrorgan_jax.data import shapes
from mirrorgan_jax.models.resnet import resnet_spec
from mirrorgan_jax.train import augment

_CHOICES = {
    "data.name": ("shapes", "cub", "coco"),
    "data.long_caption": ("subset", "truncate"),
    "data.tokenizer": ("sentencepiece", "attngan"),
    "model.word_attention_mask": ("official", "per_sample"),
    "model.sentence_attention_softmax": ("channel", "spatial"),
    "model.damsm_backbone": ("inception_v3", "tiny"),
    "train.adversarial_loss": ("bce", "hinge"),
    "data.shapes.geometry": tuple(shapes.GEOMETRIES),
    "mixed_precision": ("float32", "bfloat16"),
}
_POSITIVE = (
    "data.captions_per_image",
    "data.words_num",
    "model.word_embedding_dim",
    "model.text_embedding_dim",
    "model.gf_dim",
    "model.df_dim",
    "model.z_dim",
    "model.condition_dim",
    "model.r_num",
    "model.branch_num",
    "damsm.batch_size",
    "stream.batch_size",
    "train.batch_size",
    "eval.batch_size",
)


class ConfigError(ValueError):
    """A config value is not one this code can run with."""


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError naming the first bad key, its value and what was expected."""
    for key, allowed in _CHOICES.items():
        value = _get(config, key)
        if value not in allowed:
            raise ConfigError(f"config.{key}={value!r} is not one of {allowed}")
    for key in _POSITIVE:
        value = _get(config, key)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"config.{key}={value!r}: expected a positive integer")
    try:
        resnet_spec(config.model.stream_backbone)
    except (KeyError, ValueError) as e:
        raise ConfigError(
            f"config.model.stream_backbone={config.model.stream_backbone!r}: {e}"
        ) from None
    if config.model.text_embedding_dim % 2:
        raise ConfigError(
            f"config.model.text_embedding_dim={config.model.text_embedding_dim}: must be even "
            "(the BiLSTM gives half per direction)"
        )
    if config.model.branch_num not in (1, 2, 3):
        raise ConfigError(f"config.model.branch_num={config.model.branch_num}: expected 1, 2 or 3")
    base = config.model.base_size
    if base < 32 or base & (base - 1):
        raise ConfigError(f"config.model.base_size={base}: expected a power of two >= 32")
    if not 0.0 < config.train.ema_decay < 1.0:
        raise ConfigError(
            f"config.train.ema_decay={config.train.ema_decay}: expected 0 < decay < 1"
        )
    bp = config.backbone_pretrain
    if bp.steps < 0 or (bp.steps and (bp.num_images < 1 or bp.num_test_images < 1)):
        raise ConfigError(
            f"config.backbone_pretrain: steps={bp.steps}, num_images={bp.num_images}, "
            f"num_test_images={bp.num_test_images}: expected steps >= 0 and, when steps > 0, "
            "at least one train and one test image"
        )
    if bp.steps and config.data.name != "shapes":
        raise ConfigError(
            f"config.backbone_pretrain.steps={bp.steps} needs attribute labels, which only the "
            f"'shapes' data set has (config.data.name={config.data.name!r}); real data sets "
            "start from imported ImageNet weights instead (stream.backbone_weights)"
        )
    if bp.steps and bp.num_images > config.data.shapes.num_train:
        raise ConfigError(
            f"config.backbone_pretrain.num_images={bp.num_images}: expected at most "
            f"data.shapes.num_train={config.data.shapes.num_train} (it uses the train split)"
        )
    for section, key in (
        ("model", "ca_noise_scale"),
        ("train", "r1_gamma"),
        ("train", "ma_gp_weight"),
    ):
        value = config[section][key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"config.{section}.{key}={value!r}: expected a number >= 0")
    try:
        augment.parse_policy(config.train.diffaugment)
    except ValueError as e:
        raise ConfigError(f"config.train.diffaugment={config.train.diffaugment!r}: {e}") from None
    if config.train.lambda1 < 0:
        raise ConfigError(f"config.train.lambda1={config.train.lambda1}: expected >= 0")
    for key in ("discriminator_batchnorm", "discriminator_spectral_norm"):
        if not isinstance(config.model[key], bool):
            raise ConfigError(f"config.model.{key}={config.model[key]!r}: expected True or False")
