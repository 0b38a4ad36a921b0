"""The MirrorGAN generator: conditioning augmentation + GLAM stages (`qiaott/MirrorGAN model.py
CA_NET`, `G_NET`).

`Generator` = `G_NET`: CA_NET -> INIT_STAGE_G (base_size px) -> NEXT_STAGE_G x (branch_num - 1),
each stage followed by an image head. NHWC throughout; the one NCHW-specific step (the reshape
after INIT_STAGE_G's fully connected layer) is reproduced explicitly.
"""

from __future__ import annotations

import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from mirrorgan_jax.models.attention import GlobalLocalAttention
from mirrorgan_jax.models.layers import (
    Conv,
    TorchBatchNorm,
    glu,
    orthogonal_init,
    upsample_nearest2x,
)

Array = jax.Array
Dtype = Any

__all__ = [
    "ConditioningAugmentation",
    "GlobalLocalAttention",
    "Generator",
    "GeneratorOutput",
    "ImageHead",
    "InitStageGenerator",
    "NextStageGenerator",
    "ResBlock",
    "UpBlock",
    "num_up_blocks",
]


def _conv(features: int, kernel: int, dtype: Dtype | None, name: str) -> nn.Conv:
    """Bias-free stride-1 conv with PyTorch 'same' padding and the official orthogonal init."""
    pad = kernel // 2
    return Conv(
        features,
        (kernel, kernel),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=orthogonal_init,
        dtype=dtype,
        name=name,
    )


def num_up_blocks(base_size: int) -> int:
    """Number of up-blocks of the first stage: log2(base_size / 4) (4 for the official 64 px)."""
    n = int(round(math.log2(base_size / 4))) if base_size >= 8 else 0
    if n < 1 or 4 * 2**n != base_size:
        raise ValueError(f"base_size must be 4 * 2**k with k >= 1 (e.g. 32 or 64), got {base_size}")
    return n


class ConditioningAugmentation(nn.Module):
    """CA_NET: Linear(nef, 4*cdim) -> GLU -> (mu, logvar); c = eps * exp(logvar / 2) + mu.

    Runs in float32. Parameters: `fc` (Dense with bias). `noise_scale` multiplies the eps drawn
    from rng 'noise' (1 official, 0 gives c = mu); an explicit `eps` is used as given.
    """

    condition_dim: int
    noise_scale: float = 1.0

    @nn.compact
    def __call__(self, sent_emb: Array, eps: Array | None = None) -> tuple[Array, Array, Array]:
        """sent_emb [B, nef], eps [B, cdim] (None: drawn from rng 'noise', also in eval).

        Returns (c_code, mu, logvar), each [B, cdim].
        """
        x = nn.Dense(
            4 * self.condition_dim,
            kernel_init=orthogonal_init,
            bias_init=nn.initializers.zeros,
            name="fc",
        )(sent_emb.astype(jnp.float32))
        x = glu(x)  # [B, 2 * cdim]
        mu = x[:, : self.condition_dim]
        logvar = x[:, self.condition_dim :]
        if eps is None:
            eps = jax.random.normal(self.make_rng("noise"), mu.shape, jnp.float32)
            eps = self.noise_scale * eps
        elif eps.shape != mu.shape:
            raise ValueError(f"eps must have shape {mu.shape} (B, condition_dim); got {eps.shape}")
        c_code = eps * jnp.exp(0.5 * logvar) + mu
        return c_code, mu, logvar


class UpBlock(nn.Module):
    """upBlock: nearest x2 -> conv3x3(2 * features) -> BN -> GLU. Params: `conv`, `bn`."""

    features: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        x = upsample_nearest2x(x)
        x = _conv(2 * self.features, 3, self.dtype, "conv")(x)
        x = TorchBatchNorm(dtype=self.dtype, name="bn")(x, train)
        return glu(x)


