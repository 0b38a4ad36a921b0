"""Train states: Adam against a PyTorch-formula reference, the generator's EMA (arithmetic,
warm-up, parameters only), and the frozen-subtree optimiser."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mirrorgan_jax.train.state import (
    GeneratorState,
    TrainState,
    stop_gradient_at,
    with_frozen_subtree,
)


def _params():
    rng = np.random.default_rng(0)
    return {
        "text": {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)},
        "image": {
            "trunk": {"w": jnp.asarray(rng.normal(size=(4,)), jnp.float32)},
            "head": {"w": jnp.asarray(rng.normal(size=(2,)), jnp.float32)},
        },
    }


def _grads(seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), _params())


def _torch_adam(params, grads_seq, lr, b1, b2, eps=1e-8):
    """numpy float64 Adam exactly as torch.optim.Adam (bias-corrected moments, eps added to
    the corrected sqrt(v))."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    m = jax.tree.map(np.zeros_like, p)
    v = jax.tree.map(np.zeros_like, p)
    for step, g in enumerate(grads_seq, 1):
        g = jax.tree.map(lambda x: np.asarray(x, np.float64), g)
        m = jax.tree.map(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
        v = jax.tree.map(lambda v_, g_: b2 * v_ + (1 - b2) * g_**2, v, g)
        bc1, bc2 = 1 - b1**step, 1 - b2**step
        p = jax.tree.map(
            lambda p_, m_, v_, bc1=bc1, bc2=bc2: (
                p_ - lr / bc1 * m_ / (np.sqrt(v_) / np.sqrt(bc2) + eps)
            ),
            p,
            m,
            v,
        )
    return p


def test_adam_state_matches_the_torch_formula():
    params = _params()
    state = TrainState.create(params=params, tx=optax.adam(2e-4, b1=0.5, b2=0.999))
    assert state.step.dtype == jnp.int32 and state.batch_stats == {}
    grads = [_grads(s) for s in range(3)]
    for g in grads:
        state = state.apply_gradients(grads=g)
    want = _torch_adam(params, grads, 2e-4, 0.5, 0.999)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), state.params, want
    )
    assert int(state.step) == 3


def test_batch_stats_are_replaced_by_the_step():
    stats = {"bn": {"mean": jnp.zeros(2), "var": jnp.ones(2)}}
    state = TrainState.create(params=_params(), tx=optax.adam(0.1), batch_stats=stats)
    new_stats = {"bn": {"mean": jnp.full(2, 3.0), "var": jnp.full(2, 5.0)}}
    after = state.apply_gradients(grads=_grads(0), batch_stats=new_stats)
    assert after.variables()["batch_stats"] is new_stats
    assert after.variables()["params"] is after.params


@pytest.mark.parametrize("warmup", [False, True])
def test_generator_ema_follows_every_step(warmup):
    """ema <- d * ema + (1 - d) * new params after each optimiser step, with d the official
    constant or the warm-up min(d, (1 + t) / (10 + t)) at step t; BN statistics have no EMA."""
    state = GeneratorState.create(
        params=_params(), tx=optax.sgd(0.1), ema_decay=0.9, ema_warmup=warmup
    )
    jax.tree.map(np.testing.assert_array_equal, state.ema_params, state.params)
    step = jax.jit(lambda s, g, b: s.apply_gradients(grads=g, batch_stats=b))
    ema = state.ema_params
    for t in range(3):
        stats = {"bn": {"mean": jnp.full(2, float(t))}}
        state = step(state, _grads(t), stats)
        d = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
        ema = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * p, ema, state.params)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), state.ema_params, ema
        )
        assert state.ema_variables()["batch_stats"] is state.batch_stats
        np.testing.assert_array_equal(state.batch_stats["bn"]["mean"], float(t))
    assert int(state.step) == 3 and state.ema_decay == 0.9  # static, not a leaf


def test_ema_warmup_schedule():
    official = GeneratorState.create(params=_params(), tx=optax.sgd(0.1))
    warm = official.replace(ema_warmup=True)
    for step in (0, 5, 1700, 100_000):
        assert float(official.ema_decay_at(jnp.int32(step))) == pytest.approx(0.999)
    assert float(warm.ema_decay_at(jnp.int32(0))) == pytest.approx(0.1)
    assert float(warm.ema_decay_at(jnp.int32(1700))) == pytest.approx(1701 / 1710)
    assert float(warm.ema_decay_at(jnp.int32(100_000))) == pytest.approx(0.999)
    # The weight left on the initialisation after 1,700 updates: 18% without warm-up, ~0 with.
    left = lambda s: float(np.prod(np.asarray(s.ema_decay_at(jnp.arange(1700)), np.float64)))
    assert left(official) == pytest.approx(0.999**1700, rel=1e-3) and left(official) > 0.18
    assert left(warm) < 1e-4


def test_frozen_subtree_never_changes_and_the_rest_trains():
    params = _params()
    plain = TrainState.create(params=params, tx=optax.adam(0.01))
    frozen = TrainState.create(
        params=params, tx=with_frozen_subtree(optax.adam(0.01), "image", "trunk")
    )
    for s in range(2):
        plain = plain.apply_gradients(grads=_grads(s))
        frozen = frozen.apply_gradients(grads=_grads(s))
    np.testing.assert_array_equal(
        frozen.params["image"]["trunk"]["w"], params["image"]["trunk"]["w"]
    )
    # Elsewhere the same Adam as without the frozen part.
    for path in (("text",), ("image", "head")):
        a, b = frozen.params, plain.params
        for k in path:
            a, b = a[k], b[k]
        np.testing.assert_array_equal(a["w"], b["w"])
    assert not np.array_equal(frozen.params["text"]["w"], params["text"]["w"])


def test_stop_gradient_at_blocks_only_that_subtree():
    def loss(p):
        p = stop_gradient_at(p, "image", "trunk")
        return sum(jnp.sum(x**2) for x in jax.tree.leaves(p))

    grads = jax.grad(loss)(_params())
    np.testing.assert_array_equal(grads["image"]["trunk"]["w"], 0.0)
    assert np.all(np.asarray(grads["image"]["head"]["w"]) != 0.0)
    assert np.all(np.asarray(grads["text"]["w"]) != 0.0)
