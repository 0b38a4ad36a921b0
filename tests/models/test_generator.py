"""GLAM generator: shapes at the small `shapes` config, attention switches, CA, parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import coco, cub, shapes
from mirrorgan_jax.models.attention import GlobalLocalAttention, word_mask_rows
from mirrorgan_jax.models.generator import (
    ConditioningAugmentation,
    Generator,
    num_up_blocks,
)
from mirrorgan_jax.models.layers import fast_init_key


def count_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def make_generator(m, **overrides) -> Generator:
    kwargs = dict(
        gf_dim=m.gf_dim,
        z_dim=m.z_dim,
        condition_dim=m.condition_dim,
        r_num=m.r_num,
        branch_num=m.branch_num,
        base_size=m.base_size,
        word_attention_mask=m.word_attention_mask,
        sentence_attention_softmax=m.sentence_attention_softmax,
        sentence_attention=m.sentence_attention,
    )
    kwargs.update(overrides)
    return Generator(**kwargs)


def text_inputs(b: int, t: int, nef: int, lengths, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths)
    pad = np.arange(t)[None, :] >= lengths[:, None]
    words = rng.normal(size=(b, t, nef)).astype(np.float32)
    words[pad] = 0.0
    sent = rng.normal(size=(b, nef)).astype(np.float32)
    return sent, words, pad


B, T = 3, 5


@pytest.fixture(scope="module")
def small():
    """The shapes:test model config (base 32 px, 2 branches, gf 4), initialised once."""
    m = shapes.get_config("test").model
    g = make_generator(m)
    sent, words, pad = text_inputs(B, T, m.text_embedding_dim, [5, 3, 2])
    z = np.random.default_rng(1).normal(size=(B, m.z_dim)).astype(np.float32)
    variables = jax.jit(  # an 'rbg' params key: a threefry one compiled for ~10 s
        lambda r, n: g.init(
            {"params": fast_init_key(r), "noise": n}, z, sent, words, pad, train=False
        )
    )(jax.random.key(0), jax.random.key(1))
    run = jax.jit(
        lambda v, noise: g.apply(
            v, z, sent, words, pad, train=True, rngs={"noise": noise}, mutable=["batch_stats"]
        )
    )
    out, new_state = run(variables, jax.random.key(2))
    return dict(m=m, g=g, variables=variables, out=out, new_state=new_state, run=run)


def test_small_config_shapes(small):
    m, out = small["m"], small["out"]
    sizes = [m.base_size * 2**i for i in range(m.branch_num)]
    assert [x.shape for x in out.images] == [(B, s, s, 3) for s in sizes]
    assert [a.shape for a in out.attention] == [(B, s, s, T) for s in sizes[:-1]]
    assert out.mu.shape == out.logvar.shape == out.c_code.shape == (B, m.condition_dim)
    for x in out.images:
        assert np.all(np.abs(np.asarray(x)) <= 1.0)
    np.testing.assert_allclose(np.asarray(out.attention[0]).sum(-1), 1.0, rtol=1e-5)
    h1 = small["variables"]["params"]["h_net1"]
    assert len([k for k in h1 if k.startswith("upsample")]) == num_up_blocks(m.base_size) == 3
    # The first stage ends with gf channels: img_net1's conv reads gf_dim inputs.
    assert small["variables"]["params"]["img_net1"]["conv"]["kernel"].shape == (3, 3, m.gf_dim, 3)


def test_train_updates_batch_stats_and_noise_is_drawn(small):
    old = jax.tree.leaves(small["variables"]["batch_stats"])
    new = jax.tree.leaves(small["new_state"]["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(old, new, strict=True))
    out2, _ = small["run"](small["variables"], jax.random.key(3))
    out1 = small["out"]
    assert not np.allclose(np.asarray(out1.c_code), np.asarray(out2.c_code))
    np.testing.assert_array_equal(np.asarray(out1.mu), np.asarray(out2.mu))


def test_bfloat16_runs(small):
    m = small["m"]
    g = make_generator(m, dtype=jnp.bfloat16)
    sent, words, pad = text_inputs(2, T, m.text_embedding_dim, [5, 2])
    z = jnp.ones((2, m.z_dim))
    out = jax.jit(  # jitted: eager bf16 convolutions compile one by one
        lambda v: g.apply(v, z, sent, words, pad, train=False, eps=jnp.zeros((2, m.condition_dim)))
    )(small["variables"])
    assert out.images[-1].dtype == jnp.bfloat16
    assert all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in out.images)


def test_ablation_without_sentence_attention(small):
    m = small["m"]
    g = make_generator(m, sentence_attention=False)
    sent, words, pad = text_inputs(B, T, m.text_embedding_dim, [5, 3, 2])
    z = jnp.zeros((B, m.z_dim))
    eps = jnp.zeros((B, m.condition_dim))
    shapes_ = jax.eval_shape(
        lambda: g.init(jax.random.key(0), z, sent, words, pad, train=False, eps=eps)
    )
    assert set(shapes_["params"]["h_net2"]["att"]) == {"conv_context"}
    conv = shapes_["params"]["h_net2"]["conv"]["kernel"]
    assert conv.shape == (1, 1, 2 * m.gf_dim, 2 * m.gf_dim)
    # Every other variable is the full model's: reuse those, with a fresh fusion conv.
    full = small["variables"]
    h2 = dict(full["params"]["h_net2"])
    h2["att"] = {"conv_context": h2["att"]["conv_context"]}
    h2["conv"] = {"kernel": 0.1 * jnp.ones(conv.shape)}
    variables = {**full, "params": {**full["params"], "h_net2": h2}}
    out = jax.jit(lambda v: g.apply(v, z, sent, words, pad, train=False, eps=eps))(variables)
    assert out.images[-1].shape == (B, 2 * m.base_size, 2 * m.base_size, 3)
    assert np.all(np.isfinite(np.asarray(out.images[-1])))


def attention_inputs(lengths, hw=4, c=6, nef=10, cdim=5, seed=0):
    b = len(lengths)
    sent, words, pad = text_inputs(b, T, nef, lengths, seed)
    rng = np.random.default_rng(seed + 1)
    h = rng.normal(size=(b, hw, hw, c)).astype(np.float32)
    code = rng.normal(size=(b, cdim)).astype(np.float32)
    return h, code, words, pad


@pytest.fixture(scope="module")
def attention_params():
    h, code, words, pad = attention_inputs([5, 3, 2])
    return GlobalLocalAttention().init(jax.random.key(0), h, code, words, pad)


def run_attention(params, inputs, **fields):
    return GlobalLocalAttention(**fields).apply(params, *inputs)


def test_official_mask_equals_per_sample_when_lengths_are_equal(attention_params):
    same = attention_inputs([3, 3, 3])
    a = run_attention(attention_params, same, word_attention_mask="official")
    b = run_attention(attention_params, same, word_attention_mask="per_sample")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    mixed = attention_inputs([5, 3, 2])
    a = run_attention(attention_params, mixed, word_attention_mask="official")
    b = run_attention(attention_params, mixed, word_attention_mask="per_sample")
    assert not np.allclose(np.asarray(a[0]), np.asarray(b[0]))  # word context
    assert not np.allclose(np.asarray(a[2]), np.asarray(b[2]))  # word attention
    # per_sample never attends to a sample's own pads; official does (the mask-ordering quirk).
    pad = mixed[3]
    att_ps, att_off = np.asarray(b[2]), np.asarray(a[2])
    assert np.all(att_ps[np.broadcast_to(pad[:, None, None, :], att_ps.shape)] == 0.0)
    assert np.any(att_off[np.broadcast_to(pad[:, None, None, :], att_off.shape)] > 0.0)


def test_official_mask_row_order():
    """Row (b, n) gets the mask of sample (b*N + n) % B, n in row-major order."""
    pad = jnp.asarray(np.eye(3, 4, dtype=bool))  # sample b masks word b only
    rows = np.asarray(word_mask_rows(pad, 5, "official"))  # [3, 5, 4]
    for b in range(3):
        for n in range(5):
            np.testing.assert_array_equal(rows[b, n], np.asarray(pad)[(b * 5 + n) % 3])
    with pytest.raises(ValueError, match="word_attention_mask"):
        word_mask_rows(pad, 5, "bogus")


@pytest.mark.parametrize("mode, axes", [("spatial", (1, 2)), ("channel", (3,))])
def test_sentence_softmax_axes(attention_params, mode, axes):
    inputs = attention_inputs([5, 3, 2])
    _, sent_ctx, _, alpha = run_attention(attention_params, inputs, sentence_attention_softmax=mode)
    alpha = np.asarray(alpha)
    np.testing.assert_allclose(alpha.sum(axis=axes), 1.0, rtol=1e-5)
    other = tuple(a for a in (1, 2, 3) if a not in axes)
    assert not np.allclose(alpha.sum(axis=other), 1.0)
    assert sent_ctx.shape == inputs[0].shape


def test_conditioning_augmentation():
    ca = ConditioningAugmentation(4)
    sent = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    eps = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    variables = ca.init(jax.random.key(0), sent, eps)
    assert variables["params"]["fc"]["kernel"].shape == (6, 16)
    c, mu, logvar = ca.apply(variables, sent, eps)
    np.testing.assert_allclose(c, eps * np.exp(0.5 * logvar) + mu, atol=1e-6)
    c2, _, _ = ca.apply(variables, sent, rngs={"noise": jax.random.key(5)})
    assert not np.allclose(c2, c)


def test_conditioning_augmentation_noise_scale():
    sent = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    variables = ConditioningAugmentation(4).init(jax.random.key(0), sent, jnp.zeros((3, 4)))
    rngs = {"noise": jax.random.key(5)}
    c1, mu, logvar = ConditioningAugmentation(4).apply(variables, sent, rngs=rngs)
    half, _, _ = ConditioningAugmentation(4, noise_scale=0.5).apply(variables, sent, rngs=rngs)
    none, _, _ = ConditioningAugmentation(4, noise_scale=0.0).apply(variables, sent, rngs=rngs)
    np.testing.assert_array_equal(none, mu)  # c = mu: the whole code, no noise
    np.testing.assert_allclose(half - mu, 0.5 * (c1 - mu), rtol=1e-5, atol=1e-6)
    assert not np.allclose(c1, mu)
    eps = np.ones((3, 4), np.float32)  # an explicit eps is used as given, unscaled
    c, _, _ = ConditioningAugmentation(4, noise_scale=0.0).apply(variables, sent, eps)
    np.testing.assert_allclose(c, mu + np.exp(0.5 * np.asarray(logvar)), rtol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="base_size"):
        num_up_blocks(48)
    m = shapes.get_config("test").model
    sent, words, pad = text_inputs(2, T, m.text_embedding_dim, [5, 2])
    with pytest.raises(ValueError, match="z_dim"):
        make_generator(m).init(
            jax.random.key(0),
            jnp.zeros((2, m.z_dim + 1)),
            sent,
            words,
            pad,
            train=False,
            eps=jnp.zeros((2, m.condition_dim)),
        )


def test_official_init(small):
    m = small["m"]
    p = small["variables"]["params"]
    k = np.asarray(p["h_net2"]["conv"]["kernel"]).reshape(-1, 2 * m.gf_dim)  # [3gf, 2gf]
    np.testing.assert_allclose(k.T @ k, np.eye(2 * m.gf_dim), atol=1e-5)  # orthogonal columns
    assert np.all(np.asarray(p["ca"]["fc"]["bias"]) == 0.0)
    assert np.all(np.asarray(p["h_net2"]["att"]["linear"]["bias"]) == 0.0)
    gamma = np.asarray(p["h_net1"]["fc_bn"]["scale"])
    assert abs(gamma.mean() - 1.0) < 0.01 and 0.01 < gamma.std() < 0.03
    assert np.all(np.asarray(p["h_net1"]["fc_bn"]["bias"]) == 0.0)
    stats = small["variables"]["batch_stats"]["h_net1"]["fc_bn"]
    assert np.all(np.asarray(stats["mean"]) == 0.0) and np.all(np.asarray(stats["var"]) == 1.0)


@pytest.mark.parametrize(
    "config_module, expected_g, expected_ca",
    [(cub, 7_105_392, 102_800), (coco, 13_853_408, 102_800)],
)
def test_parameter_count(config_module, expected_g, expected_ca):
    m = config_module.get_config().model
    g = make_generator(m)
    nef = m.text_embedding_dim
    shapes_ = jax.eval_shape(
        lambda: g.init(
            jax.random.key(0),
            jnp.zeros((2, m.z_dim)),
            jnp.zeros((2, nef)),
            jnp.zeros((2, 18, nef)),
            jnp.zeros((2, 18), bool),
            train=False,
            eps=jnp.zeros((2, m.condition_dim)),
        )
    )
    assert count_params(shapes_["params"]) == expected_g
    assert count_params(shapes_["params"]["ca"]) == expected_ca
