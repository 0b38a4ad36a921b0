"""Orbax checkpoints of train states, with safety checks, and a preemption (SIGTERM) flag.

Layout of `directory` (one Orbax `CheckpointManager`):
  <step>/state        the state pytree (any device layout; restored onto the target's shardings)
  <step>/meta         JSON: {"step", "user": the caller's meta dict, "model_config": shape config}
  <step>/digest.json  the SHA-256 of every file of the step, written once its save committed
  <step>.damaged      a step that failed its check, set aside (never deleted) when a resumed
                      run reaches that step again and saves it anew
Saves are asynchronous; Orbax writes each step into a temporary directory and renames it
when complete, so an interrupted save is never listed (a writing Checkpointer removes stale
temporary directories when it opens the directory; a `read_only` one never creates, removes or
writes anything, so it can read a directory a training run is writing). Every process must call
`save`/`restore`.

Safety:
  * `save` refuses non-finite values (`NonFiniteError` naming the step and the first bad leaf),
    before anything is written, so the previous checkpoint stays the latest.
  * The model-shape config (e.g. `config.model.to_dict()`) given to the Checkpointer is stored
    in every checkpoint; restoring, or saving into a directory whose latest checkpoint has a
    different one, raises `ConfigMismatchError` listing every differing key with both values.
  * Restoring the latest step checks each step's files against its digest, newest first: a step
    that differs from its digest or fails to load is skipped with a warning naming it, and the
    previous good step is restored; with none left, `CheckpointError` names the directory. A
    step without a digest (written before digests existed, or a run killed between the commit
    and the digest) is restored if it loads, with a warning that it was not verified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mirrorgan_jax import errors
from mirrorgan_jax.parallel import abstract_like

log = logging.getLogger(__name__)

DIGEST_FILE = "digest.json"
DAMAGED_SUFFIX = ".damaged"

_ABSENT = "<absent>"
# Config keys added after checkpoints and workdirs were first written, each with the value that
# reproduces the behaviour from before it existed. A saved config without such a key counts as
# that value, so older checkpoints keep restoring; a run that sets another value still differs.
ADDED_KEYS: dict[str, Any] = {
    "model.ca_noise_scale": 1.0,
    "model.discriminator_batchnorm": True,
    "model.discriminator_spectral_norm": False,
}


# A leaf of a restore target that is not read: it comes back as this same marker (Orbax's
# placeholder), so a caller that needs part of a state reads only that part from disk.
SKIP = ocp.PLACEHOLDER


class NonFiniteError(errors.Error, ValueError):
    """A state to be saved holds NaN or Inf."""


class ConfigMismatchError(errors.Error, ValueError):
    """A checkpoint was written with a different model-shape config."""


class CheckpointError(errors.Error, ValueError):
    """No usable checkpoint where one is needed, or a step that cannot be read."""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def leaf_name(path: tuple) -> str:
    """'params/Dense_0/kernel' for a jax key path."""
    return "/".join(_key_name(k) for k in path) or "<root>"


@jax.jit
def _finite_flags(leaves: tuple) -> jax.Array:
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def first_non_finite(tree: Any) -> str | None:
    """Name of the first floating leaf of `tree` that contains NaN/Inf, or None."""
    named = [
        (leaf_name(p), x)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    # On CPU a fully addressable array is already in host memory: numpy checks it without
    # compiling a reduction over the whole tree (seconds for every new tree structure).
    on_host = jax.default_backend() == "cpu"
    dev, host = [], []
    for n, x in named:
        on_device = isinstance(x, jax.Array) and not (on_host and x.is_fully_addressable)
        (dev if on_device else host).append((n, x))
    bad = {n for n, x in host if not np.all(np.isfinite(x))}
    if dev:
        flags = _finite_flags(tuple(x for _, x in dev))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            flags = multihost_utils.process_allgather(flags, tiled=True)
        bad |= {n for (n, _), ok in zip(dev, np.asarray(flags), strict=True) if not ok}
    for n, _ in named:
        if n in bad:
            return n
    return None


def _flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    names: tuple[str, str] = ("checkpoint", "current"),
) -> list[str]:
    """'key: checkpoint X, current Y' (`names` word it) for every (dotted) key whose values
    differ; a key of `ADDED_KEYS` missing from `saved` counts as its value there."""
    a = _flatten_config(json.loads(json.dumps(saved)))
    b = _flatten_config(json.loads(json.dumps(current)))
    a.update({k: v for k, v in ADDED_KEYS.items() if k not in a and k in b})
    return [
        f"{k}: {names[0]} {a.get(k, _ABSENT)!r}, {names[1]} {b.get(k, _ABSENT)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    ]


def meta_differences(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """`config_differences` restricted to the top-level keys of `expected`."""
    diffs: list[str] = []
    for k, v in expected.items():
        if k not in saved:
            diffs.append(f"{k}: checkpoint {_ABSENT!r}, current {v!r}")
        else:
            diffs += config_differences({k: saved[k]}, {k: v})
    return diffs


@dataclasses.dataclass(frozen=True)
class LegacyLayout:
    """A state layout that earlier code saved, and how to read it into today's.

    keys: the top-level keys of the saved tree that identify the layout.
    target: the restore target in that layout (its leaves those of today's target).
    convert: restored tree in that layout -> today's state.
    """

    keys: frozenset[str]
    target: Any
    convert: Callable[[Any], Any]


# ---------------------------------------------------------------------------------------------
# the checkpointer
# ---------------------------------------------------------------------------------------------


_ARRAY_HANDLER_SET = False


def _save_whole_replicas_on_cpu() -> None:
    """On CPU, Orbax writes each replicated array from one device, whole.

    Orbax's default ("replica parallel") has every replica write a slice of a replicated
    array; on CPU the devices share one host's memory, so that parallelism buys nothing, and
    each slice is a jitted op compiled on first use, which dominated the time of saving a new
    state onto 8 CPU devices. Elsewhere Orbax's default stays."""
    global _ARRAY_HANDLER_SET
    if _ARRAY_HANDLER_SET or jax.default_backend() != "cpu":
        return
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True
    )
    _ARRAY_HANDLER_SET = True


