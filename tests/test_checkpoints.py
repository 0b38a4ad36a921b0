"""Checkpointer: 1 -> 8 device round trip, retention, non-finite refusal, config check, signals,
digests and the fall-back from a damaged step, read-only use."""

from __future__ import annotations

import json
import logging
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mirrorgan_jax import checkpoints as ck
from mirrorgan_jax import parallel
from mirrorgan_jax.models.layers import TorchBatchNorm
from mirrorgan_jax.parallel import abstract_like
from mirrorgan_jax.train.state import GeneratorState


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        x = nn.Dense(16)(x)
        x = TorchBatchNorm()(x, train)
        return nn.Dense(8)(x)


_NET = _Net()


def _make_state(seed: int = 0) -> GeneratorState:
    v = _NET.init(jax.random.key(seed), jnp.ones((2, 4)), False)
    return GeneratorState.create(
        params=v["params"], tx=optax.adam(1e-3), batch_stats=v["batch_stats"]
    )


@jax.jit
def _step(s):
    return s.apply_gradients(grads=jax.tree.map(jnp.ones_like, s.params))


@pytest.fixture(scope="module")
def state():
    return _step(jax.jit(_make_state)())  # non-trivial Adam moments and EMA


def _assert_tree_equal(a, b):
    la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (p, x), (_, y) in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(p))


def test_round_trip_and_restore_sharded_onto_8_devices(tmp_path, state):
    with ck.Checkpointer(tmp_path / "ckpt", model_config={"gf_dim": 8}) as c:
        assert c.latest_step() is None
        assert c.save(10, state, {"data_position": 123, "rng": [1, 2]})
        c.wait_until_finished()
        assert c.latest_step() == 10
        # Same layout.
        restored, meta = c.restore(None, abstract_like(state))
        assert isinstance(restored, GeneratorState)
        _assert_tree_equal(restored, state)
        assert meta == {"data_position": 123, "rng": [1, 2]}
        assert restored.ema_decay == state.ema_decay

    # 1-device save -> 8-device restore: kernels sharded over 'data', the rest replicated.
    mesh = parallel.make_mesh()

    def spec(x):
        return P(None, "data") if x.ndim == 2 and x.shape[1] % 8 == 0 else P()

    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec(x))),
        jax.eval_shape(_make_state),
    )
    c2 = ck.Checkpointer(tmp_path / "ckpt", model_config={"gf_dim": 8})
    restored, _ = c2.restore(10, abstract)
    _assert_tree_equal(restored, state)
    kernel = restored.params["Dense_1"]["kernel"]
    assert kernel.sharding.spec == P(None, "data") and len(kernel.addressable_shards) == 8
    assert restored.opt_state[0].count.sharding.is_fully_replicated
    # Training continues on the sharded state.
    nxt = _step(restored)
    assert int(nxt.step) == 2
    assert nxt.params["Dense_1"]["kernel"].sharding.spec == P(None, "data")
    c2.close()
    with pytest.raises(ck.CheckpointError, match="no checkpoint step 7"):
        ck.Checkpointer(tmp_path / "ckpt").restore(7, abstract)
    with pytest.raises(ck.CheckpointError, match=r"no checkpoint \(.*empty\)"):
        ck.Checkpointer(tmp_path / "empty").restore(None, abstract)


def test_keep_last_n_and_interval(tmp_path):
    small = {"w": jnp.arange(3.0)}
    with ck.Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=2) as c:
        assert c.save(2, small)
        assert not c.save(3, small)  # not on the interval
        assert c.save(4, small)
        assert c.save(5, small, force=True)
        assert c.save(6, {"w": jnp.arange(3.0) + 6})
        c.wait_until_finished()
        assert c.all_steps() == [5, 6]
        assert not c.save(6, small, force=True)  # existing step: never overwritten
        out, meta = c.restore(None, abstract_like(small))
        np.testing.assert_array_equal(out["w"], [6.0, 7.0, 8.0])
        assert meta == {}


def test_non_finite_refused_previous_kept(tmp_path, state):
    with ck.Checkpointer(tmp_path) as c:
        assert c.save(1, state)
        c.wait_until_finished()
        bad = state.replace(
            params={
                **state.params,
                "Dense_1": {
                    **state.params["Dense_1"],
                    "kernel": state.params["Dense_1"]["kernel"].at[0, 0].set(jnp.nan),
                },
            }
        )
        with pytest.raises(ck.NonFiniteError, match=r"step 2 .*'params/Dense_1/kernel'"):
            c.save(2, bad, force=True)
        host_inf = {"a": np.array([1.0, np.inf], np.float32), "i": np.arange(3)}
        with pytest.raises(ck.NonFiniteError, match="'a'"):
            c.save(3, host_inf)
        c.wait_until_finished()
        assert c.all_steps() == [1]
        assert sorted(os.listdir(tmp_path)) == ["1"]  # nothing partial left behind
        restored, _ = c.restore(None, abstract_like(state))
        _assert_tree_equal(restored, state)
    assert ck.first_non_finite({"k": jax.random.key(0), "n": jnp.arange(2)}) is None


