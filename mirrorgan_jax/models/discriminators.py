"""MirrorGAN discriminators D_NET64 / D_NET128 / D_NET256 with both heads
(`qiaott/MirrorGAN model.py D_NET64`, `D_NET128`, `D_NET256`).

`Discriminator.__call__` is the shared trunk (image -> [B, 4, 4, 8*df] features); the heads
`uncond_logits` and `cond_logits` return pre-sigmoid logits (the official heads end in a Sigmoid,
which the losses apply). `image_size=32` is a non-official extension for small configs: the
first three stride-2 convs of encode_image_by_16times (to 4x4) then Block3x3_leakRelu(4df->8df).

Parameter tree (official key in brackets):
  img_code_s16/conv0 [img_code_s16.0], img_code_s16/down{1,2,3} [img_code_s16.{2,3}/{5,6}/{8,9}],
  img_code_s32 [img_code_s32], img_code_s32_1, img_code_s64, img_code_s64_1, img_code_s64_2,
  img_code_s8_1 (32 px only), uncond/outlogits [UNCOND_DNET.outlogits.0],
  cond/joint_conv [COND_DNET.jointConv], cond/outlogits [COND_DNET.outlogits.0].
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mirrorgan_jax.models.layers import (
    Conv,
    TorchBatchNorm,
    leaky_relu,
    orthogonal_init,
    torch_uniform,
)

Array = jax.Array
Dtype = Any

IMAGE_SIZES = (32, 64, 128, 256)


def _conv4x4_s2(features: int, dtype: Dtype | None, name: str) -> nn.Conv:
    return Conv(
        features,
        (4, 4),
        strides=(2, 2),
        padding=((1, 1), (1, 1)),
        use_bias=False,
        kernel_init=orthogonal_init,
        dtype=dtype,
        name=name,
    )


def _apply_conv(conv: nn.Module, x: Array, spectral_norm: bool, train: bool) -> Array:
    """conv(x), or with spectral_norm (Miyato et al. 2018; not in the official code) the conv
    with its kernel divided by an estimate of its largest singular value. The estimate is one
    power iteration per train-mode call; its vector and value live in `batch_stats` under
    `<conv name>_sn`, and the conv's own params keep their names."""
    if not spectral_norm:
        return conv(x)
    return nn.SpectralNorm(conv, name=f"{conv.name}_sn")(x, update_stats=train)


def _maybe_bn(x: Array, batchnorm: bool, dtype: Dtype | None, train: bool) -> Array:
    """TorchBatchNorm named `bn` (official), or the identity for a D without BatchNorm."""
    return TorchBatchNorm(dtype=dtype, name="bn")(x, train) if batchnorm else x


class DownBlock(nn.Module):
    """downBlock: conv4x4 s2 p1 (no bias) -> BN -> LeakyReLU(0.2). Params: `conv`, `bn`
    (without `bn` when batchnorm=False, an option that is not in the official code)."""

    features: int
    dtype: Dtype | None = None
    batchnorm: bool = True
    spectral_norm: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = _conv4x4_s2(self.features, self.dtype, "conv")
        x = _apply_conv(conv, x, self.spectral_norm, train)
        return leaky_relu(_maybe_bn(x, self.batchnorm, self.dtype, train))


class Block3x3LeakyReLU(nn.Module):
    """Block3x3_leakRelu: conv3x3 (no bias) -> BN -> LeakyReLU(0.2). Params: `conv`, `bn`
    (without `bn` when batchnorm=False)."""

    features: int
    dtype: Dtype | None = None
    batchnorm: bool = True
    spectral_norm: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = Conv(
            self.features,
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=orthogonal_init,
            dtype=self.dtype,
            name="conv",
        )
        x = _apply_conv(conv, x, self.spectral_norm, train)
        return leaky_relu(_maybe_bn(x, self.batchnorm, self.dtype, train))


class ImageEncoder16(nn.Module):
    """encode_image_by_16times (num_down=4; 3 for the 32-px extension).

    conv4x4 s2 3->df + LeakyReLU (no BN), then DownBlocks doubling the channels.
    """

    df_dim: int
    num_down: int = 4
    dtype: Dtype | None = None
    batchnorm: bool = True
    spectral_norm: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv0 = _conv4x4_s2(self.df_dim, self.dtype, "conv0")
        x = leaky_relu(_apply_conv(conv0, x, self.spectral_norm, train))
        for i in range(1, self.num_down):
            x = DownBlock(
                self.df_dim * 2**i, self.dtype, self.batchnorm, self.spectral_norm, name=f"down{i}"
            )(x, train)
        return x


class LogitsHead(nn.Module):
    """D_GET_LOGITS without the Sigmoid. Params: `joint_conv` (conditional only), `outlogits`.

    Conditional: the condition [B, nef] is tiled to 4x4 and concatenated AFTER the image
    features (official `torch.cat((h_code, c_code), 1)`), then Block3x3_leakRelu(8df+nef -> 8df).
    Then conv4x4 stride 4 with bias -> one logit per sample.
    """

    df_dim: int
    conditional: bool
    dtype: Dtype | None = None
    batchnorm: bool = True
    spectral_norm: bool = False

    @nn.compact
    def __call__(self, h: Array, condition: Array | None, train: bool) -> Array:
        if self.conditional:
            b, height, width, _ = h.shape
            c = jnp.broadcast_to(
                condition.astype(h.dtype)[:, None, None, :],
                (b, height, width, condition.shape[-1]),
            )
            h = jnp.concatenate([h, c], axis=-1)  # [B, 4, 4, 8df + nef]
            h = Block3x3LeakyReLU(
                8 * self.df_dim, self.dtype, self.batchnorm, self.spectral_norm, name="joint_conv"
            )(h, train)
        conv = Conv(
            1,
            (4, 4),
            strides=(4, 4),
            padding="VALID",
            use_bias=True,
            kernel_init=orthogonal_init,
            # PyTorch's default conv bias init; `weights_init` leaves conv biases alone.
            bias_init=torch_uniform(1.0 / (8 * self.df_dim * 16) ** 0.5),
            dtype=self.dtype,
            name="outlogits",
        )
        out = _apply_conv(conv, h, self.spectral_norm, train)  # [B, 1, 1, 1]
        return out.reshape(-1).astype(jnp.float32)


