"""Config -> the typed hyperparameters of the training steps in `train/` (which never read a
config), as `networks.py` is config -> modules."""

from __future__ import annotations

import ml_collections

from mirrorgan_jax.train.damsm import DamsmHyper
from mirrorgan_jax.train.gan import GanHyper
from mirrorgan_jax.train.stream import StreamHyper


def gan(config: ml_collections.ConfigDict) -> GanHyper:
    t = config.train
    return GanHyper(
        lr_g=t.lr_g,
        lr_d=t.lr_d,
        beta1=t.beta1,
        beta2=t.beta2,
        ema_decay=t.ema_decay,
        lambda1=t.lambda1,
        ema_warmup=t.ema_warmup,
        r1_gamma=t.r1_gamma,
    )


def damsm(config: ml_collections.ConfigDict) -> DamsmHyper:
    d = config.damsm
    return DamsmHyper(
        lr=d.lr,
        lr_decay=d.lr_decay,
        lr_min=d.lr_min,
        grad_clip=d.grad_clip,
        freeze_trunk=d.freeze_trunk,
        gammas=(d.gamma1, d.gamma2, d.gamma3),
    )


def stream(config: ml_collections.ConfigDict) -> StreamHyper:
    return StreamHyper(lr=config.stream.lr, freeze_backbone=config.stream.freeze_backbone)
