"""torchvision-structured ResNet backbones (NHWC) for the STREAM image encoder
(`qiaott/MirrorGAN model.py CAPTION_CNN`).

The layout follows `torchvision.models.resnet` exactly (v1.5: the stride of a Bottleneck sits on
its 3x3 conv), so ImageNet or official `CAPTION_CNN` weights convert one to one
(`mirrorgan_jax/torch_import/stream.py`):

  conv1 7x7/2 (no bias) -> bn1 -> relu -> maxpool 3x3/2 (pad 1) -> layer1..layerN -> feature map

Stage i has `width * 2**i` planes (x4 output channels for Bottleneck); the first block of every
stage but the first has stride 2, and a block gets a `downsample` (conv1x1 + BN) whenever its
stride or channel count changes. BatchNorm: eps 1e-5, momentum 0.1, gamma 1, beta 0 at init;
convs: kaiming-normal (fan_out), as torchvision initialises them.

Named specs (`resnet_spec(name)`):
  resnet18/34 (BasicBlock [2,2,2,2]/[3,4,6,3]), resnet50/101/152 (Bottleneck [3,4,6,3]/[3,4,23,3]/
  [3,8,36,3]), all width 64;
  resnet_1111 = Bottleneck [1,1,1,1], width 64 (2048-d output; the parity fixture's backbone);
  resnet_tiny = BasicBlock [1,1,1,1], width 16 (widths 16/32/64/128, 128-d output; `shapes`).
Any other spec can be named generically as `resnet_<basic|bottleneck>_<n1>-<n2>-..._w<width>`,
e.g. `resnet_bottleneck_1-2-1-1_w64` (what `ResNetSpec.name` returns).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax

from mirrorgan_jax.models.layers import Conv, TorchBatchNorm

Array = jax.Array
Dtype = Any

BLOCK_EXPANSION = {"basic": 1, "bottleneck": 4}

# torchvision's ResNet conv init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """Structure of a torchvision ResNet: block type, blocks per stage, base width."""

    block: str
    stage_sizes: tuple[int, ...]
    width: int = 64

    def __post_init__(self):
        if self.block not in BLOCK_EXPANSION:
            raise ValueError(f"ResNetSpec.block={self.block!r}; expected 'basic' or 'bottleneck'")
        if not self.stage_sizes or any(n < 1 for n in self.stage_sizes):
            raise ValueError(f"ResNetSpec.stage_sizes={self.stage_sizes!r}; need >= 1 block each")
        if self.width < 1:
            raise ValueError(f"ResNetSpec.width={self.width!r}; expected a positive int")

    @property
    def out_features(self) -> int:
        """Channels of the last stage (= the pooled feature size; 2048 for resnet50/152)."""
        return self.width * 2 ** (len(self.stage_sizes) - 1) * BLOCK_EXPANSION[self.block]

    @property
    def name(self) -> str:
        """Generic name that `resnet_spec` parses back to this spec."""
        sizes = "-".join(str(n) for n in self.stage_sizes)
        return f"resnet_{self.block}_{sizes}_w{self.width}"


RESNET_SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2)),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3)),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3)),
    "resnet101": ResNetSpec("bottleneck", (3, 4, 23, 3)),
    "resnet152": ResNetSpec("bottleneck", (3, 8, 36, 3)),
    "resnet_1111": ResNetSpec("bottleneck", (1, 1, 1, 1)),
    "resnet_tiny": ResNetSpec("basic", (1, 1, 1, 1), width=16),
}

_GENERIC = re.compile(r"^resnet_(basic|bottleneck)_(\d+(?:-\d+)*)_w(\d+)$")


def resnet_spec(name: str) -> ResNetSpec:
    """The ResNetSpec of a named backbone (see the module docstring for the names)."""
    if name in RESNET_SPECS:
        return RESNET_SPECS[name]
    m = _GENERIC.match(name)
    if m is None:
        raise ValueError(
            f"unknown ResNet backbone {name!r}; expected one of {sorted(RESNET_SPECS)} or "
            "'resnet_<basic|bottleneck>_<n1>-<n2>-..._w<width>'"
        )
    sizes = tuple(int(n) for n in m.group(2).split("-"))
    return ResNetSpec(m.group(1), sizes, int(m.group(3)))


def _conv(features: int, kernel: int, stride: int, dtype: Dtype | None, name: str) -> nn.Conv:
    """torchvision conv (no bias, symmetric padding kernel//2)."""
    pad = kernel // 2
    return Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=kaiming_fan_out,
        dtype=dtype,
        name=name,
    )


