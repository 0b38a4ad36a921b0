"""DAMSM pretraining (`--mode=pretrain_damsm`): the STEM text encoder and the DAMSM image
encoder trained with AttnGAN's word and sentence losses (SPEC sections 2 and 8b).

Official recipe: Adam(lr, 0.5, 0.999), gradient norm of the text encoder clipped at 0.25, lr
x0.98 per epoch while above lr_min. The official code also re-creates Adam every epoch
(resetting its moments); this port keeps one Adam and applies the same per-epoch lr.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from mirrorgan_jax import losses
from mirrorgan_jax.networks import Networks


@flax.struct.dataclass
class DamsmState:
    step: jax.Array
    params: Any  # {"text": ..., "image": ...}
    batch_stats: Any  # image encoder BN statistics
    opt_state: Any


def lr_schedule(lr: float, decay: float, lr_min: float, steps_per_epoch: int):
    """lr x decay per finished epoch while lr > lr_min (AttnGAN pretrain_DAMSM.py)."""
    n_decays = 0
    value = lr
    while value > lr_min:
        value *= decay
        n_decays += 1

    def schedule(step):
        epoch = jnp.minimum(step // max(steps_per_epoch, 1), n_decays)
        return lr * decay**epoch

    return schedule


def make_tx(config, steps_per_epoch: int):
    """Adam on everything, or, with `damsm.freeze_trunk` (the official recipe: a pretrained
    Inception-v3 that is never updated), on everything but the image encoder's trunk."""
    d = config.damsm
    tx = optax.adam(lr_schedule(d.lr, d.lr_decay, d.lr_min, steps_per_epoch), b1=0.5, b2=0.999)
    if not d.freeze_trunk:
        return tx

    def labels(params):
        return {
            "text": jax.tree.map(lambda _: "train", params["text"]),
            "image": {k: ("frozen" if k == "trunk" else "train") for k in params["image"]},
        }

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def init_state(nets: Networks, tx, rng, abstract: bool = False) -> DamsmState:
    def build(r):
        kt, ki = jax.random.split(r)
        text = nets.init_text_encoder(kt)
        image = nets.init_image_encoder(ki)
        params = {"text": text["params"], "image": image["params"]}
        return DamsmState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=image.get("batch_stats", {}),
            opt_state=tx.init(params),
        )

    return jax.eval_shape(build, rng) if abstract else jax.jit(build)(rng)


def damsm_losses(nets: Networks, params, batch_stats, batch, rng, gammas, train: bool):
    """(total, metrics, new image-encoder stats) of the four DAMSM terms."""
    g1, g2, g3 = gammas
    tokens, lengths = batch["tokens"], batch["lengths"]
    class_ids = batch["class_id"]
    words, sent = nets.text_encoder.apply(
        {"params": params["text"]}, tokens, lengths, train=train, rngs={"dropout": rng}
    )
    (regions, code), upd = nets.image_encoder.apply(
        {"params": params["image"], "batch_stats": batch_stats},
        batch["images"][-1],
        train=train,
        mutable=["batch_stats"],
    )
    regions, code = regions.astype(jnp.float32), code.astype(jnp.float32)
    w0, w1, _ = losses.damsm_word_loss(regions, words, lengths, class_ids, g1, g2, g3)
    s0, s1 = losses.damsm_sentence_loss(code, sent, class_ids, g3)
    total = w0 + w1 + s0 + s1
    metrics = {
        "damsm/loss": total,
        "damsm/w_loss0": w0,
        "damsm/w_loss1": w1,
        "damsm/s_loss0": s0,
        "damsm/s_loss1": s1,
    }
    return total, (metrics, upd.get("batch_stats", batch_stats))


def train_step(
    state: DamsmState, batch, rng, *, nets: Networks, tx, gammas, grad_clip: float,
    freeze_trunk: bool = False,
):  # fmt: skip
    """One DAMSM step; the text encoder's gradient norm is clipped as the official code does."""

    def loss_fn(params):
        if freeze_trunk:  # no backward pass through the trunk (its update is zero anyway)
            image = {**params["image"], "trunk": jax.lax.stop_gradient(params["image"]["trunk"])}
            params = {**params, "image": image}
        return damsm_losses(nets, params, state.batch_stats, batch, rng, gammas, True)

    (_, (metrics, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    text_norm = optax.tree.norm(grads["text"])
    scale = jnp.minimum(1.0, grad_clip / (text_norm + 1e-6))
    grads = {**grads, "text": jax.tree.map(lambda g: g * scale, grads["text"])}
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["damsm/text_grad_norm"] = text_norm
    metrics["damsm/image_grad_norm"] = optax.tree.norm(grads["image"])
    return DamsmState(state.step + 1, params, stats, opt_state), metrics


def make_train_step(nets: Networks, config, tx):
    d = config.damsm
    step = functools.partial(
        train_step,
        nets=nets,
        tx=tx,
        gammas=(d.gamma1, d.gamma2, d.gamma3),
        grad_clip=d.grad_clip,
        freeze_trunk=d.freeze_trunk,
    )
    return jax.jit(step, donate_argnums=(0,))


def retrieval_accuracy(nets: Networks, params, batch_stats, batches) -> dict:
    """Top-1 image->caption and caption->image retrieval within each evaluation batch
    (cosine of the DAMSM global codes), averaged over batches."""

    @jax.jit
    def codes(batch):
        _, sent = nets.text_encoder.apply(
            {"params": params["text"]}, batch["tokens"], batch["lengths"], train=False
        )
        _, code = nets.image_encoder.apply(
            {"params": params["image"], "batch_stats": batch_stats},
            batch["images"][-1],
            train=False,
        )
        sim = _cosine_matrix(code.astype(jnp.float32), sent)
        target = jnp.arange(sim.shape[0])
        return (
            jnp.mean(jnp.argmax(sim, axis=1) == target),
            jnp.mean(jnp.argmax(sim, axis=0) == target),
        )

    i2t, t2i, n = 0.0, 0.0, 0
    for batch in batches:
        a, b = codes(batch)
        i2t, t2i, n = i2t + float(a), t2i + float(b), n + 1
    return {
        "image_to_text_top1": i2t / max(n, 1),
        "text_to_image_top1": t2i / max(n, 1),
        "batches": n,
    }


def _cosine_matrix(a, b):
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
    b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-8)
    return a @ b.T