def _digest_files(step_dir: str) -> dict[str, str]:
    """{path relative to `step_dir`: SHA-256} of every file of a step but its digest."""
    out = {}
    for root, _, names in os.walk(step_dir):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, step_dir)
            if rel == DIGEST_FILE:
                continue
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[rel] = h.hexdigest()
    return dict(sorted(out.items()))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _all_processes(flag: bool) -> bool:
    """`flag` AND-ed over all processes, so that every process takes the same step."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.array([flag]))))


class Checkpointer:
    """Save/restore train-state pytrees plus JSON meta under `directory`.

    Args:
      directory: checkpoint root (created if missing, unless read_only).
      max_to_keep: keep the newest N steps (None: all).
      save_interval_steps: `save` writes only when step % interval == 0 (unless force).
      model_config: JSON-able dict of the shape-relevant config (e.g. config.model.to_dict()),
        stored with every checkpoint and compared on restore; None disables the check.
      async_save: write in a background thread (call `wait_until_finished`/`close`).
      read_only: only read: nothing under `directory` is created, removed or written (for
        modes that read a workdir, possibly while a run trains in it).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        max_to_keep: int | None = 3,
        save_interval_steps: int = 1,
        model_config: Mapping[str, Any] | None = None,
        async_save: bool = True,
        read_only: bool = False,
    ):
        _save_whole_replicas_on_cpu()
        self.directory = os.path.abspath(os.fspath(directory))
        self.model_config = None if model_config is None else json.loads(json.dumps(model_config))
        self.read_only = read_only
        # Steps a restore skipped: step -> why. A run that saves such a step again sets the
        # old one aside first.
        self.skipped: dict[int, str] = {}
        self._pending_digests: list[int] = []
        self._checked_dir_config = False
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max_to_keep,
            save_interval_steps=save_interval_steps,
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    # -- queries ---------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        """Newest complete step (not checked against its digest), or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """All complete steps, ascending."""
        return sorted(self._manager.all_steps())

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _read_meta(self, step: int) -> dict[str, Any]:
        r = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(r.meta)

    def _check_config(self, step: int, saved: Mapping[str, Any]) -> None:
        stored = saved.get("model_config")
        if self.model_config is None or stored is None:
            return
        diffs = config_differences(stored, self.model_config)
        if diffs:
            raise ConfigMismatchError(
                "checkpoint written for a different model config",
                f"{self.directory} step {step}",
                "; ".join(diffs) + ". Use another workdir, or the config it was written with",
            )

    def damage(self, step: int) -> str | None:
        """Why `step` differs from its digest (a file missing or changed), or None when it
        matches or has no digest (`verified` tells which)."""
        path = os.path.join(self._step_dir(step), DIGEST_FILE)
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as f:
                recorded = json.load(f)["files"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"its {DIGEST_FILE} is unreadable ({_first_line(e)})"
        try:
            found = _digest_files(self._step_dir(step))
        except OSError as e:  # a file removed while it was read
            return f"its files cannot be read ({_first_line(e)})"
        for rel, digest in recorded.items():
            if rel not in found:
                return f"{rel} is missing"
            if found[rel] != digest:
                return f"{rel} differs from its digest"
        return None

    def verified(self, step: int) -> bool:
        """Whether `step` has a digest (written once its save committed)."""
        return os.path.isfile(os.path.join(self._step_dir(step), DIGEST_FILE))

    def check_meta(self, expected_meta: Mapping[str, Any]) -> int | None:
        """Raise ConfigMismatchError if the newest step whose meta can be read was saved with
        other `expected_meta` values (see `restore`); returns that step, or None. Reads no
        arrays: a check before a run starts."""
        for step in reversed(self.all_steps()):
            try:
                saved = self._read_meta(step)
            except Exception:  # a damaged step: a restore will skip it too
                continue
            self._check_expected(step, saved, expected_meta)
            return step
        return None

    def _check_expected(self, step: int, saved: Mapping[str, Any], expected_meta) -> None:
        self._check_config(step, saved)
        if expected_meta:
            diffs = meta_differences(saved.get("user", {}), expected_meta)
            if diffs:
                raise ConfigMismatchError(
                    "checkpoint written for a different model config",
                    f"{self.directory} step {step}",
                    "; ".join(diffs) + ". Use another workdir, or the config it was written with",
                )

    # -- save ------------------------------------------------------------------------------
    def save(
        self, step: int, state: Any, meta: Mapping[str, Any] | None = None, force: bool = False
    ) -> bool:
        """Save `state` (any pytree of arrays) and `meta` (JSON-able dict) as `step`.

        Returns True if a save was started; False when the interval skips this step or the
        step already exists. Raises NonFiniteError (nothing written) on NaN/Inf, TypeError for
        non-JSON meta, ConfigMismatchError when the directory holds another model config.
        A step that a restore of this Checkpointer skipped as damaged is set aside to
        `<step>.damaged` and saved anew.
        """
        if self.read_only:
            raise CheckpointError(
                "a read-only Checkpointer cannot save",
                self.directory,
                "open it with read_only=False",
            )
        step = int(step)
        self.record_digests()
        if step in self._manager.all_steps():
            if step not in self.skipped:
                log.info(
                    "checkpoint step %d already exists in %s; not saved again", step, self.directory
                )
                return False
            self._set_aside(step)
        if not force and not self._manager.should_save(step):
            return False
        if not self._checked_dir_config and self.model_config is not None:
            latest = self.check_meta({})
            self._checked_dir_config = latest is not None
        bad = first_non_finite(state)
        if bad is not None:
            raise NonFiniteError(
                f"refusing to save checkpoint step {step} in {self.directory}: leaf '{bad}' "
                "contains NaN or Inf (the previous checkpoint is kept)"
            )
        payload = {"step": step, "user": dict(meta or {}), "model_config": self.model_config}
        try:
            json.dumps(payload)
        except TypeError as e:
            raise TypeError(f"checkpoint meta for step {step} is not JSON-serialisable: {e}") from e
        started = self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(payload)
            ),
            force=True,
        )
        if started:
            self._pending_digests.append(step)
        return started

    def _set_aside(self, step: int) -> None:
        """Moves a damaged step out of the way (kept for inspection, never deleted)."""
        target = self._step_dir(step) + DAMAGED_SUFFIX
        n = 1
        while os.path.exists(target):
            n += 1
            target = f"{self._step_dir(step)}{DAMAGED_SUFFIX}{n}"
        if jax.process_index() == 0:
            os.rename(self._step_dir(step), target)
        _sync(f"checkpoint-set-aside-{step}")
        self._manager.reload()
        log.warning(
            "checkpoint step %d in %s was damaged (%s): moved to %s, saving the step anew",
            step,
            self.directory,
            self.skipped.pop(step),
            target,
        )

    def record_digests(self) -> None:
        """Writes the digest of every save that has committed since (cheap when none has; the
        stage loop calls it every step, so a digest follows its commit closely)."""
        if not self._pending_digests or self._manager.is_saving_in_progress():
            return
        steps, self._pending_digests = self._pending_digests, []
        if jax.process_index() != 0:
            return
        for step in steps:
            step_dir = self._step_dir(step)
            if not os.path.isdir(step_dir):  # removed by retention meanwhile
                continue
            payload = {"step": step, "algorithm": "sha256", "files": _digest_files(step_dir)}
            tmp = os.path.join(step_dir, f".{DIGEST_FILE}.tmp")
            with open(tmp, "w") as f:
                json.dump(payload, f, indent=1)
            os.replace(tmp, os.path.join(step_dir, DIGEST_FILE))

    # -- restore ---------------------------------------------------------------------------
    def _saved_keys(self, step: int) -> frozenset[str]:
        """The top-level keys of the state saved at `step`."""
        return frozenset(self._manager.item_metadata(step)["state"].keys())

    def restore(
        self,
        step: int | None,
        target: Any,
        expected_meta: Mapping[str, Any] | None = None,
        legacy: Sequence[Callable[[Any], LegacyLayout]] = (),
    ) -> tuple[Any, dict[str, Any]]:
        """Restore `step` (None: the latest good one, see `restore_latest`) onto `target`.

        target: a pytree of the state's type whose leaves are `jax.ShapeDtypeStruct`s with the
          wanted shardings (see `parallel.abstract_like`), or concrete arrays (their shardings
          are used), or `SKIP` for a leaf not to read. The device count may differ from the
          one that saved.
        expected_meta: entries the saved meta must hold with equal values, e.g.
          {"model": config.model.to_dict()}; each top-level key is compared as a whole
          (nested keys dotted in the error); other saved keys (step, data position) are free.
        legacy: functions target -> `LegacyLayout` of earlier layouts of the same state; a
          checkpoint saved in one of them is restored in it and converted.
        Returns (state, meta) where meta is the dict given to `save`.
        Raises CheckpointError when there is no (usable) checkpoint, ConfigMismatchError (the
        constructor's model_config or expected_meta differs from what was saved).
        """
        if step is None:
            return self.restore_latest(target, expected_meta, legacy)[1:]
        if step not in self._manager.all_steps():
            raise CheckpointError(
                f"no checkpoint step {step}",
                self.directory,
                f"the steps there are {self.all_steps() or 'none'}",
            )
        reason = self.damage(step)
        if reason is not None:
            raise CheckpointError(f"checkpoint step {step} is damaged", self.directory, reason)
        try:
            return self._restore_step(step, target, expected_meta, legacy)
        except ConfigMismatchError:
            raise
        except Exception as e:
            raise CheckpointError(
                f"checkpoint step {step} cannot be read", self.directory, _first_line(e)
            ) from e

    def restore_latest(
        self,
        target: Any,
        expected_meta: Mapping[str, Any] | None = None,
        legacy: Sequence[Callable[[Any], LegacyLayout]] = (),
    ) -> tuple[int, Any, dict[str, Any]]:
        """(step, state, meta) of the newest step that matches its digest and loads; each
        newer step that does not is skipped with a warning naming it (and kept on disk).
        Raises CheckpointError naming the directory when no step is left,
        ConfigMismatchError as `restore`."""
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(
                "no checkpoint", self.directory, "train (or import) this stage first"
            )
        last_error: BaseException | None = None
        relists = 3
        while steps:
            step = steps.pop()
            reason = self.damage(step)
            restored = None
            if _all_processes(reason is None):
                try:
                    restored = self._restore_step(step, target, expected_meta, legacy)
                except ConfigMismatchError:
                    raise
                except Exception as e:  # a damaged step: TensorStore, JSON, a missing file...
                    reason, last_error = _first_line(e), e
                if _all_processes(restored is not None):
                    state, meta = restored
                    if not self.verified(step):
                        log.warning(
                            "checkpoint step %d in %s has no %s (written before digests, or "
                            "its save had only just committed): restored unchecked",
                            step,
                            self.directory,
                            DIGEST_FILE,
                        )
                    return step, state, meta
            if relists and not _all_processes(os.path.isdir(self._step_dir(step))):
                # Removed while it was read: the retention of a run training in this folder.
                # Its newer steps are listed again.
                relists -= 1
                self._manager.reload()
                steps = [s for s in self.all_steps() if s not in self.skipped]
                continue
            self.skipped[step] = reason or "damaged on another process"
            log.warning(
                "checkpoint step %d in %s is skipped: %s; trying the step before it",
                step,
                self.directory,
                self.skipped[step],
            )
        tried = "; ".join(f"step {s}: {why}" for s, why in sorted(self.skipped.items()))
        raise CheckpointError(
            "no usable checkpoint",
            self.directory,
            f"every step is damaged ({tried}); they are kept as they are. Restore the folder "
            "from a copy, or move it away to start the stage afresh",
        ) from last_error

    def _restore_step(self, step, target, expected_meta, legacy) -> tuple[Any, dict[str, Any]]:
        saved = self._read_meta(step)
        self._check_expected(step, saved, expected_meta)
        abstract = jax.tree.map(
            lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else abstract_like(x), target
        )
        convert = None
        if legacy:
            saved_keys = self._saved_keys(step)
            for layout in (make(abstract) for make in legacy):
                if layout.keys == saved_keys:
                    abstract, convert = layout.target, layout.convert
                    log.info("%s step %d: reading an earlier state layout", self.directory, step)
        if any(leaf is SKIP for leaf in jax.tree.leaves(abstract)):
            return self._restore_part(step, abstract), dict(saved.get("user", {}))
        r = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        state = r.state if convert is None else convert(r.state)
        return state, dict(r.meta.get("user", {}))

    def _restore_part(self, step: int, abstract: Any) -> Any:
        """The leaves of `abstract` that are not `SKIP`, read from the state of `step` (saved
        by `save`, in Orbax's PyTree format; only the PyTree reader takes placeholders)."""
        path = os.path.join(self._step_dir(step), "state")
        if not os.path.isdir(path):
            raise FileNotFoundError(f"checkpoint step {step} has no state folder {path}")
        reader = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
        try:
            return reader.restore(
                path,
                args=ocp.args.PyTreeRestore(
                    item=abstract,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                ),
            )
        finally:
            reader.close()

    # -- lifecycle -------------------------------------------------------------------------
    def wait_until_finished(self) -> None:
        """Block until pending asynchronous saves are on disk (and their digests written)."""
        self._manager.wait_until_finished()
        self.record_digests()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self._manager.wait_until_finished()
        self.record_digests()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ---------------------------------------------------------------------------------------------
