"""MirrorGAN training (`--mode=train`): GLAM + CA against one discriminator per stage, plus the
STREAM redescription loss, in the official update order
(`qiaott/MirrorGAN trainer.py Trainer.train`):

  one G forward -> update every D on the stopped-gradient fakes -> G loss through the *updated*
  Ds (+ lambda1 * STREAM cross-entropy on the last stage + KL) -> G update -> EMA of G.

The G forward runs once: `jax.vjp` keeps its pullback, the Ds are updated on the fakes, and the
G-loss gradient with respect to the fakes (and mu, logvar) is pulled back through it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from mirrorgan_jax import losses
from mirrorgan_jax.models.discriminators import Discriminator
from mirrorgan_jax.networks import Networks
from mirrorgan_jax.parallel import jit_or_shapes
from mirrorgan_jax.train import augment
from mirrorgan_jax.train.state import GanState, GeneratorState, TrainState

# Exponent of the matching-aware gradient penalty (DF-GAN: Tao et al., CVPR 2022).
MA_GP_POWER = 6.0


@flax.struct.dataclass
class Frozen:
    """Frozen networks, passed as an argument, never optimised or saved with the GAN state."""

    text_encoder: Any
    caption_cnn: Any
    caption_rnn: Any


@dataclasses.dataclass(frozen=True)
class GanHyper:
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    ema_decay: float = 0.999
    lambda1: float = 10.0
    ema_warmup: bool = False
    r1_gamma: float = 0.0  # not official: R1 penalty on the real logits' input gradient
    # Not official either (later text-to-image GANs): the adversarial loss ("bce" official,
    # "hinge"), the weight of the matching-aware gradient penalty on real image-text pairs,
    # and the DiffAugment policy of the Ds' inputs (see train/augment.py; "" = none).
    adversarial_loss: str = "bce"
    ma_gp_weight: float = 0.0
    diffaugment: str = ""

    def __post_init__(self):
        if self.adversarial_loss not in losses.ADVERSARIAL_KINDS:
            raise ValueError(
                f"adversarial_loss={self.adversarial_loss!r}: expected one of "
                f"{losses.ADVERSARIAL_KINDS}"
            )
        augment.parse_policy(self.diffaugment)

    def g_tx(self) -> optax.GradientTransformation:
        return optax.adam(self.lr_g, b1=self.beta1, b2=self.beta2)

    def d_tx(self) -> optax.GradientTransformation:
        return optax.adam(self.lr_d, b1=self.beta1, b2=self.beta2)

    def gan_state(self, generator: dict, discriminators: list[dict]) -> GanState:
        """Fresh optimiser states (and EMA = G) over these variables ({"params", ...})."""
        return GanState(
            generator=GeneratorState.create(
                params=generator["params"],
                tx=self.g_tx(),
                batch_stats=generator.get("batch_stats", {}),
                ema_decay=self.ema_decay,
                ema_warmup=self.ema_warmup,
            ),
            discriminators=tuple(
                TrainState.create(
                    params=d["params"], tx=self.d_tx(), batch_stats=d.get("batch_stats", {})
                )
                for d in discriminators
            ),
        )


def init_gan_state(nets: Networks, hyper: GanHyper, rng, abstract: bool = False) -> GanState:
    """Fresh G (official init) and Ds; with abstract=True only shapes (for restore targets)."""

    def build(r):
        kg, *kd = jax.random.split(r, 1 + len(nets.discriminators))
        g = nets.init_generator(kg)
        return hyper.gan_state(g, [nets.init_discriminator(i, k) for i, k in enumerate(kd)])

    return jit_or_shapes(build, rng, abstract=abstract)


def encode_text(nets: Networks, frozen: Frozen, tokens, lengths):
    """Frozen STEM in eval mode; outputs detached as the official code does."""
    words, sent = nets.text_encoder.apply(frozen.text_encoder, tokens, lengths, train=False)
    return jax.lax.stop_gradient(words), jax.lax.stop_gradient(sent)


def _d_apply(d: Discriminator, params, stats, method, *args):
    """One train-mode call of a D (trunk or a head); returns (output, updated BN stats)."""
    out, upd = d.apply(
        {"params": params, "batch_stats": stats},
        *args,
        train=True,
        method=method,
        mutable=["batch_stats"],
    )
    return out, _merge_stats(stats, upd.get("batch_stats", {}))


def _merge_stats(old, new):
    out = dict(old)
    for k, v in new.items():
        out[k] = _merge_stats(old[k], v) if isinstance(v, dict) and k in old else v
    return out


def r1_penalty(d: Discriminator, params, stats, real, sent):
    """R1 (Mescheder et al. 2018; not in the official code): the mean over the batch of
    ||d(uncond + cond real logit)/d image||^2 / 2, through a train-mode D (its BN statistics
    updates are dropped). Scalar."""

    def logits_sum(x):
        f, s = _d_apply(d, params, stats, Discriminator.__call__, x)
        uncond, s = _d_apply(d, params, s, Discriminator.uncond_logits, f)
        cond, _ = _d_apply(d, params, s, Discriminator.cond_logits, f, sent)
        return jnp.sum(uncond) + jnp.sum(cond)

    grad = jax.grad(logits_sum)(real)  # [B, H, W, 3]
    return 0.5 * jnp.mean(jnp.sum(jnp.square(grad), axis=(1, 2, 3)))


def matching_aware_penalty(d: Discriminator, params, stats, real, sent):
    """Matching-aware gradient penalty (DF-GAN; not in the official code): the batch mean of
    ||(d cond logit / d image, d cond logit / d sentence)||^MA_GP_POWER on real image-text
    pairs, through a train-mode D (its BN statistics updates are dropped). It flattens the
    D's conditional output around the real, matching pairs. Scalar."""

    def cond_sum(x, s):
        f, st = _d_apply(d, params, stats, Discriminator.__call__, x)
        cond, _ = _d_apply(d, params, st, Discriminator.cond_logits, f, s)
        return jnp.sum(cond)

    g_image, g_sent = jax.grad(cond_sum, argnums=(0, 1))(real, sent)  # [B, H, W, 3], [B, nef]
    sq = jnp.sum(jnp.square(g_image), axis=(1, 2, 3)) + jnp.sum(jnp.square(g_sent), axis=1)
    return jnp.mean(sq ** (MA_GP_POWER / 2.0))


