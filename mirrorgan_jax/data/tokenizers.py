"""Caption tokenizers: AttnGAN's word vocabulary (`datasets.py load_captions`) and a SentencePiece
model.

Both share one interface (`Tokenizer`): id 0 is padding (AttnGAN's `<end>`), `encode` returns
ids without padding or end token, `encode_batch` makes the zero-padded [N, T] token matrix and
the lengths with the official long-caption rule. A tokenizer is saved to a directory
(`tokenizer.json`, plus `spm.model` for SentencePiece) and read back with `load_tokenizer`.

For the released CUB/COCO weights, build the AttnGAN tokenizer from the official
`captions.pickle` word index (`wordtoix`), used unchanged: the official index order follows
Python 2 dict order, which no rebuild reproduces. Built from captions, the order is sorted.
"""

from __future__ import annotations

import io
import json
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from mirrorgan_jax import errors

PAD_ID = 0
LONG_CAPTION_MODES = ("subset", "truncate")
_CONFIG_FILE = "tokenizer.json"
_SPM_FILE = "spm.model"
_WORD_RE = re.compile(r"\w+")


def normalize(text: str) -> str:
    """AttnGAN's caption clean-up before splitting: the mojibake pair -> space, lowercase."""
    return text.replace("\ufffd\ufffd", " ").lower()


def attngan_words(text: str) -> list[str]:
    """AttnGAN tokenisation: normalize, regex \\w+ tokens, non-ASCII characters dropped."""
    words = (t.encode("ascii", "ignore").decode("ascii") for t in _WORD_RE.findall(normalize(text)))
    return [w for w in words if w]


class TokenizerError(errors.Error, ValueError):
    """A saved tokenizer is missing or unreadable (names the folder)."""


