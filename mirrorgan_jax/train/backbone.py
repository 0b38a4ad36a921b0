"""Backbone pretraining on rendered attributes (`shapes` only): this data set's stand-in for the
ImageNet weights that the official DAMSM image encoder (Inception-v3) and STREAM encoder
(ResNet-152) start from and keep frozen (`taoxugit/AttnGAN code/model.py CNN_ENCODER`,
`qiaott/MirrorGAN model.py CAPTION_CNN`).

Trained from scratch by their own losses, the small `shapes` backbones take a shortcut: colour,
size and position already tell a caption from the others in a batch, so neither the DAMSM losses
nor the captioner's cross-entropy made them read shape, and the STEM trained against such an
image encoder lost shape too (docs/shapes.md).

Here a backbone is first trained as an attribute classifier: one MLP head per attribute field
(`data.shapes.ATTRIBUTE_CLASSES`) on its pooled features (the vector its stage's own head
reads), `losses.attribute_classifier_loss` on canonical attributes, images of the data set's
`train` split rendered in memory at the stage's resolution. The heads are thrown away; the stage
then starts from the pretrained backbone and keeps it frozen (`damsm.freeze_trunk`,
`stream.freeze_backbone`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mirrorgan_jax import losses
from mirrorgan_jax.data.schema import ATTRIBUTE_FIELDS
from mirrorgan_jax.data.shapes import ATTRIBUTE_CLASSES
from mirrorgan_jax.evaluation.shapes_metrics import attribute_accuracy
from mirrorgan_jax.models.layers import jit_init
from mirrorgan_jax.train.state import TrainState, fit_random_batches

# (variables, images [B,S,S,3] in [-1,1], train) -> (pooled features [B, C], new batch_stats)
FeaturesFn = Callable[[Any, jax.Array, bool], tuple[jax.Array, Any]]


class AttributeHeads(nn.Module):
    """features [B, C] -> logits per attribute field (a shared ReLU layer, then one Dense each)."""

    hidden: int = 256

    @nn.compact
    def __call__(self, features: jax.Array) -> tuple[jax.Array, ...]:
        h = nn.relu(nn.Dense(self.hidden, name="hidden")(features))  # [B, hidden]
        return tuple(
            nn.Dense(n, name=f"head_{f}")(h)
            for f, n in zip(ATTRIBUTE_FIELDS, ATTRIBUTE_CLASSES, strict=True)
        )


def damsm_trunk_features(nets) -> FeaturesFn:
    """The DAMSM image encoder's global map, mean-pooled (what its sentence-code head reads)."""

    def features(variables, images, train):
        (_, global_map), upd = nets.image_encoder.apply(
            variables, images, train, method="trunk_features", mutable=["batch_stats"]
        )
        return jnp.mean(global_map.astype(jnp.float32), axis=(1, 2)), upd["batch_stats"]

    return features


def stream_backbone_features(nets) -> FeaturesFn:
    """The caption CNN's pooled ResNet features (what its Linear+BN head reads)."""

    def features(variables, images, train):
        pooled, upd = nets.caption_cnn.apply(
            variables, images, train=train, method="backbone_features", mutable=["batch_stats"]
        )
        return pooled, upd["batch_stats"]

    return features


def pretrain(
    features_fn: FeaturesFn,
    variables: dict,
    train_data: tuple[np.ndarray, np.ndarray],
    test_data: tuple[np.ndarray, np.ndarray],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> tuple[dict, dict]:
    """Trains `variables` ({"params", "batch_stats"}) through `features_fn` + `AttributeHeads`.

    train_data / test_data: (uint8 images [N, S, S, 3], canonical attributes int [N, A]), as
    `data.shapes.render_dataset` gives. Adam with cosine decay; batches drawn uniformly with
    replacement (numpy seed `seed`). Parameters that `features_fn` does not use get zero
    gradients and stay exactly as they were.

    Returns (variables, report): report has `test` (per-field accuracy of the heads on
    test_data, eval-mode statistics), `final_loss`, `steps`, `seconds`.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(
            f"backbone_pretrain: steps and batch_size must be >= 1, got {steps}, {batch_size}"
        )
    train_x, train_y = train_data
    heads = AttributeHeads()
    feats = jax.eval_shape(  # the pooled features' shape, without running the backbone
        lambda v, x: features_fn(v, x, False)[0], variables, _to_input(train_x[:2])
    )
    params = {
        "backbone": variables["params"],
        "heads": jit_init(heads.init, jax.random.key(seed), jnp.zeros(feats.shape))["params"],
    }
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.01))
    state = jax.jit(lambda p, s: TrainState.create(params=p, tx=tx, batch_stats=s))(
        params, variables.get("batch_stats", {})
    )

    @jax.jit
    def step(state, images_u8, targets):
        def loss_fn(p):
            feats, new_stats = features_fn(
                {"params": p["backbone"], "batch_stats": state.batch_stats},
                _to_input(images_u8),
                True,
            )
            logits = heads.apply({"params": p["heads"]}, feats)
            loss, _ = losses.attribute_classifier_loss(logits, targets)
            return loss, new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads, batch_stats=new_stats), loss

    state, loss, seconds = fit_random_batches(
        step, state, train_x, train_y, steps, batch_size, seed
    )
    out = {"params": state.params["backbone"], "batch_stats": state.batch_stats}

    @jax.jit
    def predict(images_u8):
        feats, _ = features_fn(out, _to_input(images_u8), False)
        logits = heads.apply({"params": state.params["heads"]}, feats)
        return jnp.stack([jnp.argmax(lg, -1) for lg in logits], axis=1)

    test_x, test_y = test_data
    preds = np.concatenate(
        [np.asarray(predict(test_x[i : i + 100])) for i in range(0, len(test_x), 100)]
    )
    accuracy = attribute_accuracy(preds.astype(np.int64), test_y)
    report = {
        "test": {
            k: v
            for k, v in accuracy.items()
            if k.startswith("field/") or k in ("shape", "colour", "size", "layout")
        },
        "final_loss": float(loss),
        "steps": steps,
        "seconds": round(seconds, 1),
    }
    return out, report


def _to_input(images_u8):
    return jnp.asarray(images_u8).astype(jnp.float32) / 127.5 - 1.0
