"""Train states: EMA arithmetic, Adam vs a PyTorch-formula reference, clipping, lr control."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mirrorgan_jax import train_state as ts


def _variables():
    rng = np.random.default_rng(0)
    return {
        "params": {
            "text_encoder": {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)},
            "image_encoder": {"w": jnp.asarray(rng.normal(size=(4,)), jnp.float32)},
        },
        "batch_stats": {"bn": {"mean": jnp.zeros(2), "var": jnp.ones(2)}},
    }


def _grads(scale_text, scale_image, seed):
    rng = np.random.default_rng(seed)
    return {
        "text_encoder": {"w": jnp.asarray(scale_text * rng.normal(size=(3, 2)), jnp.float32)},
        "image_encoder": {"w": jnp.asarray(scale_image * rng.normal(size=(4,)), jnp.float32)},
    }


def _torch_adam(params, grads_seq, lr, b1, b2, eps=1e-8, clip=None, clip_keys=()):
    """numpy Adam exactly as torch.optim.Adam (+ torch clip_grad_norm_ on `clip_keys`)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for step, g in enumerate(grads_seq, 1):
        g = {k: np.asarray(x, np.float64) for k, x in g.items()}
        if clip is not None:
            norm = np.sqrt(sum(np.sum(g[k] ** 2) for k in clip_keys))
            coef = clip / (norm + 1e-6)
            if coef < 1:
                for k in clip_keys:
                    g[k] = g[k] * coef
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            bc1, bc2 = 1 - b1**step, 1 - b2**step
            denom = np.sqrt(v[k]) / np.sqrt(bc2) + eps
            p[k] = p[k] - lr / bc1 * m[k] / denom
    return p


def _flat(tree):
    return {k: v["w"] for k, v in tree.items()}


def test_adam_matches_torch_formula_and_optax():
    v = _variables()
    st = ts.create_train_state(lambda *a: None, v, learning_rate=2e-4, b1=0.5, b2=0.999)
    ref_opt = optax.adam(2e-4, b1=0.5, b2=0.999)
    ref_params, ref_state = v["params"], ref_opt.init(v["params"])
    grads = [_grads(1.0, 3.0, s) for s in range(3)]
    for g in grads:
        st = st.apply_gradients(grads=g)
        upd, ref_state = ref_opt.update(g, ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, upd)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), st.params, ref_params)
    torch_ref = _torch_adam(_flat(v["params"]), [_flat(g) for g in grads], 2e-4, 0.5, 0.999)
    for k, w in _flat(st.params).items():
        np.testing.assert_allclose(w, torch_ref[k], rtol=1e-5, atol=1e-7)
    assert int(st.step) == 3
    assert st.variables()["batch_stats"] is st.batch_stats


def test_masked_grad_clip_matches_torch_clip_grad_norm():
    v = _variables()
    mask = {"text_encoder": True, "image_encoder": False}
    st = ts.create_train_state(
        lambda *a: None, v, learning_rate=0.002, grad_clip=0.25, clip_mask=mask
    )
    plain = ts.create_train_state(lambda *a: None, v, learning_rate=0.002)
    # Step 1 clipped (norm ~ 10 > 0.25), step 2 not (norm ~ 0.05); image grads never clipped.
    grads = [_grads(5.0, 50.0, 0), _grads(0.02, 50.0, 1)]
    for g in grads:
        st = st.apply_gradients(grads=g)
        plain = plain.apply_gradients(grads=g)
    ref = _torch_adam(
        _flat(v["params"]),
        [_flat(g) for g in grads],
        0.002,
        0.5,
        0.999,
        clip=0.25,
        clip_keys=("text_encoder",),
    )
    got = _flat(st.params)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-7)
    assert not np.allclose(got["text_encoder"], _flat(plain.params)["text_encoder"], atol=1e-6)
    np.testing.assert_allclose(got["image_encoder"], _flat(plain.params)["image_encoder"])
    # The clip itself: global norm of the clipped subtree is exactly the threshold.
    clip = optax.masked(optax.clip_by_global_norm(0.25), mask)
    out, _ = clip.update(grads[0], clip.init(grads[0]))
    np.testing.assert_allclose(optax.tree.norm(out["text_encoder"]), 0.25, rtol=1e-6)


