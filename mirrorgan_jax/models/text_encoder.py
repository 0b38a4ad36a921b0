"""STEM: the bidirectional-LSTM text encoder (`qiaott/MirrorGAN model.py RNN_ENCODER`).

Token ids -> embedding (U(-0.1, 0.1) init) -> dropout (train only) -> BiLSTM over each caption's
true length. Equal to PyTorch's packed-sequence BiLSTM: padded steps output exactly 0, the
backward direction reads each caption from its own last token, and the sentence vector is
[forward final state || backward final state].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mirrorgan_jax.models.layers import LSTMLayer, length_mask

Array = jax.Array


def _uniform_init(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class TextEncoder(nn.Module):
    """The STEM text encoder.

    Attributes:
      n_words: vocabulary size (0 = pad / <end>).
      word_embedding_dim: RNN_ENCODER `ninput` (300 in the official code).
      hidden_dim: nef, the size of both directions together (TEXT.EMBEDDING_DIM, 256).
      dropout: dropout rate on the embeddings in train mode (rng stream 'dropout').
    """

    n_words: int
    word_embedding_dim: int = 300
    hidden_dim: int = 256
    dropout: float = 0.5

    @nn.compact
    def __call__(self, tokens: Array, lengths: Array, train: bool = False) -> tuple[Array, Array]:
        """Encodes captions.

        Args:
          tokens: int32 [B, T] token ids, zero-padded after each caption.
          lengths: int32 [B] true caption lengths (<= T).
          train: enables embedding dropout.

        Returns:
          words_emb [B, T, hidden_dim] (0 at padded steps) and sent_emb [B, hidden_dim].
        """
        if self.hidden_dim % 2:
            raise ValueError(
                f"TextEncoder.hidden_dim must be even (two LSTM directions), got {self.hidden_dim}"
            )
        if tokens.ndim != 2 or lengths.shape != tokens.shape[:1]:
            raise ValueError(
                f"TextEncoder expects tokens [B, T] and lengths [B]; got {tokens.shape} and "
                f"{lengths.shape}"
            )
        half = self.hidden_dim // 2
        emb = nn.Embed(
            self.n_words,
            self.word_embedding_dim,
            embedding_init=_uniform_init(0.1),
            name="embedding",
        )(tokens)  # [B, T, E]
        emb = nn.Dropout(self.dropout, deterministic=not train)(emb)
        mask = length_mask(lengths, tokens.shape[1])  # [B, T] True = valid
        fwd, (h_fwd, _) = LSTMLayer(half, name="forward")(emb, mask)  # [B, T, H], [B, H]
        bwd, (h_bwd, _) = LSTMLayer(half, reverse=True, name="backward")(emb, mask)
        words_emb = jnp.concatenate([fwd, bwd], axis=-1)  # [B, T, 2H]
        sent_emb = jnp.concatenate([h_fwd, h_bwd], axis=-1)  # [B, 2H]
        return words_emb, sent_emb
