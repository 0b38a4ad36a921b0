"""The `shapes` attribute classifier: the instrument that reads generated images' attributes.

`AttributeClassifier` is a small NHWC CNN with one softmax head per field of
`schema.ATTRIBUTE_FIELDS`, trained on real shapes images rendered in memory
(`train_classifier`). `evaluate_attributes` classifies images and scores them against the
attributes of their captions (`shapes_metrics.attribute_accuracy`); its penultimate activations
give the features of `shapes_metrics.domain_fid`. Labels are in canonical object order
(`data.shapes.canonical_attributes`).

Training data. The classifier is a measuring instrument, so it must know every colour-shape
pair, the ones held out of the generator's training set included (a classifier trained on the
`train` split alone reads a held-out blue star as a blue something-else).
`render_training_set` mixes `train` and `test_novel` scenes rendered with a seed of their own,
so none of the data set's images is seen. Its accuracy on real images is in each report
(docs/shapes.md gives the default's).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from mirrorgan_jax import losses
from mirrorgan_jax.data.schema import ATTRIBUTE_FIELDS
from mirrorgan_jax.data.shapes import (
    ATTRIBUTE_CLASSES,
    DEFAULT_GEOMETRY,
    canonical_attributes,
    check_attributes,
    render_dataset,
)
from mirrorgan_jax.evaluation.shapes_metrics import attribute_accuracy
from mirrorgan_jax.models.layers import Conv, jit_init
from mirrorgan_jax.torch_import.common import check_against
from mirrorgan_jax.train.state import TrainState, fit_random_batches

Array = jax.Array


_STRIDES = (2, 2, 1, 2, 1)  # trunk conv strides: 64 px -> 32, 16, 16, 8, 8


class AttributeClassifier(nn.Module):
    """Small CNN: images [B,H,W,3] in [-1,1] -> (logits per field, features [B, feature_dim]).

    Images are resized (bilinear, antialiased when shrinking) to `image_size` (a multiple of
    16). Trunk: five 3x3 convs with strides 2, 2, 1, 2, 1 (`widths`), each followed by ReLU,
    all but the first with GroupNorm before it; the map F is at 1/8 of the input (8x8 at
    64 px). Two readouts of F:
      - object slots: a 1x1 conv on [F, x, y] gives two attention maps (softmax over
        positions); each slot is the attention-weighted mean of F and of (x, y). Every
        position shares one shape/colour detector, and the coordinates let the slots learn
        "the left/upper object" (canonical object0) and "the other one";
      - the layout: a stride-2 3x3 conv (`layout_width`) + ReLU on F, flattened.
    Both go through a ReLU Dense layer of `feature_dim` (the features, for `domain_fid`) and
    one Dense head per field (`ATTRIBUTE_CLASSES`).

    Attributes:
      widths: channels of the five trunk convs.
      layout_width: channels of the layout conv.
      feature_dim: width of the penultimate layer.
      image_size: the input resolution the convs see.
      norm_groups: GroupNorm groups (must divide widths[1:]).
    """

    widths: tuple[int, int, int, int, int] = (32, 64, 64, 96, 96)
    layout_width: int = 128
    feature_dim: int = 256
    image_size: int = 64
    norm_groups: int = 8

    @nn.compact
    def __call__(self, images: Array) -> tuple[tuple[Array, ...], Array]:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"AttributeClassifier: expected [B, H, W, 3], got {images.shape}")
        s = self.image_size
        if s % 16 or len(self.widths) != len(_STRIDES):
            raise ValueError(
                f"AttributeClassifier: image_size must be a multiple of 16 (got {s}) and widths "
                f"must have {len(_STRIDES)} entries (got {self.widths})"
            )
        x = images.astype(jnp.float32)
        if x.shape[1:3] != (s, s):
            x = jax.image.resize(x, (x.shape[0], s, s, 3), "linear", antialias=True)
        for i, (w, stride) in enumerate(zip(self.widths, _STRIDES, strict=True)):
            x = Conv(w, (3, 3), strides=stride, padding=1, name=f"conv{i}")(x)
            if i > 0:
                x = nn.GroupNorm(self.norm_groups, name=f"norm{i}")(x)
            x = nn.relu(x)
        b, h, w, c = x.shape  # [B, S/8, S/8, widths[-1]]
        ys, xs = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
        coords = jnp.broadcast_to(jnp.stack([xs, ys], -1), (b, h, w, 2))  # [B, h, w, 2]
        attn = Conv(2, (1, 1), name="slot_attention")(jnp.concatenate([x, coords], -1))
        attn = jax.nn.softmax(attn.reshape(b, h * w, 2), axis=1)  # [B, hw, 2]
        slots = jnp.einsum("bnk,bnc->bkc", attn, x.reshape(b, h * w, c))  # [B, 2, C]
        slot_xy = jnp.einsum("bnk,bnc->bkc", attn, coords.reshape(b, h * w, 2))  # [B, 2, 2]
        layout = Conv(self.layout_width, (3, 3), strides=2, padding=1, name="layout")(x)
        layout = nn.relu(layout)  # [B, S/16, S/16, layout_width]
        parts = [slots.reshape(b, -1), slot_xy.reshape(b, -1), layout.reshape(b, -1)]
        features = nn.relu(nn.Dense(self.feature_dim, name="features")(jnp.concatenate(parts, -1)))
        logits = tuple(
            nn.Dense(n, name=f"head_{f}")(features)
            for f, n in zip(ATTRIBUTE_FIELDS, ATTRIBUTE_CLASSES, strict=True)
        )
        return logits, features


def _to_model_input(images_uint8: Array) -> Array:
    return images_uint8.astype(jnp.float32) / 127.5 - 1.0


@functools.partial(jax.jit, static_argnums=0)
def _predict(
    model: AttributeClassifier, variables: Mapping[str, Any], images: Array
) -> tuple[Array, Array]:
    logits, features = model.apply(variables, images)
    return jnp.stack([jnp.argmax(lg, -1) for lg in logits], axis=1), features


def make_predict_fn(
    classifier_vars: Mapping[str, Any], model: AttributeClassifier | None = None
) -> Callable[[Array], tuple[Array, Array]]:
    """images [B,H,W,3] in [-1,1] -> (predicted attributes int32 [B, A], features [B, D]).

    Jitted once per (model, image shape) for the whole process. `model` defaults to
    `classifier_from_variables(classifier_vars)`.
    """
    model = model or classifier_from_variables(classifier_vars)
    return functools.partial(_predict, model, classifier_vars)


def evaluate_attributes(
    classifier_vars: Mapping[str, Any],
    images: Any,
    attributes: Any,
    batch_size: int = 100,
) -> dict[str, Any]:
    """Classify `images` [N,H,W,3] in [-1,1] and score them against `attributes` [N, A].

    Returns `attribute_accuracy(...)` plus `predictions` (canonical int [N, A]) and `features`
    (float32 [N, feature_dim], penultimate activations for `domain_fid`).
    """
    images = np.asarray(images)
    targets = check_attributes(attributes, "evaluate_attributes(attributes)")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] != targets.shape[0]:
        raise ValueError(
            f"evaluate_attributes: expected images [N, H, W, 3] with N = {targets.shape[0]} "
            f"(the attributes' rows), got {images.shape}"
        )
    predict = make_predict_fn(classifier_vars)
    preds, feats = [], []
    for i in range(0, images.shape[0], batch_size):
        batch = images[i : i + batch_size].astype(np.float32)
        n = batch.shape[0]
        if n < batch_size:  # pad the last batch to keep one compiled shape
            batch = np.concatenate(
                [batch, np.zeros((batch_size - n, *batch.shape[1:]), np.float32)]
            )
        p, f = predict(jnp.asarray(batch))
        preds.append(np.asarray(p)[:n])
        feats.append(np.asarray(f)[:n])
    predictions = canonical_attributes(np.concatenate(preds).astype(np.int64))
    out: dict[str, Any] = attribute_accuracy(predictions, targets)
    out["predictions"] = predictions
    out["features"] = np.concatenate(feats).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- training


def render_training_set(
    num: int,
    seed: int,
    image_size: int,
    novel_fraction: float = 0.25,
    geometry: str = DEFAULT_GEOMETRY,
) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's training images: `train`-split scenes plus a `novel_fraction` of
    `test_novel`-split scenes, so every colour-shape pair (the held-out ones included) is seen.

    Use a `seed` other than the data set's: the classifier is an evaluation tool and should
    see every pair, but none of the data set's own images. Returns (uint8 images, canonical
    attributes) as `render_dataset`.
    """
    if not 0.0 <= novel_fraction <= 1.0:
        raise ValueError(
            f"render_training_set: novel_fraction must be in [0, 1], got {novel_fraction}"
        )
    num_novel = int(round(num * novel_fraction))
    x, y = render_dataset("train", num - num_novel, seed, image_size, geometry=geometry)
    if num_novel:
        xn, yn = render_dataset("test_novel", num_novel, seed, image_size, geometry=geometry)
        x, y = np.concatenate([x, xn]), np.concatenate([y, yn])
    return x, y


