"""The matmul weight gradient of models/conv.py equals XLA's convolution gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirrorgan_jax.models import conv
from mirrorgan_jax.models.layers import Conv

CASES = [
    # kernel, stride, padding, C_in, C_out, H (odd sizes and strides that leave pixels over);
    # C_out >= 16 (below it the convolution stays lax's, test_fallbacks_and_policy)
    (3, 1, ((1, 1), (1, 1)), 5, 16, 9),
    (4, 2, ((1, 1), (1, 1)), 3, 17, 16),
    (1, 1, "SAME", 4, 16, 5),
    (3, 2, "SAME", 3, 16, 11),
    (7, 2, ((3, 3), (3, 3)), 3, 16, 20),
    (3, 1, "VALID", 2, 18, 8),
    (3, 2, ((0, 1), (2, 0)), 2, 16, 7),
]


def _grads(module, params, x):
    def loss(p, x):
        return jnp.sum(jnp.sin(module.apply(p, x)))

    return jax.grad(loss, (0, 1))(params, x)


@pytest.mark.parametrize("kernel,stride,padding,cin,cout,size", CASES)
def test_matmul_weight_grad_equals_xla(kernel, stride, padding, cin, cout, size):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, size, size, cin)), jnp.float32)
    kw = dict(features=cout, kernel_size=(kernel, kernel), strides=stride, padding=padding)
    fast, ref = Conv(**kw), nn.Conv(**kw)
    params = ref.init(jax.random.key(0), x)
    with conv.weight_grad_policy("matmul"):
        assert conv.resolved_policy() == "matmul"
        y = fast.apply(params, x)
        (gp, gx) = _grads(fast, params, x)
        jaxpr = str(jax.make_jaxpr(lambda p: _grads(fast, p, x))(params))
    assert "custom_vjp" in jaxpr  # the matmul path was taken, not the fallback
    (rp, rx) = _grads(ref, params, x)
    np.testing.assert_array_equal(y, ref.apply(params, x))  # forward untouched
    np.testing.assert_allclose(gx, rx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gp["params"]["bias"], rp["params"]["bias"], rtol=1e-5)
    np.testing.assert_allclose(gp["params"]["kernel"], rp["params"]["kernel"], rtol=1e-4, atol=1e-5)
    assert not np.allclose(rp["params"]["kernel"], 0)


def test_bfloat16_grad_keeps_dtype_and_value():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 4)), jnp.float32)
    kw = dict(features=6, kernel_size=(3, 3), padding=1, dtype=jnp.bfloat16)
    fast, ref = Conv(**kw), nn.Conv(**kw)
    params = ref.init(jax.random.key(0), x)
    with conv.weight_grad_policy("matmul"):
        gp, _ = _grads(fast, params, x)
    rp, _ = _grads(ref, params, x)
    assert gp["params"]["kernel"].dtype == jnp.float32  # the parameter's dtype
    np.testing.assert_allclose(gp["params"]["kernel"], rp["params"]["kernel"], rtol=0.05, atol=0.05)


def test_fallbacks_and_policy():
    # 1-D conv (a [B, T, C] input), grouped and dilated convs, and fewer than 16 output
    # channels (the 3-channel image heads) go to lax unchanged.
    with conv.weight_grad_policy("matmul"):
        for module, shape in [
            (Conv(16, (1,)), (2, 5, 3)),
            (Conv(16, (3, 3), feature_group_count=2), (2, 6, 6, 4)),
            (Conv(16, (3, 3), kernel_dilation=2), (2, 9, 9, 3)),
            (Conv(3, (3, 3)), (2, 6, 6, 4)),
        ]:
            x = jnp.ones(shape)
            p = module.init(jax.random.key(0), x)
            jaxpr = jax.make_jaxpr(lambda p, m=module, x=x: _grads(m, p, x))(p)
            assert "custom_vjp" not in str(jaxpr)
    with conv.weight_grad_policy("xla"):
        assert conv.resolved_policy() == "xla"
    assert conv.resolved_policy() == ("matmul" if jax.default_backend() == "cpu" else "xla")
    with pytest.raises(ValueError, match="'fast'.*expected one of"):
        with conv.weight_grad_policy("fast"):
            pass


@pytest.mark.parametrize("stride", [1, 2])
def test_im2col_chunks_and_taps_equal_xla(monkeypatch, stride):
    """Both matmul forms, the im2col one also cut into one-image chunks, equal XLA's dW."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 10, 10, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 16)), jnp.float32)
    pads = ((1, 1), (1, 1))

    def f(w_):
        return conv._conv(x, w_, (stride, stride), pads, None)

    y, vjp = jax.vjp(f, w)
    dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    (want,) = vjp(dy)
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    args = (xp, dy, (3, 3), (stride, stride), None)
    whole = conv._weight_grad_im2col(*args)
    monkeypatch.setattr(conv, "_IM2COL_BYTES", 1)  # forces chunks of one image
    chunked = jax.jit(lambda: conv._weight_grad_im2col(*args))()
    jaxpr = str(jax.make_jaxpr(lambda: conv._weight_grad_im2col(*args))())
    assert "scan" in jaxpr or "while" in jaxpr  # the loop over chunks
    for got in (whole, chunked, conv._weight_grad_taps(*args)):
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-5)
