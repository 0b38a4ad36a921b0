"""The stage loop every training stage shares: exact resume, SIGTERM, non-finite stop, config
mismatch. A toy model keeps it fast; the loop does not know what it trains."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirrorgan_jax import checkpoints, loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@flax.struct.dataclass
class ToyState:
    step: jax.Array
    w: jax.Array


def _init():
    return ToyState(step=jnp.zeros((), jnp.int32), w=jnp.ones((4,), jnp.float32))


ABSTRACT = jax.eval_shape(_init)


def _batches(start):
    """Batch k depends only on its global step, as the real pipeline guarantees."""
    step = start
    while True:
        rs = np.random.RandomState(step)
        yield {
            "x": rs.normal(size=(8, 4)).astype(np.float32),
            "y": rs.normal(size=(8,)).astype(np.float32),
        }
        step += 1


@jax.jit
def _step(state, batch, rng):
    def loss_fn(w):
        return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)

    loss, g = jax.value_and_grad(loss_fn)(state.w)
    noise = 1e-3 * jax.random.normal(rng, g.shape)  # uses the step rng: resume must restore it
    return ToyState(state.step + 1, state.w - 0.1 * (g + noise)), {"loss": loss}


def _spec(tmp_path, total, every=2, meta=None):
    return loop.StageSpec(
        name="toy",
        stage_dir=str(tmp_path),
        total_steps=total,
        checkpoint_every=every,
        keep_checkpoints=3,
        log_every=2,
        meta=meta or {"model": {"width": 4}},
        loss_keys=("loss",),
    )


def _run(tmp_path, total, step_fn=_step, **kw):
    return loop.run_stage(
        _spec(tmp_path, total, **kw), _init, ABSTRACT, step_fn, _batches, jax.random.key(0)
    )


def test_exact_resume(tmp_path):
    full, _ = _run(tmp_path / "a", 8)
    _run(tmp_path / "b", 4)
    resumed, last = _run(tmp_path / "b", 8)
    assert last == 8 and int(resumed.step) == 8
    np.testing.assert_array_equal(np.asarray(full.w), np.asarray(resumed.w))
    assert (tmp_path / "b" / "metrics.jsonl").exists()


def test_finished_stage_is_skipped(tmp_path):
    _run(tmp_path, 4)
    calls = []

    def counting_step(state, batch, rng):
        calls.append(1)
        return _step(state, batch, rng)

    state, last = _run(tmp_path, 4, step_fn=counting_step)
    assert last == 4 and not calls


def test_sigterm_saves_and_stops_cleanly(tmp_path):
    def step_then_signal(state, batch, rng):
        out = _step(state, batch, rng)
        if int(out[0].step) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    with pytest.raises(loop.Preempted, match="step 3"):
        _run(tmp_path, 10, step_fn=step_then_signal, every=100)
    ckpt = checkpoints.Checkpointer(str(tmp_path / "checkpoints"))
    assert ckpt.latest_step() == 3
    ckpt.close()
    # the handler is gone after the stage: SIGTERM's default action is restored
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler, None)
    full, _ = _run(tmp_path / "ref", 10)
    resumed, _ = _run(tmp_path, 10)
    np.testing.assert_array_equal(np.asarray(full.w), np.asarray(resumed.w))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def poisoned(state, batch, rng):
        new, metrics = _step(state, batch, rng)
        bad = new.step >= 3
        return (
            new.replace(w=jnp.where(bad, jnp.nan, new.w)),
            {"loss": jnp.where(bad, jnp.nan, metrics["loss"])},
        )

    with pytest.raises(loop.NonFiniteLoss, match="step 3") as err:
        _run(tmp_path, 10, step_fn=poisoned)
    assert "step 2" in str(err.value)  # the last good checkpoint
    ckpt = checkpoints.Checkpointer(str(tmp_path / "checkpoints"))
    assert ckpt.latest_step() == 2
    state, _ = ckpt.restore(2, ABSTRACT)
    assert np.all(np.isfinite(np.asarray(state.w)))
    ckpt.close()


def test_non_finite_loss_before_any_checkpoint_names_none(tmp_path):
    def poisoned(state, batch, rng):
        new, metrics = _step(state, batch, rng)
        return new, {"loss": jnp.nan * metrics["loss"]}

    with pytest.raises(loop.NonFiniteLoss, match="step 1") as err:
        _run(tmp_path, 10, step_fn=poisoned, every=100)
    assert "no checkpoint had been written yet" in str(err.value)
    assert "last good checkpoint" not in str(err.value)
    ckpt = checkpoints.Checkpointer(str(tmp_path / "checkpoints"))
    assert ckpt.latest_step() is None
    ckpt.close()


def test_config_mismatch_is_refused(tmp_path):
    _run(tmp_path, 2)
    with pytest.raises(checkpoints.ConfigMismatchError, match="width"):
        _run(tmp_path, 4, meta={"model": {"width": 8}})
    ckpt = checkpoints.Checkpointer(str(tmp_path / "checkpoints"))
    assert ckpt.all_steps() == [2]  # nothing overwritten
    ckpt.close()


def _steps_logged(stage_dir):
    """The steps of the loss rows of metrics.jsonl; no row (step and keys) appears twice."""
    with open(os.path.join(stage_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    keys = [(r["step"], tuple(sorted(r))) for r in rows]
    assert len(keys) == len(set(keys)), keys
    return [r["step"] for r in rows if "loss" in r]


def test_metrics_hold_each_step_once_after_resumes(tmp_path):
    def fails_after(n):
        def step_fn(state, batch, rng):
            out = _step(state, batch, rng)
            if int(out[0].step) == n:
                raise RuntimeError("stopped")  # after logging n - 1 and checkpointing at 4
            return out

        return step_fn

    spec = dict(every=4)
    with pytest.raises(RuntimeError):
        _run(tmp_path, 12, step_fn=fails_after(7), **spec)  # logs 2, 4, 6; checkpoint 4
    with pytest.raises(RuntimeError):
        _run(tmp_path, 12, step_fn=fails_after(11), **spec)  # resumes at 4; 6 again, 8, 10
    _run(tmp_path, 12, **spec)  # resumes at 8
    assert _steps_logged(tmp_path) == [2, 4, 6, 8, 10, 12]


_WORKER = """
import sys, time
sys.path.insert(0, {root!r})
from tests import test_loop as t
def slow(state, batch, rng):
    time.sleep(0.05)
    return t._step(state, batch, rng)
