"""The training loop every stage shares: resume, step, log, checkpoint, stop cleanly.

Resume order (written down, as the style guide asks): the stage's latest good Orbax checkpoint
in its workdir folder (a newer step that is damaged is skipped with a warning, see
`checkpoints`), else the state `init_state()` builds (scratch or imported weights); a folder
whose every step is damaged stops the run. The step RNG is `fold_in(rng, step)` and the data
iterator restarts at the restored step, so an interrupted run continues exactly where it
stopped; metrics.jsonl drops the rows logged after that step, which the run logs again. The
host synchronises with the devices only at logging and checkpoint steps.

Start-up: before its first step a stage compiles that step ahead of time and logs `startup_s`,
the wall time from `StageSpec.started` (the process start for the first stage a process runs)
until the first step starts, with its parts: `startup_state_s` (the state built or restored),
`startup_first_batch_s` (the input pipeline up to the first batch), `startup_compile_s` (the
step traced and compiled, or loaded from JAX's persistent compilation cache) and
`startup_before_stage_s` (all that came before the stage: imports, data set-up, frozen networks).
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
from absl import logging
from clu import periodic_actions

from mirrorgan_jax import checkpoints, errors, observability


class Preempted(errors.Error):
    """SIGTERM/SIGINT arrived; a checkpoint of the current step was written. The process ends
    with 128 + the signal's number, as a process the signal had ended."""

    label = "stopped"

    def __init__(self, what: str, subject: str = "", action: str = "", signum: int = 15):
        super().__init__(what, subject, action)
        self.exit_status = 128 + signum


class NonFiniteLoss(errors.Error, RuntimeError):
    """A loss became NaN/inf; the run stopped and the last good checkpoint is intact."""


@dataclasses.dataclass
class StageSpec:
    name: str  # "damsm" | "stream" | "gan"
    stage_dir: str  # <workdir>/<name>
    total_steps: int
    checkpoint_every: int
    keep_checkpoints: int
    log_every: int
    meta: dict  # saved with every checkpoint (config fingerprint of the networks ...)
    loss_keys: tuple[str, ...]  # metrics checked for finiteness
    legacy: tuple = ()  # earlier state layouts a resume reads (`Checkpointer.restore`)
    started: float | None = None  # Unix time `startup_s` counts from (None: `run_stage`'s call)


def run_stage(
    spec: StageSpec,
    init_state: Callable[[], Any],
    abstract_state: Any,
    step_fn: Callable[[Any, Any, jax.Array], tuple[Any, dict]],
    batches: Callable[[int], Iterator[Any]],
    rng: jax.Array,
    on_log: Callable[[int, Any, Any], dict] | None = None,
) -> tuple[Any, int]:
    """Runs (or resumes, or skips when finished) one stage. Returns (state, last step).

    `step_fn` may have a `lower(state, batch, rng)` (a `jax.jit` function has): the first step
    is then compiled ahead of time, so `startup_s` separates compiling from running."""
    entered = time.time()
    origin = spec.started or entered
    startup = {"startup_before_stage_s": entered - origin}
    ckpt = checkpoints.Checkpointer(
        f"{spec.stage_dir}/checkpoints", max_to_keep=spec.keep_checkpoints
    )
    try:
        meta = {}
        last_saved = None
        if ckpt.all_steps():
            start, state, meta = ckpt.restore_latest(
                abstract_state, expected_meta=spec.meta, legacy=spec.legacy
            )
            last_saved = start
            logging.info("%s: resumed from step %d", spec.name, start)
        else:
            start = 0
            state = init_state()
        startup["startup_state_s"] = time.time() - entered
        if start >= spec.total_steps or meta.get("final"):
            # `final` marks imported weights that stand for a finished stage.
            logging.info("%s: finished already (step %d)", spec.name, start)
            return state, start
        state = _train(
            spec, ckpt, state, start, last_saved, step_fn, batches, rng, on_log, (origin, startup)
        )
        return state, spec.total_steps
    finally:
        t_close = time.time()
        ckpt.close()
        if time.time() - t_close > 5:
            logging.info("%s: closing checkpoints took %.1f s", spec.name, time.time() - t_close)


