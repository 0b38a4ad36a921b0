"""Config validation: `validate(config, ...)` checks every value a run uses before anything is
built or written, and turns the first bad one into a `ConfigError` naming the key, the value and
what is allowed. Modules are built from a config in `networks.py`, training hyperparameters in
`hyperparameters.py`.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from mirrorgan_jax import errors
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
    "eval.split": ("train", "test", "test_novel"),
}
# Integer counts, sizes and intervals, with the least value each may take.
_INTEGERS = {
    "seed": 0,
    "data.captions_per_image": 1,
    "data.words_num": 1,
    "data.vocab_size": 0,  # 0: sized from the corpus
    "data.shuffle_buffer": 0,  # 0: file order
    "data.prefetch": 1,
    "data.shapes.num_train": 1,
    "data.shapes.num_test": 1,
    "data.shapes.num_test_novel": 1,
    "data.shapes.image_size": 8,
    "data.shapes.seed": 0,
    "model.n_words": 0,  # 0: from the prepared tokenizer
    "model.word_embedding_dim": 1,
    "model.text_embedding_dim": 2,
    "model.gf_dim": 1,
    "model.df_dim": 1,
    "model.z_dim": 1,
    "model.condition_dim": 1,
    "model.r_num": 1,
    "model.branch_num": 1,
    "model.base_size": 32,
    "model.stream_embed_size": 1,
    "model.stream_hidden_size": 1,
    "model.stream_image_size": 32,
    "model.damsm_image_size": 32,
    "backbone_pretrain.steps": 0,
    "backbone_pretrain.num_images": 1,
    "backbone_pretrain.num_test_images": 1,
    "backbone_pretrain.batch_size": 1,
    "eval.num_images": 1,
    "eval.batch_size": 1,
    "eval.words_num": 1,
    "eval.r_precision_candidates": 2,
    "eval.r_precision_folds": 1,
    "eval.classifier_steps": 1,
    "eval.classifier_train_images": 1,
    "eval.classifier_test_images": 2,
    "sample.num_samples": 1,
    "sample.batch_size": 1,
    "train.keep_checkpoints": 1,
    "train.image_every": 1,
}
# The three training stages share these: steps (0: epochs decide), epochs, batch, intervals.
_STAGES = ("damsm", "stream", "train")
for _stage in _STAGES:
    _INTEGERS.update(
        {
            f"{_stage}.batch_size": 1,
            f"{_stage}.steps": 0,
            f"{_stage}.epochs": 0,
            f"{_stage}.checkpoint_every": 1,
            f"{_stage}.log_every": 1,
        }
    )
# Real numbers: (least, greatest, whether each bound is itself allowed); all must be finite.
_NUMBERS = {
    "model.text_dropout": (0.0, 1.0, True, False),
    "model.ca_noise_scale": (0.0, math.inf, True, False),
    "damsm.lr": (0.0, math.inf, False, False),
    "damsm.lr_decay": (0.0, 1.0, False, True),
    "damsm.lr_min": (0.0, math.inf, True, False),
    "damsm.grad_clip": (0.0, math.inf, False, False),
    "damsm.gamma1": (0.0, math.inf, False, False),
    "damsm.gamma2": (0.0, math.inf, False, False),
    "damsm.gamma3": (0.0, math.inf, False, False),
    "stream.lr": (0.0, math.inf, False, False),
    "backbone_pretrain.lr": (0.0, math.inf, False, False),
    "train.lr_g": (0.0, math.inf, False, False),
    "train.lr_d": (0.0, math.inf, False, False),
    "train.beta1": (0.0, 1.0, True, False),
    "train.beta2": (0.0, 1.0, True, False),
    "train.ema_decay": (0.0, 1.0, False, False),
    "train.lambda1": (0.0, math.inf, True, False),
    "train.r1_gamma": (0.0, math.inf, True, False),
    "train.ma_gp_weight": (0.0, math.inf, True, False),
}
_BOOLEANS = (
    "data.overwrite",
    "data.skip_corrupt",
    "data.allow_fewer_captions",
    "data.random_crop",
    "model.discriminator_batchnorm",
    "model.discriminator_spectral_norm",
    "model.sentence_attention",
    "stream.freeze_backbone",
    "train.ema_warmup",
)
# The batches of each mode's stages are split over every device ("data" axis of the mesh).
_SHARDED_BATCHES = {
    "pretrain_damsm": ("damsm.batch_size",),
    "pretrain_stream": ("stream.batch_size",),
    "train": ("train.batch_size",),
    "eval": ("eval.batch_size",),
}
_SHARDED_BATCHES["all"] = tuple(k for keys in _SHARDED_BATCHES.values() for k in keys)


class ConfigError(errors.Error, ValueError):
    """A config value (or a flag) is not one this code can run with."""


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _bad(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError("bad config value", f"config.{key}={value!r}", expected)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _range_text(lo: float, hi: float, lo_in: bool, hi_in: bool) -> str:
    parts = [f"{'>=' if lo_in else '>'} {lo:g}"]
    if hi != math.inf:
        parts.append(f"{'<=' if hi_in else '<'} {hi:g}")
    return "expected a finite number " + " and ".join(parts)


def _check_values(config: ml_collections.ConfigDict) -> None:
    for key, allowed in _CHOICES.items():
        value = _get(config, key)
        if value not in allowed:
            raise _bad(key, value, f"expected one of {', '.join(map(repr, allowed))}")
    for key, least in _INTEGERS.items():
        value = _get(config, key)
        if not _is_int(value) or value < least:
            raise _bad(key, value, f"expected an integer >= {least}")
    for key, (lo, hi, lo_in, hi_in) in _NUMBERS.items():
        value = _get(config, key)
        ok = _is_number(value) and (lo <= value if lo_in else lo < value)
        ok = ok and (value <= hi if hi_in else value < hi)
        if not ok:
            raise _bad(key, value, _range_text(lo, hi, lo_in, hi_in))
    for key in _BOOLEANS:
        value = _get(config, key)
        if not isinstance(value, bool):
            raise _bad(key, value, "expected True or False")
    for stage in _STAGES:
        section = config[stage]
        if section.steps == 0 and section.epochs == 0:
            raise ConfigError(
                "nothing to train",
                f"config.{stage}.steps=0 and config.{stage}.epochs=0",
                f"set config.{stage}.steps (or epochs) to at least 1",
            )


def _check_model(config: ml_collections.ConfigDict) -> None:
    m = config.model
    try:
        resnet_spec(m.stream_backbone)
    except (KeyError, ValueError) as e:
        raise _bad("model.stream_backbone", m.stream_backbone, str(e)) from None
    if m.text_embedding_dim % 2:
        raise _bad(
            "model.text_embedding_dim",
            m.text_embedding_dim,
            "expected an even number (the BiLSTM gives half per direction)",
        )
    if m.branch_num not in (1, 2, 3):
        raise _bad("model.branch_num", m.branch_num, "expected 1, 2 or 3")
    if m.base_size & (m.base_size - 1):
        raise _bad("model.base_size", m.base_size, "expected a power of two >= 32")
    try:
        augment.parse_policy(config.train.diffaugment)
    except ValueError as e:
        raise _bad("train.diffaugment", config.train.diffaugment, str(e)) from None


def _check_data(config: ml_collections.ConfigDict) -> None:
    if config.eval.split == "test_novel" and config.data.name != "shapes":
        raise _bad(
            "eval.split",
            config.eval.split,
            "expected 'train' or 'test' (only 'shapes' has a 'test_novel' split)",
        )
    bp = config.backbone_pretrain
    if bp.steps and config.data.name != "shapes":
        raise ConfigError(
            "backbone pretraining needs attribute labels, which only the 'shapes' data set has",
            f"config.backbone_pretrain.steps={bp.steps}, config.data.name={config.data.name!r}",
            "real data sets start from imported ImageNet weights instead "
            "(stream.backbone_weights); set backbone_pretrain.steps=0",
        )
    if bp.steps and bp.num_images > config.data.shapes.num_train:
        raise _bad(
            "backbone_pretrain.num_images",
            bp.num_images,
            f"expected at most data.shapes.num_train={config.data.shapes.num_train} "
            "(it uses the train split)",
        )


def _check_damsm_trunk(config: ml_collections.ConfigDict) -> None:
    dm = config.damsm
    if dm.freeze_trunk not in (None, True, False):
        raise _bad(
            "damsm.freeze_trunk",
            dm.freeze_trunk,
            "expected True, False or None (None: frozen exactly when damsm.trunk_weights is given)",
        )
    if not isinstance(dm.trunk_weights, str):
        raise _bad("damsm.trunk_weights", dm.trunk_weights, "expected a file path or ''")
    if dm.trunk_weights and config.model.damsm_backbone != "inception_v3":
        raise ConfigError(
            "damsm.trunk_weights holds Inception-v3 weights, which only that trunk takes",
            f"config.damsm.trunk_weights={dm.trunk_weights!r}, "
            f"config.model.damsm_backbone={config.model.damsm_backbone!r}",
            "set model.damsm_backbone='inception_v3' (or no trunk_weights)",
        )
    if dm.trunk_weights and config.backbone_pretrain.steps:
        raise ConfigError(
            "two sources give the DAMSM trunk its weights",
            f"config.damsm.trunk_weights={dm.trunk_weights!r}, "
            f"config.backbone_pretrain.steps={config.backbone_pretrain.steps}",
            "expected one of them",
        )


def _check_devices(mode: str, config, device_count: int, process_count: int) -> None:
    for key in _SHARDED_BATCHES.get(mode, ()):
        batch = _get(config, key)
        for count, what in ((device_count, "devices"), (process_count, "processes")):
            if batch % count:
                raise ConfigError(
                    f"the global batch does not split over the {count} {what}",
                    f"config.{key}={batch}",
                    f"use a multiple of {count}",
                )


def validate(
    config: ml_collections.ConfigDict,
    mode: str = "all",
    *,
    device_count: int | None = None,
    process_count: int = 1,
    num_samples: int | None = None,
    seed: int | None = None,
) -> None:
    """Raise ConfigError naming the first bad key, its value and what was expected.

    mode: the `--mode` about to run; with `device_count`, the batches its stages split over the
      devices (and `process_count` processes) must divide evenly.
    num_samples, seed: the `--num_samples` and `--seed` flags, when given."""
    _check_values(config)
    _check_model(config)
    _check_data(config)
    _check_damsm_trunk(config)
    if device_count is not None:
        _check_devices(mode, config, device_count, process_count)
    if num_samples is not None and num_samples < 1:
        raise ConfigError("bad flag value", f"--num_samples={num_samples}", "expected >= 1")
    if seed is not None and seed < 0:
        raise ConfigError("bad flag value", f"--seed={seed}", "expected >= 0")