def discriminator_loss_fn(
    d: Discriminator, params, stats, real, fake, sent, hyper: GanHyper | None = None
):
    """Official discriminator_loss: separate train-mode forwards for real and fake; the
    'wrong' pair is the cond head on real features[0:B-1] with sent[1:B]. The options of
    `hyper` that are not official: hinge terms instead of BCE, plus r1_gamma x `r1_penalty`
    and ma_gp_weight x `matching_aware_penalty`. Returns (loss, (stats, penalties))."""
    hyper = hyper or GanHyper()
    penalties = {}
    if hyper.r1_gamma:
        penalties["r1"] = r1_penalty(d, params, stats, real, sent)
    if hyper.ma_gp_weight:
        penalties["ma_gp"] = matching_aware_penalty(d, params, stats, real, sent)
    f_real, stats = _d_apply(d, params, stats, Discriminator.__call__, real)
    f_fake, stats = _d_apply(d, params, stats, Discriminator.__call__, fake)
    cond_real, stats = _d_apply(d, params, stats, Discriminator.cond_logits, f_real, sent)
    cond_fake, stats = _d_apply(d, params, stats, Discriminator.cond_logits, f_fake, sent)
    cond_wrong, stats = _d_apply(d, params, stats, Discriminator.cond_logits, f_real[:-1], sent[1:])
    uncond_real, stats = _d_apply(d, params, stats, Discriminator.uncond_logits, f_real)
    uncond_fake, stats = _d_apply(d, params, stats, Discriminator.uncond_logits, f_fake)
    terms = losses.discriminator_loss(
        uncond_real, cond_real, uncond_fake, cond_fake, cond_wrong, kind=hyper.adversarial_loss
    )
    loss = terms["loss"]
    if "r1" in penalties:
        loss = loss + hyper.r1_gamma * penalties["r1"]
    if "ma_gp" in penalties:
        loss = loss + hyper.ma_gp_weight * penalties["ma_gp"]
    return loss, (stats, penalties)


def generator_adversarial(d: Discriminator, params, stats, fake, sent, kind: str = "bce"):
    """BCE(U(D(fake)),1) + BCE(C(D(fake), s),1) (or the hinge form) through a train-mode D."""
    f_fake, stats = _d_apply(d, params, stats, Discriminator.__call__, fake)
    uncond, stats = _d_apply(d, params, stats, Discriminator.uncond_logits, f_fake)
    cond, stats = _d_apply(d, params, stats, Discriminator.cond_logits, f_fake, sent)
    return losses.generator_adversarial_loss(uncond, cond, kind=kind), stats


