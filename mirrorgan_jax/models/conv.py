"""2-D convolution whose weight gradient is computed with matmuls: the fast path on XLA:CPU.

XLA:CPU computes a convolution's weight gradient several times slower per FLOP than its
forward pass or its input gradient (docs/performance.md; measure it with
`python -m mirrorgan_jax.tools.benchmark --config=configs/shapes.py --what=conv`). For an NHWC
input x, HWIO kernel W (kh x kw) and output gradient dy, the weight gradient is

    dW[i, j] = sum_{b, p, q} x_pad[b, p * sh + i, q * sw + j, :]^T  dy[b, p, q, :]

Stride 1: the kh*kw strided slices of x side by side (im2col, a few images at a time) make one
(kh*kw*C_in x N) @ (N x C_out) matmul per chunk. Strided: a loop over the taps, one
(C_in x N) @ (N x C_out) matmul each. Below 16 output channels (the 3-channel image heads) XLA's
own weight gradient is faster and is kept. The forward pass and the input gradient stay XLA's.
`conv_general_dilated` is a drop-in for `lax.conv_general_dilated` in
`flax.linen.Conv(conv_general_dilated=...)`; it takes the matmul path for 2-D, NHWC/HWIO,
ungrouped, undilated convolutions when the policy says so and falls back to
`lax.conv_general_dilated` otherwise. The policy is "auto" (matmul on the CPU backend, XLA's own
on GPU/TPU, where its weight gradient is fast), "matmul" or "xla"; it is read at trace time, so
set it with `weight_grad_policy(...)` before a function is first jitted.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

POLICIES = ("auto", "matmul", "xla")
_policy = "auto"


@contextlib.contextmanager
def weight_grad_policy(policy: str) -> Iterator[None]:
    """Within the block, trace convolutions with this weight-gradient policy."""
    global _policy
    if policy not in POLICIES:
        raise ValueError(f"conv weight-gradient policy {policy!r}; expected one of {POLICIES}")
    previous, _policy = _policy, policy
    try:
        yield
    finally:
        _policy = previous


def resolved_policy() -> str:
    """ "matmul" or "xla": what convolutions traced now use."""
    if _policy == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "xla"
    return _policy


def _is_nhwc_hwio(dimension_numbers, ndim: int) -> bool:
    if ndim != 4:
        return False
    if dimension_numbers is None:
        return False  # lax's default is NCHW/OIHW
    dn = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), dimension_numbers)
    return dn == lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, strides, padding, precision):
    return lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=_NHWC, precision=precision
    )


# Largest im2col block (bytes) built at once by the weight gradient; the batch is cut into
# chunks of whole images to stay under it (one image when a single image exceeds it). Larger
# blocks ran no faster and raise the step's temporary memory (docs/performance.md).
_IM2COL_BYTES = 16 * 2**20


def _weight_grad_im2col(xp, dy, kernel_hw, strides, precision):
    """dW [kh*kw*C_in, C_out] as one matmul of an im2col block with dy, per batch chunk.

    xp is the padded input [B, Hp, Wp, C_in]. The block holds the kh*kw strided input slices
    side by side ([c, Ho, Wo, kh*kw*C_in]), so each chunk is a single
    (kh*kw*C_in x c*Ho*Wo) @ (c*Ho*Wo x C_out) product. Chunks of whole images keep the block
    under _IM2COL_BYTES; they run in a loop that sums their products."""
    b, ho, wo, cout = dy.shape
    sh, sw = strides
    kh, kw = kernel_hw
    cin = xp.shape[3]
    per_image = ho * wo * kh * kw * cin * xp.dtype.itemsize
    fits = [c for c in range(1, b + 1) if b % c == 0 and c * per_image <= _IM2COL_BYTES]
    chunk = max(fits or [1])

    def product(xs, ds):  # xs [c, Hp, Wp, C_in], ds [c, Ho, Wo, C_out] -> [kh*kw*C_in, C_out]
        cols = jnp.concatenate(
            [
                xs[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
                for i in range(kh)
                for j in range(kw)
            ],
            axis=-1,
        )  # [c, Ho, Wo, kh*kw*C_in], tap-major as HWIO
        return jnp.einsum(
            "bhwk,bhwo->ko", cols, ds, precision=precision, preferred_element_type=jnp.float32
        )

    if chunk == b:
        return product(xp, dy)

    def body(n, acc):
        xs = lax.dynamic_slice_in_dim(xp, n * chunk, chunk, axis=0)
        ds = lax.dynamic_slice_in_dim(dy, n * chunk, chunk, axis=0)
        return acc + product(xs, ds)

    return lax.fori_loop(0, b // chunk, body, jnp.zeros((kh * kw * cin, cout), jnp.float32))


def _weight_grad_taps(xp, dy, kernel_hw, strides, precision):
    """dW [kh*kw, C_in, C_out] as kh*kw matmuls of strided slices of the padded input xp with
    dy. The taps run in a loop so that one input slice is alive at a time: unrolled, XLA keeps
    all kh*kw slices alive together."""
    b, ho, wo, cout = dy.shape
    sh, sw = strides
    kh, kw = kernel_hw
    cin = xp.shape[3]
    span = (b, sh * (ho - 1) + 1, sw * (wo - 1) + 1, cin)

    def tap(t, dw):
        i, j = t // kw, t % kw
        xs = lax.dynamic_slice(xp, (0, i, j, 0), span)[:, ::sh, ::sw, :]  # [B, Ho, Wo, C_in]
        g = jnp.einsum(
            "bhwc,bhwo->co", xs, dy, precision=precision, preferred_element_type=jnp.float32
        )  # [C_in, C_out]
        return dw.at[t].set(g)

    return lax.fori_loop(0, kh * kw, tap, jnp.zeros((kh * kw, cin, cout), jnp.float32))


# Below this many output channels XLA's own weight gradient is faster (the image heads, 3).
_MIN_MATMUL_COUT = 16


def _weight_grad(x, dy, kernel_hw, strides, padding, precision):
    """dW [kh, kw, C_in, C_out], float32: an im2col block for stride 1, per-tap matmuls for
    strided convolutions (the faster of the two for each, docs/performance.md)."""
    (pt, pb), (pl, pr) = padding
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))  # [B, H+pt+pb, W+pl+pr, C_in]
    form = _weight_grad_im2col if tuple(strides) == (1, 1) else _weight_grad_taps
    dw = form(xp, dy, kernel_hw, strides, precision)
    return dw.reshape(*kernel_hw, x.shape[3], dy.shape[3])


@functools.lru_cache(maxsize=None)
def _matmul_grad_conv(strides: tuple, padding: tuple, precision):
    @jax.custom_vjp
    def conv(x, w):
        return _conv(x, w, strides, padding, precision)

    def fwd(x, w):
        return conv(x, w), (x, w)

    def bwd(res, dy):
        x, w = res
        _, input_vjp = jax.vjp(lambda x_: _conv(x_, w, strides, padding, precision), x)
        (dx,) = input_vjp(dy)
        dw = _weight_grad(x, dy, w.shape[:2], strides, padding, precision)
        return dx, dw.astype(w.dtype)

    conv.defvjp(fwd, bwd)
    return conv


def _explicit_padding(padding, in_hw: Sequence[int], kernel_hw, strides) -> tuple | None:
    if isinstance(padding, str):
        return tuple(tuple(p) for p in lax.padtype_to_pads(in_hw, kernel_hw, strides, padding))
    pads = tuple(tuple(int(v) for v in p) for p in padding)
    if any(v < 0 for p in pads for v in p):
        return None
    return pads


def conv_general_dilated(lhs, rhs, window_strides, padding, **options):
    """`lax.conv_general_dilated` (the same arguments, the optional ones by keyword, as
    `flax.linen.Conv` passes them) with the matmul weight gradient where it applies."""
    get = options.get
    plain = (
        resolved_policy() == "matmul"
        and _is_nhwc_hwio(get("dimension_numbers"), lhs.ndim)
        and all(d == 1 for d in (get("lhs_dilation") or (1, 1)))
        and all(d == 1 for d in (get("rhs_dilation") or (1, 1)))
        and get("feature_group_count", 1) == 1
        and get("batch_group_count", 1) == 1
        and get("preferred_element_type") is None
        and rhs.shape[-1] >= _MIN_MATMUL_COUT  # fewer output channels: XLA's own is faster
    )
    pads = (
        _explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], tuple(window_strides))
        if plain
        else None
    )
    if pads is None:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **options)
    return _matmul_grad_conv(tuple(window_strides), pads, get("precision"))(lhs, rhs)
