"""Building blocks shared by every model: PyTorch-exact BatchNorm, LSTM, GLU, initialisers.

All tensors are NHWC (images) or [B, T, D] (sequences). Each block reproduces the PyTorch
semantics the official code relies on (docs/official-differences.md, "Networks"), so that
weights converted from the official state dicts give the same numbers.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mirrorgan_jax.models.conv import conv_general_dilated

Array = jax.Array
Dtype = Any

# The official `weights_init` (miscc/utils.py): orthogonal conv/linear weights, zero bias,
# BatchNorm gamma ~ N(1, 0.02), beta = 0.
orthogonal_init = nn.initializers.orthogonal(scale=1.0)

# `nn.Conv` whose weight gradient runs as matmuls on XLA:CPU (models/conv.py); same parameters,
# same forward pass, same module name.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def fast_init_key(rng: Array) -> Array:
    """An 'rbg' key derived from `rng`, for initialisers only (use it inside the jitted init).

    Threefry random bits compile slowly on XLA:CPU (seconds per dozen initialisers); the
    RngBitGenerator-based 'rbg' keys compile several times faster. Initialisation runs
    unsharded, so the result is deterministic for a given seed and backend. Training steps keep
    the default (sharding-invariant) threefry keys.
    """
    data = jax.random.bits(rng, (4,), jnp.uint32)
    return jax.random.wrap_key_data(data, impl="rbg")


def jit_init(init, rng: Array, *args):
    """`init(fast_init_key(rng), *args)` as one jitted program: one compile instead of one per
    initialiser, with the fast key (e.g. `jit_init(model.init, key, dummy_input)`)."""
    return jax.jit(lambda r, *a: init(fast_init_key(r), *a))(rng, *args)


def bn_scale_init(key: Array, shape, dtype=jnp.float32) -> Array:
    """BatchNorm gamma ~ N(1, 0.02), as the official `weights_init`."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def glu(x: Array, axis: int = -1) -> Array:
    """Gated linear unit: first half * sigmoid(second half) along `axis` (channels)."""
    a, b = jnp.split(x, 2, axis=axis)
    return a * jax.nn.sigmoid(b)


def upsample_nearest2x(x: Array) -> Array:
    """Nearest-neighbour x2 upsampling of an NHWC tensor."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def leaky_relu(x: Array) -> Array:
    return nn.leaky_relu(x, negative_slope=0.2)


class TorchBatchNorm(nn.Module):
    """BatchNorm with PyTorch semantics over every axis but the last.

    Train mode normalises with the batch mean and the biased batch variance and updates the
    running statistics as PyTorch does: `running = (1 - momentum) * running + momentum * stat`,
    with the *unbiased* batch variance. Statistics are computed in float32 whatever the input
    dtype. Under `jax.jit` with the batch sharded over devices, the reductions are global, so
    N devices compute the statistics of the whole batch.

    Attributes:
      momentum: PyTorch momentum (0.1 by default; 0.01 for STREAM's head).
      epsilon: added to the variance (PyTorch 1e-5).
      scale_init: gamma initialiser (the official N(1, 0.02) by default).
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    scale_init: Callable[..., Array] = bn_scale_init
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        axes = tuple(range(x.ndim - 1))
        xf = x.astype(jnp.float32)
        if train:
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)
            if not self.is_initializing():
                n = 1
                for a in axes:
                    n *= x.shape[a]
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y.astype(self.dtype or x.dtype)


class LSTMLayer(nn.Module):
    """One direction of a PyTorch `nn.LSTM` layer (gate order i, f, g, o; two biases).

    Parameters: `ih_kernel` [in, 4H], `ih_bias` [4H], `hh_kernel` [H, 4H], `hh_bias` [4H]
    (PyTorch's `weight_ih_l0` transposed, etc.). Padded steps (mask False) keep the state and
    output zeros, which equals PyTorch's packed-sequence behaviour. With `reverse=True` each
    sequence is read backwards from its own last valid step, as the backward direction of a
    packed bidirectional LSTM does.
    """

    hidden: int
    reverse: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, xs: Array, mask: Array, initial: tuple[Array, Array] | None = None):
        """xs: [B, T, D]; mask: [B, T] bool (True = valid). Returns (outputs [B, T, H], (h, c))."""
        b, t, d = xs.shape
        h4 = 4 * self.hidden
        init = torch_uniform(1.0 / (self.hidden**0.5))  # PyTorch's nn.LSTM init
        ih_kernel = self.param("ih_kernel", init, (d, h4))
        ih_bias = self.param("ih_bias", init, (h4,))
        hh_kernel = self.param("hh_kernel", init, (self.hidden, h4))
        hh_bias = self.param("hh_bias", init, (h4,))
        dtype = self.dtype or xs.dtype
        lengths = jnp.sum(mask.astype(jnp.int32), axis=1)  # [B]
        if self.reverse:
            xs = reverse_padded(xs, lengths)
        # [B, T, 4H]: the input projection of every step at once.
        gates_x = jnp.einsum("btd,dg->btg", xs.astype(dtype), ih_kernel.astype(dtype)) + ih_bias
        if initial is None:
            h0 = jnp.zeros((b, self.hidden), jnp.float32)
            c0 = jnp.zeros((b, self.hidden), jnp.float32)
        else:
            h0, c0 = initial
        hh_k = hh_kernel.astype(dtype)

        def step(carry, inp):
            h, c = carry
            gx, m = inp  # [B, 4H], [B]
            g = gx.astype(jnp.float32) + (h.astype(dtype) @ hh_k).astype(jnp.float32) + hh_bias
            i, f, gg, o = jnp.split(g, 4, axis=-1)
            c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
            h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
            m = m[:, None]
            h = jnp.where(m, h_new, h)
            c = jnp.where(m, c_new, c)
            return (h, c), jnp.where(m, h_new, 0.0)

        (h, c), out = jax.lax.scan(
            step, (h0, c0), (jnp.swapaxes(gates_x, 0, 1), jnp.swapaxes(mask, 0, 1))
        )
        out = jnp.swapaxes(out, 0, 1)  # [B, T, H]
        if self.reverse:
            out = reverse_padded(out, lengths)
        return out.astype(dtype), (h, c)


