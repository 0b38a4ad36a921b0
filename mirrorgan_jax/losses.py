"""Training objectives: adversarial BCE, KL, STREAM caption cross-entropy, the DAMSM losses
and the `shapes` attribute-classifier loss.

Pure functions of arrays; every weight (lambda, gamma) is an argument, nothing reads a config
and nothing here knows a model. All losses are computed in float32 whatever the input dtype.
References:
  * adversarial / KL: `qiaott/MirrorGAN miscc/losses.py` (`discriminator_loss`,
    `generator_loss`, `KL_loss`);
  * STREAM: `qiaott/MirrorGAN trainer.py` (the caption cross-entropy of `generator_loss`);
  * DAMSM word / sentence losses: `taoxugit/AttnGAN code/miscc/losses.py` (`words_loss`,
    `sent_loss`, `cosine_similarity`) and `code/GlobalAttention.py` (`func_attention`).

The discriminators of this port return LOGITS; the official heads end in a Sigmoid followed by
`nn.BCELoss`. `bce_with_logits` reproduces that composition (see its docstring for the float32
saturation behaviour).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
BceMode = Literal["official", "stable"]
# "bce": the official sigmoid cross-entropy; "hinge": the hinge loss of later text-to-image
# GANs (DF-GAN, Tao et al. CVPR 2022), not in the official code.
AdversarialKind = Literal["bce", "hinge"]
ADVERSARIAL_KINDS = ("bce", "hinge")

# PyTorch's BCELoss clamps each log term at -100 (so one sample costs at most 100).
_LOG_CLAMP = -100.0


def _clamped_log(x: Array) -> Array:
    """max(log(x), -100) with a zero (not NaN) gradient where the clamp or log(0) applies."""
    raw = jnp.log(jnp.where(x > 0, x, 1.0))
    ok = (x > 0) & (raw > _LOG_CLAMP)
    return jnp.where(ok, jnp.log(jnp.where(ok, x, 1.0)), _LOG_CLAMP)


def _clamped_log1m(p: Array) -> Array:
    """max(log(1 - p), -100), computed as PyTorch does (log1p(-p)), NaN-free gradient."""
    q = 1.0 - p  # exact in float32 for p >= 0.5 (Sterbenz), so q == 0 iff p == 1
    ok_pre = q > 0
    raw = jnp.log1p(-jnp.where(ok_pre, p, 0.0))
    ok = ok_pre & (raw > _LOG_CLAMP)
    return jnp.where(ok, jnp.log1p(-jnp.where(ok, p, 0.0)), _LOG_CLAMP)


def bce_with_logits(logits: Array, label: float, mode: BceMode = "official") -> Array:
    """Mean binary cross-entropy of `sigmoid(logits)` against a constant label (1. or 0.).

    mode="official" (default) reproduces `nn.BCELoss()(torch.sigmoid(x), y)` in float32:
    p = sigmoid(x) is rounded to float32 first and each log term is clamped at -100. Because
    sigmoid(x) rounds to exactly 1.0 for x >~ 16.6, the label-0 term log(1 - p) saturates:
    it is ~-16.6 just below that point and jumps to the clamp, -100, at and above it (gradient
    0 there, as in PyTorch, where sigmoid's derivative p * (1 - p) is 0). Symmetrically the
    label-1 term saturates at 100 for x < ~-100 (float32 underflow of p).

    mode="stable" uses log_sigmoid: -log(sigmoid(x)) = softplus(-x) exactly, with no
    saturation and no clamp (a non-official fix; values agree with "official" to float
    rounding wherever the official one has not saturated).

    Args:
      logits: [...] pre-sigmoid scores (any float dtype; computed in float32).
      label: the target, 1.0 (real) or 0.0 (fake), for every element.
      mode: "official" or "stable".
    Returns:
      scalar, the mean over all elements.
    """
    if label not in (0.0, 1.0):
        raise ValueError(f"bce_with_logits: label must be 0. or 1., got {label!r}")
    x = jnp.asarray(logits, jnp.float32)
    if mode == "official":
        p = jax.nn.sigmoid(x)
        per = -_clamped_log(p) if label == 1.0 else -_clamped_log1m(p)
    elif mode == "stable":
        per = -jax.nn.log_sigmoid(x) if label == 1.0 else -jax.nn.log_sigmoid(-x)
    else:
        raise ValueError(f"bce_with_logits: mode must be 'official' or 'stable', got {mode!r}")
    return jnp.mean(per)


def _discriminator_term(logits: Array, real: bool, kind: AdversarialKind, mode: BceMode) -> Array:
    """One D term: BCE against label 1 (real) or 0, or the hinge max(0, 1 -+ x). Scalar."""
    if kind == "bce":
        return bce_with_logits(logits, 1.0 if real else 0.0, mode)
    if kind == "hinge":
        x = jnp.asarray(logits, jnp.float32)
        return jnp.mean(jax.nn.relu(1.0 - x if real else 1.0 + x))
    raise ValueError(f"adversarial loss kind must be one of {ADVERSARIAL_KINDS}, got {kind!r}")


def discriminator_loss(
    uncond_real: Array,
    cond_real: Array,
    uncond_fake: Array,
    cond_fake: Array,
    cond_wrong: Array,
    mode: BceMode = "official",
    kind: AdversarialKind = "bce",
) -> dict[str, Array]:
    """The official per-stage D loss (`miscc/losses.py discriminator_loss`) and its five
    terms (BCE, or with kind="hinge" the hinge terms in the same combination).

    Args:
      uncond_real: [B] unconditional logits on real images.
      cond_real: [B] conditional logits on (real features, sent_emb).
      uncond_fake: [B] unconditional logits on the (detached) fake images.
      cond_fake: [B] conditional logits on (fake features, sent_emb).
      cond_wrong: [B-1] conditional logits of the mismatched pairs. The CALLER computes them
        as the cond head on real_features[0:B-1] with sent_emb[1:B] (image b paired with
        sentence b+1; class ids are not checked), in train mode, so the head's BN sees B-1
        samples, as in the official code.
      mode: BCE mode, see `bce_with_logits`.
      kind: "bce" (official) or "hinge" (max(0, 1 - x) on real, max(0, 1 + x) on fake and
        wrong pairs).
    Returns:
      dict with "real_uncond", "real_cond", "fake_uncond", "fake_cond", "wrong_cond" and
      "loss" = (real_uncond + real_cond) / 2 + (fake_uncond + fake_cond + wrong_cond) / 3.
    """
    if cond_wrong.shape[0] != cond_real.shape[0] - 1 or cond_wrong.shape[0] < 1:
        raise ValueError(
            f"discriminator_loss: cond_wrong must have B-1 >= 1 entries for B={cond_real.shape[0]}"
            f", got shape {cond_wrong.shape} (pairs real_features[0:B-1] with sent_emb[1:B])"
        )
    t = {
        "real_uncond": _discriminator_term(uncond_real, True, kind, mode),
        "real_cond": _discriminator_term(cond_real, True, kind, mode),
        "fake_uncond": _discriminator_term(uncond_fake, False, kind, mode),
        "fake_cond": _discriminator_term(cond_fake, False, kind, mode),
        "wrong_cond": _discriminator_term(cond_wrong, False, kind, mode),
    }
    t["loss"] = (t["real_uncond"] + t["real_cond"]) / 2.0 + (
        t["fake_uncond"] + t["fake_cond"] + t["wrong_cond"]
    ) / 3.0
    return t


def generator_adversarial_loss(
    uncond_fake: Array,
    cond_fake: Array,
    mode: BceMode = "official",
    kind: AdversarialKind = "bce",
) -> Array:
    """One stage's G adversarial term: BCE(U(D(fake)), 1) + BCE(C(D(fake), s), 1), or with
    kind="hinge" -mean(U(D(fake))) - mean(C(D(fake), s)). Scalar.

    uncond_fake, cond_fake: [B] logits of the (not detached) fakes through the updated D.
    """
    if kind == "hinge":
        return -jnp.mean(uncond_fake.astype(jnp.float32)) - jnp.mean(cond_fake.astype(jnp.float32))
    if kind != "bce":
        raise ValueError(f"adversarial loss kind must be one of {ADVERSARIAL_KINDS}, got {kind!r}")
    return bce_with_logits(uncond_fake, 1.0, mode) + bce_with_logits(cond_fake, 1.0, mode)


def kl_loss(mu: Array, logvar: Array) -> Array:
    """The official KL_loss: -0.5 * mean(1 + logvar - mu^2 - exp(logvar)) over all elements."""
    mu = mu.astype(jnp.float32)
    logvar = logvar.astype(jnp.float32)
    return -0.5 * jnp.mean(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar))


def caption_cross_entropy(logits: Array, tokens: Array, lengths: Array) -> Array:
    """Official STREAM caption loss: cross-entropy averaged over the sum(lengths) valid tokens.

    logits [B, T, V] (from CaptionRNN), tokens int [B, T], lengths int [B] -> scalar float32.
    Equals `nn.CrossEntropyLoss()(packed_logits, packed_targets)` of the official code.
    """
    t = tokens.shape[1]
    mask = (jnp.arange(t)[None, :] < lengths[:, None]).astype(jnp.float32)  # [B, T]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B, T, V]
    nll = -jnp.take_along_axis(logp, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def attribute_classifier_loss(logits: tuple[Array, ...], targets: Array) -> tuple[Array, Array]:
    """Sum over attribute fields of the mean cross-entropy over the rows where the field is
    defined (the `shapes` attribute classifier and the backbone pretraining heads).

    logits: one [B, classes] array per field; targets int [B, fields] (-1 = undefined).
    Returns (loss, per-field accuracy [fields] over defined rows).
    """
    total, accs = 0.0, []
    for k, lg in enumerate(logits):
        t = targets[:, k]
        valid = t >= 0
        n = jnp.maximum(valid.sum(), 1)
        ce = optax.softmax_cross_entropy_with_integer_labels(lg, jnp.maximum(t, 0))
        total = total + jnp.sum(jnp.where(valid, ce, 0.0)) / n
        accs.append(jnp.sum(valid & (jnp.argmax(lg, -1) == t)) / n)
    return total, jnp.stack(accs)


# ---------------------------------------------------------------------------------------------
# DAMSM (AttnGAN) matching losses
# ---------------------------------------------------------------------------------------------


def _safe_norm(x: Array, axis: int = -1) -> Array:
    """L2 norm with a zero gradient (PyTorch's convention) at the zero vector instead of NaN."""
    sq = jnp.sum(jnp.square(x), axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _same_class_mask(class_ids: Array | None, batch: int) -> Array | None:
    """[B, B] True where j != i and class_ids[j] == class_ids[i] (AttnGAN's `masks`)."""
    if class_ids is None:
        return None
    if class_ids.shape != (batch,):
        raise ValueError(f"DAMSM loss: class_ids must have shape [{batch}], got {class_ids.shape}")
    same = class_ids[:, None] == class_ids[None, :]
    return same & ~jnp.eye(batch, dtype=bool)


def _matching_cross_entropy(scores: Array, mask: Array | None) -> tuple[Array, Array]:
    """CE with the diagonal as labels, rows (loss0) and columns (loss1); masked pairs -> -inf."""
    if mask is not None:
        scores = jnp.where(mask, -jnp.inf, scores)
    diag = jnp.arange(scores.shape[0])
    loss0 = -jnp.mean(jax.nn.log_softmax(scores, axis=1)[diag, diag])
    loss1 = -jnp.mean(jax.nn.log_softmax(scores, axis=0)[diag, diag])
    return loss0, loss1


def damsm_sentence_loss(
    img_code: Array,
    sent_emb: Array,
    class_ids: Array | None,
    gamma3: float,
    eps: float = 1e-8,
) -> tuple[Array, Array]:
    """AttnGAN `sent_loss`: cosine(image code i, sentence j) * gamma3, CE both directions.

    The cosine denominator is `max(|v_i| * |e_j|, eps)` (the product is clamped, not each norm).
    Pairs j != i with class_ids[j] == class_ids[i] are set to -inf before the softmax.

    Args:
      img_code: [B, D] global image codes (rows of the score matrix).
      sent_emb: [B, D] sentence embeddings (columns).
      class_ids: [B] int class ids, or None (no masking).
      gamma3: logit scale (10 in AttnGAN).
    Returns:
      (loss0, loss1): loss0 = CE over each image's row (image -> captions), loss1 = CE over
      each caption's column (caption -> images).
    """
    v = jnp.asarray(img_code, jnp.float32)  # [B, D]
    e = jnp.asarray(sent_emb, jnp.float32)  # [B, D]
    if v.shape != e.shape or v.ndim != 2:
        raise ValueError(f"damsm_sentence_loss: img_code {v.shape} and sent_emb {e.shape} differ")
    norm = _safe_norm(v)[:, None] * _safe_norm(e)[None, :]  # [B, B]
    scores = (v @ e.T) / jnp.maximum(norm, eps) * gamma3  # [B_img, B_cap]
    return _matching_cross_entropy(scores, _same_class_mask(class_ids, v.shape[0]))


def damsm_word_loss(
    region_features: Array,
    words_emb: Array,
    lengths: Array,
    class_ids: Array | None,
    gamma1: float,
    gamma2: float,
    gamma3: float,
    eps: float = 1e-8,
) -> tuple[Array, Array, Array]:
    """AttnGAN `words_loss` (with `func_attention`), vectorised over all caption/image pairs.

    For caption i (its first lengths[i] words e_t) and image j (regions v_s):
      a[s, t] = softmax_t(v_s . e_t)           over the caption's real words only,
      b[t, s] = softmax_s(gamma1 * a[s, t])    over regions,
      c_t = sum_s b[t, s] v_s,                 R_t = cos(c_t, e_t) (denominator clamped at eps),
      R(i, j) = log(sum_t exp(gamma2 * R_t))   over real words.
    Logits are gamma3 * R with images as rows; same-class off-diagonal pairs are -inf.

    Args:
      region_features: [B, h, w, D] image region features (17x17 for Inception).
      words_emb: [B, T, D] word features (padded steps are ignored).
      lengths: [B] int true caption lengths (>= 1).
      class_ids: [B] int class ids, or None.
      gamma1, gamma2, gamma3: AttnGAN smoothing factors (4, 5, 10).
    Returns:
      (loss0, loss1, attention): loss0 = CE over each image's row (image -> captions),
      loss1 = CE over each caption's column; attention [B, h, w, T] = b of caption i over its
      own image i (the maps AttnGAN draws), 0 at padded words.
    """
    ctx = jnp.asarray(region_features, jnp.float32)
    words = jnp.asarray(words_emb, jnp.float32)
    bsz, h, w, d = ctx.shape
    if words.ndim != 3 or words.shape[0] != bsz or words.shape[2] != d:
        raise ValueError(f"damsm_word_loss: words_emb must be [{bsz}, T, {d}], got {words.shape}")
    if lengths.shape != (bsz,):
        raise ValueError(f"damsm_word_loss: lengths must be [{bsz}], got {lengths.shape}")
    t = words.shape[1]
    ctx = ctx.reshape(bsz, h * w, d)  # [J, S, D]
    word_mask = jnp.arange(t)[None, :] < lengths[:, None]  # [I, T]
    words = jnp.where(word_mask[..., None], words, 0.0)

    # i: caption, j: image, s: region, t: word.
    scores = jnp.einsum("jsd,itd->ijst", ctx, words)  # [I, J, S, T]
    scores = jnp.where(word_mask[:, None, None, :], scores, -jnp.inf)
    attn = jax.nn.softmax(scores, axis=3)  # over words (Eq. 8)
    attn = jax.nn.softmax(gamma1 * attn, axis=2)  # over regions (Eq. 9)
    weighted = jnp.einsum("ijst,jsd->ijtd", attn, ctx)  # [I, J, T, D]

    w12 = jnp.einsum("itd,ijtd->ijt", words, weighted)  # [I, J, T]
    denom = _safe_norm(words)[:, None, :] * _safe_norm(weighted)  # [I, J, T]
    cos = w12 / jnp.maximum(denom, eps)
    row = jnp.where(word_mask[:, None, :], gamma2 * cos, -jnp.inf)
    sim = jax.scipy.special.logsumexp(row, axis=2)  # [I, J]  (log sum exp, Eq. 10)

    scores_ij = sim.T * gamma3  # [J images, I captions]
    loss0, loss1 = _matching_cross_entropy(scores_ij, _same_class_mask(class_ids, bsz))

    diag = jnp.arange(bsz)
    own = attn[diag, diag]  # [B, S, T]
    own = jnp.where(word_mask[:, None, :], own, 0.0).reshape(bsz, h, w, t)
    return loss0, loss1, own
