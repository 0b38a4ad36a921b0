"""STREAM pretraining (`--mode=pretrain_stream`): the captioner on real training images
prepared exactly as the generator's last stage sees them (SPEC 16.3): the 256 crop (the last
stage size) in [-1, 1], bilinearly resized to the CNN's input, no ImageNet normalisation; the
data set's own vocabulary; no start token; cross-entropy with teacher forcing.

The backbone is frozen when ImageNet weights are supplied (`stream.freeze_backbone`, the
official recipe) and trained otherwise; the Linear+BN head and the LSTM decoder always train.
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
class StreamState:
    step: jax.Array
    params: Any  # {"cnn": ..., "rnn": ...}
    batch_stats: Any  # caption CNN BN statistics
    opt_state: Any


def make_tx(config):
    tx = optax.adam(config.stream.lr)
    if not config.stream.freeze_backbone:
        return tx

    def labels(params):
        return {
            "cnn": {k: ("frozen" if k == "resnet" else "train") for k in params["cnn"]},
            "rnn": jax.tree.map(lambda _: "train", params["rnn"]),
        }

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def init_state(nets: Networks, tx, rng, abstract: bool = False) -> StreamState:
    def build(r):
        kc, kr = jax.random.split(r)
        cnn = nets.init_caption_cnn(kc)
        rnn = nets.init_caption_rnn(kr)
        params = {"cnn": cnn["params"], "rnn": rnn["params"]}
        return StreamState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=cnn.get("batch_stats", {}),
            opt_state=tx.init(params),
        )

    return jax.eval_shape(build, rng) if abstract else jax.jit(build)(rng)


def caption_logits(nets: Networks, params, batch_stats, images, tokens, lengths, train: bool):
    feats, upd = nets.caption_cnn.apply(
        {"params": params["cnn"], "batch_stats": batch_stats},
        images,
        train=train,
        mutable=["batch_stats"],
    )
    logits = nets.caption_rnn.apply({"params": params["rnn"]}, feats, tokens, lengths)
    return logits.astype(jnp.float32), upd.get("batch_stats", batch_stats)


def train_step(state: StreamState, batch, rng, *, nets: Networks, tx, freeze_backbone=False):
    del rng  # the captioner has no stochastic layers

    def loss_fn(params):
        if freeze_backbone:  # no backward pass through the backbone (its update is zero anyway)
            cnn = {**params["cnn"], "resnet": jax.lax.stop_gradient(params["cnn"]["resnet"])}
            params = {**params, "cnn": cnn}
        logits, stats = caption_logits(
            nets,
            params,
            state.batch_stats,
            batch["images"][-1],
            batch["tokens"],
            batch["lengths"],
            True,
        )
        ce = losses.caption_cross_entropy(logits, batch["tokens"], batch["lengths"])
        acc = token_accuracy(logits, batch["tokens"], batch["lengths"])
        return ce, (stats, acc)

    (ce, (stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "stream/ce": ce,
        "stream/token_accuracy": acc,
        "stream/grad_norm": optax.tree.norm(grads),
    }
    return StreamState(state.step + 1, params, stats, opt_state), metrics


def token_accuracy(logits, tokens, lengths):
    """Fraction of valid positions whose argmax is the target token (teacher forcing)."""
    valid = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
    hit = (jnp.argmax(logits, axis=-1) == tokens) & valid
    return jnp.sum(hit) / jnp.maximum(jnp.sum(valid), 1)


def make_train_step(nets: Networks, tx, freeze_backbone: bool = False):
    step = functools.partial(train_step, nets=nets, tx=tx, freeze_backbone=freeze_backbone)
    return jax.jit(step, donate_argnums=(0,))


def evaluate(nets: Networks, params, batch_stats, batches) -> dict:
    """Teacher-forced token accuracy and cross-entropy over evaluation batches, and the
    cross-entropy of the same captions given another image of the batch (rolled by one): how
    much the captioner relies on the image, which bounds what redescription can teach G."""

    @jax.jit
    def scores(batch):
        images, tokens, lengths = batch["images"][-1], batch["tokens"], batch["lengths"]
        logits, _ = caption_logits(nets, params, batch_stats, images, tokens, lengths, False)
        other, _ = caption_logits(
            nets, params, batch_stats, jnp.roll(images, 1, axis=0), tokens, lengths, False
        )
        valid = jnp.sum(lengths)
        ce = losses.caption_cross_entropy(logits, tokens, lengths)
        ce_other = losses.caption_cross_entropy(other, tokens, lengths)
        return token_accuracy(logits, tokens, lengths) * valid, ce * valid, ce_other * valid, valid

    hits, ce, ce_other, n = 0.0, 0.0, 0.0, 0.0
    for batch in batches:
        a, c, o, v = scores(batch)
        hits, ce, ce_other, n = hits + float(a), ce + float(c), ce_other + float(o), n + float(v)
    d = max(n, 1.0)
    return {
        "token_accuracy": hits / d,
        "cross_entropy": ce / d,
        "cross_entropy_other_image": ce_other / d,
        "image_reliance": (ce_other - ce) / d,
        "tokens": int(n),
    }
