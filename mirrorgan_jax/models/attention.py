"""GLAM: the global-local attention of MirrorGAN's later generator stages (`qiaott/MirrorGAN
GLAttention.py GLAttentionGeneral`; its two quirks: docs/official-differences.md).

`GLAttentionGeneral` of the official code, in NHWC. Spatial positions are flattened in PyTorch's
row-major order (n = y * W + x), which matters for the official word-mask quirk.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mirrorgan_jax.models.layers import Conv, orthogonal_init

Array = jax.Array
Dtype = Any

WORD_MASK_MODES = ("official", "per_sample")
SENTENCE_SOFTMAX_MODES = ("channel", "spatial")


def word_mask_rows(pad_mask: Array, num_positions: int, mode: str) -> Array:
    """The pad mask each attention row (sample b, position n) is given.

    "official": the scores are viewed as (B*N) x T and masked with `mask.repeat(N, 1)`, so row
    (b, n) gets mask[(b*N + n) % B] (docs/official-differences.md). "per_sample": mask[b].

    Args:
      pad_mask: bool [B, T], True = pad.
      num_positions: N = H * W.
      mode: "official" or "per_sample".

    Returns:
      bool [B, N, T] ("official") or [B, 1, T] ("per_sample"), True = masked.
    """
    if mode == "per_sample":
        return pad_mask[:, None, :]
    if mode != "official":
        raise ValueError(f"word_attention_mask must be one of {WORD_MASK_MODES}, got {mode!r}")
    b = pad_mask.shape[0]
    rows = np.arange(b)[:, None] * num_positions + np.arange(num_positions)[None, :]
    return pad_mask[rows % b]  # [B, N, T]


def _conv1x1(features: int, dtype: Dtype | None, name: str) -> nn.Conv:
    """The official conv1x1: bias-free, orthogonal init."""
    return Conv(
        features, (1, 1), use_bias=False, kernel_init=orthogonal_init, dtype=dtype, name=name
    )


class GlobalLocalAttention(nn.Module):
    """Word-level (local) and sentence-level (global) attention.

    Parameters: `conv_context` (1x1 conv nef -> C, no bias), `conv_sentence_vis` (1x1 conv C -> C,
    no bias) and `linear` (Dense cdim -> C with bias); the sentence ones only when
    `sentence_attention` is True.

    Attributes:
      word_attention_mask: "official" (mask of sample (b*N+n) % B) or "per_sample".
      sentence_attention_softmax: "channel" (official: over channels) or "spatial" (over H*W).
      sentence_attention: False drops the sentence branch (returns None for its outputs).
      dtype: computation dtype (softmaxes run in float32).
    """

    word_attention_mask: str = "official"
    sentence_attention_softmax: str = "channel"
    sentence_attention: bool = True
    dtype: Dtype | None = None

    @nn.compact
    def __call__(
        self, h: Array, c_code: Array, words_emb: Array, pad_mask: Array
    ) -> tuple[Array, Array | None, Array, Array | None]:
        """Attends image features to the words and to the sentence code.

        Args:
          h: [B, H, W, C] image features.
          c_code: [B, cdim] conditioning-augmentation code.
          words_emb: [B, T, nef] word features (0 at pads).
          pad_mask: bool [B, T], True = pad.

        Returns:
          word_context [B, H, W, C], sentence_context [B, H, W, C] (or None),
          word_attn [B, H, W, T] (softmax over words), sentence_attn [B, H, W, C] (or None).
        """
        if self.sentence_attention_softmax not in SENTENCE_SOFTMAX_MODES:
            raise ValueError(
                f"sentence_attention_softmax must be one of {SENTENCE_SOFTMAX_MODES}, "
                f"got {self.sentence_attention_softmax!r}"
            )
        b, height, width, idf = h.shape
        t = words_emb.shape[1]
        if pad_mask.shape != (b, t):
            raise ValueError(
                f"pad_mask must be [B, T] = {(b, t)} like words_emb; got {pad_mask.shape}"
            )
        n = height * width
        # e' = W_e * e: [B, T, C]
        source = _conv1x1(idf, self.dtype, "conv_context")(words_emb[:, :, None, :])[:, :, 0, :]
        target = h.reshape(b, n, idf)  # [B, N, C], n = y * W + x
        scores = jnp.einsum("bnc,btc->bnt", target, source).astype(jnp.float32)  # [B, N, T]
        masked = word_mask_rows(pad_mask, n, self.word_attention_mask)
        scores = jnp.where(masked, -jnp.inf, scores)
        beta = jax.nn.softmax(scores, axis=-1)  # [B, N, T]
        word_context = jnp.einsum("bnt,btc->bnc", beta.astype(source.dtype), source)  # [B, N, C]
        word_context = word_context.reshape(b, height, width, idf)
        word_attn = beta.reshape(b, height, width, t)
        if not self.sentence_attention:
            return word_context, None, word_attn, None

        # s' = Linear(c): [B, 1, 1, C], broadcast over positions.
        sentence = nn.Dense(
            idf,
            kernel_init=orthogonal_init,
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            name="linear",
        )(c_code)[:, None, None, :]
        g = _conv1x1(idf, self.dtype, "conv_sentence_vis")(h * sentence)  # [B, H, W, C]
        g = g.astype(jnp.float32)
        if self.sentence_attention_softmax == "channel":
            alpha = jax.nn.softmax(g, axis=-1)
        else:
            alpha = jax.nn.softmax(g, axis=(1, 2))
        alpha = alpha.astype(sentence.dtype)
        sentence_context = sentence * alpha  # [B, H, W, C]
        return word_context, sentence_context, word_attn, alpha
