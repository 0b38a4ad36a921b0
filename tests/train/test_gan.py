"""MirrorGAN train step: official update order, EMA, 1 vs 8 devices, no recompilation, bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import shapes
from mirrorgan_jax import hyperparameters, parallel
from mirrorgan_jax.models.discriminators import Discriminator, init_discriminator
from mirrorgan_jax.networks import Networks
from mirrorgan_jax.train import gan

N_WORDS = 30
BATCH = 8


def _batch(nets, seed=0):
    rs = np.random.RandomState(seed)
    t = nets.words_num
    lengths = np.sort(rs.randint(2, t + 1, BATCH))[::-1].astype(np.int32)
    tokens = rs.randint(1, N_WORDS, (BATCH, t)).astype(np.int32)
    tokens[np.arange(t)[None] >= lengths[:, None]] = 0
    images = [rs.uniform(-1, 1, (BATCH, s, s, 3)).astype(np.float32) for s in nets.image_sizes]
    return {
        "images": images,
        "tokens": tokens,
        "lengths": lengths,
        "class_id": np.arange(BATCH, dtype=np.int32),
    }


def _setup():
    config = shapes.get_config("test")
    # The official discriminators (with BatchNorm, whose statistics must be the global batch's
    # on 8 devices); the end-to-end tests run the shapes default without it.
    config.model.discriminator_batchnorm = True
    nets = Networks.from_config(config, n_words=N_WORDS)
    hyper = hyperparameters.gan(config)
    rng = jax.random.key(0)
    state = gan.init_gan_state(nets, hyper, rng)
    frozen = gan.Frozen(
        nets.init_text_encoder(jax.random.key(1)),
        nets.init_caption_cnn(jax.random.key(2)),
        nets.init_caption_rnn(jax.random.key(3)),
    )
    return config, nets, hyper, state, frozen


@pytest.fixture(scope="module")
def setup():
    return _setup()


@pytest.fixture(scope="module")
def one_step(setup):
    """One step on a single device; the jitted step is compiled once for the module."""
    _, nets, hyper, state, frozen = setup
    step = jax.jit(lambda s, b, r: gan.train_step(s, b, r, frozen, nets=nets, hyper=hyper))
    batch = _batch(nets)
    new_state, metrics = step(state, batch, jax.random.key(5))
    return step, batch, new_state, metrics


def test_losses_finite_and_step_counts(one_step):
    _, _, new_state, metrics = one_step
    for k, v in metrics.items():
        assert np.isfinite(float(v)), k
    assert int(new_state.generator.step) == 1
    assert all(int(d.step) == 1 for d in new_state.discriminators)
    assert float(metrics["g/stream_ce"]) > 0


def test_generator_loss_uses_updated_discriminators(setup, one_step):
    """Official order: every D is updated before the G loss is computed through it."""
    _, nets, hyper, state, frozen = setup
    kind = hyper.adversarial_loss
    _, batch, new_state, metrics = one_step

    @jax.jit  # one program: run eagerly, these networks took ~20 s on CPU
    def adversarial_losses(state, new_state, tokens, lengths):
        words, sent = gan.encode_text(nets, frozen, tokens, lengths)
        k_z, k_eps = jax.random.split(jax.random.key(5))
        z = jax.random.normal(k_z, (BATCH, nets.z_dim))
        out, _ = nets.generator.apply(
            state.generator.variables(),
            z,
            sent,
            words,
            tokens == 0,
            train=True,
            rngs={"noise": k_eps},
            mutable=["batch_stats"],
        )
        pairs = []
        for i, d in enumerate(nets.discriminators):
            before, after = state.discriminators[i], new_state.discriminators[i]
            updated, _ = gan.generator_adversarial(
                d, after.params, before.batch_stats, out.images[i], sent, kind
            )
            old, _ = gan.generator_adversarial(
                d, before.params, before.batch_stats, out.images[i], sent, kind
            )
            pairs.append((updated, old))
        return pairs

    pairs = adversarial_losses(state, new_state, batch["tokens"], batch["lengths"])
    for size, (updated, old) in zip(nets.image_sizes, pairs, strict=True):
        np.testing.assert_allclose(float(updated), float(metrics[f"g/adv{size}"]), rtol=1e-4)
        assert abs(float(old) - float(updated)) > 1e-4, "the D update changed nothing"


def test_ema_follows_parameters(setup, one_step):
    _, _, hyper, state, _ = setup
    _, _, new_state, _ = one_step
    g, new_g = state.generator, new_state.generator
    decay = float(g.ema_decay_at(g.step))  # shapes: warm-up, 0.1 at step 0
    assert hyper.ema_warmup and decay == pytest.approx(0.1)
    ema, new, old = jax.device_get((g.ema_params, new_g.params, g.params))
    expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, new)  # numpy
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(new_g.ema_params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)), old, new))
    assert max(float(m) for m in moved) > 0


def test_no_recompilation_after_first_step(setup, one_step):
    _, nets, _, state, _ = setup
    step, batch, new_state, _ = one_step
    for i in range(2):
        new_state, _ = step(new_state, _batch(nets, seed=i + 1), jax.random.key(10 + i))
    assert step._cache_size() == 1


def test_one_vs_eight_devices_agree(setup, one_step):
    """BatchNorm statistics are those of the global batch: 8 devices == 1 device."""
    _, nets, hyper, state, frozen = setup
    _, batch, ref_state, ref_metrics = one_step
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8
    step8 = jax.jit(lambda s, b, r: gan.train_step(s, b, r, frozen, nets=nets, hyper=hyper))
    s8 = jax.device_put(state, parallel.replicated(mesh))
    b8 = parallel.shard_batch(mesh, batch)
    new8, m8 = step8(s8, b8, jax.random.key(5))
    for k in ref_metrics:
        np.testing.assert_allclose(float(m8[k]), float(ref_metrics[k]), rtol=2e-4, err_msg=k)
    # Adam's first step is lr * sign(g) where |g| is not tiny: allow a few ulps of lr.
    g_ref, g_8 = ref_state.generator.params, new8.generator.params
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_8), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-4)
    stats_ref = [d.batch_stats for d in ref_state.discriminators]
    stats_8 = [d.batch_stats for d in new8.discriminators]
    for a, b in zip(jax.tree.leaves(stats_ref), jax.tree.leaves(stats_8), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_bfloat16_step_is_finite_and_close(setup, one_step):
    config, _, hyper, state, frozen = setup
    config = config.copy_and_resolve_references()
    config.mixed_precision = "bfloat16"
    nets16 = Networks.from_config(config, n_words=N_WORDS)  # same variables, bf16 activations
    _, batch, _, ref_metrics = one_step
    step = jax.jit(lambda s, b, r: gan.train_step(s, b, r, frozen, nets=nets16, hyper=hyper))
    new_state, metrics = step(state, batch, jax.random.key(5))
    for leaf in jax.tree.leaves(new_state.generator.params):
        assert leaf.dtype == jnp.float32
    for k in ("g/loss", "g/stream_ce") + tuple(f"d{s}/loss" for s in nets16.image_sizes):
        assert np.isfinite(float(metrics[k])), k

    def adversarial(m, k):
        # The matching-aware penalty is a gradient norm to the 6th power: it multiplies bf16's
        # relative error by 6, so the loss is compared without it and the penalty more loosely.
        if k.startswith("d") and f"{k[:-5]}/ma_gp" in m:
            return float(m[k]) - hyper.ma_gp_weight * float(m[f"{k[:-5]}/ma_gp"])
        return float(m[k])

    for k in ("g/loss", "g/stream_ce") + tuple(f"d{s}/loss" for s in nets16.image_sizes):
        np.testing.assert_allclose(
            adversarial(metrics, k), adversarial(ref_metrics, k), rtol=0.05, err_msg=k
        )
    for k in (k for k in ref_metrics if k.endswith("/ma_gp")):
        np.testing.assert_allclose(float(metrics[k]), float(ref_metrics[k]), rtol=0.3, err_msg=k)


def test_sort_by_caption_length_is_stable_and_longest_first():
    batch = {
        "lengths": np.array([3, 5, 3, 7], np.int32),
        "tokens": np.arange(4)[:, None] * np.ones((1, 2), np.int32),
        "images": (np.arange(4, dtype=np.float32)[:, None],),
    }
    out = gan.sort_by_caption_length(batch)
    np.testing.assert_array_equal(out["lengths"], [7, 5, 3, 3])
    np.testing.assert_array_equal(out["tokens"][:, 0], [3, 1, 0, 2])  # ties keep batch order
    np.testing.assert_array_equal(out["images"][0][:, 0], [3, 1, 0, 2])


def test_gradient_penalty_options(setup):
    """r1_gamma = ma_gp_weight = 0 is the official D loss; each > 0 adds its weight x its
    penalty (> 0), and the D update can differentiate both (reverse over reverse, also through
    the CPU convolutions' custom weight gradient)."""
    _, nets, _, state, frozen = setup
    d, d_state = nets.discriminators[0], state.discriminators[0]
    params, stats = d_state.params, d_state.batch_stats
    batch = _batch(nets)
    real, fake = jnp.asarray(batch["images"][0]), jnp.asarray(batch["images"][0][::-1])
    _, sent = gan.encode_text(nets, frozen, batch["tokens"], batch["lengths"])
    both = gan.GanHyper(r1_gamma=2.0, ma_gp_weight=3.0)

    @jax.jit
    def losses_and_grads(params):
        base, (_, off) = gan.discriminator_loss_fn(d, params, stats, real, fake, sent)
        (with_both, (_, penalties)), grads = jax.value_and_grad(
            lambda p: gan.discriminator_loss_fn(d, p, stats, real, fake, sent, both),
            has_aux=True,
        )(params)
        return base, off, with_both, penalties, optax.tree.norm(grads)

    base, off, with_both, penalties, grad_norm = losses_and_grads(params)
    assert off == {} and float(penalties["r1"]) > 0.0 and float(penalties["ma_gp"]) > 0.0
    np.testing.assert_allclose(
        with_both, base + 2.0 * penalties["r1"] + 3.0 * penalties["ma_gp"], rtol=1e-6
    )
    assert np.isfinite(float(grad_norm)) and float(grad_norm) > 0.0


def test_matching_aware_penalty_is_the_gradient_norm_to_the_sixth(setup):
    """The penalty is mean_b ||(dC/dx_b, dC/ds_b)||^6 with C the conditional logit: checked
    against jax.jacrev of the logits of each sample (the batch does not mix in a BN-less D)."""
    _, nets, _, _, frozen = setup
    d = Discriminator(nets.image_sizes[0], df_dim=4, batchnorm=False)
    batch = _batch(nets)
    real = jnp.asarray(batch["images"][0])
    _, sent = gan.encode_text(nets, frozen, batch["tokens"], batch["lengths"])
    sent_dim = sent.shape[-1]
    params = init_discriminator(d, jax.random.key(4), sent_dim)["params"]
    stats = {}

    def cond(x, s):
        f, st = gan._d_apply(d, params, stats, gan.Discriminator.__call__, x)
        return gan._d_apply(d, params, st, gan.Discriminator.cond_logits, f, s)[0]  # [B]

    gx, gs = jax.jacrev(cond, argnums=(0, 1))(real, sent)  # [B, B, ...]
    b = real.shape[0]
    own = [jnp.concatenate([gx[i, i].ravel(), gs[i, i].ravel()]) for i in range(b)]
    expected = np.mean([float(jnp.sum(g**2)) ** 3 for g in own])
    got = gan.matching_aware_penalty(d, params, stats, real, sent)
    np.testing.assert_allclose(float(got), expected, rtol=1e-4)


def test_train_step_with_every_non_official_option(setup):
    """Hinge loss, both gradient penalties, DiffAugment and spectrally normalised BN-less Ds in
    one step: finite losses, the penalties reported per D, the power-iteration state updated."""
    config, _, _, _, frozen = setup
    config = config.copy_and_resolve_references()
    config.model.discriminator_batchnorm = False
    config.model.discriminator_spectral_norm = True
    config.train.update(
        adversarial_loss="hinge",
        ma_gp_weight=2.0,
        r1_gamma=0.5,
        diffaugment="translation,cutout,color",
    )
    nets = Networks.from_config(config, n_words=N_WORDS)
    hyper = hyperparameters.gan(config)
    state = gan.init_gan_state(nets, hyper, jax.random.key(0))
    step = jax.jit(lambda s, b, r: gan.train_step(s, b, r, frozen, nets=nets, hyper=hyper))
    new_state, metrics = step(state, _batch(nets), jax.random.key(5))
    for k, v in metrics.items():
        assert np.isfinite(float(v)), k
    for size in nets.image_sizes:
        assert float(metrics[f"d{size}/ma_gp"]) > 0 and float(metrics[f"d{size}/r1"]) > 0
    before = jax.tree.leaves(state.discriminators[0].batch_stats)
    after = jax.tree.leaves(new_state.discriminators[0].batch_stats)
    assert len(before) == len(after) > 0
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="adversarial_loss='wgan'"):
        gan.GanHyper(adversarial_loss="wgan")
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        gan.GanHyper(diffaugment="translation,flip")


def test_supplied_noise_must_match_the_batch(setup):
    """batch['noise'] replaces the z / CA-eps draws; a wrong key or shape is named (at trace)."""
    _, nets, hyper, state, frozen = setup
    batch = _batch(nets)
    cdim = nets.generator.condition_dim
    good = {"z": np.zeros((BATCH, nets.z_dim), np.float32), "ca_eps": np.zeros((BATCH, cdim))}

    def trace(noise):
        step = lambda s, b, r: gan.train_step(s, b, r, frozen, nets=nets, hyper=hyper)
        return jax.eval_shape(step, state, {**batch, "noise": noise}, jax.random.key(0))

    with pytest.raises(ValueError, match=r"keys \['ca_eps', 'z'\]; got \['z'\]"):
        trace({"z": good["z"]})
    with pytest.raises(ValueError, match=rf"\['z'\] must have shape \({BATCH}, {nets.z_dim}\)"):
        trace({**good, "z": np.zeros((BATCH, nets.z_dim + 1), np.float32)})
    new_state, _ = trace(good)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