# preemption
# ---------------------------------------------------------------------------------------------


class PreemptionHandler:
    """Sets `.requested` on SIGTERM/SIGINT so a training loop can save and exit cleanly.

    The first signal only sets the flag (and `.signal_received`); a second one is passed to the
    handler that was installed before (default: terminate / KeyboardInterrupt), so an impatient
    Ctrl-C twice still stops the program. `close()` restores the previous handlers.
    Install from the main thread (a Python restriction on signal handlers).
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)):
        self.requested = False
        self.signal_received: int | None = None
        self._previous: dict[int, Any] = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.requested = True
            self.signal_received = signum
            log.warning("signal %d received: will checkpoint and stop", signum)
            return
        prev = self._previous.get(signum, signal.SIG_DFL)
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL:
            self.close()
            os.kill(os.getpid(), signum)

    def sync_requested(self) -> bool:
        """The flag OR-ed over all processes (call at the same step on every process)."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array([self.requested]))
        return bool(np.any(flags))

    def close(self) -> None:
        """Restore the handlers that were installed before."""
        for sig, prev in self._previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._previous = {}

    def __enter__(self) -> "PreemptionHandler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def install_preemption_handler(
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
) -> PreemptionHandler:
    """Install a `PreemptionHandler` for `signals`; use as a context manager or call close()."""
    return PreemptionHandler(signals)
