"""The Inception-v3 networks, NHWC: the DAMSM image trunk, the FID/IS network, and the small
trunk of the `shapes` configs.

`InceptionV3` reproduces the part of `torchvision.models.inception_v3` that the official DAMSM
`CNN_ENCODER` keeps (`taoxugit/AttnGAN code/model.py CNN_ENCODER`: Conv2d_1a_3x3 .. Mixed_7c; no
AuxLogits, no fc, no `transform_input`) with torchvision's module names, so CNN_ENCODER /
ImageNet weights convert one to one (`torch_import/damsm.py`). Every conv is a `BasicConv2d` =
conv (no bias) -> BN (eps 0.001) -> ReLU. For a 299x299 input it returns Mixed_6e
[B,17,17,768] and Mixed_7c [B,8,8,2048].

`FIDInceptionV3` is the network FID and IS are computed with: pytorch-fid's `fid_inception_v3`
(`mseitzer/pytorch-fid src/pytorch_fid/inception.py`), torchvision's Inception-v3 with 1008
classes and no AuxLogits whose blocks are patched so that the TensorFlow graph
`inception-2015-12-05` (the one TTUR's FID and OpenAI's IS used) is reproduced:
- Mixed_5b/5c/5d, Mixed_6b..6e and Mixed_7b (`FIDInceptionA`, `FIDInceptionC`,
  `FIDInceptionE_1`): the branch_pool average pool (3x3, stride 1, padding 1) uses
  `count_include_pad=False`, as TensorFlow's SAME average pool does not count padded zeros;
- Mixed_7c (`FIDInceptionE_2`): the branch_pool is a 3x3 *max* pool (stride 1, padding 1).
Here they are the same blocks with another `pool`, and the same module names, so the state
dict `pt_inception-2015-12-05-6726825d.pth` converts key for key (`torch_import/fid_inception.py`).
Input: images [B, H, W, 3] in [-1, 1] (generator output, `input_range="[-1,1]"`) or in [0, 1]
(`input_range="[0,1]"`). As pytorch-fid (`resize_input=True, normalize_input=True`), images in
[0, 1] are resized bilinearly to 299x299 (`F.interpolate(..., mode='bilinear',
align_corners=False)`, no antialiasing) and mapped by 2x - 1; images in [-1, 1] are first
mapped to [0, 1] by (x + 1) / 2, as DF-GAN does before calling pytorch-fid. Outputs
`(pool3, logits)`:
  pool3   [B, 2048]  the final average pool (pytorch-fid's block 3, the FID features);
  logits  [B, 1008]  `fc(pool3)` of the TF graph's 1008-way softmax layer. Column 0 is the
          graph's unused background class, columns 1..1000 the ImageNet classes (in the TF
          graph's synset order) and 1001..1007 are unused. OpenAI's Inception Score takes the
          softmax over all 1008 columns of `pool3 @ W` *without* the bias (torch-fidelity calls
          these "logits_unbiased"); set `logits_bias=False` for those, the default adds fc.bias.
The FID network always runs in inference mode (BatchNorm uses its running statistics).

`TinyTrunk` is the small CNN for the `shapes` configs (not an official network): six
BasicConv2d blocks; for a 64x64 input the region map is 8x8 x widths[2] (after three stride-2
3x3 convs) and the global map is 4x4 x widths[3]:

  3x3/2 w0 -> 3x3/2 w1 -> 3x3/2 w2 -> 3x3/1 w2 = region map -> 3x3/2 w3 -> 3x3/1 w3 = global map

Both trunks return `(region_map, global_map)`; the image encoder average-pools the global map.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mirrorgan_jax.models.layers import Conv, TorchBatchNorm, resize_bilinear

Array = jax.Array
Dtype = Any

# torchvision Inception-v3 conv init: truncated normal, std 0.1 (truncation at +-2 absolute).
inception_conv_init = nn.initializers.normal(0.1)

INPUT_RANGES = ("[-1,1]", "[0,1]")
FID_FEATURES = 2048  # pool3 width
FID_NUM_CLASSES = 1008  # outputs of the TF inception-2015-12-05 softmax layer
FID_IMAGE_SIZE = 299


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class BasicConv2d(nn.Module):
    """torchvision BasicConv2d: conv (no bias) -> BatchNorm (eps 0.001) -> ReLU.

    Submodules `conv` and `bn` (official keys `<name>.conv.weight`, `<name>.bn.*`).
    kernel/stride/padding are ints or (h, w) pairs; padding is symmetric as in PyTorch.
    """

    features: int
    kernel: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        ph, pw = _pair(self.padding)
        x = Conv(
            self.features,
            _pair(self.kernel),
            strides=_pair(self.stride),
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            kernel_init=inception_conv_init,
            dtype=self.dtype,
            name="conv",
        )(x)
        x = TorchBatchNorm(
            epsilon=1e-3, scale_init=nn.initializers.ones, dtype=self.dtype, name="bn"
        )(x, train)
        return nn.relu(x)


def _avg_pool_3x3_same(x: Array) -> Array:
    """F.avg_pool2d(x, 3, stride=1, padding=1) with count_include_pad=True (the default)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=True)


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
    """F.max_pool2d(x, kernel_size=3, stride=2) (no padding)."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


# The branch_pool pools of the blocks: torchvision's, and pytorch-fid's two replacements.
POOLS: dict[str, Callable[[Array], Array]] = {
    "avg": _avg_pool_3x3_same,
    "avg_exclude_pad": avg_pool_3x3_exclude_pad,
    "max": max_pool_3x3_same,
}


def _chain(x: Array, train: bool, conv, prefix: str, *layers: tuple) -> Array:
    """One branch of an Inception block: BasicConv2d layers `prefix`_1, `prefix`_2, ... in
    order, each (features, kernel[, padding[, stride]])."""
    for i, (features, kernel, *rest) in enumerate(layers, 1):
        padding, stride = (*rest, *(0, 1)[len(rest) :])
        x = conv(features, kernel, stride=stride, padding=padding, name=f"{prefix}_{i}")(x, train)
    return x


# The blocks with a branch_pool (whose pool pytorch-fid replaces), then the two grid-size
# reductions. Factorised 1x7 / 7x1 (1x3 / 3x1) kernels with their paddings:
_ROW7, _COL7 = ((1, 7), (0, 3)), ((7, 1), (3, 0))
_ROW3, _COL3 = ((1, 3), (0, 1)), ((3, 1), (1, 0))


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d: [B,35,35,Cin] -> [B,35,35,224 + pool_features]; `pool` of POOLS."""

    pool_features: int
    dtype: Dtype | None = None
    pool: str = "avg"

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = functools.partial(BasicConv2d, dtype=self.dtype)
        b1 = conv(64, 1, name="branch1x1")(x, train)
        b5 = _chain(x, train, conv, "branch5x5", (48, 1), (64, 5, 2))
        b3 = _chain(x, train, conv, "branch3x3dbl", (64, 1), (96, 3, 1), (96, 3, 1))
        bp = conv(self.pool_features, 1, name="branch_pool")(POOLS[self.pool](x), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b..6e: [B,17,17,768] -> [B,17,17,768] with 1x7 / 7x1 factorised convs; `pool`
    of POOLS."""

    channels_7x7: int
    dtype: Dtype | None = None
    pool: str = "avg"

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c7 = self.channels_7x7
        conv = functools.partial(BasicConv2d, dtype=self.dtype)
        b1 = conv(192, 1, name="branch1x1")(x, train)
        b7 = _chain(x, train, conv, "branch7x7", (c7, 1), (c7, *_ROW7), (192, *_COL7))
        bd = _chain(
            x, train, conv, "branch7x7dbl",
            (c7, 1), (c7, *_COL7), (c7, *_ROW7), (c7, *_COL7), (192, *_ROW7),
        )  # fmt: skip
        bp = conv(192, 1, name="branch_pool")(POOLS[self.pool](x), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b/7c: [B,8,8,Cin] -> [B,8,8,2048]; `pool` of POOLS."""

    dtype: Dtype | None = None
    pool: str = "avg"

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = functools.partial(BasicConv2d, dtype=self.dtype)

        def halves(h, prefix):  # the two factorised convs side by side: `prefix`a, `prefix`b
            pair = ((_ROW3, "a"), (_COL3, "b"))
            out = [conv(384, k, padding=p, name=prefix + s)(h, train) for (k, p), s in pair]
            return jnp.concatenate(out, axis=-1)

        b1 = conv(320, 1, name="branch1x1")(x, train)
        b3 = halves(conv(384, 1, name="branch3x3_1")(x, train), "branch3x3_2")
        bd = halves(_chain(x, train, conv, "branch3x3dbl", (448, 1), (384, 3, 1)), "branch3x3dbl_3")
        bp = conv(192, 1, name="branch_pool")(POOLS[self.pool](x), train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: [B,35,35,288] -> [B,17,17,768]."""

    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = functools.partial(BasicConv2d, dtype=self.dtype)
        b3 = conv(384, 3, stride=2, name="branch3x3")(x, train)
        bd = _chain(x, train, conv, "branch3x3dbl", (64, 1), (96, 3, 1), (96, 3, 0, 2))
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: [B,17,17,768] -> [B,8,8,1280]."""

    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = functools.partial(BasicConv2d, dtype=self.dtype)
        b3 = _chain(x, train, conv, "branch3x3", (192, 1), (320, 3, 0, 2))
        b7 = _chain(
            x, train, conv, "branch7x7x3", (192, 1), (192, *_ROW7), (192, *_COL7), (192, 3, 0, 2)
        )
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


def _inception_v3_trunk(x: Array, d: Dtype | None, train: bool, fid: bool) -> tuple[Array, Array]:
    """Conv2d_1a_3x3 .. Mixed_7c, created in the calling module (torchvision's names):
    [B,299,299,3] -> (Mixed_6e [B,17,17,768], Mixed_7c [B,8,8,2048]). With `fid`, pytorch-fid's
    pools (see the module doc)."""
    pool_ac, pool_7b, pool_7c = (
        ("avg_exclude_pad", "avg_exclude_pad", "max") if fid else ("avg",) * 3
    )
    x = BasicConv2d(32, 3, stride=2, dtype=d, name="Conv2d_1a_3x3")(x, train)  # 149x149x32
    x = BasicConv2d(32, 3, dtype=d, name="Conv2d_2a_3x3")(x, train)  # 147x147x32
    x = BasicConv2d(64, 3, padding=1, dtype=d, name="Conv2d_2b_3x3")(x, train)  # 147x147x64
    x = _max_pool_3x3_s2(x)  # 73x73x64
    x = BasicConv2d(80, 1, dtype=d, name="Conv2d_3b_1x1")(x, train)  # 73x73x80
    x = BasicConv2d(192, 3, dtype=d, name="Conv2d_4a_3x3")(x, train)  # 71x71x192
    x = _max_pool_3x3_s2(x)  # 35x35x192
    x = InceptionA(32, dtype=d, pool=pool_ac, name="Mixed_5b")(x, train)  # 35x35x256
    x = InceptionA(64, dtype=d, pool=pool_ac, name="Mixed_5c")(x, train)  # 35x35x288
    x = InceptionA(64, dtype=d, pool=pool_ac, name="Mixed_5d")(x, train)  # 35x35x288
    x = InceptionB(dtype=d, name="Mixed_6a")(x, train)  # 17x17x768
    x = InceptionC(128, dtype=d, pool=pool_ac, name="Mixed_6b")(x, train)
    x = InceptionC(160, dtype=d, pool=pool_ac, name="Mixed_6c")(x, train)
    x = InceptionC(160, dtype=d, pool=pool_ac, name="Mixed_6d")(x, train)
    mixed_6e = InceptionC(192, dtype=d, pool=pool_ac, name="Mixed_6e")(x, train)  # 17x17x768
    x = InceptionD(dtype=d, name="Mixed_7a")(mixed_6e, train)  # 8x8x1280
    x = InceptionE(dtype=d, pool=pool_7b, name="Mixed_7b")(x, train)  # 8x8x2048
    mixed_7c = InceptionE(dtype=d, pool=pool_7c, name="Mixed_7c")(x, train)  # 8x8x2048
    return mixed_6e, mixed_7c


class InceptionV3(nn.Module):
    """CNN_ENCODER's Inception-v3 trunk: [B,299,299,3] -> (Mixed_6e [B,17,17,768],
    Mixed_7c [B,8,8,2048]).

    Attributes:
      dtype: computation dtype (None = input dtype; bfloat16 for mixed precision, with float32
        params and BatchNorm statistics).
    """

    dtype: Dtype | None = None

    @property
    def region_features(self) -> int:
        return 768  # channels of Mixed_6e

    @property
    def global_features(self) -> int:
        return 2048  # channels of Mixed_7c

    @nn.compact
    def __call__(self, x: Array, train: bool) -> tuple[Array, Array]:
        if self.dtype is not None:
            x = x.astype(self.dtype)
        return _inception_v3_trunk(x, self.dtype, train, fid=False)


# ----------------------------------------------------------------------------- FID / IS


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
        x = preprocess(images, self.input_range, self.resize_input)  # [B,299,299,3]
        if self.dtype is not None:
            x = x.astype(self.dtype)
        _, x = _inception_v3_trunk(x, self.dtype, False, fid=True)  # [B,8,8,2048]
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


# ----------------------------------------------------------------------------- shapes


class TinyTrunk(nn.Module):
    """Small DAMSM trunk for the `shapes` configs (see the module docstring).

    Attributes:
      widths: channels of the four conv stages; region map has widths[2] channels, the global
        map widths[3].
      dtype: computation dtype (None = input dtype).
    """

    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    dtype: Dtype | None = None

    @property
    def region_features(self) -> int:
        return self.widths[2]

    @property
    def global_features(self) -> int:
        return self.widths[3]

    @nn.compact
    def __call__(self, x: Array, train: bool) -> tuple[Array, Array]:
        d, w = self.dtype, self.widths
        if d is not None:
            x = x.astype(d)
        x = BasicConv2d(w[0], 3, stride=2, padding=1, dtype=d, name="conv1")(x, train)  # H/2
        x = BasicConv2d(w[1], 3, stride=2, padding=1, dtype=d, name="conv2")(x, train)  # H/4
        x = BasicConv2d(w[2], 3, stride=2, padding=1, dtype=d, name="conv3")(x, train)  # H/8
        region = BasicConv2d(w[2], 3, padding=1, dtype=d, name="conv4")(x, train)  # [B,H/8,W/8,w2]
        x = BasicConv2d(w[3], 3, stride=2, padding=1, dtype=d, name="conv5")(region, train)
        global_map = BasicConv2d(w[3], 3, padding=1, dtype=d, name="conv6")(x, train)  # H/16
        return region, global_map
