"""STEM text encoder: packed-BiLSTM semantics, dropout, parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import coco, cub
from mirrorgan_jax.models.text_encoder import TextEncoder

N_WORDS, EMB, NEF, T = 20, 12, 8, 6


def count_params(variables) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


@pytest.fixture(scope="module")
def encoder():
    model = TextEncoder(N_WORDS, EMB, NEF)
    rng = np.random.default_rng(0)
    lengths = np.array([6, 4, 1], np.int32)
    tokens = rng.integers(1, N_WORDS, size=(3, T)).astype(np.int32)
    tokens[np.arange(T)[None, :] >= lengths[:, None]] = 0
    variables = model.init(jax.random.key(0), tokens, lengths)
    run = jax.jit(lambda v, tok, ln: model.apply(v, tok, ln, train=False))
    words, sent = run(variables, tokens, lengths)
    return dict(
        model=model,
        variables=variables,
        run=run,
        tokens=tokens,
        lengths=lengths,
        words=np.asarray(words),
        sent=np.asarray(sent),
    )


def test_shapes_and_zero_pads(encoder):
    words, sent, lengths = encoder["words"], encoder["sent"], encoder["lengths"]
    assert words.shape == (3, T, NEF) and sent.shape == (3, NEF)
    pad = np.arange(T)[None, :] >= lengths[:, None]
    assert np.all(words[pad] == 0.0)
    assert np.all(np.abs(words[~pad]).sum(-1) > 0)


def test_sent_emb_is_final_states(encoder):
    """Forward final = forward output at the last valid step; backward final = backward output
    at step 0 (it reads each caption from its own end)."""
    words, sent, lengths = encoder["words"], encoder["sent"], encoder["lengths"]
    h = NEF // 2
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(sent[b, :h], words[b, n - 1, :h], rtol=1e-6)
        np.testing.assert_allclose(sent[b, h:], words[b, 0, h:], rtol=1e-6)


def test_pad_tokens_and_longer_padding_do_not_matter(encoder):
    tokens, lengths = encoder["tokens"].copy(), encoder["lengths"]
    pad = np.arange(T)[None, :] >= lengths[:, None]
    tokens[pad] = 7  # garbage beyond each caption's length
    words, sent = encoder["run"](encoder["variables"], tokens, lengths)
    np.testing.assert_array_equal(np.asarray(words), encoder["words"])
    np.testing.assert_array_equal(np.asarray(sent), encoder["sent"])
    # Each caption encoded alone (no batch padding) gives the same numbers.
    model, variables = encoder["model"], encoder["variables"]
    for b, n in enumerate(lengths):
        w1, s1 = model.apply(variables, encoder["tokens"][b : b + 1, :n], lengths[b : b + 1])
        np.testing.assert_allclose(np.asarray(w1[0]), encoder["words"][b, :n], atol=1e-6)
        np.testing.assert_allclose(np.asarray(s1[0]), encoder["sent"][b], atol=1e-6)


def test_dropout_only_in_train_mode(encoder):
    model, variables = encoder["model"], encoder["variables"]
    tokens, lengths = encoder["tokens"], encoder["lengths"]
    w_a, _ = model.apply(
        variables, tokens, lengths, train=True, rngs={"dropout": jax.random.key(1)}
    )
    w_b, _ = model.apply(
        variables, tokens, lengths, train=True, rngs={"dropout": jax.random.key(2)}
    )
    assert not np.allclose(np.asarray(w_a), np.asarray(w_b))
    pad = np.arange(T)[None, :] >= lengths[:, None]
    assert np.all(np.asarray(w_a)[pad] == 0.0)


def test_embedding_init_range(encoder):
    emb = np.asarray(encoder["variables"]["params"]["embedding"]["embedding"])
    assert emb.shape == (N_WORDS, EMB)
    assert emb.min() >= -0.1 and emb.max() <= 0.1 and emb.std() > 0.03


def test_odd_hidden_dim_rejected():
    with pytest.raises(ValueError, match="hidden_dim must be even"):
        TextEncoder(5, 4, 7).init(
            jax.random.key(0), jnp.ones((1, 3), jnp.int32), jnp.ones(1, jnp.int32)
        )


@pytest.mark.parametrize("config_module, expected", [(cub, 2_075_320), (coco, 8_629_420)])
def test_parameter_count(config_module, expected):
    m = config_module.get_config().model
    model = TextEncoder(m.n_words, m.word_embedding_dim, m.text_embedding_dim)
    tokens = jnp.ones((1, 4), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens, jnp.ones((1,), jnp.int32))
    assert count_params(shapes) == expected