def train_classifier(
    num_train: int = 10000,
    steps: int = 1500,
    batch_size: int = 32,
    image_size: int = 64,
    seed: int = 0,
    num_test: int = 2000,
    learning_rate: float = 2e-3,
    model: AttributeClassifier | None = None,
    render_seed: int = 4321,
    data_seed: int = 1234,
    novel_fraction: float = 0.25,
    geometry: str = DEFAULT_GEOMETRY,
) -> tuple[dict, dict]:
    """Trains an AttributeClassifier on `num_train` real shapes images rendered in memory
    (every image, train and test, in `geometry`).

    Training images: `render_training_set(num_train, render_seed, image_size, novel_fraction)`
    (every colour-shape pair, none of the data set's images). Tested on the first `num_test`
    images of the data set's `test` split and `num_test // 2` of `test_novel` (seed
    `data_seed`, the data set's). AdamW (weight decay 1e-4) with linear warm-up and cosine
    decay to 1% of `learning_rate`; batches drawn uniformly with replacement.

    Returns (variables {"params"}, report) with report keys: `test` and `test_novel`
    (`attribute_accuracy` metrics on real images), `render_seconds`, `train_seconds`
    (the optimisation loop, compilation included), `final_loss`, `steps`, `batch_size`,
    `num_train`, `num_test`, `image_size`, `model` (the classifier's fields).
    """
    if steps < 1 or batch_size < 1 or num_train < 1 or num_test < 2:
        raise ValueError(
            "train_classifier: steps, batch_size, num_train must be >= 1 and num_test >= 2, got "
            f"{steps}, {batch_size}, {num_train}, {num_test}"
        )
    model = model or AttributeClassifier(image_size=image_size)
    t0 = time.perf_counter()
    train_x, train_y = render_training_set(
        num_train, render_seed, image_size, novel_fraction, geometry
    )
    tests = {
        "test": render_dataset("test", num_test, data_seed, image_size, geometry=geometry),
        "test_novel": render_dataset(
            "test_novel", num_test // 2, data_seed, image_size, geometry=geometry
        ),
    }
    render_seconds = time.perf_counter() - t0

    # One compiled program instead of one per initialiser, with the fast 'rbg' key.
    variables = jit_init(
        model.init, jax.random.key(seed), jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    )
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, min(100, steps // 10 + 1), steps, learning_rate * 0.01
    )
    tx = optax.adamw(schedule, weight_decay=1e-4)
    # jitted: run eagerly, the optimiser's init compiles once per parameter shape
    state = jax.jit(lambda p: TrainState.create(params=p, tx=tx))(variables["params"])

    @jax.jit
    def step(state, images_u8, targets):
        def loss_fn(p):
            logits, _ = model.apply({"params": p}, _to_model_input(images_u8))
            return losses.attribute_classifier_loss(logits, targets)

        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads), loss

    state, loss, train_seconds = fit_random_batches(
        step, state, train_x, train_y, steps, batch_size, seed
    )
    final_loss = float(loss)

    variables = {"params": state.params}
    report: dict[str, Any] = {}
    for split, (x, y) in tests.items():
        metrics = evaluate_attributes(variables, x.astype(np.float32) / 127.5 - 1.0, y)
        report[split] = {k: v for k, v in metrics.items() if k not in ("predictions", "features")}
    report.update(
        render_seconds=render_seconds,
        train_seconds=train_seconds,
        final_loss=final_loss,
        steps=steps,
        batch_size=batch_size,
        num_train=num_train,
        num_test=num_test,
        image_size=image_size,
        geometry=geometry,
        model=_model_meta(model),
    )
    return variables, report


