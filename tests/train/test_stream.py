"""STREAM pretraining: the frozen backbone, and the evaluation's other-image cross-entropy,
which measures how much the captioner uses images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shapes
from mirrorgan_jax.networks import Networks
from mirrorgan_jax.train import stream as pretrain_stream

N_WORDS, BATCH = 30, 4


def _batch(nets, rs, same_image: bool):
    t = nets.words_num
    lengths = np.array([t, t - 2, 5, 3], np.int32)
    tokens = rs.randint(1, N_WORDS, (BATCH, t)).astype(np.int32)
    tokens[np.arange(t)[None] >= lengths[:, None]] = 0
    size = nets.image_sizes[-1]
    images = rs.uniform(-1, 1, (1 if same_image else BATCH, size, size, 3)).astype(np.float32)
    images = np.repeat(images, BATCH, axis=0) if same_image else images
    return {"images": [images], "tokens": tokens, "lengths": lengths}


@pytest.fixture(scope="module")
def captioner():
    nets = Networks.from_config(shapes.get_config("test"), n_words=N_WORDS)
    tx = pretrain_stream.make_tx(pretrain_stream.StreamHyper())
    state = pretrain_stream.init_state(nets, tx, jax.random.key(0))
    return nets, state


def test_other_image_cross_entropy(captioner):
    nets, state = captioner
    rs = np.random.RandomState(0)
    same = [_batch(nets, rs, True) for _ in range(2)]
    report = pretrain_stream.evaluate(nets, state.params, state.batch_stats, same)
    assert report["tokens"] == 2 * int(np.sum(same[0]["lengths"]))
    # Every image of the batch is the same one: rolling changes nothing.
    assert report["cross_entropy_other_image"] == pytest.approx(report["cross_entropy"], rel=1e-6)
    assert report["image_reliance"] == pytest.approx(0.0, abs=1e-6)
    # Distinct images: the captions are scored against other images, so the value moves.
    distinct = pretrain_stream.evaluate(
        nets, state.params, state.batch_stats, [_batch(nets, rs, False)]
    )
    assert abs(distinct["image_reliance"]) > 1e-6
    assert distinct["image_reliance"] == pytest.approx(
        distinct["cross_entropy_other_image"] - distinct["cross_entropy"]
    )
    assert 0.0 <= distinct["token_accuracy"] <= 1.0


def test_freeze_backbone_leaves_the_backbone_alone():
    params = {
        "cnn": {"resnet": {"conv1": jnp.ones(4)}, "linear": {"kernel": jnp.ones(2)}},
        "rnn": {"lstm": jnp.ones(3)},
    }
    grads = jax.tree.map(jnp.ones_like, params)
    for freeze in (False, True):
        tx = pretrain_stream.make_tx(pretrain_stream.StreamHyper(freeze_backbone=freeze))
        up, _ = tx.update(grads, tx.init(params), params)
        assert np.all(np.asarray(up["cnn"]["resnet"]["conv1"]) == 0) == freeze
        assert np.all(np.asarray(up["cnn"]["linear"]["kernel"]) != 0)
        assert np.all(np.asarray(up["rnn"]["lstm"]) != 0)