def stream_cross_entropy(nets: Networks, frozen: Frozen, image, tokens, lengths):
    """STREAM redescription loss on the last-stage image (frozen CNN in eval mode)."""
    feats = nets.caption_cnn.apply(frozen.caption_cnn, image, train=False)
    logits = nets.caption_rnn.apply(frozen.caption_rnn, feats, tokens, lengths)
    return losses.caption_cross_entropy(logits.astype(jnp.float32), tokens, lengths)


def sort_by_caption_length(batch: dict) -> dict:
    """The global batch ordered by caption length, longest first, ties in batch order (stable).

    The official batch is length-sorted (`datasets.py prepare_data`) and the mismatched pairs are
    neighbours in that order (`miscc/losses.py discriminator_loss`). Each host's pipeline sorts
    only its own rows, so on several hosts the global batch would be sorted per host and pair
    other neighbours; sorting here, on the global array, gives every process count the same
    batch (on one host it is the identity)."""
    order = jnp.argsort(-batch["lengths"], stable=True)  # [B]
    return jax.tree.map(lambda x: jnp.take(x, order, axis=0), batch)


def _noise(batch: dict, nets: Networks, k_z) -> tuple[jax.Array, jax.Array | None]:
    """(z, ca_eps) of one step: `batch["noise"]` when given, else z drawn from `k_z` and
    ca_eps None (the generator's CA draws it from the 'noise' rng)."""
    b = batch["tokens"].shape[0]
    if "noise" not in batch:
        return jax.random.normal(k_z, (b, nets.z_dim), jnp.float32), None
    noise = batch["noise"]
    condition_dim = nets.generator.condition_dim
    expected = {"z": (b, nets.z_dim), "ca_eps": (b, condition_dim)}
    if not isinstance(noise, dict) or set(noise) != set(expected):
        got = sorted(noise) if isinstance(noise, dict) else type(noise).__name__
        raise ValueError(f"batch['noise'] must be a dict with keys ['ca_eps', 'z']; got {got}")
    for key, shape in expected.items():
        if tuple(noise[key].shape) != shape:
            raise ValueError(
                f"batch['noise'][{key!r}] must have shape {shape} (batch size, "
                f"{'model.z_dim' if key == 'z' else 'model.condition_dim'}); got "
                f"{tuple(noise[key].shape)}"
            )
    return (
        jnp.asarray(noise["z"], jnp.float32),
        jnp.asarray(noise["ca_eps"], jnp.float32),
    )


