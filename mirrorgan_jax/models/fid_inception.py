"""The Inception-v3 that FID and IS are computed with: pytorch-fid's `fid_inception_v3`, NHWC.

pytorch-fid (`mseitzer/pytorch-fid:src/pytorch_fid/inception.py`) builds torchvision's
Inception-v3 with 1008 classes and no AuxLogits, then patches four block types so that the
TensorFlow graph `inception-2015-12-05` (the one TTUR's FID and OpenAI's IS used) is reproduced:

- `FIDInceptionA` (Mixed_5b/5c/5d), `FIDInceptionC` (Mixed_6b..6e) and `FIDInceptionE_1`
  (Mixed_7b): the branch_pool average pool (3x3, stride 1, padding 1) uses
  `count_include_pad=False`, as TensorFlow's SAME average pool does not count padded zeros.
- `FIDInceptionE_2` (Mixed_7c): the branch_pool is a 3x3 *max* pool (stride 1, padding 1).

Mixed_6a (InceptionB), Mixed_7a (InceptionD) and every BasicConv2d (conv without bias ->
BatchNorm eps 0.001 -> ReLU) are torchvision's unchanged blocks, imported from
`models.inception` with the same module names, so the state dict
`pt_inception-2015-12-05-6726825d.pth` converts key for key
(`torch_import/fid_inception.py`).

Input: images [B, H, W, 3] in [-1, 1] (generator output, `input_range="[-1,1]"`) or in [0, 1]
(`input_range="[0,1]"`). As pytorch-fid (`resize_input=True, normalize_input=True`), images in
[0, 1] are resized bilinearly to 299x299 (`F.interpolate(..., mode='bilinear',
align_corners=False)`, no antialiasing) and mapped by 2x - 1; images in [-1, 1] are first
mapped to [0, 1] by (x + 1) / 2, as DF-GAN does before calling pytorch-fid.

Outputs `(pool3, logits)`:
  pool3   [B, 2048]  the final average pool (pytorch-fid's block 3, the FID features);
  logits  [B, 1008]  `fc(pool3)` of the TF graph's 1008-way softmax layer. Column 0 is the
          graph's unused background class, columns 1..1000 the ImageNet classes (in the TF
          graph's synset order) and 1001..1007 are unused. OpenAI's Inception Score takes the
          softmax over all 1008 columns of `pool3 @ W` *without* the bias (torch-fidelity calls
          these "logits_unbiased"); set `logits_bias=False` for those, the default adds fc.bias.
The network always runs in inference mode (BatchNorm uses its running statistics).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mirrorgan_jax.models.captioner import resize_bilinear
from mirrorgan_jax.models.inception import BasicConv2d, InceptionB, InceptionD

Array = jax.Array
Dtype = Any

INPUT_RANGES = ("[-1,1]", "[0,1]")
FID_FEATURES = 2048  # pool3 width
FID_NUM_CLASSES = 1008  # outputs of the TF inception-2015-12-05 softmax layer
FID_IMAGE_SIZE = 299


def avg_pool_3x3_exclude_pad(x: Array) -> Array:
    """F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False) on NHWC `x`.

    Border outputs average only the in-image pixels of their window (4 at a corner, 6 on an
    edge), as TensorFlow's SAME average pool does.
    """
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def max_pool_3x3_same(x: Array) -> Array:
    """F.max_pool2d(x, 3, stride=1, padding=1) on NHWC `x` (padding never wins: it is -inf)."""
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x: Array) -> Array:
    """nn.MaxPool2d(kernel_size=3, stride=2) (no padding)."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class FIDInceptionA(nn.Module):
    """Mixed_5b/5c/5d: [B,35,35,Cin] -> [B,35,35,224 + pool_features]; pad-excluding avg pool."""

    pool_features: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = self.dtype
        b1 = BasicConv2d(64, 1, dtype=d, name="branch1x1")(x, False)
        b5 = BasicConv2d(48, 1, dtype=d, name="branch5x5_1")(x, False)
        b5 = BasicConv2d(64, 5, padding=2, dtype=d, name="branch5x5_2")(b5, False)
        b3 = BasicConv2d(64, 1, dtype=d, name="branch3x3dbl_1")(x, False)
        b3 = BasicConv2d(96, 3, padding=1, dtype=d, name="branch3x3dbl_2")(b3, False)
        b3 = BasicConv2d(96, 3, padding=1, dtype=d, name="branch3x3dbl_3")(b3, False)
        bp = BasicConv2d(self.pool_features, 1, dtype=d, name="branch_pool")(
            avg_pool_3x3_exclude_pad(x), False
        )
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class FIDInceptionC(nn.Module):
    """Mixed_6b..6e: [B,17,17,768] -> [B,17,17,768]; pad-excluding avg pool."""

    channels_7x7: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d, c7 = self.dtype, self.channels_7x7
        b1 = BasicConv2d(192, 1, dtype=d, name="branch1x1")(x, False)
        b7 = BasicConv2d(c7, 1, dtype=d, name="branch7x7_1")(x, False)
        b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), dtype=d, name="branch7x7_2")(b7, False)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), dtype=d, name="branch7x7_3")(b7, False)
        bd = BasicConv2d(c7, 1, dtype=d, name="branch7x7dbl_1")(x, False)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), dtype=d, name="branch7x7dbl_2")(bd, False)
        bd = BasicConv2d(c7, (1, 7), padding=(0, 3), dtype=d, name="branch7x7dbl_3")(bd, False)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), dtype=d, name="branch7x7dbl_4")(bd, False)
        bd = BasicConv2d(192, (1, 7), padding=(0, 3), dtype=d, name="branch7x7dbl_5")(bd, False)
        bp = BasicConv2d(192, 1, dtype=d, name="branch_pool")(avg_pool_3x3_exclude_pad(x), False)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (`pool="avg"`, FIDInceptionE_1) / Mixed_7c (`pool="max"`, FIDInceptionE_2):
    [B,8,8,Cin] -> [B,8,8,2048]."""

    pool: str
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.pool not in ("avg", "max"):
            raise ValueError(f"FIDInceptionE.pool must be 'avg' or 'max', got {self.pool!r}")
        d = self.dtype
        b1 = BasicConv2d(320, 1, dtype=d, name="branch1x1")(x, False)
        b3 = BasicConv2d(384, 1, dtype=d, name="branch3x3_1")(x, False)
        b3a = BasicConv2d(384, (1, 3), padding=(0, 1), dtype=d, name="branch3x3_2a")(b3, False)
        b3b = BasicConv2d(384, (3, 1), padding=(1, 0), dtype=d, name="branch3x3_2b")(b3, False)
        bd = BasicConv2d(448, 1, dtype=d, name="branch3x3dbl_1")(x, False)
        bd = BasicConv2d(384, 3, padding=1, dtype=d, name="branch3x3dbl_2")(bd, False)
        bda = BasicConv2d(384, (1, 3), padding=(0, 1), dtype=d, name="branch3x3dbl_3a")(bd, False)
        bdb = BasicConv2d(384, (3, 1), padding=(1, 0), dtype=d, name="branch3x3dbl_3b")(bd, False)
        pooled = avg_pool_3x3_exclude_pad(x) if self.pool == "avg" else max_pool_3x3_same(x)
        bp = BasicConv2d(192, 1, dtype=d, name="branch_pool")(pooled, False)
        return jnp.concatenate([b1, b3a, b3b, bda, bdb, bp], axis=-1)  # 320+768+768+192


class FCHead(nn.Module):
    """torchvision's `fc` (Linear 2048 -> num_classes) in float32; params `kernel`, `bias`.

    add_bias=False returns `x @ kernel` only (the bias is still a parameter, so the same
    converted weights serve both kinds of logits).
    """

    features: int
    add_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        y = jnp.dot(x.astype(jnp.float32), kernel, precision=jax.lax.Precision.HIGHEST)
        return y + bias if self.add_bias else y


def preprocess(images: Array, input_range: str = "[-1,1]", resize: bool = True) -> Array:
    """pytorch-fid's input transform: [B,H,W,3] in `input_range` -> [B,299,299,3] in [-1, 1].

    (x + 1) / 2 for "[-1,1]" input, bilinear resize to 299 (align_corners=False, no
    antialiasing; skipped when `resize` is False or the images are already 299x299), 2x - 1.
    """
    if input_range not in INPUT_RANGES:
        raise ValueError(
            f"fid_inception: input_range must be one of {INPUT_RANGES}, got {input_range!r}"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"fid_inception: expected NHWC RGB images [B, H, W, 3], got shape {images.shape}"
        )
    x = images.astype(jnp.float32)
    if input_range == "[-1,1]":
        x = (x + 1.0) / 2.0
    if resize:
        x = resize_bilinear(x, (FID_IMAGE_SIZE, FID_IMAGE_SIZE), align_corners=False)
    return 2.0 * x - 1.0


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception-v3: images -> (pool3 [B,2048], logits [B,1008]).

    Attributes:
      input_range: "[-1,1]" (generator output) or "[0,1]" (pytorch-fid's convention).
      resize_input: bilinear resize to 299x299 first (pytorch-fid's default True).
      logits_bias: add fc.bias to the logits (False = OpenAI IS / torch-fidelity
        "logits_unbiased"; fc.bias stays a parameter either way).
      num_classes: fc outputs (1008 for the TF weights).
      dtype: computation dtype (None = float32); params and BN statistics stay float32.
    """

    input_range: str = "[-1,1]"
    resize_input: bool = True
    logits_bias: bool = True
    num_classes: int = FID_NUM_CLASSES
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, images: Array) -> tuple[Array, Array]:
        d = self.dtype
        x = preprocess(images, self.input_range, self.resize_input)  # [B,299,299,3]
        if d is not None:
            x = x.astype(d)
        x = BasicConv2d(32, 3, stride=2, dtype=d, name="Conv2d_1a_3x3")(x, False)  # 149x149x32
        x = BasicConv2d(32, 3, dtype=d, name="Conv2d_2a_3x3")(x, False)  # 147x147x32
        x = BasicConv2d(64, 3, padding=1, dtype=d, name="Conv2d_2b_3x3")(x, False)  # 147x147x64
        x = _max_pool_3x3_s2(x)  # 73x73x64
        x = BasicConv2d(80, 1, dtype=d, name="Conv2d_3b_1x1")(x, False)  # 73x73x80
        x = BasicConv2d(192, 3, dtype=d, name="Conv2d_4a_3x3")(x, False)  # 71x71x192
        x = _max_pool_3x3_s2(x)  # 35x35x192
        x = FIDInceptionA(32, dtype=d, name="Mixed_5b")(x)  # 35x35x256
        x = FIDInceptionA(64, dtype=d, name="Mixed_5c")(x)  # 35x35x288
        x = FIDInceptionA(64, dtype=d, name="Mixed_5d")(x)  # 35x35x288
        x = InceptionB(dtype=d, name="Mixed_6a")(x, False)  # 17x17x768
        x = FIDInceptionC(128, dtype=d, name="Mixed_6b")(x)
        x = FIDInceptionC(160, dtype=d, name="Mixed_6c")(x)
        x = FIDInceptionC(160, dtype=d, name="Mixed_6d")(x)
        x = FIDInceptionC(192, dtype=d, name="Mixed_6e")(x)  # 17x17x768
        x = InceptionD(dtype=d, name="Mixed_7a")(x, False)  # 8x8x1280
        x = FIDInceptionE("avg", dtype=d, name="Mixed_7b")(x)  # 8x8x2048
        x = FIDInceptionE("max", dtype=d, name="Mixed_7c")(x)  # 8x8x2048
        pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # [B,2048], AdaptiveAvgPool2d(1)
        logits = FCHead(self.num_classes, self.logits_bias, name="fc")(pool3)  # [B,1008]
        return pool3, logits


def make_fid_inception_fn(
    variables: Mapping[str, Any], input_range: str = "[-1,1]", logits_bias: bool = True
) -> Callable[[Array], tuple[Array, Array]]:
    """Jitted images [B,H,W,3] -> (pool3 [B,2048], logits [B,1008]) with converted weights
    (`torch_import.fid_inception.load_fid_inception`); the weights are an argument of the
    compiled function, not constants baked into it."""
    model = FIDInceptionV3(input_range=input_range, logits_bias=logits_bias)
    return functools.partial(jax.jit(model.apply), variables)