def _train(spec, ckpt, state, start, last_saved, step_fn, batches, rng, on_log, startup):
    writer = observability.make_writer(spec.stage_dir, resume_step=start)
    report = periodic_actions.ReportProgress(
        num_train_steps=spec.total_steps, writer=writer, every_steps=spec.log_every
    )
    preemption = checkpoints.install_preemption_handler()
    first_bad = jnp.array(-1, jnp.int32)  # on device: first step with a non-finite loss
    bad_value = jnp.zeros((), jnp.float32)
    t_data = time.time()
    data = batches(start)
    step = start
    t0 = time.time()
    try:
        while step < spec.total_steps:
            batch = next(data)
            step_rng = jax.random.fold_in(rng, step)
            if step == start:
                startup[1]["startup_first_batch_s"] = time.time() - t_data
                _compile_first_step(spec, step_fn, state, batch, step_rng, startup, writer, step)
            state, metrics = step_fn(state, batch, step_rng)
            step += 1
            losses = jnp.stack([metrics[k] for k in spec.loss_keys])
            bad = ~jnp.all(jnp.isfinite(losses))
            new_bad = (first_bad < 0) & bad
            bad_value = jnp.where(new_bad, jnp.sum(losses), bad_value)
            first_bad = jnp.where(new_bad, step, first_bad)
            report(step)
            ckpt.record_digests()
            at_log = step % spec.log_every == 0 or step == spec.total_steps
            at_ckpt = step % spec.checkpoint_every == 0 or step == spec.total_steps
            if at_log or at_ckpt or preemption.requested:
                if int(first_bad) >= 0:
                    _stop_non_finite(spec, int(first_bad), metrics, last_saved)
            if at_log:
                scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if on_log is not None:
                    scalars.update(on_log(step, state, writer) or {})
                writer.write_scalars(step, scalars)
            if at_ckpt or preemption.requested:
                ckpt.save(step, state, meta={**spec.meta, "step": step}, force=True)
                last_saved = step
            if preemption.requested:
                ckpt.wait_until_finished()
                writer.flush()
                raise Preempted(
                    f"{spec.name} stage stopped by signal {preemption.signal_received} at step "
                    f"{step}",
                    f"{spec.stage_dir}/checkpoints",
                    "checkpoint saved; the same command resumes from it",
                    signum=preemption.signal_received or 15,
                )
        ckpt.wait_until_finished()
        logging.info(
            "%s: %d steps in %.1f s", spec.name, spec.total_steps - start, time.time() - t0
        )
        return state
    finally:
        preemption.close()
        if hasattr(data, "close"):
            if sys.exc_info()[0] is None:
                # Closing the tf.data iterator can take tens of seconds after a long stage (the
                # close itself, not the writers); the next stage need not wait for it.
                threading.Thread(
                    target=_close_input, args=(spec.name, data), name="close-input", daemon=True
                ).start()
            else:  # the process is about to end: its input threads go first
                data.close()
        writer.flush()


def _compile_first_step(spec, step_fn, state, batch, rng, startup, writer, step) -> None:
    """Compiles the step ahead of time (a later call of `step_fn` with arguments of the same
    shapes and shardings reuses the executable) and logs the stage's start-up times.

    startup: (origin, {part: seconds}) as `run_stage` measured them."""
    origin, parts = startup
    t = time.time()
    lower = getattr(step_fn, "lower", None)
    if lower is not None:
        lower(state, batch, rng).compile()
    parts["startup_compile_s"] = time.time() - t
    total = time.time() - origin
    logging.info(
        "%s: the first step starts %.1f s after %s (%s)",
        spec.name,
        total,
        "the process started" if spec.started else "the stage started",
        ", ".join(f"{_part_name(k)} {v:.1f} s" for k, v in parts.items()),
    )
    writer.write_scalars(step, {"startup_s": total, **parts})


def _part_name(key: str) -> str:
    """'startup_first_batch_s' -> 'first batch'."""
    return key.removeprefix("startup_").removesuffix("_s").replace("_", " ")


def _close_input(name: str, data) -> None:
    t = time.time()
    data.close()  # stops the input pipeline's threads
    took = time.time() - t
    if took > 5:
        logging.info("%s: closing the input took %.1f s (in the background)", name, took)


def _stop_non_finite(spec, bad_step: int, metrics, last_saved: int | None):
    values = {k: float(v) for k, v in jax.device_get(metrics).items() if k in spec.loss_keys}
    where = f"{spec.stage_dir}/checkpoints"
    if last_saved is None:
        kept = f"no checkpoint had been written yet in {where}, so a rerun starts the stage afresh"
    else:
        kept = f"the last good checkpoint is step {last_saved} in {where}"
    raise NonFiniteLoss(
        f"{spec.name}: non-finite loss at step {bad_step} (latest values: {values}); the run "
        f"stopped without saving; {kept}"
    )
