"""Config -> the typed hyperparameters of the training steps in `train/` (which never read a
config), as `networks.py` is config -> modules. A hyperparameter is the config key of the same
name in the stage's section."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import ml_collections

from mirrorgan_jax.train.damsm import DamsmHyper
from mirrorgan_jax.train.gan import GanHyper
from mirrorgan_jax.train.stream import StreamHyper

H = TypeVar("H")


def _from_section(cls: type[H], section: ml_collections.ConfigDict, **derived: Any) -> H:
    """`cls` with each field read from the config key of its name, but those given."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in derived]
    return cls(**{name: section[name] for name in names}, **derived)


def gan(config: ml_collections.ConfigDict) -> GanHyper:
    return _from_section(GanHyper, config.train)


def damsm_freeze_trunk(config: ml_collections.ConfigDict) -> bool:
    """`damsm.freeze_trunk`, or when it is unset (None), whether ImageNet weights are given
    (`damsm.trunk_weights`): the official trunk is ImageNet's and stays frozen."""
    d = config.damsm
    return bool(d.trunk_weights) if d.freeze_trunk is None else bool(d.freeze_trunk)


def damsm(config: ml_collections.ConfigDict) -> DamsmHyper:
    d = config.damsm
    return _from_section(
        DamsmHyper,
        d,
        gammas=(d.gamma1, d.gamma2, d.gamma3),
        freeze_trunk=damsm_freeze_trunk(config),
    )


def stream(config: ml_collections.ConfigDict) -> StreamHyper:
    return _from_section(StreamHyper, config.stream)