class Tokenizer:
    """The tokenizer interface: `vocab_size`, `pad_id` (0), `encode`, `decode`, `unknown_words`,
    `has_known_piece`, `save`, `load`, and `encode_batch` (shared)."""

    kind: str = ""
    pad_id: int = PAD_ID

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no padding, no end token). Raises ValueError on an empty caption."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; padding (0) is skipped."""
        raise NotImplementedError

    def unknown_words(self, text: str) -> list[str]:
        """Words of `text` the vocabulary cannot represent (dropped or mapped to unk by encode)."""
        raise NotImplementedError

    #: what `encode` does with an unknown word (reported to users by sampling)
    unknown_policy: str = ""

    def has_known_piece(self, ids: Sequence[int]) -> bool:
        """Whether `ids` (from `encode`) hold a word or piece the vocabulary knows, i.e. some
        meaning to condition on."""
        return any(int(i) != PAD_ID for i in ids)

    def decode_words(self, ids: Iterable[int]) -> list[str]:
        """One label per id (a word or a sentence piece), e.g. to caption attention maps."""
        raise NotImplementedError

    def save(self, path_dir: str | pathlib.Path) -> None:
        """Writes the tokenizer into directory `path_dir` (created if needed)."""
        raise NotImplementedError

    @classmethod
    def load(cls, path_dir: str | pathlib.Path) -> Tokenizer:
        """Reads a tokenizer saved by `save`."""
        raise NotImplementedError

    def encode_batch(
        self,
        texts: Sequence[str],
        max_len: int,
        rng: np.random.Generator | None = None,
        long_caption: str = "subset",
    ) -> tuple[np.ndarray, np.ndarray]:
        """(tokens int32 [N, max_len] zero-padded, lengths int32 [N] = min(len, max_len)).

        A caption longer than max_len keeps a random ordered subset of max_len tokens
        ("subset", the official rule; needs `rng`) or its first max_len tokens ("truncate").
        """
        if long_caption not in LONG_CAPTION_MODES:
            raise ValueError(f"long_caption={long_caption!r}; expected one of {LONG_CAPTION_MODES}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        tokens = np.zeros((len(texts), max_len), np.int32)
        lengths = np.zeros((len(texts),), np.int32)
        for row, text in enumerate(texts):
            ids = np.asarray(self.encode(text), np.int32)
            if ids.size == 0:
                raise ValueError(
                    f"caption {text!r} has no word in the vocabulary (unknown: "
                    f"{self.unknown_words(text)})"
                )
            if ids.size > max_len:
                if long_caption == "truncate":
                    ids = ids[:max_len]
                else:
                    if rng is None:
                        raise ValueError("long_caption='subset' needs an rng")
                    ids = ids[np.sort(rng.permutation(ids.size)[:max_len])]
            tokens[row, : ids.size] = ids
            lengths[row] = ids.size
        return tokens, lengths

    def _check_text(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"caption must be str, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"empty caption {text!r}: expected at least one word")


class AttnGANTokenizer(Tokenizer):
    """Word-level vocabulary: index 0 = '<end>' (padding), no unknown token (unknown words are
    dropped from the ids and reported by `unknown_words`)."""

    kind = "attngan"

    def __init__(self, wordtoix: Mapping[str, int], ixtoword: Mapping[int, str] | None = None):
        wordtoix = {str(w): int(i) for w, i in wordtoix.items()}
        if wordtoix.get("<end>") != PAD_ID:
            raise ValueError(f"wordtoix must map '<end>' to {PAD_ID}, got {wordtoix.get('<end>')}")
        if ixtoword is None:
            ixtoword = {i: w for w, i in wordtoix.items()}
        ixtoword = {int(i): str(w) for i, w in ixtoword.items()}
        if len(ixtoword) != len(wordtoix):
            raise ValueError(
                f"wordtoix ({len(wordtoix)} words) and ixtoword ({len(ixtoword)}) disagree"
            )
        self.wordtoix = wordtoix
        self.ixtoword = ixtoword

    @classmethod
    def from_captions(cls, captions: Iterable[str]) -> AttnGANTokenizer:
        """Every word of `captions` (no count threshold), '<end>' = 0, then words sorted."""
        vocab = sorted({w for c in captions for w in attngan_words(c)} - {"<end>"})
        return cls({"<end>": PAD_ID, **{w: i + 1 for i, w in enumerate(vocab)}})

    @property
    def vocab_size(self) -> int:
        return max(self.ixtoword) + 1

    def encode(self, text: str) -> list[int]:
        self._check_text(text)
        words = attngan_words(text)
        if not words:
            raise ValueError(f"empty caption {text!r}: no \\w+ word in it")
        return [self.wordtoix[w] for w in words if w in self.wordtoix]

    unknown_policy = "dropped (the AttnGAN vocabulary has no unknown token)"

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.ixtoword.get(int(i), "<?>") for i in ids if int(i) != PAD_ID)

    def decode_words(self, ids: Iterable[int]) -> list[str]:
        return [self.ixtoword.get(int(i), "<?>") for i in ids]

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in attngan_words(text) if w not in self.wordtoix]

    def save(self, path_dir: str | pathlib.Path) -> None:
        path = pathlib.Path(path_dir)
        path.mkdir(parents=True, exist_ok=True)
        words = [self.ixtoword[i] for i in sorted(self.ixtoword)]
        config = dict(kind=self.kind, ixtoword=words, indices=sorted(self.ixtoword))
        (path / _CONFIG_FILE).write_text(json.dumps(config))

    @classmethod
    def load(cls, path_dir: str | pathlib.Path) -> AttnGANTokenizer:
        config = _read_config(path_dir, cls.kind)
        ixtoword = dict(zip(config["indices"], config["ixtoword"], strict=True))
        return cls({w: i for i, w in ixtoword.items()}, ixtoword)


