"""The workdir contract: the config.json guard, GAN checkpoints in the layout from before
the stage held one TrainState per network, where the compilation cache lives, and the frozen
networks read alone from their stages' checkpoints."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import shapes
from mirrorgan_jax import checkpoints
from mirrorgan_jax import workdir as wd
from mirrorgan_jax.train.state import GanState, GeneratorState, TrainState


def test_write_config_refuses_another_model_and_accepts_keys_added_later(tmp_path):
    config = shapes.get_config("test")
    wd.write_config(config, str(tmp_path))
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert saved["model"]["ca_noise_scale"] == config.model.ca_noise_scale == 0.0

    # A config.json from before `model.ca_noise_scale` existed: absent means 1.0 (official).
    del saved["model"]["ca_noise_scale"]
    path.write_text(json.dumps(saved))
    mismatch = checkpoints.ConfigMismatchError
    with pytest.raises(mismatch, match=r"ca_noise_scale: saved 1.0, now 0.0"):
        wd.write_config(config, str(tmp_path))
    assert "ca_noise_scale" not in json.loads(path.read_text())["model"]  # left as it was
    config.model.ca_noise_scale = 1.0
    wd.write_config(config, str(tmp_path))

    config.model.gf_dim = 8
    with pytest.raises(mismatch, match=r"model.gf_dim: saved 4, now 8"):
        wd.write_config(config, str(tmp_path))


def _gan_state(seed: int):
    rng = np.random.default_rng(seed)
    leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    tx = optax.adam(1e-3)
    generator = GeneratorState.create(
        params={"w": leaf(3, 2)}, tx=tx, batch_stats={"bn": {"mean": leaf(2)}}
    )
    discriminators = tuple(
        TrainState.create(params={"k": leaf(4)}, tx=tx, batch_stats={"bn": {"var": leaf(4)}})
        for _ in range(2)
    )
    grads = jax.tree.map(jnp.ones_like, (generator.params, discriminators[0].params))
    return GanState(  # one step, so that moments, counts and the EMA are not their init
        generator=generator.apply_gradients(grads=grads[0]),
        discriminators=tuple(d.apply_gradients(grads=grads[1]) for d in discriminators),
    )


def test_gan_checkpoint_of_the_earlier_layout_restores(tmp_path):
    """A GAN checkpoint saved as one flat record (before the stage held a GeneratorState and a
    TrainState per discriminator) restores into today's GanState, leaf for leaf."""
    state = _gan_state(0)
    g, ds = state.generator, state.discriminators
    earlier = {
        "step": g.step,
        "g_params": g.params,
        "g_batch_stats": g.batch_stats,
        "g_opt": g.opt_state,
        "ema_params": g.ema_params,
        "d_params": tuple(d.params for d in ds),
        "d_batch_stats": tuple(d.batch_stats for d in ds),
        "d_opts": tuple(d.opt_state for d in ds),
    }
    with checkpoints.Checkpointer(tmp_path / "ck", async_save=False) as c:
        c.save(1, earlier)
    target = jax.eval_shape(lambda: _gan_state(1))
    with checkpoints.Checkpointer(tmp_path / "ck", async_save=False) as c:
        with pytest.raises(ValueError):  # today's layout alone does not read it
            c.restore(1, target)
        restored, _ = c.restore(1, target, legacy=wd.LEGACY_LAYOUTS["gan"])
    got = jax.tree_util.tree_leaves_with_path(restored)
    want = jax.tree_util.tree_leaves_with_path(state)
    assert [p for p, _ in got] == [p for p, _ in want]
    for (path, a), (_, b) in zip(got, want, strict=True):
        np.testing.assert_array_equal(
            np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path)
        )
    assert restored.generator.tx is target.generator.tx  # static fields from today's target


def test_the_compilation_cache_is_the_workdirs_unless_told_otherwise(tmp_path, monkeypatch):
    config = shapes.get_config("test")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    assert wd.compilation_cache_dir(config, str(tmp_path)) == os.path.join(tmp_path, "jax_cache")
    assert wd.compilation_cache_dir(config, None) is None  # eval, sample: not in the workdir
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/shared/jax")
    assert wd.compilation_cache_dir(config, str(tmp_path)) == "/shared/jax"
    assert wd.compilation_cache_dir(config, None) == "/shared/jax"
    config.compilation_cache_dir = "~/mine"
    assert wd.compilation_cache_dir(config, str(tmp_path)) == os.path.expanduser("~/mine")
    config.compilation_cache_dir = "off"
    assert wd.compilation_cache_dir(config, str(tmp_path)) is None


def test_the_frozen_networks_are_read_alone(tmp_path):
    """`restore_frozen` reads STEM and STREAM's weights and nothing else: the DAMSM image
    encoder and the optimiser states, saved here in shapes no network has, are never read
    (a whole-state restore of the same checkpoints fails on them)."""
    from mirrorgan_jax import parallel
    from mirrorgan_jax.networks import Networks

    config = shapes.get_config("test")
    nets = Networks.from_config(config, n_words=30)
    mesh = parallel.make_mesh()
    rs = np.random.RandomState(0)

    def saved(abstract, odd):
        def leaf(path, s):
            shape = (1, 3) if odd(checkpoints.leaf_name(path)) else s.shape
            return (
                rs.standard_normal(shape).astype(s.dtype)
                if s.dtype.kind == "f"
                else (np.zeros(shape, s.dtype))
            )

        return jax.tree_util.tree_map_with_path(leaf, abstract)

    states = {
        "damsm": saved(wd.abstract_damsm(config, nets, mesh), lambda n: "/text/" not in n),
        "stream": saved(wd.abstract_stream(config, nets, mesh), lambda n: "opt_state" in n),
    }
    for stage, state in states.items():
        meta = {"model": wd.model_fingerprint(config, stage)}
        with checkpoints.Checkpointer(tmp_path / stage / "checkpoints", async_save=False) as c:
            c.save(3, state, meta=meta)
    frozen = wd.restore_frozen(config, str(tmp_path), nets, mesh)
    want = (
        {"params": states["damsm"].params["text"]},
        {"params": states["stream"].params["cnn"], "batch_stats": states["stream"].batch_stats},
        {"params": states["stream"].params["rnn"]},
    )
    got_all = (frozen.text_encoder, frozen.caption_cnn, frozen.caption_rnn)
    for got, expected in zip(got_all, want, strict=True):
        assert jax.tree.structure(got) == jax.tree.structure(expected)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(np.asarray(a), b)
    with pytest.raises(ValueError):
        wd.restore_damsm(config, str(tmp_path), nets, mesh)
