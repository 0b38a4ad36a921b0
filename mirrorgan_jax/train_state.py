"""Train states (params + BatchNorm statistics + Adam), the G weight EMA, and the DAMSM lr schedule.

SPEC 9: every network is trained with Adam (G and the three Ds: lr 2e-4, betas (0.5, 0.999);
DAMSM: lr 0.002, the same betas, grad-norm clip 0.25 on the text encoder only) without weight
decay. optax's `adam` is PyTorch's Adam (bias-corrected moments, eps 1e-8 added to the
corrected sqrt(v)). The learning rate is a state leaf (`optax.inject_hyperparams`), so it is
checkpointed and can be changed between steps without recompiling.

G keeps an exponential moving average of its parameters (`avg = 0.999 avg + 0.001 p`, after
every G step, parameters only: BN running statistics are NOT averaged; snapshots and samples
use the EMA parameters with the live BN statistics, as the official `load_params` does).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

PyTree = Any


def make_adam(
    learning_rate: float,
    b1: float = 0.5,
    b2: float = 0.999,
    eps: float = 1e-8,
    grad_clip: float | None = None,
    clip_mask: PyTree | Callable[[PyTree], PyTree] | None = None,
) -> optax.GradientTransformation:
    """PyTorch-equivalent Adam with an injectable learning rate and optional global-norm clip.

    Args:
      learning_rate: initial lr (stored in the optimiser state, see `set_learning_rate`).
      b1, b2, eps: Adam hyperparameters (PyTorch defaults for eps).
      grad_clip: if set, rescale the gradients so their global L2 norm is at most this value
        before Adam (PyTorch `clip_grad_norm_`, which divides by norm + 1e-6; optax divides
        by the norm: a 1e-6 relative difference when clipping).
      clip_mask: which leaves the clip applies to and whose norm it measures: a bool pytree
        (or prefix, e.g. {"text_encoder": True, "image_encoder": False} for DAMSM, where the
        official code clips the text encoder only) or a function params -> such a tree.
        None: all leaves.
    """

    def factory(learning_rate):
        adam = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
        if grad_clip is None:
            return adam
        clip = optax.clip_by_global_norm(grad_clip)
        if clip_mask is not None:
            clip = optax.masked(clip, clip_mask)
        return optax.chain(clip, adam)

    return optax.inject_hyperparams(factory)(learning_rate=learning_rate)


class TrainState(train_state.TrainState):
    """Flax TrainState plus the BatchNorm running statistics (`batch_stats`).

    `apply_gradients(grads=g, batch_stats=new_stats)` updates params, optimiser and stats.
    """

    batch_stats: PyTree = struct.field(default_factory=dict)

    def variables(self) -> dict[str, PyTree]:
        """{"params", "batch_stats"} for `module.apply`."""
        return {"params": self.params, "batch_stats": self.batch_stats}


class GeneratorTrainState(TrainState):
    """TrainState with an EMA copy of the parameters, updated after every optimiser step.

    `apply_gradients` = optimiser step, then `ema = decay * ema + (1 - decay) * new_params`
    (the official order, trainer.py:292-293).
    """

    ema_params: PyTree = None
    ema_decay: float = struct.field(pytree_node=False, default=0.999)

    def update_ema(self) -> "GeneratorTrainState":
        """ema <- decay * ema + (1 - decay) * params (parameters only)."""
        d = self.ema_decay
        ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, self.ema_params, self.params)
        return self.replace(ema_params=ema)

    def apply_gradients(self, *, grads: PyTree, **kwargs) -> "GeneratorTrainState":
        """Optimiser step (other fields, e.g. batch_stats, replaced from kwargs), then EMA."""
        return super().apply_gradients(grads=grads, **kwargs).update_ema()

    def ema_variables(self) -> dict[str, PyTree]:
        """{"params": ema_params, "batch_stats": batch_stats}: the weights used for sampling."""
        return {"params": self.ema_params, "batch_stats": self.batch_stats}


def _split(variables: dict[str, PyTree]) -> tuple[PyTree, PyTree]:
    if "params" not in variables:
        raise ValueError(f"expected Flax variables with 'params', got keys {sorted(variables)}")
    extra = set(variables) - {"params", "batch_stats"}
    if extra:
        raise ValueError(f"unexpected variable collections {sorted(extra)}")
    return variables["params"], variables.get("batch_stats", {})


def create_train_state(
    apply_fn: Callable[..., Any],
    variables: dict[str, PyTree],
    learning_rate: float,
    b1: float = 0.5,
    b2: float = 0.999,
    grad_clip: float | None = None,
    clip_mask: PyTree | Callable[[PyTree], PyTree] | None = None,
) -> TrainState:
    """TrainState over `variables` ({"params", optional "batch_stats"}) with `make_adam`."""
    params, batch_stats = _split(variables)
    tx = make_adam(learning_rate, b1, b2, grad_clip=grad_clip, clip_mask=clip_mask)
    state = TrainState.create(apply_fn=apply_fn, params=params, tx=tx, batch_stats=batch_stats)
    return state.replace(step=jnp.zeros((), jnp.int32))


def create_generator_state(
    apply_fn: Callable[..., Any],
    variables: dict[str, PyTree],
    learning_rate: float,
    b1: float = 0.5,
    b2: float = 0.999,
    ema_decay: float = 0.999,
) -> GeneratorTrainState:
    """GeneratorTrainState with Adam and the EMA initialised to a copy of the parameters."""
    params, batch_stats = _split(variables)
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    tx = make_adam(learning_rate, b1, b2)
    state = GeneratorTrainState.create(
        apply_fn=apply_fn,
        params=params,
        tx=tx,
        batch_stats=batch_stats,
        ema_params=jax.tree.map(jnp.copy, params),
        ema_decay=ema_decay,
    )
    return state.replace(step=jnp.zeros((), jnp.int32))  # an array leaf: same type after a step


def _hyperparams_state(state: TrainState) -> Any:
    opt = state.opt_state
    if not hasattr(opt, "hyperparams"):
        raise TypeError("the state's optimiser was not built by make_adam (no injected lr)")
    return opt


def learning_rate(state: TrainState) -> jax.Array:
    """The current learning rate stored in the optimiser state."""
    return _hyperparams_state(state).hyperparams["learning_rate"]


def set_learning_rate(state: TrainState, lr: float) -> TrainState:
    """A copy of `state` whose optimiser uses `lr` from the next step (same dtype/sharding)."""
    opt = _hyperparams_state(state)
    old = opt.hyperparams["learning_rate"]
    new = jnp.asarray(lr, dtype=old.dtype)
    if isinstance(old, jax.Array):
        new = jax.device_put(new, old.sharding)
    return state.replace(
        opt_state=opt._replace(hyperparams={**opt.hyperparams, "learning_rate": new})
    )


def reset_optimizer(state: TrainState) -> TrainState:
    """Fresh Adam moments and step count (keeping the current lr, params and shardings).

    This is what the official DAMSM pretraining does by re-creating `optim.Adam` at the start
    of every epoch (pretrain_DAMSM.py); the GAN stage never resets.
    """
    lr = learning_rate(state)
    fresh = state.tx.init(state.params)

    def place(new, old):
        return jax.device_put(new, old.sharding) if isinstance(old, jax.Array) else new

    fresh = jax.tree.map(place, fresh, state.opt_state)
    return set_learning_rate(state.replace(opt_state=fresh), lr)


def damsm_learning_rate(epoch: int, base_lr: float, decay: float, lr_min: float) -> float:
    """The official DAMSM lr of epoch `epoch` (0-based).

    pretrain_DAMSM.py: `lr = ENCODER_LR`; after each epoch `if lr > ENCODER_LR / 10: lr *= 0.98`
    (lr_min = ENCODER_LR / 10 in the official setup). The lr therefore stops at the first value
    <= lr_min, which is slightly below lr_min. Computed in Python floats, as the original.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    lr = base_lr
    for _ in range(epoch):
        if lr > lr_min:
            lr *= decay
        else:
            break
    return lr


def start_damsm_epoch(
    state: TrainState,
    epoch: int,
    base_lr: float,
    decay: float,
    lr_min: float,
    reset_moments: bool = True,
) -> TrainState:
    """Apply the official DAMSM per-epoch optimiser policy at the start of `epoch`.

    Official: a new Adam (zero moments, bias correction restarting at step 1) with lr
    `damsm_learning_rate(epoch, ...)` every epoch. reset_moments=False keeps the Adam moments
    across epochs and only changes the lr (a non-official, smoother variant).
    """
    if reset_moments:
        state = reset_optimizer(state)
    return set_learning_rate(state, damsm_learning_rate(epoch, base_lr, decay, lr_min))
