"""STREAM pretraining (`--mode=pretrain_stream`): the captioner on real training images
prepared exactly as the generator's last stage sees them: the last stage's crop in [-1, 1],
bilinearly resized to the CNN's input, no ImageNet normalisation; the data set's own
vocabulary; no start token; cross-entropy with teacher forcing (docs/official-differences.md,
"STREAM pretraining").

The backbone is frozen when ImageNet weights are supplied (`stream.freeze_backbone`, the
official recipe) and trained otherwise; the Linear+BN head and the LSTM decoder always train.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from mirrorgan_jax import losses
from mirrorgan_jax.networks import Networks
from mirrorgan_jax.train.state import (
    TrainState,
    init_joint_state,
    stop_gradient_at,
    with_frozen_subtree,
)


@dataclasses.dataclass(frozen=True)
class StreamHyper:
    lr: float = 1e-3
    freeze_backbone: bool = True  # the CNN's ResNet is never updated (official: ImageNet)


def make_tx(hyper: StreamHyper) -> optax.GradientTransformation:
    """Adam on the captioner; with `freeze_backbone`, not on the CNN's ResNet."""
    tx = optax.adam(hyper.lr)
    return with_frozen_subtree(tx, "cnn", "resnet") if hyper.freeze_backbone else tx


def caption_cnn_variables(state: TrainState) -> dict:
    return {"params": state.params["cnn"], "batch_stats": state.batch_stats}


def caption_rnn_variables(state: TrainState) -> dict:
    return {"params": state.params["rnn"]}


def init_state(
    nets: Networks, tx, rng, abstract: bool = False, cnn_backbone: dict | None = None
) -> TrainState:
    """A fresh caption CNN and RNN under one optimiser. `cnn_backbone` ({"params",
    "batch_stats"} of the CNN's ResNet, e.g. ImageNet weights): the ResNet starts from it and
    only the CNN's head and the RNN are drawn."""
    inits = {
        "cnn": lambda r, backbone: nets.init_caption_cnn(r, backbone=backbone),
        "rnn": lambda r, _: nets.init_caption_rnn(r),
    }
    return init_joint_state(tx, inits, "cnn", rng, abstract, given={"cnn": cnn_backbone})


def caption_logits(nets: Networks, params, batch_stats, images, tokens, lengths, train: bool):
    feats, upd = nets.caption_cnn.apply(
        {"params": params["cnn"], "batch_stats": batch_stats},
        images,
        train=train,
        mutable=["batch_stats"],
    )
    logits = nets.caption_rnn.apply({"params": params["rnn"]}, feats, tokens, lengths)
    return logits.astype(jnp.float32), upd.get("batch_stats", batch_stats)


def train_step(
    state: TrainState, batch, rng, *, nets: Networks, hyper: StreamHyper
) -> tuple[TrainState, dict]:
    del rng  # the captioner has no stochastic layers

    def loss_fn(params):
        if hyper.freeze_backbone:
            params = stop_gradient_at(params, "cnn", "resnet")
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
    metrics = {
        "stream/ce": ce,
        "stream/token_accuracy": acc,
        "stream/grad_norm": optax.tree.norm(grads),
    }
    return state.apply_gradients(grads=grads, batch_stats=stats), metrics


def token_accuracy(logits, tokens, lengths):
    """Fraction of valid positions whose argmax is the target token (teacher forcing)."""
    valid = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
    hit = (jnp.argmax(logits, axis=-1) == tokens) & valid
    return jnp.sum(hit) / jnp.maximum(jnp.sum(valid), 1)


def make_train_step(nets: Networks, hyper: StreamHyper):
    step = functools.partial(train_step, nets=nets, hyper=hyper)
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