class ResBlock(nn.Module):
    """ResBlock(C): conv3x3(2C) -> BN -> GLU -> conv3x3(C) -> BN, + x (no activation after)."""

    channels: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        y = _conv(2 * self.channels, 3, self.dtype, "conv1")(x)
        y = glu(TorchBatchNorm(dtype=self.dtype, name="bn1")(y, train))
        y = _conv(self.channels, 3, self.dtype, "conv2")(y)
        y = TorchBatchNorm(dtype=self.dtype, name="bn2")(y, train)
        return y + x


class ImageHead(nn.Module):
    """GET_IMAGE_G: conv3x3(3, no bias) -> tanh. Params: `conv`."""

    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, h: Array) -> Array:
        return jnp.tanh(_conv(3, 3, self.dtype, "conv")(h))


class InitStageGenerator(nn.Module):
    """INIT_STAGE_G: cat(c, z) -> Linear(no bias) -> BN1d -> GLU -> 4x4 -> num_up up-blocks.

    The 4x4 map has gf_dim * 2**num_up channels (16 * gf for the official 64 px); each up-block
    halves the channels, so the output is [B, 4 * 2**num_up, 4 * 2**num_up, gf_dim].
    Params: `fc`, `fc_bn`, `upsample1` ... `upsample{num_up}`.
    """

    gf_dim: int
    num_up: int = 4
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, z: Array, c_code: Array, train: bool) -> Array:
        c0 = self.gf_dim * 2**self.num_up
        b = z.shape[0]
        x = jnp.concatenate([c_code, z], axis=-1)  # [B, cdim + zdim], c first as the official
        x = nn.Dense(
            c0 * 4 * 4 * 2,
            use_bias=False,
            kernel_init=orthogonal_init,
            dtype=self.dtype,
            name="fc",
        )(x)
        x = glu(TorchBatchNorm(dtype=self.dtype, name="fc_bn")(x, train))  # [B, c0 * 16]
        # PyTorch views the vector as NCHW (B, c0, 4, 4); transpose to NHWC.
        x = x.reshape(b, c0, 4, 4).transpose(0, 2, 3, 1)  # [B, 4, 4, c0]
        for i in range(self.num_up):
            x = UpBlock(c0 // 2 ** (i + 1), dtype=self.dtype, name=f"upsample{i + 1}")(x, train)
        return x


class NextStageGenerator(nn.Module):
    """NEXT_STAGE_G: GLAM -> conv1x1([h || c_w || c_s] -> 2gf) -> r_num ResBlocks -> upBlock.

    With sentence_attention=False (ablation) the fusion is conv1x1([h || c_w] -> 2gf).
    Params: `att`, `conv`, `residual_0` ... `residual_{r_num-1}`, `upsample`.
    """

    gf_dim: int
    r_num: int = 2
    dtype: Dtype | None = None
    # GlobalLocalAttention's switches
    word_attention_mask: str = "official"
    sentence_attention_softmax: str = "channel"
    sentence_attention: bool = True

    @nn.compact
    def __call__(
        self, h: Array, c_code: Array, words_emb: Array, pad_mask: Array, train: bool
    ) -> tuple[Array, Array]:
        """h [B, S, S, gf] -> (h_next [B, 2S, 2S, gf], word attention [B, S, S, T])."""
        word_ctx, sent_ctx, word_attn, _ = GlobalLocalAttention(
            word_attention_mask=self.word_attention_mask,
            sentence_attention_softmax=self.sentence_attention_softmax,
            sentence_attention=self.sentence_attention,
            dtype=self.dtype,
            name="att",
        )(h, c_code, words_emb, pad_mask)
        parts = [h, word_ctx.astype(h.dtype)]
        if self.sentence_attention:
            parts.append(sent_ctx.astype(h.dtype))
        x = jnp.concatenate(parts, axis=-1)  # [B, S, S, 3gf] (2gf in the ablation)
        x = _conv(2 * self.gf_dim, 1, self.dtype, "conv")(x)
        for i in range(self.r_num):
            x = ResBlock(2 * self.gf_dim, dtype=self.dtype, name=f"residual_{i}")(x, train)
        x = UpBlock(self.gf_dim, dtype=self.dtype, name="upsample")(x, train)
        return x, word_attn


@flax.struct.dataclass
class GeneratorOutput:
    """What `Generator` returns (a pytree).

    images: one [B, S, S, 3] tanh image per stage, S = base_size * 2**i, smallest first.
    attention: the word attention [B, H, W, T] of each later stage (branch_num - 1 maps).
    mu, logvar, c_code: [B, condition_dim] conditioning augmentation outputs.
    """

    images: list
    attention: list
    mu: Array
    logvar: Array
    c_code: Array


class Generator(nn.Module):
    """G_NET with GLAM stages (params: `ca`, `h_net1`, `img_net1`, `h_net2`, `img_net2`, ...).

    Attributes:
      gf_dim: GAN.GF_DIM.
      z_dim: GAN.Z_DIM (the noise size, checked against z).
      condition_dim: GAN.CONDITION_DIM.
      r_num: ResBlocks per later stage (GAN.R_NUM).
      branch_num: number of stages (TREE.BRANCH_NUM).
      base_size: first-stage image size (64 official; 32 for small configs).
      word_attention_mask, sentence_attention_softmax, sentence_attention: see
        `GlobalLocalAttention`.
      ca_noise_scale: multiplies the CA noise drawn from rng 'noise' (1: official; 0: c = mu,
        the whole sentence code reaches the first stage). An explicit `eps` is used as given.
      dtype: computation dtype of the stages (the CA runs in float32).
    """

    gf_dim: int = 32
    z_dim: int = 100
    condition_dim: int = 100
    r_num: int = 2
    branch_num: int = 3
    base_size: int = 64
    word_attention_mask: str = "official"
    sentence_attention_softmax: str = "channel"
    sentence_attention: bool = True
    ca_noise_scale: float = 1.0
    dtype: Dtype | None = None

    @nn.compact
    def __call__(
        self,
        z: Array,
        sent_emb: Array,
        words_emb: Array,
        pad_mask: Array,
        train: bool,
        eps: Array | None = None,
    ) -> GeneratorOutput:
        """Generates one image per stage.

        Args:
          z: [B, z_dim] noise.
          sent_emb: [B, nef] STEM sentence embedding.
          words_emb: [B, T, nef] STEM word embeddings.
          pad_mask: bool [B, T], True = pad.
          train: BatchNorm batch statistics (and running-stat updates) when True.
          eps: [B, condition_dim] CA noise; None draws it from rng 'noise'.
        """
        if self.branch_num < 1:
            raise ValueError(f"Generator.branch_num must be >= 1, got {self.branch_num}")
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"z has {z.shape[-1]} features but Generator.z_dim={self.z_dim}")
        num_up = num_up_blocks(self.base_size)
        c_code, mu, logvar = ConditioningAugmentation(
            self.condition_dim, noise_scale=self.ca_noise_scale, name="ca"
        )(sent_emb, eps)
        dtype = self.dtype or jnp.float32
        c_in = c_code.astype(dtype)
        words_in = words_emb.astype(dtype)
        h = InitStageGenerator(self.gf_dim, num_up, dtype=self.dtype, name="h_net1")(
            z.astype(dtype), c_in, train
        )
        images = [ImageHead(dtype=self.dtype, name="img_net1")(h)]
        attention = []
        for i in range(2, self.branch_num + 1):
            h, att = NextStageGenerator(
                self.gf_dim,
                r_num=self.r_num,
                word_attention_mask=self.word_attention_mask,
                sentence_attention_softmax=self.sentence_attention_softmax,
                sentence_attention=self.sentence_attention,
                dtype=self.dtype,
                name=f"h_net{i}",
            )(h, c_in, words_in, pad_mask, train)
            images.append(ImageHead(dtype=self.dtype, name=f"img_net{i}")(h))
            attention.append(att)
        return GeneratorOutput(
            images=images, attention=attention, mu=mu, logvar=logvar, c_code=c_code
        )
