"""Every network of the system built from one config: the only place a ConfigDict meets a module.

`Networks.from_config(config, n_words)` gives the modules, built from plain typed fields read
once here; `init_*` create their variables (with `abstract=True`, only shapes via
`jax.eval_shape`, no memory or compute), which is what training, weight import, checkpoint
restore and `--mode=describe` all start from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections

from mirrorgan_jax import configuration
from mirrorgan_jax.models.captioner import CaptionCNN, CaptionRNN
from mirrorgan_jax.models.discriminators import Discriminator, init_discriminator
from mirrorgan_jax.models.generator import Generator
from mirrorgan_jax.models.image_encoder import ImageEncoder
from mirrorgan_jax.models.layers import fast_init_key
from mirrorgan_jax.models.text_encoder import TextEncoder
from mirrorgan_jax.parallel import jit_or_shapes

Variables = dict[str, Any]


def image_sizes(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Image size of every generator stage, smallest first (e.g. (64, 128, 256))."""
    return tuple(config.model.base_size * 2**i for i in range(config.model.branch_num))


def compute_dtype(config: ml_collections.ConfigDict):
    """Activation dtype: bfloat16 under mixed precision, else float32."""
    return jnp.bfloat16 if config.mixed_precision == "bfloat16" else jnp.float32


def _n_words(config: ml_collections.ConfigDict, n_words: int | None) -> int:
    n = n_words or config.model.n_words
    if not n:
        raise configuration.ConfigError(
            "config.model.n_words is 0 and no tokenizer was given: run --mode=prepare first or "
            "set --config.model.n_words"
        )
    return int(n)


@dataclasses.dataclass(frozen=True)
class Networks:
    text_encoder: TextEncoder  # STEM: the bidirectional-LSTM text encoder
    generator: Generator  # GLAM generator with conditioning augmentation
    discriminators: tuple[Discriminator, ...]  # one per generator stage, smallest first
    caption_cnn: CaptionCNN  # STREAM image encoder
    caption_rnn: CaptionRNN  # STREAM decoder
    image_encoder: ImageEncoder  # DAMSM image encoder (R-precision, DAMSM pretraining)
    image_sizes: tuple[int, ...]
    words_num: int
    embedding_dim: int
    z_dim: int

    @classmethod
    def from_config(cls, config, n_words: int | None = None) -> "Networks":
        configuration.validate(config)
        m, dtype, sizes = config.model, compute_dtype(config), image_sizes(config)
        return cls(
            text_encoder=TextEncoder(
                n_words=_n_words(config, n_words),
                word_embedding_dim=m.word_embedding_dim,
                hidden_dim=m.text_embedding_dim,
                dropout=m.text_dropout,
            ),
            generator=Generator(
                gf_dim=m.gf_dim,
                z_dim=m.z_dim,
                condition_dim=m.condition_dim,
                r_num=m.r_num,
                branch_num=m.branch_num,
                base_size=m.base_size,
                word_attention_mask=m.word_attention_mask,
                sentence_attention_softmax=m.sentence_attention_softmax,
                sentence_attention=m.sentence_attention,
                ca_noise_scale=m.ca_noise_scale,
                dtype=dtype,
            ),
            discriminators=tuple(
                Discriminator(
                    image_size=s,
                    df_dim=m.df_dim,
                    dtype=dtype,
                    batchnorm=m.discriminator_batchnorm,
                    spectral_norm=m.discriminator_spectral_norm,
                )
                for s in sizes
            ),
            caption_cnn=CaptionCNN(
                backbone=m.stream_backbone,
                embed_size=m.stream_embed_size,
                image_size=m.stream_image_size,
            ),
            # The official decoder's LSTM is twice CAP.hidden_size wide.
            caption_rnn=CaptionRNN(
                n_words=_n_words(config, n_words),
                embed_size=m.stream_embed_size,
                hidden_size=2 * m.stream_hidden_size,
            ),
            image_encoder=ImageEncoder(
                backbone=m.damsm_backbone, nef=m.text_embedding_dim, image_size=m.damsm_image_size
            ),
            image_sizes=sizes,
            words_num=config.data.words_num,
            embedding_dim=m.text_embedding_dim,
            z_dim=m.z_dim,
        )

    # Dummy inputs: batch 2 (BatchNorm needs > 1 sample), T = words_num.
    def _text(self):
        tokens = jnp.ones((2, self.words_num), jnp.int32)
        lengths = jnp.full((2,), self.words_num, jnp.int32)
        return tokens, lengths

    def _init(self, fn, rng, abstract: bool) -> Variables:
        # One jitted program per network, with the fast initialiser key (models.layers).
        return jit_or_shapes(lambda r: fn(fast_init_key(r)), rng, abstract=abstract)

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
        d = self.discriminators[index]
        return self._init(lambda r: init_discriminator(d, r, self.embedding_dim), rng, abstract)

    def init_caption_cnn(
        self, rng, abstract: bool = False, backbone: Variables | None = None
    ) -> Variables:
        """With `backbone` ({"params", "batch_stats"} of the ResNet, e.g. ImageNet weights read
        from a file), only the Linear + BN head is drawn; the ResNet is `backbone` as given."""
        if backbone is None:
            s = self.image_sizes[-1]
            return self._init(
                lambda r: self.caption_cnn.init(r, jnp.zeros((2, s, s, 3)), train=False),
                rng,
                abstract,
            )
        pooled = jnp.zeros((2, self.caption_cnn.pooled_width))
        head = self._init(
            lambda r: self.caption_cnn.init(r, pooled, method=CaptionCNN.head), rng, abstract
        )
        return _with_subnetwork(head, "resnet", backbone)

    def init_caption_rnn(self, rng, abstract: bool = False) -> Variables:
        tokens, lengths = self._text()
        feats = jnp.zeros((2, self.caption_rnn.embed_size))
        return self._init(lambda r: self.caption_rnn.init(r, feats, tokens, lengths), rng, abstract)

    def init_image_encoder(
        self, rng, abstract: bool = False, trunk: Variables | None = None
    ) -> Variables:
        """With `trunk` ({"params", "batch_stats"} of the trunk, e.g. ImageNet weights read
        from a file), only the two heads are drawn; the trunk is `trunk` as given."""
        if trunk is None:
            s = self.image_sizes[-1]
            return self._init(
                lambda r: self.image_encoder.init(r, jnp.zeros((2, s, s, 3)), train=False),
                rng,
                abstract,
            )
        region, pooled = (jnp.zeros((2, 1, 1, w)) for w in self.image_encoder.trunk_widths)
        heads = self._init(
            lambda r: self.image_encoder.init(r, region, pooled, method=ImageEncoder.heads),
            rng,
            abstract,
        )
        return _with_subnetwork(heads, "trunk", trunk)


def _with_subnetwork(variables: Variables, name: str, sub: Variables) -> Variables:
    """`variables` of a network with `sub` ({"params", "batch_stats"}) as its submodule `name`."""
    return {
        "params": {**variables["params"], name: sub["params"]},
        "batch_stats": {**variables.get("batch_stats", {}), name: sub.get("batch_stats", {})},
    }
