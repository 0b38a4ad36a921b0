"""DAMSM pretraining (`--mode=pretrain_damsm`): the STEM text encoder and the DAMSM image
encoder trained with AttnGAN's word and sentence losses (`taoxugit/AttnGAN code/pretrain_DAMSM.py`,
`code/miscc/losses.py words_loss, sent_loss`).

Official recipe: Adam(lr, 0.5, 0.999), gradient norm of the text encoder clipped at 0.25, lr
x0.98 per epoch while above lr_min. The official code also re-creates Adam every epoch
(resetting its moments); this port keeps one Adam and applies the same per-epoch lr
(docs/official-differences.md).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
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
class DamsmHyper:
    lr: float = 0.002
    lr_decay: float = 0.98  # per epoch while lr > lr_min
    lr_min: float = 0.0002
    grad_clip: float = 0.25  # on the text encoder's gradient norm
    freeze_trunk: bool = False  # the image encoder's trunk is never updated (official: ImageNet)
    gammas: tuple[float, float, float] = (4.0, 5.0, 10.0)


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


def make_tx(hyper: DamsmHyper, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam on both encoders; with `freeze_trunk`, not on the image encoder's trunk."""
    schedule = lr_schedule(hyper.lr, hyper.lr_decay, hyper.lr_min, steps_per_epoch)
    tx = optax.adam(schedule, b1=0.5, b2=0.999)
    return with_frozen_subtree(tx, "image", "trunk") if hyper.freeze_trunk else tx


def text_encoder_variables(state: TrainState) -> dict:
    return {"params": state.params["text"]}


def image_encoder_variables(state: TrainState) -> dict:
    return {"params": state.params["image"], "batch_stats": state.batch_stats}


def init_state(
    nets: Networks, tx, rng, abstract: bool = False, image_trunk: dict | None = None
) -> TrainState:
    """Fresh text and image encoders under one optimiser. `image_trunk` ({"params",
    "batch_stats"} of the image encoder's trunk, e.g. ImageNet Inception-v3 weights): the trunk
    starts from it and only the text encoder and the image heads are drawn."""
    inits = {
        "text": lambda r, _: nets.init_text_encoder(r),
        "image": lambda r, trunk: nets.init_image_encoder(r, trunk=trunk),
    }
    return init_joint_state(tx, inits, "image", rng, abstract, given={"image": image_trunk})


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
    state: TrainState, batch, rng, *, nets: Networks, hyper: DamsmHyper
) -> tuple[TrainState, dict]:
    """One DAMSM step; the text encoder's gradient norm is clipped as the official code does
    (`torch.nn.utils.clip_grad_norm_`, which divides by norm + 1e-6)."""

    def loss_fn(params):
        if hyper.freeze_trunk:
            params = stop_gradient_at(params, "image", "trunk")
        return damsm_losses(nets, params, state.batch_stats, batch, rng, hyper.gammas, True)

    (_, (metrics, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    text_norm = optax.tree.norm(grads["text"])
    scale = jnp.minimum(1.0, hyper.grad_clip / (text_norm + 1e-6))
    grads = {**grads, "text": jax.tree.map(lambda g: g * scale, grads["text"])}
    metrics["damsm/text_grad_norm"] = text_norm
    metrics["damsm/image_grad_norm"] = optax.tree.norm(grads["image"])
    return state.apply_gradients(grads=grads, batch_stats=stats), metrics


def make_train_step(nets: Networks, hyper: DamsmHyper):
    step = functools.partial(train_step, nets=nets, hyper=hyper)
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


def sentence_embeddings(nets: Networks, text_params, tokens, lengths, batch_size: int = 500):
    """float32 [N, nef]: the eval-mode STEM sentence embedding of tokenised captions
    (tokens int [N, T], lengths int [N]), in batches of one compiled shape."""
    encode = jax.jit(
        lambda t, n: nets.text_encoder.apply({"params": text_params}, t, n, train=False)[1]
    )
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    out = []
    for i in range(0, len(tokens), batch_size):
        t, n = tokens[i : i + batch_size], lengths[i : i + batch_size]
        pad = batch_size - len(t)
        if pad:  # one compiled shape: pad with one-token captions, dropped below
            t = np.concatenate([t, np.zeros((pad, t.shape[1]), t.dtype)])
            t[-pad:, 0] = 1
            n = np.concatenate([n, np.ones(pad, n.dtype)])
        out.append(np.asarray(encode(t, n), np.float32)[: batch_size - pad])
    return np.concatenate(out)


def _cosine_matrix(a, b):
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
    b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-8)
    return a @ b.T
