"""STREAM: the image captioner that closes MirrorGAN's text -> image -> text loop
(`qiaott/MirrorGAN model.py CAPTION_CNN`, `CAPTION_RNN`).

`CaptionCNN` is the official `CAPTION_CNN`: bilinear resize to `image_size` (no antialiasing, no
ImageNet mean/std normalisation: the [-1, 1] generator output goes in as it is), a torchvision
ResNet backbone, global average pool, Linear(C -> embed) and BatchNorm1d(momentum 0.01).

`CaptionRNN` is the official `CAPTION_RNN`: Embedding -> one LSTM layer -> Linear, with teacher
forcing on the input sequence [feature, E(w_0), ..., E(w_{T-2})]; the logit at step k predicts
token w_k. There are no <start>/<end> tokens (0 is pad/<end> in the AttnGAN vocabulary), so the
first prediction is conditioned on the image feature alone. `greedy_decode` is the official
`sample()`. The caption loss is `losses.caption_cross_entropy`.

The resize to the CNN's input is `layers.resize_bilinear` (PyTorch's `F.interpolate`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mirrorgan_jax.models.layers import (
    LSTMLayer,
    TorchBatchNorm,
    length_mask,
    resize_bilinear,
    torch_linear,
)
from mirrorgan_jax.models.resnet import ResNet, resnet_spec

Array = jax.Array
Dtype = Any


# ----------------------------------------------------------------------------- modules


class CaptionCNN(nn.Module):
    """STREAM image encoder (official CAPTION_CNN).

    Variables: params/batch_stats `resnet` (the backbone), params `linear` (Dense kernel, bias),
    params `bn` + batch_stats `bn` (BatchNorm1d, momentum 0.01).

    Attributes:
      backbone: a ResNet name for `models.resnet.resnet_spec` ("resnet152" official,
        "resnet50", "resnet18", "resnet_1111" (fixture), "resnet_tiny" (shapes), or generic).
      embed_size: output feature size (CAP.embed_size).
      image_size: the bilinear resize target (224 official).
      align_corners: False = PyTorch >= 0.4 default; True = PyTorch <= 0.3 behaviour.
      dtype: backbone computation dtype (None = input dtype; bfloat16 for mixed precision). The
        Linear + BN head always runs in float32 and the output is float32.
    """

    backbone: str = "resnet152"
    embed_size: int = 256
    image_size: int = 224
    align_corners: bool = False
    dtype: Dtype | None = None

    @property
    def pooled_width(self) -> int:
        """Channels of the pooled backbone features: what `head` takes, e.g. to build the head
        alone around a backbone whose weights come from a file."""
        return resnet_spec(self.backbone).out_features

    def setup(self):
        spec = resnet_spec(self.backbone)
        self.resnet = ResNet.from_spec(spec, dtype=self.dtype)
        self.linear = torch_linear(self.embed_size, spec.out_features)
        self.bn = TorchBatchNorm(momentum=0.01, scale_init=nn.initializers.ones)

    def backbone_features(
        self, images: Array, train: bool = False, backbone_train: bool | None = None
    ) -> Array:
        """images [B, H, W, 3] in [-1, 1] -> pooled backbone features [B, C] (float32).

        `backbone_train` (default: `train`) sets the backbone BatchNorm mode separately, e.g.
        False to keep frozen ImageNet statistics while the head trains.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"CaptionCNN expects NHWC RGB images [B, H, W, 3]; got {images.shape}")
        bt = train if backbone_train is None else backbone_train
        x = resize_bilinear(images, (self.image_size, self.image_size), self.align_corners)
        fmap = self.resnet(x, bt)  # [B, h, w, C]
        return jnp.mean(fmap.astype(jnp.float32), axis=(1, 2))  # [B, C]

    def __call__(
        self, images: Array, train: bool = False, backbone_train: bool | None = None
    ) -> Array:
        """images [B, H, W, 3] in [-1, 1] -> features [B, embed_size] (float32)."""
        pooled = self.backbone_features(images, train, backbone_train)  # [B, C]
        return self.head(pooled, train)  # [B, E]

    def head(self, pooled: Array, train: bool = False) -> Array:
        """Linear + BatchNorm1d: pooled backbone features [B, C] -> features [B, E] (float32)."""
        return self.bn(self.linear(pooled), train)  # [B, E]


class CaptionRNN(nn.Module):
    """STREAM caption decoder (official CAPTION_RNN, one LSTM layer).

    Params: `embed` (embedding [V, E]), `lstm` (layers.LSTMLayer), `linear` (Dense H -> V).

    Attributes:
      n_words: vocabulary size V.
      embed_size: E (CAP.embed_size; also the image feature size).
      hidden_size: LSTM hidden size H (the official code passes 2 * CAP.hidden_size).
    """

    n_words: int
    embed_size: int = 256
    hidden_size: int = 512

    def setup(self):
        self.embed = nn.Embed(
            self.n_words, self.embed_size, embedding_init=nn.initializers.normal(1.0)
        )
        self.lstm = LSTMLayer(self.hidden_size)
        self.linear = torch_linear(self.n_words, self.hidden_size)

    def __call__(self, features: Array, tokens: Array, lengths: Array) -> Array:
        """Teacher-forced logits.

        features [B, E], tokens int [B, T], lengths int [B] (1 <= L_b <= T) -> logits [B, T, V];
        logits[b, k] predicts tokens[b, k]. Steps k >= L_b are padding (LSTM output 0, so the
        logit there is the Linear bias) and must be masked by the loss.
        """
        b, t = tokens.shape
        if features.shape != (b, self.embed_size):
            raise ValueError(
                f"CaptionRNN: features shape {features.shape}, expected ({b}, {self.embed_size})"
            )
        emb = self.embed(tokens[:, : t - 1])  # [B, T-1, E]
        xs = jnp.concatenate([features[:, None, :].astype(emb.dtype), emb], axis=1)  # [B, T, E]
        hs, _ = self.lstm(xs, length_mask(lengths, t))  # [B, T, H]
        return self.linear(hs)  # [B, T, V]

    def greedy_decode(self, features: Array, max_len: int = 20) -> Array:
        """Greedy captioning (official `sample()`): features [B, E] -> token ids int32 [B, max_len].

        Step 0 reads the feature; each next step reads the embedding of the previous argmax.
        Nothing stops at <end> (id 0): callers cut each row at its first 0.
        """
        b = features.shape[0]
        valid = jnp.ones((b, 1), dtype=bool)
        inputs = features[:, None, :]  # [B, 1, E]
        state = None
        ids = []
        for _ in range(max_len):
            h, state = self.lstm(inputs, valid, state)  # [B, 1, H]
            pred = jnp.argmax(self.linear(h[:, 0]), axis=-1).astype(jnp.int32)  # [B]
            ids.append(pred)
            inputs = self.embed(pred)[:, None, :]
        return jnp.stack(ids, axis=1)  # [B, max_len]