def reverse_padded(x: Array, lengths: Array) -> Array:
    """Reverse each row of x [B, T, ...] within its first `lengths[b]` steps; pads stay put."""
    t = x.shape[1]
    idx = jnp.arange(t)[None, :]  # [1, T]
    rev = lengths[:, None] - 1 - idx
    src = jnp.where(rev >= 0, rev, idx)  # [B, T]
    return jnp.take_along_axis(x, src.reshape(src.shape + (1,) * (x.ndim - 2)), axis=1)


def length_mask(lengths: Array, t: int) -> Array:
    """[B, T] bool mask, True at the first lengths[b] positions."""
    return jnp.arange(t)[None, :] < lengths[:, None]


# ----------------------------------------------------------------------------- resize


def _bilinear_taps(in_size: int, out_size: int, align_corners: bool):
    """Source indices (i0, i1) and weights (l0, l1) of PyTorch's bilinear resize along one axis.

    Computed in float32 exactly as ATen's `area_pixel_compute_source_index` (for a resize given
    by output size): align_corners=False: src = max(in/out * (dst + 0.5) - 0.5, 0);
    align_corners=True: src = (in-1)/(out-1) * dst.
    """
    dst = np.arange(out_size, dtype=np.float32)
    if align_corners:
        scale = np.float32(in_size - 1) / np.float32(out_size - 1) if out_size > 1 else 0.0
        src = np.float32(scale) * dst
    else:
        scale = np.float32(in_size) / np.float32(out_size)
        src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    l1 = (src - i0.astype(np.float32)).astype(np.float32)
    l0 = (np.float32(1.0) - l1).astype(np.float32)
    return i0, i1, l0, l1


def resize_bilinear(x: Array, size: tuple[int, int], align_corners: bool = False) -> Array:
    """Bilinear resize of NHWC `x` to `size` = (H, W), as PyTorch `F.interpolate` /
    `nn.Upsample(size, mode='bilinear', align_corners=...)`: no antialiasing when downsampling
    (unlike `jax.image.resize`'s default). Returns `x` unchanged when it already has that size.
    """
    if x.ndim != 4:
        raise ValueError(f"resize_bilinear expects NHWC images [B, H, W, C]; got shape {x.shape}")
    out_h, out_w = size
    if (x.shape[1], x.shape[2]) == (out_h, out_w):
        return x
    dtype = x.dtype
    # Along W first, then H, as ATen's kernel nests the two interpolations.
    i0, i1, l0, l1 = _bilinear_taps(x.shape[2], out_w, align_corners)
    x = x[:, :, i0, :] * l0[None, None, :, None] + x[:, :, i1, :] * l1[None, None, :, None]
    i0, i1, l0, l1 = _bilinear_taps(x.shape[1], out_h, align_corners)
    x = x[:, i0, :, :] * l0[None, :, None, None] + x[:, i1, :, :] * l1[None, :, None, None]
    return x.astype(dtype)


# ----------------------------------------------------------------------------- init helpers


def torch_uniform(bound: float):
    """U(-bound, bound) initializer."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# PyTorch's default nn.Linear weight init (kaiming_uniform, a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_linear(
    features: int, fan_in: int, name: str | None = None, dtype: Dtype | None = None
) -> nn.Dense:
    """nn.Dense with PyTorch's default nn.Linear initialisation (weight and bias)."""
    return nn.Dense(
        features,
        kernel_init=torch_linear_kernel_init,
        bias_init=torch_uniform(1.0 / np.sqrt(fan_in)),
        dtype=dtype,
        name=name,
    )