t._run({path!r}, {total}, step_fn=slow, every=1)
"""


def test_kill_9_resumes_from_the_last_good_step_with_the_same_result(tmp_path):
    """Killed (SIGKILL) at a random moment of a run that checkpoints every step, so most
    likely during a save: the resumed run ends where an uninterrupted one does."""
    total, work = 24, tmp_path / "killed"
    code = _WORKER.format(root=ROOT, path=str(work), total=total)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (work / "checkpoints" / "3").is_dir():
            time.sleep(0.05)
        time.sleep(random.uniform(0.0, 0.5))
        assert proc.poll() is None, "the run ended before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    resumed, last = _run(work, total)
    full, _ = _run(tmp_path / "uninterrupted", total)
    assert last == total
    np.testing.assert_array_equal(np.asarray(full.w), np.asarray(resumed.w))
    assert _steps_logged(work) == list(range(2, total + 1, 2))


def test_startup_is_logged_before_the_first_step_with_its_parts(tmp_path):
    """`startup_s` counts from `StageSpec.started` until the first step starts; the step is
    compiled ahead of time through its `lower`, and a resumed stage logs it again."""
    import json
    import time

    lowered = []

    def step_fn(state, batch, rng):
        return _step(state, batch, rng)

    def lower(state, batch, rng):
        lowered.append(int(state.step))
        return _step.lower(state, batch, rng)

    step_fn.lower = lower
    spec = _spec(tmp_path, 4)
    spec.started = time.time() - 100.0  # as if the process had started 100 s ago
    loop.run_stage(spec, _init, ABSTRACT, step_fn, _batches, jax.random.key(0))
    spec.total_steps = 6
    spec.started = None  # counted from the stage's own start
    loop.run_stage(spec, _init, ABSTRACT, step_fn, _batches, jax.random.key(0))
    assert lowered == [0, 4]
    rows = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    startup = [r for r in rows if "startup_s" in r]
    assert [r["step"] for r in startup] == [0, 4]
    parts = ("before_stage", "state", "first_batch", "compile")
    for row in startup:
        assert all(row[f"startup_{p}_s"] >= 0 for p in parts)
        assert sum(row[f"startup_{p}_s"] for p in parts) <= row["startup_s"] + 1e-3
    assert 100.0 <= startup[0]["startup_before_stage_s"] <= startup[0]["startup_s"] < 160
    assert startup[1]["startup_s"] < 60 and startup[1]["startup_before_stage_s"] == 0
    assert all("startup_s" not in r for r in rows if "loss" in r)