def test_generator_ema_arithmetic_params_only():
    v = _variables()
    st = ts.create_generator_state(lambda *a: None, v, learning_rate=0.1, ema_decay=0.9)
    p0 = st.params
    jax.tree.map(np.testing.assert_array_equal, st.ema_params, p0)
    new_stats = {"bn": {"mean": jnp.full(2, 3.0), "var": jnp.full(2, 5.0)}}
    st1 = st.apply_gradients(grads=_grads(1.0, 1.0, 0), batch_stats=new_stats)
    expect = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, p0, st1.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), st1.ema_params, expect)
    # BN statistics are replaced, not averaged, and have no EMA copy.
    assert st1.ema_variables()["batch_stats"] is st1.batch_stats
    np.testing.assert_array_equal(st1.batch_stats["bn"]["mean"], 3.0)
    assert jax.tree.structure(st1.ema_params) == jax.tree.structure(st1.params)
    st2 = st1.apply_gradients(grads=_grads(1.0, 1.0, 1))
    expect2 = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, st1.ema_params, st2.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), st2.ema_params, expect2)
    # The EMA decay is static (not a leaf), the whole state jits and is a pytree.
    step = jax.jit(lambda s, g: s.apply_gradients(grads=g))
    st3 = step(st2, _grads(1.0, 1.0, 2))
    assert st3.ema_decay == 0.9 and int(st3.step) == 3
    with pytest.raises(ValueError, match="ema_decay"):
        ts.create_generator_state(lambda *a: None, v, learning_rate=0.1, ema_decay=1.0)


def test_learning_rate_control_and_reset():
    v = _variables()
    st = ts.create_train_state(lambda *a: None, v, learning_rate=0.01)
    st = st.apply_gradients(grads=_grads(1.0, 1.0, 0))
    assert float(ts.learning_rate(st)) == pytest.approx(0.01)
    frozen = ts.set_learning_rate(st, 0.0)
    after = frozen.apply_gradients(grads=_grads(1.0, 1.0, 1))
    jax.tree.map(np.testing.assert_array_equal, after.params, frozen.params)
    # reset: zero moments and count, lr kept, params and step kept.
    r = ts.reset_optimizer(ts.set_learning_rate(st, 0.005))
    assert float(ts.learning_rate(r)) == pytest.approx(0.005)
    adam_state = r.opt_state.inner_state[0]
    assert int(adam_state.count) == 0
    for leaf in jax.tree.leaves(adam_state.mu):
        np.testing.assert_array_equal(leaf, 0.0)
    assert int(r.step) == int(st.step)
    # After a reset the next step equals a brand-new optimiser's first step.
    fresh = ts.create_train_state(lambda *a: None, {"params": st.params}, learning_rate=0.005)
    g = _grads(1.0, 1.0, 2)
    jax.tree.map(
        np.testing.assert_allclose,
        r.apply_gradients(grads=g).params,
        fresh.apply_gradients(grads=g).params,
    )
    with pytest.raises(ValueError, match="unexpected variable collections"):
        ts.create_train_state(lambda *a: None, {"params": {}, "cache": {}}, learning_rate=0.1)


def test_damsm_learning_rate_schedule():
    base, lr_min = 0.002, 0.0002
    # The official loop, literally.
    lr, official = base, []
    for _ in range(200):
        official.append(lr)
        if lr > base / 10.0:
            lr *= 0.98
    got = [ts.damsm_learning_rate(e, base, 0.98, lr_min) for e in range(200)]
    assert got == official
    assert got[-1] <= lr_min < got[0] and got[-1] == got[150]
    st = ts.create_train_state(lambda *a: None, _variables(), learning_rate=base)
    st = st.apply_gradients(grads=_grads(1.0, 1.0, 0))
    st5 = ts.start_damsm_epoch(st, 5, base, 0.98, lr_min)
    assert float(ts.learning_rate(st5)) == pytest.approx(official[5])
    assert int(st5.opt_state.inner_state[0].count) == 0
    kept = ts.start_damsm_epoch(st, 5, base, 0.98, lr_min, reset_moments=False)
    assert int(kept.opt_state.inner_state[0].count) == 1
