"""Device layout: the one place that knows about meshes, shardings and processes.

Data parallelism over a 1-D mesh with the axis `DATA_AXIS` ("data") spanning every device of every
process. Training steps are plain `jax.jit` functions whose batch arguments carry
`batch_sharding(mesh)` and whose state carries `replicated(mesh)`. The mesh uses `AxisType.Auto`
(explicit axes would demand a sharding rule for every op), so XLA partitions the computation itself:
a reduction over the batch axis, e.g. the mean/variance inside `TorchBatchNorm`, becomes an
all-reduce, and the BatchNorm statistics are those of the GLOBAL batch (exactly as on one device
with the whole batch), gradients are averaged over the whole batch, and the replicated outputs stay
replicated. No `shard_map`/`pmap` is needed for that.

Multi-host: every process runs the same program, calls `maybe_initialize_distributed()` before
any other JAX call, feeds its own slice of the global batch to `shard_batch`, and gets global
arrays back. Process p's local rows become the global rows owned by its devices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

log = logging.getLogger(__name__)

# Environment variables read by `maybe_initialize_distributed` (the last two are ours; JAX itself
# reads only JAX_COORDINATOR_ADDRESS and JAX_LOCAL_DEVICE_IDS).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ("data",) over `devices` (default: all devices of all processes).

    Uses `AxisType.Auto` so that plain `jax.jit` partitions over it automatically.
    """
    if devices is None:
        return jax.make_mesh(
            (jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
        )
    return Mesh(np.asarray(list(devices)), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of an array held whole on every device (parameters, optimiser state, rng)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over the "data" axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


_DROP = object()  # marks entries shard_batch leaves out


def _is_numeric(x: Any) -> bool:
    if isinstance(x, jax.Array):
        return True
    if isinstance(x, (np.ndarray, np.generic)):
        return x.dtype.kind in "biuf"
    return False


def shard_batch(mesh: Mesh, host_batch: Any) -> Any:
    """Assemble global batch-sharded arrays from this process's local batch.

    Args:
      mesh: the data mesh (`make_mesh()`).
      host_batch: a dict / list / tuple (nested) of numpy arrays holding this process's rows;
        every array's leading axis is the local batch, divisible by the local device count.
        Non-numeric entries (e.g. the `key` bytes array of the data schema, strings, None)
        are dropped from the result, so the output can be passed to a jitted step as is.
    Returns:
      the same structure (minus dropped entries) of `jax.Array`s with global leading axis
      local_batch * process_count, sharded as `batch_sharding(mesh)`.
    """
    sharding = batch_sharding(mesh)
    n_local = len(mesh.local_devices)

    def put(path: str, x: Any) -> jax.Array:
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % n_local:
            raise ValueError(
                f"shard_batch: '{path}' has shape {x.shape}; its leading (batch) axis must be "
                f"divisible by the {n_local} local devices"
            )
        return jax.make_array_from_process_local_data(sharding, x)

    def walk(path: str, node: Any) -> Any:
        if isinstance(node, Mapping):
            out = {}
            for k, v in node.items():
                r = walk(f"{path}/{k}" if path else str(k), v)
                if r is not _DROP:
                    out[k] = r
            return out
        if isinstance(node, (list, tuple)):
            items = [walk(f"{path}[{i}]", v) for i, v in enumerate(node)]
            return type(node)(r for r in items if r is not _DROP)
        if _is_numeric(node):
            return put(path, node)
        return _DROP

    return walk("", host_batch)


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Place every array of `tree` whole on every device of the mesh (same values everywhere).

    Single process: a device_put. Several processes: each process must pass identical values;
    each builds its addressable shards from its own copy (no cross-host transfer).
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(put, tree)


def jit_or_shapes(fn: Callable[..., Any], *args: Any, abstract: bool = False) -> Any:
    """`fn(*args)` as one jitted program, or with `abstract=True` only the shapes and dtypes
    of its result (`jax.eval_shape`: no memory, no compute), e.g. a restore target."""
    return jax.eval_shape(fn, *args) if abstract else jax.jit(fn)(*args)


def abstract_like(tree: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """ShapeDtypeStruct tree of `tree` (arrays or `jax.eval_shape` output), a restore target.

    sharding: put every leaf on this sharding (e.g. `replicated(mesh)`); None keeps each
    leaf's own sharding (concrete arrays) or leaves it unset.
    """

    def one(x):
        if not hasattr(x, "shape"):
            return x  # Python scalars are restored as saved
        s = sharding if sharding is not None else getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)

    return jax.tree.map(one, tree)


def abstract_replicated(mesh: Mesh, tree: Any) -> Any:
    """`tree`'s shapes held whole on every device of `mesh`: the target a train state is
    restored onto."""
    return abstract_like(tree, replicated(mesh))


def detect_cluster(env: Mapping[str, str] | None = None) -> str | None:
    """Which multi-process launcher, if any, started this process.

    Returns "requested" (MIRRORGAN_DISTRIBUTED=1), "explicit" (JAX_COORDINATOR_ADDRESS set and
    JAX_NUM_PROCESSES > 1 or unset),
    "slurm" / "openmpi" (with more than one task), "tpu" (several TPU worker hostnames), or None
    (one process; nothing to initialise).
    """
    env = os.environ if env is None else env
    if env.get("MIRRORGAN_DISTRIBUTED") == "1":
        # Asked for explicitly (launch/tpu_vm.sh on multi-host slices): on Cloud TPU VMs the
        # worker list lives in the VM metadata, which JAX's own auto-detection reads.
        return "requested"

    def count(name: str) -> int:
        try:
            return int(env.get(name, "1"))
        except ValueError:
            raise ValueError(
                f"environment variable {name}={env[name]!r} is not an integer"
            ) from None

    if env.get(ENV_COORDINATOR):
        # Without JAX_NUM_PROCESSES the launcher is trusted to span several processes.
        return "explicit" if ENV_NUM_PROCESSES not in env or count(ENV_NUM_PROCESSES) > 1 else None
    if "SLURM_JOB_ID" in env and count("SLURM_NTASKS") > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and count("OMPI_COMM_WORLD_SIZE") > 1:
        return "openmpi"
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        return "tpu"
    return None


def maybe_initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    initialization_timeout: int = 300,
) -> bool:
    """Call `jax.distributed.initialize` when this run spans several processes; else no-op.

    Must run before any other JAX call. Decision, in order:
      1. explicit arguments (e.g. from flags): used as given; num_processes == 1 is a no-op;
      2. env JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES, JAX_PROCESS_ID; the last two are
         read here, JAX_COORDINATOR_BIND_ADDRESS / JAX_LOCAL_DEVICE_IDS by JAX itself);
      3. a managed launcher with several tasks: Slurm, Open MPI, Cloud TPU pod slices
         (JAX's own auto-detection fills the parameters);
      4. otherwise one process: nothing is done.
    Returns True when the distributed runtime is (now) initialised.
    """
    if jax.distributed.is_initialized():
        return True
    env = os.environ
    if coordinator_address is None and env.get(ENV_COORDINATOR):
        coordinator_address = env[ENV_COORDINATOR]
        if num_processes is None and ENV_NUM_PROCESSES in env:
            num_processes = int(env[ENV_NUM_PROCESSES])
        if process_id is None and ENV_PROCESS_ID in env:
            process_id = int(env[ENV_PROCESS_ID])
    if coordinator_address is None and num_processes is None and process_id is None:
        kind = detect_cluster(env)
        if kind is None:
            return False
        log.info("initialising jax.distributed (detected %s)", kind)
        jax.distributed.initialize(initialization_timeout=initialization_timeout)
        return True
    if num_processes == 1:
        return False
    log.info(
        "initialising jax.distributed: coordinator %s, %s processes, process id %s",
        coordinator_address,
        num_processes,
        process_id,
    )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=initialization_timeout,
    )
    return True


# Read by JAX itself at import; `compilation_cache_dir` (workdir.py) honours it.
ENV_COMPILATION_CACHE = "JAX_COMPILATION_CACHE_DIR"


def enable_compilation_cache(directory: str | None) -> None:
    """JAX's persistent compilation cache in `directory` (None: off), for every compile that
    follows: a process that compiles a program an earlier one compiled loads the executable
    instead (the key holds the program, the jaxlib version, the devices and the compile
    options, so one folder serves several machines).

    Every program is cached, however small or quick to compile: on a CPU a start-up compiles
    dozens of programs of well under JAX's default one second (initialisers, optimiser
    set-up, checkpoint checks) that together take most of a restart."""
    from jax.experimental.compilation_cache import compilation_cache

    if directory is None:
        jax.config.update("jax_compilation_cache_dir", None)
    else:
        os.makedirs(directory, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # JAX decides once, at the first compile, whether a process uses the cache; a process
    # that compiled before this call decides again at its next compile.
    compilation_cache.reset_cache()