# ----------------------------------------------------------------------------- save / load


def _model_meta(model: AttributeClassifier) -> dict:
    return dict(
        widths=list(model.widths),
        layout_width=model.layout_width,
        feature_dim=model.feature_dim,
        image_size=model.image_size,
        norm_groups=model.norm_groups,
    )


def classifier_from_variables(variables: Mapping[str, Any]) -> AttributeClassifier:
    """The AttributeClassifier whose parameter shapes `variables` has.

    widths, layout_width and feature_dim come from the kernels; image_size from the feature
    layer's input size, 2 * widths[-1] + 4 (slots) + (S/16)^2 * layout_width (layout);
    norm_groups is not a shape, the default is assumed.
    """
    p = variables["params"]
    widths = tuple(int(np.shape(p[f"conv{i}"]["kernel"])[-1]) for i in range(len(_STRIDES)))
    layout_width = int(np.shape(p["layout"]["kernel"])[-1])
    in_dim, feature_dim = np.shape(p["features"]["kernel"])
    cells = (in_dim - 2 * widths[-1] - 4) // layout_width
    side = int(round(np.sqrt(cells))) * 16
    return AttributeClassifier(
        widths=widths, layout_width=layout_width, feature_dim=int(feature_dim), image_size=side
    )


def save_classifier(
    path: str | os.PathLike, variables: Mapping[str, Any], report: dict | None = None
) -> None:
    """Writes the classifier variables (and optional training report) to an `.npz` file."""
    flat = traverse_util.flatten_dict(jax.device_get(dict(variables)), sep="/")
    meta = json.dumps({"report": report or {}}, default=float)
    with open(path, "wb") as f:  # an open file keeps np.savez from appending '.npz'
        np.savez(f, __meta__=np.array(meta), **{k: np.asarray(v) for k, v in flat.items()})


def load_classifier(path: str | os.PathLike) -> tuple[dict, dict]:
    """Reads (variables, report) written by `save_classifier`.

    The variable tree is checked against the AttributeClassifier its shapes describe
    (`torch_import.common.WeightMismatchError`, naming the variable, when it does not fit).
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"shapes attribute classifier not found: {name!r}")
    with np.load(name, allow_pickle=False) as f:
        if "__meta__" not in f.files:
            raise ValueError(f"{name!r} is not a saved shapes attribute classifier (no __meta__)")
        meta = json.loads(str(f["__meta__"]))
        flat = {k: f[k] for k in f.files if k != "__meta__"}
    variables = traverse_util.unflatten_dict(flat, sep="/")
    model = classifier_from_variables(variables)
    s = model.image_size
    expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, s, s, 3))))
    check_against(variables, expected, name, "a file written by shapes_classifier.save_classifier")
    return variables, meta["report"]