class Discriminator(nn.Module):
    """D_NET{image_size} with the unconditional and conditional heads (b_jcu=True).

    Each method creates its own parameters: `init` through `__call__` gives the trunk, and
    `init(..., method=Discriminator.uncond_logits / cond_logits)` the heads (see
    `init_discriminator`, which merges the three).

    Attributes:
      image_size: 32, 64, 128 or 256.
      df_dim: GAN.DF_DIM.
      dtype: computation dtype (logits are returned in float32).
      batchnorm: the official BatchNorm after each conv but the first (True), or none (False,
        not in the official code; the parameter tree then has no `bn` entries and no
        batch_stats).
      spectral_norm: spectral normalisation of every conv (not in the official code; the
        params keep their names, batch_stats gain the power-iteration state).
    """

    image_size: int
    df_dim: int = 64
    dtype: Dtype | None = None
    batchnorm: bool = True
    spectral_norm: bool = False

    def setup(self):
        if self.image_size not in IMAGE_SIZES:
            raise ValueError(
                f"Discriminator.image_size must be one of {IMAGE_SIZES}, got {self.image_size}"
            )
        ndf, dt, bn, sn = self.df_dim, self.dtype, self.batchnorm, self.spectral_norm
        self.img_code_s16 = ImageEncoder16(ndf, 3 if self.image_size == 32 else 4, dt, bn, sn)
        if self.image_size == 32:
            self.img_code_s8_1 = Block3x3LeakyReLU(8 * ndf, dt, bn, sn)
        if self.image_size >= 128:
            self.img_code_s32 = DownBlock(16 * ndf, dt, bn, sn)
        if self.image_size == 128:
            self.img_code_s32_1 = Block3x3LeakyReLU(8 * ndf, dt, bn, sn)
        if self.image_size == 256:
            self.img_code_s64 = DownBlock(32 * ndf, dt, bn, sn)
            self.img_code_s64_1 = Block3x3LeakyReLU(16 * ndf, dt, bn, sn)
            self.img_code_s64_2 = Block3x3LeakyReLU(8 * ndf, dt, bn, sn)
        self.uncond = LogitsHead(ndf, conditional=False, dtype=dt, batchnorm=bn, spectral_norm=sn)
        self.cond = LogitsHead(ndf, conditional=True, dtype=dt, batchnorm=bn, spectral_norm=sn)

    def __call__(self, images: Array, train: bool) -> Array:
        """images [B, S, S, 3] in [-1, 1] -> features [B, 4, 4, 8*df]."""
        s = self.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(
                f"Discriminator({s}) expects images [B, {s}, {s}, 3]; got {images.shape}"
            )
        x = self.img_code_s16(images, train)
        if s == 32:
            x = self.img_code_s8_1(x, train)
        elif s == 128:
            x = self.img_code_s32_1(self.img_code_s32(x, train), train)
        elif s == 256:
            x = self.img_code_s64(self.img_code_s32(x, train), train)
            x = self.img_code_s64_2(self.img_code_s64_1(x, train), train)
        return x

    def uncond_logits(self, features: Array, train: bool) -> Array:
        """UNCOND_DNET without Sigmoid: features [B, 4, 4, 8df] -> logits [B]."""
        return self.uncond(features, None, train)

    def cond_logits(self, features: Array, sent_emb: Array, train: bool) -> Array:
        """COND_DNET without Sigmoid: (features [B, 4, 4, 8df], sent_emb [B, nef]) -> logits [B]."""
        if sent_emb.ndim != 2 or sent_emb.shape[0] != features.shape[0]:
            raise ValueError(
                f"sent_emb must be [B, nef] with B = {features.shape[0]}; got {sent_emb.shape}"
            )
        return self.cond(features, sent_emb, train)


def init_discriminator(
    model: Discriminator, rng: Array, text_embedding_dim: int, batch: int = 2
) -> dict:
    """All variables of `model` (trunk + both heads) from dummy inputs; wrap it in
    `jax.eval_shape` to get shapes only."""
    images = jnp.zeros((batch, model.image_size, model.image_size, 3), jnp.float32)
    trunk = model.init(rng, images, train=False)
    features = jnp.zeros((batch, 4, 4, 8 * model.df_dim), jnp.float32)
    sent = jnp.zeros((batch, text_embedding_dim), jnp.float32)
    uncond = model.init(rng, features, train=False, method=Discriminator.uncond_logits)
    cond = model.init(rng, features, sent, train=False, method=Discriminator.cond_logits)
    merged: dict = {}
    for part in (trunk, uncond, cond):
        for col, tree in part.items():
            merged.setdefault(col, {}).update(tree)
    return merged
