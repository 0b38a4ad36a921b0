"""DAMSM pretraining: the official per-epoch learning rate, and the frozen image trunk."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirrorgan_jax.train import damsm


def test_lr_schedule_is_the_official_per_epoch_decay():
    """`taoxugit/AttnGAN code/pretrain_DAMSM.py`: lr = ENCODER_LR, and after each epoch
    `if lr > ENCODER_LR / 10.: lr *= 0.98`; the lr stops at the first value <= lr_min."""
    base, lr_min, steps_per_epoch = 0.002, 0.0002, 7
    lr, official = base, []
    for _ in range(200):
        official.append(lr)
        if lr > base / 10.0:
            lr *= 0.98
    schedule = damsm.lr_schedule(base, 0.98, lr_min, steps_per_epoch)
    for epoch in (0, 1, 5, 113, 114, 150, 199):
        for step in (epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1):
            got = float(schedule(jnp.int32(step)))
            assert got == pytest.approx(official[epoch], rel=1e-5), (epoch, step)
    assert official[-1] <= lr_min < official[0]


def _updates(tx, params):
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def test_freeze_trunk_leaves_the_trunk_alone():
    params = {
        "text": {"lstm": jnp.ones(3)},
        "image": {"trunk": {"conv1": jnp.ones(4)}, "emb_cnn_code": {"kernel": jnp.ones(2)}},
    }
    for freeze in (False, True):
        tx = damsm.make_tx(damsm.DamsmHyper(freeze_trunk=freeze), steps_per_epoch=10)
        up = _updates(tx, params)
        assert np.all(np.asarray(up["image"]["trunk"]["conv1"]) == 0) == freeze
        assert np.all(np.asarray(up["image"]["emb_cnn_code"]["kernel"]) != 0)
        assert np.all(np.asarray(up["text"]["lstm"]) != 0)
