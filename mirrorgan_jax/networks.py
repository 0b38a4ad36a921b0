"""Every network of the system built from one config, with dummy-input initialisers.

`Networks.from_config(config, n_words)` gives the modules; `init_*` create their variables
(with `abstract=True`, only shapes via `jax.eval_shape`, no memory or compute), which is what
training, weight import, checkpoint restore and `--mode=describe` all start from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from mirrorgan_jax import configuration
from mirrorgan_jax.models.layers import jit_init

Variables = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Networks:
    text_encoder: Any
    generator: Any
    discriminators: tuple
    caption_cnn: Any
    caption_rnn: Any
    image_encoder: Any
    image_sizes: tuple[int, ...]
    words_num: int
    embedding_dim: int
    z_dim: int

    @classmethod
    def from_config(cls, config, n_words: int | None = None) -> "Networks":
        configuration.validate(config)
        return cls(
            text_encoder=configuration.text_encoder(config, n_words),
            generator=configuration.generator(config),
            discriminators=tuple(configuration.discriminators(config)),
            caption_cnn=configuration.caption_cnn(config),
            caption_rnn=configuration.caption_rnn(config, n_words),
            image_encoder=configuration.image_encoder(config),
            image_sizes=configuration.image_sizes(config),
            words_num=config.data.words_num,
            embedding_dim=config.model.text_embedding_dim,
            z_dim=config.model.z_dim,
        )

    # Dummy inputs: batch 2 (BatchNorm needs > 1 sample), T = words_num.
    def _text(self):
        tokens = jnp.ones((2, self.words_num), jnp.int32)
        lengths = jnp.full((2,), self.words_num, jnp.int32)
        return tokens, lengths

    def _init(self, fn, rng, abstract: bool) -> Variables:
        if abstract:
            return jax.eval_shape(fn, rng)
        return jit_init(fn, rng)

    def init_text_encoder(self, rng, abstract: bool = False) -> Variables:
        tokens, lengths = self._text()
        return self._init(
            lambda r: self.text_encoder.init(r, tokens, lengths, train=False), rng, abstract
        )

    def init_generator(self, rng, abstract: bool = False) -> Variables:
        b, t, e = 2, self.words_num, self.embedding_dim

        def fn(r):
            return self.generator.init(
                {"params": r, "noise": r},
                jnp.zeros((b, self.z_dim)),
                jnp.zeros((b, e)),
                jnp.zeros((b, t, e)),
                jnp.zeros((b, t), bool),
                train=False,
            )

        return self._init(fn, rng, abstract)

    def init_discriminator(self, index: int, rng, abstract: bool = False) -> Variables:
        """Trunk and both heads (`discriminators.init_discriminator` merges the three inits)."""
        from mirrorgan_jax.models.discriminators import init_discriminator

        d = self.discriminators[index]
        return self._init(lambda r: init_discriminator(d, r, self.embedding_dim), rng, abstract)

    def init_caption_cnn(self, rng, abstract: bool = False) -> Variables:
        s = self.image_sizes[-1]
        return self._init(
            lambda r: self.caption_cnn.init(r, jnp.zeros((2, s, s, 3)), train=False), rng, abstract
        )

    def init_caption_rnn(self, rng, abstract: bool = False) -> Variables:
        tokens, lengths = self._text()
        feats = jnp.zeros((2, self.caption_rnn.embed_size))
        return self._init(lambda r: self.caption_rnn.init(r, feats, tokens, lengths), rng, abstract)

    def init_image_encoder(self, rng, abstract: bool = False) -> Variables:
        s = self.image_sizes[-1]
        return self._init(
            lambda r: self.image_encoder.init(r, jnp.zeros((2, s, s, 3)), train=False),
            rng,
            abstract,
        )


def count_params(variables: Variables) -> int:
    """Number of trainable values ('params' collection; BN running statistics are buffers)."""
    return int(sum(x.size for x in jax.tree.leaves(variables.get("params", {}))))
