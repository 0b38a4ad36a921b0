"""The sentence-embedding probe: a bag of words reads what single-object captions state, noise
reads chance, and the targets are the captions' own attributes."""

import numpy as np

from mirrorgan_jax.data import shapes
from mirrorgan_jax.evaluation import text_probe


def _captions(split, n):
    return [c for caps in shapes.split_captions(split, n, 3) for c in caps]


def _bag_of_words(captions, vocab):
    x = np.zeros((len(captions), len(vocab)), np.float32)
    for i, c in enumerate(captions):
        for w in c.replace(",", " ").split():
            x[i, vocab[w]] = 1.0
    return x


def test_bag_of_words_reads_single_object_attributes_and_noise_reads_chance():
    train, test = _captions("train", 300), _captions("test", 100)
    vocab = {
        w: i
        for i, w in enumerate(
            sorted({w for c in train + test for w in c.replace(",", " ").split()})
        )
    }
    a_tr, a_te = text_probe.caption_attributes(train), text_probe.caption_attributes(test)
    bow = text_probe.linear_probe(
        _bag_of_words(train, vocab), a_tr, _bag_of_words(test, vocab), a_te
    )
    for name in ("colour", "shape", "size", "position", "num_objects"):
        assert bow[name] > 0.97, (name, bow[name])
    assert set(bow) == set(text_probe.TARGETS)
    rng = np.random.default_rng(0)
    noise = text_probe.linear_probe(
        rng.normal(size=(len(train), 16)), a_tr, rng.normal(size=(len(test), 16)), a_te
    )
    assert noise["shape"] < 0.35 and noise["colour"] < 0.3  # 6 and 7 classes


def test_targets_are_the_captions_own_order():
    caption = "a small red star left of a big blue box"
    a = text_probe.caption_attributes([caption, "a big blue box right of a small red star"])
    shape0 = text_probe.TARGETS["pair/shape0"][0]
    k = shapes.schema.ATTRIBUTE_FIELDS.index(shape0)
    assert a[0, k] == shapes.SHAPES.index("star") and a[1, k] == shapes.SHAPES.index("square")
