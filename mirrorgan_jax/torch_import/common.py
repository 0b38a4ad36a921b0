"""Shared helpers for turning official PyTorch state dicts into Flax variables.

A converter reads a flat `{official_key: np.ndarray}` dict (from `.npz` or `.pth`), takes each
key it knows through a `StateDictReader` (which transposes layouts and records what was used),
and returns Flax variables `{"params": ..., "batch_stats": ...}`. `check_against` then compares
the result with the variables the configured module expects, so a checkpoint that does not fit
fails with the key, both shapes and the config value to change, before anything is written.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import jax
import numpy as np

from mirrorgan_jax import errors


class WeightMismatchError(errors.Error, ValueError):
    """A checkpoint does not fit the configured model (key, shapes and what to change)."""


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """PyTorch conv weight [O, I, kh, kw] -> Flax HWIO."""
    return np.transpose(w, (2, 3, 1, 0))


def linear_kernel(w: np.ndarray) -> np.ndarray:
    """PyTorch Linear weight [out, in] -> Flax [in, out]."""
    return np.transpose(w, (1, 0))


class StateDictReader:
    """Reads official keys from a state dict and reports missing / unused ones by name."""

    def __init__(self, state_dict: Mapping[str, np.ndarray], source: str = "checkpoint"):
        self.sd = {
            k: np.asarray(v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")
        }
        self.source = source
        self.used: set[str] = set()

    def get(self, key: str) -> np.ndarray:
        if key not in self.sd:
            raise WeightMismatchError(
                f"{self.source}: missing key {key!r} (the model expects it; found "
                f"{len(self.sd)} keys, e.g. {sorted(self.sd)[:5]})"
            )
        self.used.add(key)
        return self.sd[key].astype(np.float32) if self.sd[key].dtype.kind == "f" else self.sd[key]

    def conv(self, key: str) -> np.ndarray:
        return conv_kernel(self.get(key))

    def linear(self, key: str) -> np.ndarray:
        return linear_kernel(self.get(key))

    def batch_norm(self, prefix: str) -> tuple[dict, dict]:
        """(params, batch_stats) of a PyTorch BatchNorm under `prefix` ('' -> no dot)."""
        p = f"{prefix}." if prefix else ""
        params = {"scale": self.get(p + "weight"), "bias": self.get(p + "bias")}
        stats = {"mean": self.get(p + "running_mean"), "var": self.get(p + "running_var")}
        return params, stats

    def lstm(self, prefix: str, suffix: str = "_l0") -> dict:
        """Params of one LSTM direction (`layers.LSTMLayer`), e.g. prefix "rnn", "_l0_reverse"."""
        return {
            "ih_kernel": linear_kernel(self.get(f"{prefix}.weight_ih{suffix}")),
            "ih_bias": self.get(f"{prefix}.bias_ih{suffix}"),
            "hh_kernel": linear_kernel(self.get(f"{prefix}.weight_hh{suffix}")),
            "hh_bias": self.get(f"{prefix}.bias_hh{suffix}"),
        }

    def check_all_used(self) -> None:
        unused = sorted(set(self.sd) - self.used)
        if unused:
            raise WeightMismatchError(
                f"{self.source}: unexpected keys {unused[:10]}{' ...' if len(unused) > 10 else ''} "
                "(the configured model has no such parameters; is this the right component/config?)"
            )


def check_against(
    converted: Mapping[str, Any], expected: Mapping[str, Any], source: str, hint: str = ""
) -> None:
    """Raise WeightMismatchError unless `converted` has exactly the structure/shapes of `expected`.

    `expected` may hold arrays or `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape(model.init)`).
    `hint` names the config values that set these shapes (e.g. 'model.gf_dim, model.n_words').
    """
    conv_flat = {
        jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(converted)
    }
    exp_flat = {
        jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(expected)
    }
    for k in sorted(set(exp_flat) - set(conv_flat)):
        raise WeightMismatchError(f"{source}: no value for model variable {k}")
    for k in sorted(set(conv_flat) - set(exp_flat)):
        raise WeightMismatchError(f"{source}: converted variable {k} does not exist in the model")
    for k, e in exp_flat.items():
        got = tuple(np.shape(conv_flat[k]))
        if got != tuple(e.shape):
            raise WeightMismatchError(
                f"{source}: variable {k} has shape {got} in the checkpoint but the model "
                f"expects {tuple(e.shape)}" + (f"; check {hint}" if hint else "")
            )


def basic_conv_paths(tree: Mapping, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of every Inception BasicConv2d (a dict holding exactly 'conv' and 'bn')."""
    for name, sub in tree.items():
        if not isinstance(sub, Mapping):
            continue
        if set(sub) == {"conv", "bn"}:
            yield prefix + (name,)
        else:
            yield from basic_conv_paths(sub, prefix + (name,))


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
    """tree[path[0]][path[1]]... = value, creating the dicts on the way."""
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _expect_shape(reader: StateDictReader, key: str, value: np.ndarray, expected) -> None:
    """Refuse `reader.sd[key]` (converted to `value`) unless `value` has `expected`'s shape,
    naming the torch key and both shapes in the file's own layout."""
    if tuple(np.shape(value)) == tuple(expected.shape):
        return
    want = tuple(expected.shape)
    if len(want) == 4:  # HWIO -> the file's OIHW
        want = (want[3], want[2], want[0], want[1])
    raise WeightMismatchError(
        f"{reader.source}: {key!r} has shape {tuple(np.shape(reader.sd[key]))}; the model "
        f"expects {want}"
    )


def read_basic_convs(reader: StateDictReader, expected_params: Mapping) -> tuple[dict, dict]:
    """(params, batch_stats) of every Inception BasicConv2d in `expected_params`, read from
    the torch keys `<path>.conv.weight` and `<path>.bn.*`; a shape that differs from the
    expected one is refused with the torch key named."""
    params: dict = {}
    stats: dict = {}
    for path in basic_conv_paths(expected_params):
        key = ".".join(path)
        expected = expected_params
        for p in path:
            expected = expected[p]
        kernel = reader.conv(f"{key}.conv.weight")
        _expect_shape(reader, f"{key}.conv.weight", kernel, expected["conv"]["kernel"])
        bn_p, bn_s = reader.batch_norm(f"{key}.bn")
        bn = {"weight": bn_p["scale"], "bias": bn_p["bias"]}
        bn.update(running_mean=bn_s["mean"], running_var=bn_s["var"])
        for name, value in bn.items():  # all [C]
            _expect_shape(reader, f"{key}.bn.{name}", value, expected["bn"]["scale"])
        set_path(params, path, {"conv": {"kernel": kernel}, "bn": bn_p})
        set_path(stats, path, {"bn": bn_s})
    return params, stats
