"""DAMSM image encoder (`taoxugit/AttnGAN code/model.py CNN_ENCODER`), NHWC.

images [B, H, W, 3] in [-1, 1] -> bilinear resize to `image_size` (no normalisation, as the
official forward) -> trunk -> two heads:
  region features = conv1x1(region map) (no bias): [B, 17, 17, nef] for Inception-v3 at 299
                    (the map is Mixed_6e, 768 channels);
  global code     = Linear(mean over H, W of the global map): [B, nef] (the map is Mixed_7c,
                    8x8x2048 at 299, where the mean equals the official avg_pool2d(kernel 8)).
In MirrorGAN it is loaded frozen and used for R-precision and visualisation only.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mirrorgan_jax.models.inception import InceptionV3, TinyTrunk
from mirrorgan_jax.models.layers import Conv, resize_bilinear, torch_uniform

Array = jax.Array
Dtype = Any

IMAGE_ENCODER_BACKBONES = ("inception_v3", "tiny")


def _trunk(backbone: str, tiny_widths, dtype, **kwargs) -> nn.Module:
    if backbone == "inception_v3":
        return InceptionV3(dtype=dtype, **kwargs)
    if backbone == "tiny":
        return TinyTrunk(tuple(tiny_widths), dtype=dtype, **kwargs)
    raise ValueError(
        f"ImageEncoder.backbone={backbone!r}; expected one of {IMAGE_ENCODER_BACKBONES}"
    )


class ImageEncoder(nn.Module):
    """DAMSM CNN_ENCODER.

    Variables: params/batch_stats `trunk` (InceptionV3 with torchvision names, or TinyTrunk),
    params `emb_features` (Conv 1x1 kernel, no bias) and `emb_cnn_code` (Dense kernel, bias).

    Attributes:
      backbone: "inception_v3" (official) | "tiny" (models.inception.TinyTrunk, for `shapes`).
      nef: embedding size of both outputs.
      image_size: resize target (299 official).
      align_corners: bilinear mode of the resize (False = PyTorch >= 0.4 default).
      tiny_widths: the TinyTrunk widths (backbone "tiny" only).
      dtype: trunk computation dtype (None = input dtype; bfloat16 for mixed precision). The
        heads run in float32 and the outputs are float32.
    """

    backbone: str = "inception_v3"
    nef: int = 256
    image_size: int = 299
    align_corners: bool = False
    tiny_widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    dtype: Dtype | None = None

    @property
    def trunk_widths(self) -> tuple[int, int]:
        """Channels of the trunk's (region map, global map): what `heads` takes, e.g. to build
        the heads alone around a trunk whose weights come from a file."""
        trunk = _trunk(self.backbone, self.tiny_widths, self.dtype, parent=None)  # unbound
        return trunk.region_features, trunk.global_features

    def setup(self):
        self.trunk = _trunk(self.backbone, self.tiny_widths, self.dtype)
        # Official init_trainable_weights: U(-0.1, 0.1) weights; the Linear bias keeps PyTorch's
        # default U(+-1/sqrt(fan_in)).
        self.emb_features = Conv(self.nef, (1, 1), use_bias=False, kernel_init=torch_uniform(0.1))
        self.emb_cnn_code = nn.Dense(
            self.nef,
            kernel_init=torch_uniform(0.1),
            bias_init=torch_uniform(1.0 / np.sqrt(self.trunk.global_features)),
        )

    def trunk_features(self, images: Array, train: bool = False) -> tuple[Array, Array]:
        """images [B, H, W, 3] -> (region map [B, h, w, Cr], global map [B, h', w', Cg])."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"ImageEncoder expects NHWC RGB images [B, H, W, 3]; got {images.shape}"
            )
        # The official input handling (`taoxugit/AttnGAN code/model.py CNN_ENCODER.forward`):
        # the [-1, 1] image itself, resized to 299 by bilinear interpolation, with neither
        # ImageNet's mean/std nor torchvision's `transform_input`, also with ImageNet weights.
        x = resize_bilinear(images, (self.image_size, self.image_size), self.align_corners)
        return self.trunk(x, train)

    def heads(self, region_map: Array, global_map: Array) -> tuple[Array, Array]:
        """The two official heads on trunk outputs (e.g. Mixed_6e [B,17,17,768] and Mixed_7c
        [B,8,8,2048]) -> (region features [B, h, w, nef], code [B, nef]), float32."""
        region = self.emb_features(region_map.astype(jnp.float32))  # [B, h, w, nef]
        pooled = jnp.mean(global_map.astype(jnp.float32), axis=(1, 2))  # [B, Cg]
        return region, self.emb_cnn_code(pooled)  # [B, nef]

    def __call__(self, images: Array, train: bool = False) -> tuple[Array, Array]:
        """images [B, H, W, 3] in [-1, 1] -> (region features [B, h, w, nef], code [B, nef])."""
        region_map, global_map = self.trunk_features(images, train)
        return self.heads(region_map, global_map)
