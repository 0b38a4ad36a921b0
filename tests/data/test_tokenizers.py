"""Both tokenizers: AttnGAN rules, SentencePiece, the shared batch encoding, save/load."""

import numpy as np
import pytest

from mirrorgan_jax.data import tokenizers as T

CAPTIONS = [
    "A small bird with a RED crown\ufffd\ufffdand white belly.",
    "this bird has wings that are brown, and a short beak",
    "the bird is yellow with black stripes on its wings",
    "a tiny bird with a red head and a pointed beak",
    "Café-coloured bird sits on a branch",
] * 3


@pytest.fixture(scope="module")
def spm_tok():
    return T.SentencePieceTokenizer.train(CAPTIONS)


def test_attngan_word_rules():
    words = T.attngan_words("A small bird\ufffd\ufffdwith RED, café-coloured wings!")
    assert words == ["a", "small", "bird", "with", "red", "caf", "coloured", "wings"]


def test_attngan_vocab_sorted_and_round_trip():
    tok = T.AttnGANTokenizer.from_captions(CAPTIONS)
    assert tok.wordtoix["<end>"] == 0 == tok.pad_id
    words = [tok.ixtoword[i] for i in range(1, tok.vocab_size)]
    assert words == sorted(words)
    assert tok.vocab_size == len({w for c in CAPTIONS for w in T.attngan_words(c)}) + 1
    for c in CAPTIONS:
        ids = tok.encode(c)
        assert 0 not in ids
        assert tok.decode(ids) == " ".join(T.attngan_words(c))
    assert tok.decode([tok.wordtoix["bird"], 0, 0]) == "bird"


def test_attngan_official_index_used_unchanged(tmp_path):
    wordtoix = {"<end>": 0, "zebra": 1, "a": 7, "bird": 3}
    tok = T.build_tokenizer("attngan", ["ignored"], ["ignored"], 0, wordtoix=wordtoix)
    assert tok.encode("A zebra bird") == [7, 1, 3]
    assert tok.vocab_size == 8
    tok.save(tmp_path)
    back = T.load_tokenizer(tmp_path)
    assert isinstance(back, T.AttnGANTokenizer) and back.wordtoix == wordtoix
    with pytest.raises(ValueError, match="<end>"):
        T.AttnGANTokenizer({"a": 0})


def test_attngan_unknown_words_dropped_and_reported():
    tok = T.AttnGANTokenizer.from_captions(CAPTIONS)
    assert tok.encode("a purple bird") == [tok.wordtoix["a"], tok.wordtoix["bird"]]
    assert tok.unknown_words("a purple bird with zzz") == ["purple", "zzz"]
    with pytest.raises(ValueError, match="no word in the vocabulary"):
        tok.encode_batch(["purple zzz"], 5, long_caption="truncate")


@pytest.mark.parametrize("text", ["", "   ", "!!!"])
def test_attngan_empty_caption(text):
    with pytest.raises(ValueError, match="empty caption"):
        T.AttnGANTokenizer.from_captions(CAPTIONS).encode(text)


def test_sentencepiece_round_trip_and_ids(spm_tok):
    assert spm_tok.pad_id == 0 and spm_tok.vocab_size > 10
    for c in CAPTIONS:
        ids = spm_tok.encode(c)
        assert ids and 0 not in ids and spm_tok.unk_id not in ids
        assert spm_tok.decode(ids) == " ".join(T.normalize(c).split())
        assert spm_tok.unknown_words(c) == []


def test_sentencepiece_unknown_words_and_empty(spm_tok):
    # "xq" has letters the model never saw (<unk>); "feathers" is no training word
    assert spm_tok.unknown_words("a bird with xq feathers") == ["xq", "feathers"]
    assert spm_tok.unk_id in spm_tok.encode("xq")
    # spelled with known letters but never a training word: still reported, and kept by save/load
    word = "birdbeak"
    assert word not in " ".join(CAPTIONS).split()
    assert spm_tok.unknown_words(f"a {word} bird") == [word]
    assert spm_tok.unk_id not in spm_tok.encode(word)
    for text in ("", "  \n"):
        with pytest.raises(ValueError, match="empty caption"):
            spm_tok.encode(text)


def test_a_caption_of_only_unknown_pieces_has_nothing_known(spm_tok):
    # "xq" spells as a word boundary and <unk>: nothing to condition on
    assert not spm_tok.has_known_piece(spm_tok.encode("xq"))
    assert not spm_tok.has_known_piece(spm_tok.encode("xq qx"))
    assert spm_tok.has_known_piece(spm_tok.encode("xq bird"))
    attngan = T.AttnGANTokenizer.from_captions(CAPTIONS)
    assert attngan.has_known_piece(attngan.encode("a zebra"))
    assert not attngan.has_known_piece(attngan.encode("zebra"))  # unknown words are dropped


def test_sentencepiece_deterministic_save_load(spm_tok, tmp_path):
    again = T.build_tokenizer("sentencepiece", CAPTIONS, CAPTIONS, vocab_size=0)
    assert again.model_proto == spm_tok.model_proto
    spm_tok.save(tmp_path)
    assert (tmp_path / "spm.model").is_file()
    back = T.load_tokenizer(tmp_path)
    assert isinstance(back, T.SentencePieceTokenizer)
    assert back.encode(CAPTIONS[1]) == spm_tok.encode(CAPTIONS[1])
    assert back.words == spm_tok.words and back.words


def test_encode_batch_padding_and_lengths(spm_tok):
    texts = ["a bird", CAPTIONS[1]]
    full = [spm_tok.encode(t) for t in texts]
    tokens, lengths = spm_tok.encode_batch(texts, 40, np.random.default_rng(0))
    assert tokens.shape == (2, 40) and tokens.dtype == np.int32 and lengths.dtype == np.int32
    assert lengths.tolist() == [len(f) for f in full]
    for row, f in zip(tokens, full, strict=True):
        assert row[: len(f)].tolist() == f and (row[len(f) :] == 0).all()


def _is_subsequence(sub, seq) -> bool:
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)


def test_long_caption_subset_vs_truncate():
    tok = T.AttnGANTokenizer.from_captions(CAPTIONS)
    text = CAPTIONS[1]
    full = tok.encode(text)
    truncated, n = tok.encode_batch([text], 5, long_caption="truncate")
    assert n.tolist() == [5] and truncated[0].tolist() == full[:5]
    subsets = set()
    for seed in range(10):
        sub, n = tok.encode_batch([text], 5, np.random.default_rng(seed), "subset")
        assert n.tolist() == [5] and _is_subsequence(sub[0].tolist(), full)
        subsets.add(tuple(sub[0]))
    assert len(subsets) > 1  # random, not truncation
    again, _ = tok.encode_batch([text], 5, np.random.default_rng(3), "subset")
    assert tuple(again[0]) in subsets
    with pytest.raises(ValueError, match="rng"):
        tok.encode_batch([text], 5, None, "subset")
    with pytest.raises(ValueError, match="long_caption"):
        tok.encode_batch([text], 5, None, "cut")


def test_build_and_load_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        T.build_tokenizer("bpe", CAPTIONS, CAPTIONS)
    with pytest.raises(T.TokenizerError, match="run --mode=prepare"):
        T.load_tokenizer(tmp_path / "missing")
    with pytest.raises(ValueError, match="no non-empty caption"):
        T.SentencePieceTokenizer.train(["", " "])
