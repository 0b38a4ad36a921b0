"""Loss functions: official parity fixtures (losses.npz, stream.npz) and independent numpy loops."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirrorgan_jax import losses

REPO = Path(__file__).resolve().parents[1]
PARITY = Path(os.environ.get("MIRRORGAN_PARITY_DIR", REPO / "tests" / "testdata" / "parity"))


def _logit(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


def _rel_close(a, b, rtol=1e-5):
    a, b = float(a), float(b)
    assert abs(a - b) <= rtol * max(abs(b), 1e-12), (a, b)


@pytest.fixture(scope="module")
def fixture_losses():
    return np.load(PARITY / "losses.npz")


@pytest.fixture(scope="module")
def manifest():
    return json.loads((PARITY / "manifest.json").read_text())


# ---------------------------------------------------------------- BCE


def test_bce_official_matches_torch_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 3.0, size=64).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    for label in (0.0, 1.0):
        ref = -np.mean(label * np.log(p) + (1 - label) * np.log1p(-p))
        for mode in ("official", "stable"):
            _rel_close(losses.bce_with_logits(jnp.asarray(x), label, mode), ref, 1e-5)


def test_bce_saturation_regimes():
    big = jnp.array([20.0, 30.0], jnp.float32)  # sigmoid rounds to exactly 1.0 in float32
    assert float(jax.nn.sigmoid(big)[0]) == 1.0
    # official: log(1 - 1) = -inf -> clamped to -100
    np.testing.assert_allclose(losses.bce_with_logits(big, 0.0), 100.0)
    # stable: softplus(x) ~ x
    np.testing.assert_allclose(losses.bce_with_logits(big, 0.0, "stable"), 25.0, rtol=1e-6)
    small = jnp.array([-120.0, -200.0], jnp.float32)
    np.testing.assert_allclose(losses.bce_with_logits(small, 1.0), 100.0)
    np.testing.assert_allclose(losses.bce_with_logits(small, 1.0, "stable"), 160.0, rtol=1e-6)

    def grads(mode, label, x):
        return jax.jit(jax.grad(lambda v: losses.bce_with_logits(v, label, mode)))(x)

    # Official: the saturated terms have zero gradient (not NaN), as in PyTorch.
    np.testing.assert_array_equal(grads("official", 0.0, big), 0.0)
    np.testing.assert_array_equal(grads("official", 1.0, small), 0.0)
    # Stable: gradient sigmoid(x) - y, divided by the count.
    np.testing.assert_allclose(grads("stable", 0.0, big), 0.5, rtol=1e-6)
    np.testing.assert_allclose(grads("stable", 1.0, small), -0.5, rtol=1e-6)
    # Unsaturated gradient is (sigmoid(x) - y) / n in both modes.
    x = jnp.array([-2.0, 0.5, 3.0])
    for mode in ("official", "stable"):
        np.testing.assert_allclose(grads(mode, 1.0, x), (jax.nn.sigmoid(x) - 1) / 3, rtol=1e-5)


def test_bce_rejects_bad_label_and_mode():
    with pytest.raises(ValueError, match="label"):
        losses.bce_with_logits(jnp.zeros(2), 0.5)
    with pytest.raises(ValueError, match="mode"):
        losses.bce_with_logits(jnp.zeros(2), 1.0, "fast")


# ---------------------------------------------------------------- official fixtures


def _groups(npz, prefix: str) -> list[int]:
    pat = re.compile(rf"^debug/{prefix}(\d+)/")
    return sorted({int(m.group(1)) for k in npz.files if (m := pat.match(k))})


def test_discriminator_loss_matches_official(fixture_losses):
    f = fixture_losses
    stages = _groups(f, "d")
    assert stages, "no debug/d<i> groups in losses.npz"
    for i in stages:
        lg = {
            n: _logit(f[f"debug/d{i}/{n}"])
            for n in ("uncond_real", "cond_real", "uncond_fake", "cond_fake", "cond_wrong")
        }
        terms = losses.discriminator_loss(**lg)
        _rel_close(terms["loss"], f[f"output/errD/{i}"])
        p = f[f"debug/d{i}/cond_wrong"].astype(np.float64)
        _rel_close(terms["wrong_cond"], -np.mean(np.log1p(-p)))


def test_discriminator_loss_checks_wrong_pair_count():
    with pytest.raises(ValueError, match="B-1"):
        losses.discriminator_loss(*(jnp.zeros(3),) * 5)


def test_generator_loss_and_kl_match_official(fixture_losses, manifest):
    f = fixture_losses
    stages = _groups(f, "g")
    assert stages, "no debug/g<i> groups in losses.npz"
    total = 0.0
    for i in stages:
        g = losses.generator_adversarial_loss(
            _logit(f[f"debug/g{i}/uncond_fake"]), _logit(f[f"debug/g{i}/cond_fake"])
        )
        _rel_close(g, f[f"output/g_adv/{i}"])
        total = total + g
    _rel_close(total, f["output/g_adv_total"])
    kl = losses.kl_loss(f["input/mu"], f["input/logvar"])
    _rel_close(kl, f["output/kl"])
    lambda1 = float(manifest["files"]["losses.npz"]["LAMBDA1"])
    _rel_close(total + lambda1 * f["output/cap_ce"], f["output/errG_generator_loss"])
    _rel_close(total + lambda1 * f["output/cap_ce"] + kl, f["output/errG_total"])


def test_caption_cross_entropy_matches_official_packed():
    s = np.load(PARITY / "stream.npz")
    packed, targets = s["output/logits"], s["output/targets"]  # [N, V], [N] time-major packed
    captions, lens = s["input/captions"], s["input/cap_lens"]
    b, t = captions.shape
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 50, size=(b, t, packed.shape[1])).astype(np.float32)  # garbage pads
    n = 0
    for step in range(t):
        for row in range(b):
            if lens[row] > step:
                logits[row, step] = packed[n]
                assert targets[n] == captions[row, step]
                n += 1
    assert n == packed.shape[0]
    ce = losses.caption_cross_entropy(jnp.asarray(logits), jnp.asarray(captions), jnp.asarray(lens))
    _rel_close(ce, s["output/cap_ce"])


def test_kl_zero_at_prior():
    assert float(losses.kl_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)))) == 0.0


# ---------------------------------------------------------------- DAMSM (numpy loops)


def _np_softmax(x, axis):
    x = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def _np_ce_both(scores, class_ids):
    b = scores.shape[0]
    scores = scores.copy()
    if class_ids is not None:
        for i in range(b):
            for j in range(b):
                if i != j and class_ids[i] == class_ids[j]:
                    scores[i, j] = -np.inf

    def ce(s):
        out = 0.0
        for r in range(b):
            m = np.max(s[r])
            out += m + np.log(np.sum(np.exp(s[r] - m))) - s[r, r]
        return out / b

    return ce(scores), ce(scores.T)


def _np_sent_loss(v, e, class_ids, g3, eps=1e-8):
    b = v.shape[0]
    s = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            s[i, j] = v[i] @ e[j] / max(np.linalg.norm(v[i]) * np.linalg.norm(e[j]), eps) * g3
    return _np_ce_both(s, class_ids)


def _np_words_loss(img, words, lens, class_ids, g1, g2, g3, eps=1e-8):
    """AttnGAN words_loss: a loop over captions, each attended over every image."""
    b, h, w, d = img.shape
    ctx = img.reshape(b, h * w, d)
    sims = np.zeros((b, b))
    maps = []
    for i in range(b):
        word = words[i, : lens[i]]  # [L, D]
        for j in range(b):
            a = _np_softmax(ctx[j] @ word.T, axis=1)  # [S, L] over words
            a = _np_softmax(a.T * g1, axis=1)  # [L, S] over regions
            wc = a @ ctx[j]  # [L, D]
            cos = np.sum(word * wc, 1) / np.maximum(
                np.linalg.norm(word, axis=1) * np.linalg.norm(wc, axis=1), eps
            )
            sims[j, i] = np.log(np.sum(np.exp(g2 * cos)))
            if i == j:
                maps.append(a.reshape(lens[i], h, w))
    l0, l1 = _np_ce_both(sims * g3, class_ids)
    return l0, l1, maps


@pytest.fixture(scope="module")
def damsm_case():
    rng = np.random.default_rng(3)
    b, h, w, d, t = 4, 3, 3, 6, 5
    img = rng.normal(size=(b, h, w, d))
    words = rng.normal(size=(b, t, d))
    lens = np.array([5, 3, 4, 1])
    words[np.arange(t)[None, :] >= lens[:, None]] = 0.0  # encoder output is 0 at pads
    code, sent = rng.normal(size=(b, d)), rng.normal(size=(b, d))
    return dict(img=img, words=words, lens=lens, code=code, sent=sent)


@pytest.fixture(scope="module")
def word_loss_fn():
    return jax.jit(losses.damsm_word_loss, static_argnums=(4, 5, 6))


@pytest.mark.parametrize("class_ids", [None, np.array([7, 2, 7, 3])])
def test_damsm_word_loss_matches_loop(damsm_case, word_loss_fn, class_ids):
    c = damsm_case
    ref0, ref1, ref_maps = _np_words_loss(
        c["img"], c["words"], c["lens"], class_ids, 4.0, 5.0, 10.0
    )
    cid = None if class_ids is None else jnp.asarray(class_ids)
    l0, l1, maps = word_loss_fn(
        jnp.asarray(c["img"], jnp.float32),
        jnp.asarray(c["words"], jnp.float32),
        jnp.asarray(c["lens"]),
        cid,
        4.0,
        5.0,
        10.0,
    )
    np.testing.assert_allclose([l0, l1], [ref0, ref1], rtol=2e-5)
    assert maps.shape == (4, 3, 3, 5)
    for i, m in enumerate(ref_maps):
        np.testing.assert_allclose(
            np.moveaxis(np.asarray(maps[i]), -1, 0)[: c["lens"][i]], m, rtol=1e-4, atol=1e-6
        )
        np.testing.assert_array_equal(maps[i, ..., c["lens"][i] :], 0.0)


@pytest.mark.parametrize("class_ids", [None, np.array([1, 1, 2, 1])])
def test_damsm_sentence_loss_matches_loop(damsm_case, class_ids):
    c = damsm_case
    ref = _np_sent_loss(c["code"], c["sent"], class_ids, 10.0)
    cid = None if class_ids is None else jnp.asarray(class_ids)
    got = losses.damsm_sentence_loss(jnp.asarray(c["code"]), jnp.asarray(c["sent"]), cid, 10.0)
    np.testing.assert_allclose(got, ref, rtol=2e-5)


def test_damsm_class_masking_and_symmetric_case(word_loss_fn):
    # Every pair identical: all logits equal, so the CE is log(#unmasked candidates).
    b = 4
    code = jnp.tile(jnp.arange(1.0, 4.0)[None], (b, 1))
    l0, l1 = losses.damsm_sentence_loss(code, code, None, 10.0)
    np.testing.assert_allclose([l0, l1], np.log(b), rtol=1e-6)
    # Samples 0, 1, 2 share a class: each of them sees only itself and sample 3.
    cls = jnp.array([5, 5, 5, 9])
    l0, l1 = losses.damsm_sentence_loss(code, code, cls, 10.0)
    # rows 0..2: candidates {i, 3} -> log 2; row 3: all 4 candidates (none share class 9) -> log 4
    expect = (3 * np.log(2.0) + np.log(4.0)) / 4
    np.testing.assert_allclose([l0, l1], expect, rtol=1e-6)
    # Distinct classes change nothing.
    np.testing.assert_allclose(
        losses.damsm_sentence_loss(code, code, jnp.arange(b), 10.0), np.log(b), rtol=1e-6
    )
    # Symmetric scores (image codes == sentence codes) -> loss0 == loss1.
    rng = np.random.default_rng(5)
    v = jnp.asarray(rng.normal(size=(b, 6)), jnp.float32)
    l0, l1 = losses.damsm_sentence_loss(v, v, None, 10.0)
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    # Word loss with identical images and identical captions: log(B), and log 2 / log 4 masked.
    img = jnp.tile(jnp.asarray(rng.normal(size=(1, 3, 3, 6)), jnp.float32), (b, 1, 1, 1))
    words = jnp.tile(jnp.asarray(rng.normal(size=(1, 5, 6)), jnp.float32), (b, 1, 1))
    lens = jnp.full((b,), 5)
    w0, w1, _ = word_loss_fn(img, words, lens, None, 4.0, 5.0, 10.0)
    np.testing.assert_allclose([w0, w1], np.log(b), rtol=1e-5)
    w0, w1, _ = word_loss_fn(img, words, lens, cls, 4.0, 5.0, 10.0)
    np.testing.assert_allclose([w0, w1], expect, rtol=1e-5)


def test_damsm_word_loss_gradient_finite(damsm_case):
    c = damsm_case

    def total(img, words):
        l0, l1, _ = losses.damsm_word_loss(
            img, words, jnp.asarray(c["lens"]), jnp.array([7, 2, 7, 3]), 4.0, 5.0, 10.0
        )
        s0, s1 = losses.damsm_sentence_loss(
            img.mean((1, 2)), words.sum(1), jnp.array([7, 2, 7, 3]), 10.0
        )
        return l0 + l1 + s0 + s1

    g_img, g_words = jax.jit(jax.grad(total, argnums=(0, 1)))(
        jnp.asarray(c["img"], jnp.float32), jnp.asarray(c["words"], jnp.float32)
    )
    assert np.all(np.isfinite(g_img)) and np.all(np.isfinite(g_words))
    assert np.any(g_img != 0) and np.any(g_words != 0)


def test_attribute_classifier_loss_skips_undefined_fields():
    """Per field, the mean cross-entropy over the rows where the target is defined (>= 0),
    summed over fields; the accuracy likewise."""
    rng = np.random.default_rng(0)
    logits = (
        rng.normal(size=(4, 3)).astype(np.float32),
        rng.normal(size=(4, 5)).astype(np.float32),
    )
    targets = np.array([[0, 4], [2, -1], [1, -1], [-1, 0]], np.int32)
    loss, acc = losses.attribute_classifier_loss(tuple(map(jnp.asarray, logits)), targets)
    want_loss, want_acc = 0.0, []
    for k, lg in enumerate(logits):
        rows = [b for b in range(4) if targets[b, k] >= 0]
        logp = lg - np.log(np.sum(np.exp(lg), axis=1, keepdims=True))
        want_loss += np.mean([-logp[b, targets[b, k]] for b in rows])
        want_acc.append(np.mean([np.argmax(lg[b]) == targets[b, k] for b in rows]))
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(acc), want_acc, rtol=1e-6)