def test_config_mismatch(tmp_path):
    small = {"w": jnp.ones(2)}
    with ck.Checkpointer(
        tmp_path, model_config={"gf_dim": 32, "branch_num": 3, "sub": {"a": 1}}
    ) as c:
        c.save(1, small)
    other = {"gf_dim": 64, "branch_num": 3, "sub": {"a": 2}, "z_dim": 100}
    c2 = ck.Checkpointer(tmp_path, model_config=other)
    with pytest.raises(ck.ConfigMismatchError) as e:
        c2.restore(None, abstract_like(small))
    msg = str(e.value)
    assert "gf_dim: checkpoint 32, current 64" in msg
    assert "sub.a: checkpoint 1, current 2" in msg
    assert "z_dim: checkpoint '<absent>', current 100" in msg
    assert "branch_num" not in msg
    with pytest.raises(ck.ConfigMismatchError):
        c2.save(2, small)  # refuses to write into a directory of another model
    c2.close()
    assert ck.Checkpointer(tmp_path).all_steps() == [1]
    # Same config (tuples vs lists do not matter) restores.
    same = ck.Checkpointer(tmp_path, model_config={"gf_dim": 32, "branch_num": 3, "sub": {"a": 1}})
    out, _ = same.restore(1, abstract_like(small))
    np.testing.assert_array_equal(out["w"], 1.0)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        same.save(2, small, {"bad": object()})
    same.close()


def test_keys_added_later_default_to_the_old_behaviour(tmp_path):
    # A checkpoint written before `model.ca_noise_scale` existed restores under the value that
    # reproduces its behaviour (1.0), and is refused under another one.
    small = {"w": jnp.ones(2)}
    with ck.Checkpointer(tmp_path) as c:
        c.save(1, small, {"model": {"gf_dim": 32}})
    c = ck.Checkpointer(tmp_path)
    c.restore(
        1, abstract_like(small), expected_meta={"model": {"gf_dim": 32, "ca_noise_scale": 1.0}}
    )
    with pytest.raises(
        ck.ConfigMismatchError, match=r"model.ca_noise_scale: checkpoint 1.0, current 0.0"
    ):
        c.restore(
            1,
            abstract_like(small),
            expected_meta={"model": {"gf_dim": 32, "ca_noise_scale": 0.0}},
        )
    with pytest.raises(ck.ConfigMismatchError, match=r"model.z_dim: checkpoint '<absent>'"):
        c.restore(1, abstract_like(small), expected_meta={"model": {"gf_dim": 32, "z_dim": 4}})
    c.close()


def test_expected_meta_check(tmp_path):
    small = {"w": jnp.ones(2)}
    model = {"gf_dim": 32, "sizes": [64, 128]}
    with ck.Checkpointer(tmp_path) as c:
        c.save(3, small, {"model": model, "step": 3, "data_position": 7})
    c = ck.Checkpointer(tmp_path)
    out, meta = c.restore(None, abstract_like(small), expected_meta={"model": model})
    assert meta["data_position"] == 7
    with pytest.raises(ck.ConfigMismatchError) as e:
        c.restore(
            3,
            abstract_like(small),
            expected_meta={"model": {"gf_dim": 48, "sizes": [64, 128]}, "tag": "x"},
        )
    msg = str(e.value)
    assert "model.gf_dim: checkpoint 32, current 48" in msg and "tag: checkpoint '<absent>'" in msg
    assert "sizes" not in msg and "data_position" not in msg
    c.close()


def test_stale_temporary_directory_is_invisible(tmp_path):
    (tmp_path / "7.orbax-checkpoint-tmp-1234").mkdir()
    c = ck.Checkpointer(tmp_path)
    assert c.latest_step() is None and c.all_steps() == []
    c.close()


def test_sigterm_sets_flag_and_handlers_are_restored():
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    old = signal.signal(signal.SIGTERM, previous)
    try:
        with ck.install_preemption_handler() as h:
            assert not h.requested and not h.sync_requested()
            os.kill(os.getpid(), signal.SIGTERM)
            assert h.requested and h.signal_received == signal.SIGTERM and h.sync_requested()
            assert calls == []
            os.kill(os.getpid(), signal.SIGTERM)  # second signal goes to the previous handler
            assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is previous
        os.kill(os.getpid(), signal.SIGTERM)
        assert calls == [signal.SIGTERM, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)


def _other(state):
    return state.replace(params=jax.tree.map(lambda x: x + 1.0, state.params))


def _largest_array_file(step_dir):
    """The largest of the files that hold the arrays' bytes (Orbax's OCDBT data files)."""
    files = [
        os.path.join(root, n)
        for root, _, names in os.walk(os.path.join(step_dir, "state"))
        for n in names
        if os.path.basename(root) == "d"
    ]
    return max(files, key=os.path.getsize)