class SentencePieceTokenizer(Tokenizer):
    """A BPE SentencePiece model over normalized captions: pad=0, unk=1, no bos/eos."""

    kind = "sentencepiece"
    unk_id = 1

    def __init__(self, model_proto: bytes, words: Iterable[str] | None = None):
        """`words`: the distinct words of the training captions; a caption word outside them
        is reported by `unknown_words` even when the pieces can spell it."""
        import sentencepiece as spm

        self.words = frozenset(words) if words is not None else None
        self.model_proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        if self._sp.pad_id() != PAD_ID or self._sp.unk_id() != self.unk_id:
            raise ValueError(
                f"SentencePiece model must have pad_id={PAD_ID}, unk_id={self.unk_id}; got "
                f"{self._sp.pad_id()}, {self._sp.unk_id()}"
            )

    @classmethod
    def train(cls, captions: Sequence[str], vocab_size: int = 0) -> SentencePieceTokenizer:
        """Trains a BPE model in memory on `captions`.

        vocab_size is a soft limit (training stops early when no merge is left); 0 -> sized from
        the corpus: 3 x distinct words + distinct characters (at most 32000), enough for the
        frequent words to become single pieces."""
        import sentencepiece as spm

        sentences = [normalize(c).strip() for c in captions]
        sentences = [s for s in sentences if s]
        if not sentences:
            raise ValueError("SentencePiece: no non-empty caption to train on")
        if vocab_size < 0:
            raise ValueError(f"vocab_size must be >= 0, got {vocab_size}")
        if vocab_size == 0:
            words = {w for s in sentences for w in s.split()}
            chars = {ch for s in sentences for ch in s}
            vocab_size = min(3 * len(words) + len(chars), 32000)
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=buf,
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            model_type="bpe",
            character_coverage=1.0,
            num_threads=1,  # deterministic
            minloglevel=2,
            pad_id=PAD_ID,
            unk_id=cls.unk_id,
            bos_id=-1,
            eos_id=-1,
        )
        return cls(buf.getvalue(), {w for s in sentences for w in s.split()})

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        self._check_text(text)
        normal = normalize(text).strip()
        if not normal:
            raise ValueError(f"empty caption {text!r}")
        return list(self._sp.encode(normal))

    unknown_policy = (
        "spelled with sentence pieces (not a word of the training captions; characters the "
        "model never saw become <unk>)"
    )

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids if int(i) != PAD_ID])

    def has_known_piece(self, ids: Sequence[int]) -> bool:
        # <unk> and a bare word boundary carry no meaning
        boundary = self._sp.piece_to_id("\u2581")
        return any(int(i) not in (PAD_ID, self.unk_id, boundary) for i in ids)

    def decode_words(self, ids: Iterable[int]) -> list[str]:
        return [self._sp.id_to_piece(int(i)).replace("\u2581", "") or "_" for i in ids]

    def unknown_words(self, text: str) -> list[str]:
        return [
            w
            for w in normalize(text).split()
            if (self.words is not None and w not in self.words) or self.unk_id in self._sp.encode(w)
        ]

    def save(self, path_dir: str | pathlib.Path) -> None:
        path = pathlib.Path(path_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / _SPM_FILE).write_bytes(self.model_proto)
        config = dict(kind=self.kind, model=_SPM_FILE)
        if self.words is not None:
            (path / _WORDS_FILE).write_text("\n".join(sorted(self.words)) + "\n")
            config["words"] = _WORDS_FILE
        (path / _CONFIG_FILE).write_text(json.dumps(config))

    @classmethod
    def load(cls, path_dir: str | pathlib.Path) -> SentencePieceTokenizer:
        config = _read_config(path_dir, cls.kind)
        words = None
        if "words" in config:
            words = (pathlib.Path(path_dir) / config["words"]).read_text().split()
        return cls((pathlib.Path(path_dir) / config["model"]).read_bytes(), words)


_WORDS_FILE = "words.txt"
_KINDS = {c.kind: c for c in (AttnGANTokenizer, SentencePieceTokenizer)}


def _read_config(path_dir: str | pathlib.Path, kind: str | None = None) -> dict:
    path = pathlib.Path(path_dir) / _CONFIG_FILE
    if not path.is_file():
        raise TokenizerError(
            "no tokenizer", str(path_dir), f"{_CONFIG_FILE} is missing: run --mode=prepare"
        )
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TokenizerError("unreadable tokenizer file", str(path), str(e)) from None
    if config.get("kind") not in _KINDS or (kind is not None and config["kind"] != kind):
        raise TokenizerError(
            "unknown tokenizer kind",
            f"{path}: kind={config.get('kind')!r}",
            f"expected {kind or list(_KINDS)}",
        )
    return config


def build_tokenizer(
    kind: str,
    train_captions: Sequence[str],
    all_captions: Sequence[str],
    vocab_size: int = 0,
    wordtoix: Mapping[str, int] | None = None,
) -> Tokenizer:
    """A tokenizer of `kind` ("attngan" | "sentencepiece").

    attngan: `wordtoix` (the official pickle's) when given, else the words of `all_captions`
    (train + test, as AttnGAN). sentencepiece: trained on `train_captions` with `vocab_size`
    (0 -> sized from the corpus); `wordtoix` is ignored.
    """
    if kind == "attngan":
        if wordtoix is not None:
            return AttnGANTokenizer(wordtoix)
        return AttnGANTokenizer.from_captions(all_captions)
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train(train_captions, vocab_size)
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {sorted(_KINDS)}")


def load_tokenizer(path_dir: str | pathlib.Path) -> Tokenizer:
    """Reads whichever tokenizer was saved in `path_dir`."""
    return _KINDS[_read_config(path_dir)["kind"]].load(path_dir)
