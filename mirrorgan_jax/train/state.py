"""The train states: one Flax `TrainState` per optimised unit, the generator's with its EMA.

`TrainState` is Flax's (step, params, `tx`, opt_state) plus the BatchNorm running statistics
(`batch_stats`); `apply_gradients(grads=g, batch_stats=s)` is one optimiser step that also replaces
the statistics. `GeneratorState` adds the exponential moving average of the parameters that
snapshots and samples use, updated in `apply_gradients` after the optimiser step, as
`qiaott/MirrorGAN trainer.py Trainer.train` does after every G step (parameters only: the BN
statistics are the live ones, as the official `miscc/utils.py load_params` leaves them).

Who holds which state: the GAN stage a `GanState` (the generator's and one per
discriminator, each with its own Adam, as the official code builds one optimiser per network);
DAMSM and STREAM pretraining one `TrainState` each over both of their networks, because the
official pretraining scripts optimise the two networks of each with a single Adam.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from mirrorgan_jax.parallel import jit_or_shapes

PyTree = Any


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the BatchNorm running statistics (`batch_stats`)."""

    batch_stats: PyTree = struct.field(default_factory=dict)

    @classmethod
    def create(
        cls, *, params: PyTree, tx: optax.GradientTransformation, batch_stats=None, **kwargs
    ):
        """Step 0 (an int32 array, so a state keeps its type through a step), `tx.init(params)`.
        Modules are applied by the step functions, so `apply_fn` is None."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            apply_fn=None,
            params=params,
            tx=tx,
            opt_state=tx.init(params),
            batch_stats={} if batch_stats is None else batch_stats,
            **kwargs,
        )

    def variables(self) -> dict[str, PyTree]:
        """{"params", "batch_stats"}, as `module.apply` takes them."""
        return {"params": self.params, "batch_stats": self.batch_stats}


class GeneratorState(TrainState):
    """A TrainState with an EMA of the parameters, updated after every optimiser step.

    `ema_decay` is the official constant (0.999); with `ema_warmup` the decay of the update
    after `step` updates is min(ema_decay, (1 + step) / (10 + step)), so that a short run's EMA
    does not keep a large share of the random initialisation (0.999^1700 = 18% of it).
    """

    ema_params: PyTree = None
    ema_decay: float = struct.field(pytree_node=False, default=0.999)
    ema_warmup: bool = struct.field(pytree_node=False, default=False)

    @classmethod
    def create(cls, *, params: PyTree, tx: optax.GradientTransformation, batch_stats=None, **kw):
        """As `TrainState.create`, the EMA starting at the parameters."""
        return super().create(
            params=params, tx=tx, batch_stats=batch_stats, ema_params=params, **kw
        )

    def ema_decay_at(self, step: jax.Array) -> jax.Array:
        """The decay of the EMA update that follows `step` optimiser steps (float32)."""
        if not self.ema_warmup:
            return jnp.full(jnp.shape(step), self.ema_decay, jnp.float32)
        t = step.astype(jnp.float32)
        return jnp.minimum(jnp.float32(self.ema_decay), (1.0 + t) / (10.0 + t))

    def apply_gradients(self, *, grads: PyTree, **kwargs) -> "GeneratorState":
        """The optimiser step (other fields, e.g. batch_stats, replaced from kwargs), then
        ema <- decay * ema + (1 - decay) * new params."""
        decay = self.ema_decay_at(self.step)
        new = super().apply_gradients(grads=grads, **kwargs)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, self.ema_params, new.params)
        return new.replace(ema_params=ema)

    def ema_variables(self) -> dict[str, PyTree]:
        """{"params": ema_params, "batch_stats"}: the weights snapshots and samples use."""
        return {"params": self.ema_params, "batch_stats": self.batch_stats}


@struct.dataclass
class GanState:
    """What the GAN stage optimises: the generator and one state per discriminator."""

    generator: GeneratorState
    discriminators: tuple[TrainState, ...]


def with_frozen_subtree(
    tx: optax.GradientTransformation, network: str, subtree: str
) -> optax.GradientTransformation:
    """`tx` on every parameter but `params[network][subtree]`, which never changes (the update
    is zero): the official recipes keep a pretrained ImageNet backbone fixed while the rest of
    its network trains."""

    def labels(params):
        return {
            name: (
                {k: ("frozen" if k == subtree else "train") for k in tree}
                if name == network
                else jax.tree.map(lambda _: "train", tree)
            )
            for name, tree in params.items()
        }

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def stop_gradient_at(params: PyTree, network: str, subtree: str) -> PyTree:
    """`params` with `params[network][subtree]` behind a stop_gradient: a frozen part's update
    is zero anyway (`with_frozen_subtree`), and this spares its backward pass."""
    frozen = {**params[network], subtree: jax.lax.stop_gradient(params[network][subtree])}
    return {**params, network: frozen}


def joint_state(tx, variables: dict[str, dict], stats_of: str) -> TrainState:
    """One TrainState over several networks trained by one optimiser: params {name: params} of
    `variables` ({name: {"params", ...}}), the BatchNorm statistics of network `stats_of` (the
    only one with BatchNorm)."""
    params = {name: v["params"] for name, v in variables.items()}
    return TrainState.create(
        params=params, tx=tx, batch_stats=variables[stats_of].get("batch_stats", {})
    )


def init_joint_state(
    tx,
    inits: dict[str, Callable],
    stats_of: str,
    rng,
    abstract: bool = False,
    given: dict[str, PyTree] | None = None,
) -> TrainState:
    """`joint_state` over fresh networks, `inits` {name: (rng, given) -> variables} taking the
    splits of `rng` in order and `given[name]` (None when absent): weights read from a file
    that the init places instead of drawing them. They enter the one jitted program as its
    arguments, never as constants baked into it. With `abstract=True` only the state's shapes
    (a restore target)."""
    given = {name: (given or {}).get(name) for name in inits}

    def build(r, g):
        keys = jax.random.split(r, len(inits))
        return joint_state(
            tx, {name: init(k, g[name]) for (name, init), k in zip(inits.items(), keys)}, stats_of
        )

    return jit_or_shapes(build, rng, given, abstract=abstract)


def fit_random_batches(
    step: Callable, state, inputs: np.ndarray, targets: np.ndarray, steps: int, batch_size: int,
    seed: int,
):  # fmt: skip
    """`steps` calls of `step(state, inputs[idx], targets[idx]) -> (state, loss)` on batches of
    `batch_size` rows drawn uniformly with replacement (numpy seed `seed`), for classifiers
    trained on arrays in memory. Returns (state, last loss, seconds the loop took)."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    loss = jnp.zeros(())
    for _ in range(steps):
        idx = rng.integers(0, inputs.shape[0], batch_size)
        state, loss = step(state, inputs[idx], targets[idx])
    jax.block_until_ready(loss)
    return state, loss, time.perf_counter() - t0
