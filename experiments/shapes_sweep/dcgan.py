"""A textbook sentence-conditional DCGAN, as a reference for the shapes sweep (`--dcgan`).

The question it answers: do the shapes renders need more GAN steps than a CPU session has, or
does the MirrorGAN G/D pair miss something a plain GAN gets? It trains on the same batches, the
same frozen STEM sentence feature and is scored by the same attribute classifier as the
MirrorGAN variants of `sweep.py`, but shares none of their model code:

  G: [z (100), sentence (D)] -> dense 4x4x8w -> 4 x (transposed conv 4x4 stride 2, BN, ReLU)
     -> 64 x 64 x 3, tanh (last layer without BN), w = 64 by default.
  D: 4 x (conv 4x4 stride 2, BN except the first, LeakyReLU 0.2) -> 4x4x8w -> dense 2w = f;
     logit = dense(f) + <f, dense(sentence)> (a projection discriminator).
  Non-saturating logistic loss, one D and one G step per batch, Adam 2e-4 (0.5, 0.999).

A research tool next to sweep.py, not part of the package (it uses the package's train states
and text encoder as a user would).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from mirrorgan_jax.train import gan
from mirrorgan_jax.train.state import TrainState


class Generator(nn.Module):
    width: int = 64

    @nn.compact
    def __call__(self, z, sent, train: bool):
        bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)  # noqa: E731
        h = nn.Dense(4 * 4 * 8 * self.width)(jnp.concatenate([z, sent], -1))
        h = nn.relu(bn()(h.reshape(-1, 4, 4, 8 * self.width)))  # [B, 4, 4, 8w]
        for mult in (4, 2, 1):  # 8, 16, 32 px
            h = nn.ConvTranspose(mult * self.width, (4, 4), (2, 2), padding="SAME")(h)
            h = nn.relu(bn()(h))
        return jnp.tanh(nn.ConvTranspose(3, (4, 4), (2, 2), padding="SAME")(h))  # [B, 64, 64, 3]


class Discriminator(nn.Module):
    width: int = 64

    @nn.compact
    def __call__(self, x, sent):  # BN always on batch statistics, as in training
        h = x  # [B, 64, 64, 3]
        for i, mult in enumerate((1, 2, 4, 8)):
            h = nn.Conv(mult * self.width, (4, 4), (2, 2), padding=((1, 1), (1, 1)))(h)
            if i:
                h = nn.BatchNorm(use_running_average=False, momentum=0.9)(h)
            h = nn.leaky_relu(h, 0.2)  # ends [B, 4, 4, 8w]
        f = nn.leaky_relu(nn.Dense(2 * self.width)(h.reshape(h.shape[0], -1)), 0.2)
        return nn.Dense(1)(f)[:, 0] + jnp.sum(f * nn.Dense(2 * self.width)(sent), -1)  # [B]


@struct.dataclass
class State:
    g: TrainState
    d: TrainState


def make_reference(nets, frozen, batch_size: int, sent_dim: int, width: int = 64, z_dim: int = 100):
    """-> (init(key) -> State, step(state, batch, key) -> (state, metrics),
    sample(state, tokens, lengths, key) -> images [B, 64, 64, 3] in [-1, 1])."""
    gen, disc = Generator(width), Discriminator(width)
    tx = lambda: optax.adam(2e-4, 0.5, 0.999)  # noqa: E731

    def init(key):
        k_g, k_d = jax.random.split(key)
        z, s = jnp.zeros((batch_size, z_dim)), jnp.zeros((batch_size, sent_dim))
        gv = gen.init(k_g, z, s, True)
        dv = disc.init(k_d, jnp.zeros((batch_size, 64, 64, 3)), s)
        return State(
            g=TrainState.create(params=gv["params"], tx=tx(), batch_stats=gv["batch_stats"]),
            d=TrainState.create(params=dv["params"], tx=tx(), batch_stats=dv["batch_stats"]),
        )

    def d_apply(params, stats, x, s):
        variables = {"params": params, "batch_stats": stats}
        out, new = disc.apply(variables, x, s, mutable=["batch_stats"])
        return out, new["batch_stats"]

    def step(state, batch, key):
        _, sent = gan.encode_text(nets, frozen, batch["tokens"], batch["lengths"])
        sent = jax.lax.stop_gradient(sent)  # [B, D]
        real = batch["images"][-1]  # [B, 64, 64, 3]
        z = jax.random.normal(key, (real.shape[0], z_dim))

        def g_forward(p):
            x, new = gen.apply(
                {"params": p, "batch_stats": state.g.batch_stats},
                z,
                sent,
                True,
                mutable=["batch_stats"],
            )
            return x, new["batch_stats"]

        # One G forward: D trains on its output, then G's gradient goes back through it (vjp).
        fake, g_vjp, g_stats = jax.vjp(g_forward, state.g.params, has_aux=True)  # [B, 64, 64, 3]

        def d_loss_fn(p):
            lr, st = d_apply(p, state.d.batch_stats, real, sent)
            lf, st = d_apply(p, st, jax.lax.stop_gradient(fake), sent)
            loss = jnp.mean(jax.nn.softplus(-lr)) + jnp.mean(jax.nn.softplus(lf))
            return loss, st

        (d_loss, d_stats), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d.params)
        d = state.d.apply_gradients(grads=d_grads, batch_stats=d_stats)

        def g_loss_fn(x):
            lf, _ = d_apply(d.params, d.batch_stats, x, sent)
            return jnp.mean(jax.nn.softplus(-lf))

        g_loss, d_fake = jax.value_and_grad(g_loss_fn)(fake)
        (g_grads,) = g_vjp(d_fake)
        g = state.g.apply_gradients(grads=g_grads, batch_stats=g_stats)
        return State(g=g, d=d), {"d_loss": d_loss, "g_loss": g_loss}

    def sample(state, tokens, lengths, key):
        _, sent = gan.encode_text(nets, frozen, tokens, lengths)
        z = jax.random.normal(key, (tokens.shape[0], z_dim))
        return gen.apply(state.g.variables(), z, sent, False)

    return jax.jit(init), step, sample