def _bn(dtype: Dtype | None, name: str) -> TorchBatchNorm:
    return TorchBatchNorm(scale_init=nn.initializers.ones, dtype=dtype, name=name)


class ResNetBlock(nn.Module):
    """torchvision BasicBlock (block='basic') or Bottleneck (block='bottleneck').

    Submodules conv1/bn1, conv2/bn2 (and conv3/bn3 for Bottleneck), plus downsample_conv /
    downsample_bn when `downsample` is set.
    """

    block: str
    planes: int
    stride: int = 1
    downsample: bool = False
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        """x: [B, H, W, Cin] -> [B, H/stride, W/stride, planes * expansion]."""
        d = self.dtype
        if self.block == "basic":
            out = _conv(self.planes, 3, self.stride, d, "conv1")(x)
            out = nn.relu(_bn(d, "bn1")(out, train))
            out = _bn(d, "bn2")(_conv(self.planes, 3, 1, d, "conv2")(out), train)
        else:
            out = nn.relu(_bn(d, "bn1")(_conv(self.planes, 1, 1, d, "conv1")(x), train))
            out = _conv(self.planes, 3, self.stride, d, "conv2")(out)
            out = nn.relu(_bn(d, "bn2")(out, train))
            out = _bn(d, "bn3")(_conv(self.planes * 4, 1, 1, d, "conv3")(out), train)
        identity = x
        if self.downsample:
            expansion = BLOCK_EXPANSION[self.block]
            identity = _conv(self.planes * expansion, 1, self.stride, d, "downsample_conv")(x)
            identity = _bn(d, "downsample_bn")(identity, train)
        return nn.relu(out + identity)


class ResNet(nn.Module):
    """torchvision ResNet without avgpool/fc: images [B, H, W, 3] -> feature map [B, h, w, C].

    Submodules: conv1, bn1, then `layer{i}_{j}` (stage i = 1.., block j = 0..) ResNetBlocks.
    For a 224 input the map is 7x7 (C = spec.out_features).

    Attributes:
      block: 'basic' | 'bottleneck'.
      stage_sizes: blocks per stage.
      width: planes of the first stage (64 in torchvision).
      dtype: computation dtype (None = that of the input; bfloat16 for mixed precision:
        params and BatchNorm statistics stay float32).
    """

    block: str
    stage_sizes: tuple[int, ...]
    width: int = 64
    dtype: Dtype | None = None

    @classmethod
    def from_spec(cls, spec: ResNetSpec, dtype: Dtype | None = None, **kwargs) -> ResNet:
        return cls(spec.block, tuple(spec.stage_sizes), spec.width, dtype=dtype, **kwargs)

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        if self.dtype is not None:
            x = x.astype(self.dtype)
        x = _conv(self.width, 7, 2, self.dtype, "conv1")(x)  # [B, H/2, W/2, width]
        x = nn.relu(_bn(self.dtype, "bn1")(x, train))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # [B, H/4, W/4, .]
        expansion = BLOCK_EXPANSION[self.block]
        in_channels = self.width
        for i, n_blocks in enumerate(self.stage_sizes):
            planes = self.width * 2**i
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                downsample = stride != 1 or in_channels != planes * expansion
                x = ResNetBlock(
                    self.block, planes, stride, downsample, self.dtype, name=f"layer{i + 1}_{j}"
                )(x, train)
                in_channels = planes * expansion
        return x  # [B, H/2**(N+1), W/2**(N+1), out_features]
