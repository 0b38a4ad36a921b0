"""Config -> typed modules, and config validation. The only place a ConfigDict meets a module.

Modules take plain typed fields; these builders read the relevant config sections once.
`validate(config)` turns a bad value into an error naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import ml_collections

_CHOICES = {
    "data.name": ("shapes", "cub", "coco"),
    "data.long_caption": ("subset", "truncate"),
    "data.tokenizer": ("sentencepiece", "attngan"),
    "model.word_attention_mask": ("official", "per_sample"),
    "model.sentence_attention_softmax": ("channel", "spatial"),
    "model.damsm_backbone": ("inception_v3", "tiny"),
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
    from mirrorgan_jax.models.resnet import resnet_spec

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
    for section, key in (("model", "ca_noise_scale"), ("train", "r1_gamma")):
        value = config[section][key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"config.{section}.{key}={value!r}: expected a number >= 0")
    if config.train.lambda1 < 0:
        raise ConfigError(f"config.train.lambda1={config.train.lambda1}: expected >= 0")
    if not isinstance(config.model.discriminator_batchnorm, bool):
        raise ConfigError(
            f"config.model.discriminator_batchnorm={config.model.discriminator_batchnorm!r}: "
            "expected True or False"
        )


def image_sizes(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Image size of every generator stage, smallest first (e.g. (64, 128, 256))."""
    return tuple(config.model.base_size * 2**i for i in range(config.model.branch_num))


def compute_dtype(config: ml_collections.ConfigDict):
    """Activation dtype: bfloat16 under mixed precision, else float32."""
    return jnp.bfloat16 if config.mixed_precision == "bfloat16" else jnp.float32


def _n_words(config: ml_collections.ConfigDict, n_words: int | None) -> int:
    n = n_words or config.model.n_words
    if not n:
        raise ConfigError(
            "config.model.n_words is 0 and no tokenizer was given: run --mode=prepare first or "
            "set --config.model.n_words"
        )
    return int(n)


def text_encoder(config, n_words: int | None = None):
    """STEM: the bidirectional-LSTM text encoder."""
    from mirrorgan_jax.models.text_encoder import TextEncoder

    m = config.model
    return TextEncoder(
        n_words=_n_words(config, n_words),
        word_embedding_dim=m.word_embedding_dim,
        hidden_dim=m.text_embedding_dim,
        dropout=m.text_dropout,
    )


def generator(config):
    """GLAM generator with conditioning augmentation."""
    from mirrorgan_jax.models.generator import Generator

    m = config.model
    return Generator(
        gf_dim=m.gf_dim,
        z_dim=m.z_dim,
        condition_dim=m.condition_dim,
        r_num=m.r_num,
        branch_num=m.branch_num,
        base_size=m.base_size,
        word_attention_mask=m.word_attention_mask,
        sentence_attention_softmax=m.sentence_attention_softmax,
        sentence_attention=m.sentence_attention,
        ca_noise_scale=m.ca_noise_scale,
        dtype=compute_dtype(config),
    )


def discriminators(config) -> list:
    """One discriminator per generator stage, smallest first."""
    from mirrorgan_jax.models.discriminators import Discriminator

    return [
        Discriminator(
            image_size=s,
            df_dim=config.model.df_dim,
            dtype=compute_dtype(config),
            batchnorm=config.model.discriminator_batchnorm,
        )
        for s in image_sizes(config)
    ]


def caption_cnn(config):
    """STREAM image encoder."""
    from mirrorgan_jax.models.captioner import CaptionCNN

    m = config.model
    return CaptionCNN(
        backbone=m.stream_backbone, embed_size=m.stream_embed_size, image_size=m.stream_image_size
    )


def caption_rnn(config, n_words: int | None = None):
    """STREAM decoder (LSTM hidden = 2 x CAP.hidden_size, as the official code)."""
    from mirrorgan_jax.models.captioner import CaptionRNN

    m = config.model
    return CaptionRNN(
        n_words=_n_words(config, n_words),
        embed_size=m.stream_embed_size,
        hidden_size=2 * m.stream_hidden_size,
    )


def image_encoder(config):
    """DAMSM image encoder (R-precision, attention images, DAMSM pretraining)."""
    from mirrorgan_jax.models.image_encoder import ImageEncoder

    m = config.model
    return ImageEncoder(
        backbone=m.damsm_backbone, nef=m.text_embedding_dim, image_size=m.damsm_image_size
    )


def steps_for(stage_config, num_examples: int) -> int:
    """Number of optimiser steps of a stage: `steps` when set, else epochs x batches per epoch."""
    if stage_config.steps:
        return int(stage_config.steps)
    return int(stage_config.epochs) * max(1, math.floor(num_examples / stage_config.batch_size))
