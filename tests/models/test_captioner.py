"""STREAM captioner: parameter counts (the official ones), shapes, teacher forcing and greedy
decoding (the caption loss is in test_losses.py). Only tiny models run forward here; the
full-size ResNet-152 is checked with jax.eval_shape only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shapes
from mirrorgan_jax.models.captioner import CaptionCNN, CaptionRNN
from mirrorgan_jax.models.resnet import RESNET_SPECS, ResNetSpec, resnet_spec


def n_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def abstract_cnn(backbone: str, embed: int):
    model = CaptionCNN(backbone, embed_size=embed, image_size=64)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), False))


def abstract_rnn(n_words: int, embed: int, hidden: int):
    model = CaptionRNN(n_words, embed, hidden)
    return jax.eval_shape(
        lambda: model.init(
            jax.random.key(0),
            jnp.zeros((1, embed)),
            jnp.zeros((1, 3), jnp.int32),
            jnp.ones((1,), jnp.int32),
        )
    )


# ----------------------------------------------------------------------------- counts


def test_caption_cnn_resnet152_param_count():
    v = abstract_cnn("resnet152", 256)
    assert n_params(v["params"]) == 58_668_864
    assert n_params(v["params"]["resnet"]) == 58_143_808
    assert n_params(v["params"]["linear"]) + n_params(v["params"]["bn"]) == 525_056
    assert RESNET_SPECS["resnet152"].out_features == 2048


@pytest.mark.parametrize("n_words, expected", [(5450, 5_768_010), (27297, 22_568_353)])
def test_caption_rnn_param_count(n_words, expected):
    v = abstract_rnn(n_words, 256, 512)
    assert n_params(v["params"]) == expected
    assert set(v) == {"params"}


def test_resnet_specs():
    assert resnet_spec("resnet_1111") == ResNetSpec("bottleneck", (1, 1, 1, 1), 64)
    assert resnet_spec("resnet_tiny").out_features == 128
    assert resnet_spec("resnet18").out_features == 512
    spec = ResNetSpec("bottleneck", (1, 2, 1, 1), 32)
    assert resnet_spec(spec.name) == spec
    with pytest.raises(ValueError, match="unknown ResNet backbone"):
        resnet_spec("resnet_9000")


# ----------------------------------------------------------------------------- tiny forwards


def random_variables(abstract, seed: int):
    """Concrete variables for an abstract (eval_shape) tree, drawn with numpy: kernels
    N(0, 2/fan_in), BN scale/var 1 +- 0.1, biases/means N(0, 0.1^2), embeddings N(0, 1).
    (Avoids compiling `module.init`, whose RNG code dominates the compile time on CPU.)"""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(path[-1].key)
        shape = leaf.shape
        if name.endswith("kernel"):
            fan_in = int(np.prod(shape[:-1]))
            x = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif name in ("scale", "var"):
            x = rng.uniform(0.9, 1.1, shape)
        elif name == "embedding":
            x = rng.normal(0.0, 1.0, shape)
        else:
            x = rng.normal(0.0, 0.1, shape)
        return jnp.asarray(x, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


@pytest.fixture(scope="module")
def tiny():
    """The `shapes:test` STREAM nets with random variables, and one jitted CNN run."""
    m = shapes.get_config("test").model
    cnn = CaptionCNN(m.stream_backbone, m.stream_embed_size, m.stream_image_size)
    rnn = CaptionRNN(23, embed_size=m.stream_embed_size, hidden_size=2 * m.stream_hidden_size)
    images = jax.random.uniform(jax.random.key(0), (3, 48, 48, 3), minval=-1.0, maxval=1.0)
    cnn_vars = random_variables(
        jax.eval_shape(lambda: cnn.init(jax.random.key(1), images, False)), 1
    )
    tokens = jnp.asarray([[3, 5, 7, 9, 2, 4], [8, 1, 6, 0, 0, 0], [4, 4, 0, 0, 0, 0]], jnp.int32)
    lengths = jnp.asarray([6, 3, 2], jnp.int32)
    feats0 = jnp.zeros((3, cnn.embed_size))
    rnn_vars = random_variables(
        jax.eval_shape(lambda: rnn.init(jax.random.key(2), feats0, tokens, lengths)), 2
    )
    bf16 = cnn.clone(dtype=jnp.bfloat16)

    def eval_both(mod, x):
        pooled = mod.backbone_features(x, False)
        return pooled, mod.bn(mod.linear(pooled), False)

    @jax.jit
    def run(v, x):
        out = {}
        out["pooled"], out["feats"] = cnn.apply(v, x, method=eval_both)
        (out["train_feats"], out["head_in"]), out["train_updates"] = cnn.apply(
            v,
            x,
            method=lambda mod, x: (mod(x, True), mod.linear(mod.backbone_features(x, True))),
            mutable=["batch_stats"],
        )
        _, out["frozen_updates"] = cnn.apply(v, x, True, False, mutable=["batch_stats"])
        out["bf16_feats"] = bf16.apply(v, x, False)
        _, out["bf16_updates"] = bf16.apply(v, x, True, mutable=["batch_stats"])
        return out

    return dict(
        cnn=cnn,
        rnn=rnn,
        images=images,
        cnn_vars=cnn_vars,
        rnn_vars=rnn_vars,
        out=run(cnn_vars, images),
        tokens=tokens,
        lengths=lengths,
        logits_fn=jax.jit(lambda v, f, t, n: rnn.apply(v, f, t, n)),
    )


def test_tiny_cnn_shapes_and_train_mode(tiny):
    cnn, v, out = tiny["cnn"], tiny["cnn_vars"], tiny["out"]
    assert out["feats"].shape == (3, cnn.embed_size) and out["feats"].dtype == jnp.float32
    assert out["pooled"].shape == (3, resnet_spec(cnn.backbone).out_features)
    assert out["train_feats"].shape == (3, cnn.embed_size)
    stats = out["train_updates"]["batch_stats"]
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, v["batch_stats"])
    assert all(jax.tree.leaves(changed))
    # Head BN momentum 0.01: the running mean moves 1% of the way to the batch mean.
    expected = 0.99 * v["batch_stats"]["bn"]["mean"] + 0.01 * jnp.mean(out["head_in"], axis=0)
    np.testing.assert_allclose(stats["bn"]["mean"], expected, rtol=1e-5, atol=1e-6)
    # backbone_train=False keeps the backbone statistics while the head BN trains.
    frozen = out["frozen_updates"]["batch_stats"]
    same = jax.tree.map(
        lambda a, b: bool(jnp.all(a == b)), frozen["resnet"], v["batch_stats"]["resnet"]
    )
    assert all(jax.tree.leaves(same))
    assert bool(jnp.any(frozen["bn"]["mean"] != v["batch_stats"]["bn"]["mean"]))


def test_tiny_cnn_bfloat16(tiny):
    out = tiny["out"]
    assert out["bf16_feats"].dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(out["bf16_updates"]))
    ref = out["feats"]
    err = float(jnp.max(jnp.abs(out["bf16_feats"] - ref)) / jnp.max(jnp.abs(ref)))
    assert err < 0.1


def test_rnn_teacher_forcing_is_causal(tiny):
    rnn, v, tokens, lengths = (tiny[k] for k in ("rnn", "rnn_vars", "tokens", "lengths"))
    feats, logits_fn = tiny["out"]["feats"], tiny["logits_fn"]
    logits = logits_fn(v, feats, tokens, lengths)
    assert logits.shape == (3, tokens.shape[1], rnn.n_words)
    # Changing token k changes only logits after step k (step k+1 reads E(w_k)).
    k = 2
    changed = logits_fn(v, feats, tokens.at[0, k].set(11), lengths)
    np.testing.assert_array_equal(changed[0, : k + 1], logits[0, : k + 1])
    assert jnp.max(jnp.abs(changed[0, k + 1 :] - logits[0, k + 1 :])) > 0
    # Padded steps do not influence the valid ones; the last valid token is never read.
    other = tokens.at[1, 2:].set(13)
    np.testing.assert_allclose(logits_fn(v, feats, other, lengths)[1, :3], logits[1, :3], atol=1e-6)


def test_greedy_decode(tiny):
    rnn, v, feats = tiny["rnn"], tiny["rnn_vars"], tiny["out"]["feats"]
    max_len = tiny["tokens"].shape[1]
    ids = jax.jit(lambda v, f: rnn.apply(v, f, max_len, method=CaptionRNN.greedy_decode))(v, feats)
    assert ids.shape == (3, max_len) and ids.dtype == jnp.int32
    assert jnp.all((ids >= 0) & (ids < rnn.n_words))
    # Teacher forcing on the decoded ids reproduces them (both paths share the same LSTM steps).
    full = jnp.full((3,), max_len, jnp.int32)
    logits = tiny["logits_fn"](v, feats, ids, full)
    np.testing.assert_array_equal(jnp.argmax(logits, axis=-1), ids)


def test_rnn_rejects_wrong_feature_size(tiny):
    rnn, tokens, lengths = tiny["rnn"], tiny["tokens"], tiny["lengths"]
    with pytest.raises(ValueError, match="features shape"):
        rnn.apply(tiny["rnn_vars"], jnp.zeros((3, rnn.embed_size + 1)), tokens, lengths)