def train_step(
    state: GanState, batch: dict, rng: jax.Array, frozen: Frozen, *, nets: Networks, hyper: GanHyper
) -> tuple[GanState, dict]:
    """One MirrorGAN iteration (pure; jit with `nets`/`hyper` bound).

    The noise z and the CA epsilon are drawn from `rng`, unless the batch carries
    `batch["noise"] = {"z": [B, z_dim], "ca_eps": [B, condition_dim]}`: then those are used as
    given (ca_eps is not scaled by model.ca_noise_scale) and `rng` draws nothing. Their rows
    belong to the batch rows and are sorted with them. This lets a caller replay another
    implementation's draws (the parity tests replay the official code's)."""
    batch = sort_by_caption_length(batch)
    tokens, lengths = batch["tokens"], batch["lengths"]
    reals = batch["images"]
    words, sent = encode_text(nets, frozen, tokens, lengths)
    pad_mask = tokens == 0  # [B, T] True at pads, as (captions == 0)
    k_z, k_eps = jax.random.split(rng)
    z, ca_eps = _noise(batch, nets, k_z)  # [B, z_dim], [B, condition_dim] or None

    generator = state.generator

    def g_forward(g_params):
        out, upd = nets.generator.apply(
            {"params": g_params, "batch_stats": generator.batch_stats},
            z,
            sent,
            words,
            pad_mask,
            train=True,
            eps=ca_eps,
            rngs={"noise": k_eps},
            mutable=["batch_stats"],
        )
        images = tuple(x.astype(jnp.float32) for x in out.images)
        return (images, out.mu, out.logvar), upd["batch_stats"]

    (fakes, mu, logvar), g_pullback, g_stats = jax.vjp(g_forward, generator.params, has_aux=True)

    policy = augment.parse_policy(hyper.diffaugment)
    # Keys of the augmentations: derived from rng only when a policy is set, so that without
    # one the step draws exactly what it always drew.
    k_aug = jax.random.fold_in(rng, 1) if policy else None

    def d_input(x, stage, role):  # the image a D sees (role 0: real, 1: fake in D, 2: fake in G)
        if not policy:
            return x
        return augment.augment(x, jax.random.fold_in(k_aug, 3 * stage + role), policy)

    metrics = {}
    updated = []  # the discriminators after their update, before the G loss goes through them
    for i, d in enumerate(nets.discriminators):
        fake_i = d_input(jax.lax.stop_gradient(fakes[i]), i, 1)
        real_i = d_input(reals[i], i, 0)
        d_state = state.discriminators[i]
        (loss_d, (stats, penalties)), grads = jax.value_and_grad(
            lambda p, d=d, d_state=d_state, real=real_i, fake_i=fake_i: discriminator_loss_fn(
                d, p, d_state.batch_stats, real, fake_i, sent, hyper
            ),
            has_aux=True,
        )(d_state.params)
        updated.append(d_state.apply_gradients(grads=grads, batch_stats=stats))
        size = nets.image_sizes[i]
        metrics[f"d{size}/loss"] = loss_d
        metrics[f"d{size}/grad_norm"] = optax.tree.norm(grads)
        metrics.update({f"d{size}/{k}": v for k, v in penalties.items()})

    def g_loss_fn(fakes, mu, logvar):
        total = 0.0
        terms, stats_out = {}, []
        for i, d in enumerate(nets.discriminators):
            adv, stats = generator_adversarial(
                d,
                updated[i].params,
                updated[i].batch_stats,
                d_input(fakes[i], i, 2),
                sent,
                hyper.adversarial_loss,
            )
            terms[f"g/adv{nets.image_sizes[i]}"] = adv
            stats_out.append(stats)
            total = total + adv
        if hyper.lambda1:
            ce = stream_cross_entropy(nets, frozen, fakes[-1], tokens, lengths)
        else:  # the ablation without STREAM: skip its forward/backward entirely
            ce = jnp.zeros((), jnp.float32)
        kl = losses.kl_loss(mu, logvar)
        total = total + hyper.lambda1 * ce + kl
        terms.update({"g/stream_ce": ce, "g/kl": kl, "g/loss": total})
        return total, (terms, tuple(stats_out))

    (_, (terms, d_stats_after_g)), out_grads = jax.value_and_grad(
        g_loss_fn, argnums=(0, 1, 2), has_aux=True
    )(fakes, mu, logvar)
    (g_grads,) = g_pullback(out_grads)
    generator = generator.apply_gradients(grads=g_grads, batch_stats=g_stats)
    metrics.update(terms)
    metrics["g/grad_norm"] = optax.tree.norm(g_grads)
    metrics["g/param_norm"] = optax.tree.norm(generator.params)
    discriminators = tuple(
        d.replace(batch_stats=stats) for d, stats in zip(updated, d_stats_after_g, strict=True)
    )
    return GanState(generator=generator, discriminators=discriminators), metrics


def make_train_step(nets: Networks, hyper: GanHyper, frozen: Frozen, donate: bool = True):
    """The jitted `(state, batch, rng) -> (state, metrics)` with the frozen nets bound (as
    arguments of the program, not constants baked into it), and its `lower(state, batch, rng)`
    for compiling ahead of time."""
    step = functools.partial(train_step, nets=nets, hyper=hyper)
    jitted = jax.jit(step, donate_argnums=(0,) if donate else ())

    def bound(state, batch, rng):
        return jitted(state, batch, rng, frozen)

    bound.lower = lambda state, batch, rng: jitted.lower(state, batch, rng, frozen)
    return bound


def generate(nets: Networks, g_variables: dict, frozen: Frozen, tokens, lengths, rng):
    """Eval-mode G (BN running statistics; CA still samples, as official sampling does);
    `g_variables` = {"params", "batch_stats"}, e.g. `GeneratorState.ema_variables()`."""
    words, sent = encode_text(nets, frozen, tokens, lengths)
    k_z, k_eps = jax.random.split(rng)
    z = jax.random.normal(k_z, (tokens.shape[0], nets.z_dim), jnp.float32)
    return nets.generator.apply(
        g_variables,
        z,
        sent,
        words,
        tokens == 0,
        train=False,
        rngs={"noise": k_eps},
    )