def damage(step_dir: str, how: str) -> None:
    """Damages a saved step as a disk or a person might (also used by test_run)."""
    if how == "truncated":
        path = _largest_array_file(step_dir)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif how == "no_metadata":
        os.remove(os.path.join(step_dir, "state", "_METADATA"))
    elif how == "overwritten":  # the same size, other bytes: only the digest can tell
        path = _largest_array_file(step_dir)
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek(size // 4)
            chunk = f.read(min(4096, size // 2))
            f.seek(size // 4)
            f.write(bytes(255 - b for b in chunk))
        assert os.path.getsize(path) == size
    else:
        raise ValueError(how)


def _listing(directory):
    return sorted(
        os.path.relpath(os.path.join(r, n), directory)
        for r, _, names in os.walk(directory)
        for n in names
    )


def test_each_save_records_a_digest_of_its_files(tmp_path, state):
    with ck.Checkpointer(tmp_path) as c:
        c.save(1, state)
        c.wait_until_finished()
        assert c.verified(1) and c.damage(1) is None
    digest = json.loads((tmp_path / "1" / ck.DIGEST_FILE).read_text())
    assert digest["step"] == 1 and digest["algorithm"] == "sha256"
    assert set(digest["files"]) == set(_listing(tmp_path / "1")) - {ck.DIGEST_FILE}
    assert "state/_METADATA" in digest["files"]


@pytest.mark.parametrize("how", ["truncated", "no_metadata", "overwritten"])
def test_a_damaged_newest_step_falls_back_to_the_previous_one(tmp_path, state, how, caplog):
    newer = _other(state)
    with ck.Checkpointer(tmp_path) as c:
        c.save(2, state)
        c.save(4, newer)
    damage(str(tmp_path / "4"), how)
    before = _listing(tmp_path)
    reader = ck.Checkpointer(tmp_path, read_only=True)
    with caplog.at_level(logging.WARNING):
        step, restored, _ = reader.restore_latest(abstract_like(state))
    reader.close()
    assert step == 2
    _assert_tree_equal(restored, state)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"step 4 in {tmp_path}" in m and "skipped" in m for m in warned), warned
    assert _listing(tmp_path) == before  # nothing removed or written
    # A step asked for by number is not replaced by another one.
    with pytest.raises(ck.CheckpointError, match="step 4"):
        ck.Checkpointer(tmp_path, read_only=True).restore(4, abstract_like(state))


def test_without_a_digest_a_step_that_fails_to_load_still_falls_back(tmp_path, state):
    with ck.Checkpointer(tmp_path) as c:
        c.save(2, state)
        c.save(4, _other(state))
    for step in (2, 4):
        os.remove(tmp_path / str(step) / ck.DIGEST_FILE)  # as written before digests
    damage(str(tmp_path / "4"), "no_metadata")
    reader = ck.Checkpointer(tmp_path, read_only=True)
    step, restored, _ = reader.restore_latest(abstract_like(state))
    assert step == 2 and reader.skipped.keys() == {4}
    _assert_tree_equal(restored, state)


def test_no_usable_step_names_the_folder_and_deletes_nothing(tmp_path, state):
    with ck.Checkpointer(tmp_path) as c:
        c.save(2, state)
        c.save(4, state)
    damage(str(tmp_path / "2"), "overwritten")
    damage(str(tmp_path / "4"), "truncated")
    before = _listing(tmp_path)
    with pytest.raises(ck.CheckpointError, match=rf"no usable checkpoint \({tmp_path}\).*step 2"):
        ck.Checkpointer(tmp_path).restore(None, abstract_like(state))
    assert _listing(tmp_path) == before


def test_a_resumed_run_sets_the_damaged_step_aside_when_it_saves_it_again(tmp_path, state):
    with ck.Checkpointer(tmp_path) as c:
        c.save(2, state)
        c.save(4, state)
    damage(str(tmp_path / "4"), "overwritten")
    with ck.Checkpointer(tmp_path) as c:
        assert c.restore_latest(abstract_like(state))[0] == 2
        assert c.save(4, _other(state))
    assert (tmp_path / "4.damaged").is_dir()  # kept, never deleted
    with ck.Checkpointer(tmp_path, read_only=True) as c:
        step, restored, _ = c.restore_latest(abstract_like(state))
        assert step == 4 and c.verified(4) and c.all_steps() == [2, 4]
    _assert_tree_equal(restored, _other(state))


def test_read_only_creates_removes_and_writes_nothing(tmp_path, state):
    with ck.Checkpointer(tmp_path / "absent", read_only=True) as c:
        assert c.all_steps() == []
    assert not (tmp_path / "absent").exists()
    with ck.Checkpointer(tmp_path) as c:
        c.save(1, state)
    (tmp_path / "5.orbax-checkpoint-tmp-99").mkdir()  # a save in flight of a training run
    before = _listing(tmp_path)
    with ck.Checkpointer(tmp_path, read_only=True) as c:
        c.restore(None, abstract_like(state))
        with pytest.raises(ck.CheckpointError, match="read-only"):
            c.save(2, state)
    assert (tmp_path / "5.orbax-checkpoint-tmp-99").is_dir()
    assert _listing(tmp_path) == before
