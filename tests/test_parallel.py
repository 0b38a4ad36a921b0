"""Device layout: global BatchNorm statistics under a sharded batch, shard_batch, replicate,
cluster detection, the persistent compilation cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from mirrorgan_jax import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# A tiny conv + BN model and an SGD step. The 2-process test of the real training step (two
# `main --mode=train` processes on 127.0.0.1) is in test_run.py.
def build():
    import flax.linen as nn
    import jax.numpy as jnp

    from mirrorgan_jax.models.layers import TorchBatchNorm

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            x = nn.Conv(4, (3, 3))(x)
            x = TorchBatchNorm()(x, train)
            x = jnp.mean(jax.nn.relu(x), axis=(1, 2))
            return nn.Dense(1)(x)[:, 0]

    net = Net()

    def loss_fn(params, batch_stats, x, y):
        out, upd = net.apply(
            {"params": params, "batch_stats": batch_stats}, x, True, mutable=["batch_stats"]
        )
        return jnp.mean((out - y) ** 2), upd["batch_stats"]

    @jax.jit
    def step(params, batch_stats, batch):
        (loss, bs), g = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, batch["x"], batch["y"]
        )
        params = jax.tree.map(lambda p, gi: p - 0.1 * gi, params, g)
        return params, bs, loss, g

    def init():
        return net.init(jax.random.key(0), jnp.zeros((1, 6, 6, 2)), False)

    return init, step


def data(steps=3, batch=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps, batch, 6, 6, 2)).astype(np.float32)
    y = rng.normal(size=(steps, batch)).astype(np.float32)
    return x, y


def test_sharded_gradient_and_bn_stats_equal_single_device():
    init, step = build()
    variables = init()
    xs, ys = data(1, 16)
    batch = {"x": xs[0], "y": ys[0]}
    one = jax.device_put((variables, batch), jax.devices()[0])
    p1, bs1, l1, g1 = step(one[0]["params"], one[0]["batch_stats"], one[1])

    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8 and mesh.axis_names == (parallel.DATA_AXIS,)
    rv = parallel.replicate(mesh, variables)
    sb = parallel.shard_batch(mesh, batch)
    assert sb["x"].sharding.is_equivalent_to(parallel.batch_sharding(mesh), 5)
    p8, bs8, l8, g8 = step(rv["params"], rv["batch_stats"], sb)
    # Same loss, gradient and running statistics: BN used the statistics of all 16 samples.
    np.testing.assert_allclose(l8, l1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g8, g1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), bs8, bs1)
    for leaf in jax.tree.leaves((p8, bs8)):
        assert leaf.sharding.is_fully_replicated
    # Per-shard statistics would give a different loss (guards against a vacuous comparison).
    x2 = batch["x"].reshape(8, 2, 6, 6, 2)
    per_shard = [
        step(
            variables["params"],
            variables["batch_stats"],
            {"x": x2[i], "y": ys[0][2 * i : 2 * i + 2]},
        )[2]
        for i in range(8)
    ]
    assert abs(float(np.mean(per_shard)) - float(l1)) > 1e-4


def test_shard_batch_round_trip():
    mesh = parallel.make_mesh()
    rng = np.random.default_rng(0)
    batch = {
        "images": [
            rng.normal(size=(8, 4, 4, 3)).astype(np.float32),
            rng.normal(size=(8, 8, 8, 3)).astype(np.float32),
        ],
        "tokens": rng.integers(0, 9, size=(8, 5)).astype(np.int32),
        "lengths": np.arange(1, 9, dtype=np.int32),
        "key": np.array([b"a"] * 8),
    }
    out = parallel.shard_batch(mesh, batch)
    assert set(out) == {"images", "tokens", "lengths"}
    assert len(out["images"]) == 2
    for got, want in [
        (out["images"][0], batch["images"][0]),
        (out["images"][1], batch["images"][1]),
        (out["tokens"], batch["tokens"]),
        (out["lengths"], batch["lengths"]),
    ]:
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.sharding.is_equivalent_to(parallel.batch_sharding(mesh), want.ndim)
        assert len(got.addressable_shards) == 8
        np.testing.assert_array_equal(np.asarray(got), want)
    with pytest.raises(ValueError, match="tokens.*divisible by the 8"):
        parallel.shard_batch(mesh, {"tokens": np.zeros((6, 2), np.int32)})


def test_replicate_and_abstract_replicated():
    mesh = parallel.make_mesh()
    tree = {"a": np.ones((3, 2), np.float32), "b": [np.arange(4, dtype=np.int32)]}
    out = parallel.replicate(mesh, tree)
    for leaf, want in zip(jax.tree.leaves(out), jax.tree.leaves(tree), strict=True):
        assert leaf.sharding.is_fully_replicated and len(leaf.addressable_shards) == 8
        np.testing.assert_array_equal(np.asarray(leaf), want)
    abstract = parallel.abstract_replicated(mesh, jax.eval_shape(lambda: tree))
    assert jax.tree.structure(abstract) == jax.tree.structure(tree)
    for leaf, want in zip(jax.tree.leaves(abstract), jax.tree.leaves(tree), strict=True):
        assert isinstance(leaf, jax.ShapeDtypeStruct) and leaf.shape == want.shape
        assert leaf.sharding.is_fully_replicated and leaf.dtype == want.dtype


def test_jit_or_shapes():
    fn = lambda x: {"y": x * 2.0}
    assert float(parallel.jit_or_shapes(fn, 3.0)["y"]) == 6.0
    shapes = parallel.jit_or_shapes(fn, np.ones((2, 5), np.float32), abstract=True)
    assert isinstance(shapes["y"], jax.ShapeDtypeStruct) and shapes["y"].shape == (2, 5)


def test_detect_cluster_and_single_host_noop(monkeypatch):
    d = parallel.detect_cluster
    assert d({}) is None
    assert d({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4"}) == "explicit"
    assert d({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "1"}) is None
    assert d({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}) == "slurm"
    assert d({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
    assert d({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "3"}) == "openmpi"
    assert d({"TPU_WORKER_HOSTNAMES": "a,b"}) == "tpu"
    assert d({"TPU_WORKER_HOSTNAMES": "a"}) is None
    assert d({"MIRRORGAN_DISTRIBUTED": "1"}) == "requested"  # launch/tpu_vm.sh, multi-host
    with pytest.raises(ValueError, match="SLURM_NTASKS='x'"):
        d({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "x"})
    for var in (
        "JAX_COORDINATOR_ADDRESS",
        "SLURM_JOB_ID",
        "OMPI_MCA_orte_hnp_uri",
        "TPU_WORKER_HOSTNAMES",
        "TPU_PROCESS_ADDRESSES",
        "MIRRORGAN_DISTRIBUTED",
    ):
        monkeypatch.delenv(var, raising=False)
    assert parallel.maybe_initialize_distributed() is False
    assert (
        parallel.maybe_initialize_distributed(
            num_processes=1, process_id=0, coordinator_address="127.0.0.1:1"
        )
        is False
    )


# Compiles a small program (well under JAX's default one-second threshold for caching) with
# the cache in argv[1] ("off": none) and prints the cache's hits and misses.
_COMPILE_ONCE = """
import json, sys
import jax, jax.numpy as jnp
from mirrorgan_jax import parallel
parallel.enable_compilation_cache(None if sys.argv[1] == "off" else sys.argv[1])
counts = {"hits": 0, "misses": 0}
def listen(event, **kwargs):
    for name in counts:
        if event == "/jax/compilation_cache/cache_" + name:
            counts[name] += 1
jax.monitoring.register_event_listener(listen)
y = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.arange(12.0).reshape(3, 4))
print(json.dumps({**counts, "y": float(y)}))
"""


def _compile_once(cache: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _COMPILE_ONCE, cache],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "cache"
    first = _compile_once(str(cache))
    assert first["misses"] >= 1 and first["hits"] == 0
    entries = sorted(os.listdir(cache))
    assert entries, "nothing was written to the cache"
    second = _compile_once(str(cache))
    assert second["hits"] >= 1 and second["misses"] == 0
    assert second["y"] == first["y"]
    assert sorted(os.listdir(cache)) == entries  # nothing compiled anew
    off = _compile_once("off")
    assert off["hits"] == off["misses"] == 0
