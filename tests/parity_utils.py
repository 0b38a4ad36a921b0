"""Loading the PyTorch parity fixtures and comparing against them (shared by every parity test).

The fixture directory is `$MIRRORGAN_PARITY_DIR`, or `tests/testdata/parity` under the repository
root. It holds `manifest.json` (every file, key, shape and the configuration the arrays were
made with) and one `.npz` per component, whose keys are `<group>/<rest>`:
`param/<official key>`, `buffer/<official key>`, `input/...`, `output/...`, `output_train/...`,
`output_eval/...`, `buffer_after_train/...`, `aux/...`, `debug/...` (see the fixture README).
Arrays are in PyTorch layouts (NCHW); `nchw_to_nhwc` converts feature maps.

Parity tests must build their models from `manifest_config()` values (never from the numbers
of one particular fixture set) and generate their cases from `listed_files()`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

ENV_VAR = "MIRRORGAN_PARITY_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO_ROOT / "tests" / "testdata" / "parity"
TINY = 1e-12


def parity_dir() -> Path:
    """The fixture directory: $MIRRORGAN_PARITY_DIR if set, else tests/testdata/parity."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser().resolve() if env else DEFAULT_DIR


@lru_cache(maxsize=None)
def _load_manifest(directory: str) -> dict:
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"parity manifest {path} not found; set {ENV_VAR} to a fixture directory "
            f"(default {DEFAULT_DIR})"
        )
    with open(path) as f:
        manifest = json.load(f)
    for field in ("files", "config"):
        if field not in manifest:
            raise KeyError(f"{path}: manifest has no {field!r} entry")
    return manifest


def load_manifest(directory: Path | str | None = None) -> dict:
    """The parsed manifest.json of `directory` (default `parity_dir()`), cached."""
    return _load_manifest(str(directory or parity_dir()))


def manifest_config(directory: Path | str | None = None) -> dict:
    """The manifest's 'config' section (official cfg names -> values)."""
    return load_manifest(directory)["config"]


def config_value(config: dict, name: str) -> Any:
    """config[name], or the value of the one key that starts with `name` (keys such as
    'RNN_ENCODER.ninput (word-embedding dim, ...)' carry a note after the name)."""
    if name in config:
        return config[name]
    hits = [k for k in config if k.startswith(name)]
    if len(hits) != 1:
        raise KeyError(
            f"parity manifest config: expected exactly one key starting with {name!r}, found "
            f"{hits} among {sorted(config)}"
        )
    return config[hits[0]]


def listed_files(pattern: str = r".*\.npz", directory: Path | str | None = None) -> list[str]:
    """Names of the manifest's files that fully match the regex `pattern`, sorted."""
    rx = re.compile(pattern)
    return sorted(name for name in load_manifest(directory)["files"] if rx.fullmatch(name))


@dataclasses.dataclass
class Fixture:
    """One fixture file, split by key group: groups['param']['h_net1.fc.0.weight'] etc."""

    name: str
    path: Path
    groups: dict[str, dict[str, np.ndarray]]

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """All arrays whose key starts with `prefix/`, keyed by the rest of the key.

        `prefix` may itself contain slashes (e.g. 'param/caption_cnn')."""
        head, _, sub = prefix.partition("/")
        items = self.groups.get(head, {})
        if not sub:
            return dict(items)
        return {k[len(sub) + 1 :]: v for k, v in items.items() if k.startswith(sub + "/")}

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self.group("param")

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        return self.group("buffer")

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        return self.group("input")

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        return self.group("output")

    def state_dict(self, buffer_group: str = "buffer", prefix: str = "") -> dict[str, np.ndarray]:
        """Official state dict: param/<prefix>... plus <buffer_group>/<prefix>... (prefix
        stripped), e.g. buffer_group='buffer_after_train' for the statistics after a call."""
        p = f"/{prefix}" if prefix else ""
        sd = dict(self.group("param" + p))
        sd.update(self.group(buffer_group + p))
        return sd


def load_fixture(name: str, directory: Path | str | None = None) -> Fixture:
    """Loads `<directory>/<name>` (a file the manifest lists) into a `Fixture`."""
    directory = Path(directory or parity_dir())
    manifest = load_manifest(directory)
    if name not in manifest["files"]:
        raise KeyError(f"{directory}/manifest.json does not list {name!r}")
    path = directory / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: listed in the manifest but missing")
    groups: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            head, sep, rest = key.partition("/")
            if not sep:
                raise KeyError(f"{path}: key {key!r} has no '<group>/' prefix")
            groups.setdefault(head, {})[rest] = data[key]
    return Fixture(name=name, path=path, groups=groups)


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    """[B, C, H, W] -> [B, H, W, C]."""
    return np.transpose(np.asarray(x), (0, 2, 3, 1))


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    """[B, H, W, C] -> [B, C, H, W]."""
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


def max_rel_err(actual: Any, expected: Any) -> float:
    """Norm-relative error max|a - e| / (max|e| + tiny), in float64."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"shape {a.shape} != expected {e.shape}")
    if e.size == 0:
        return 0.0
    return float(np.max(np.abs(a - e)) / (np.max(np.abs(e)) + TINY))


def assert_close(actual: Any, expected: Any, name: str, tol: float = 1e-5) -> float:
    """Asserts max_rel_err(actual, expected) <= tol; returns the error (for reports)."""
    err = max_rel_err(actual, expected)
    assert np.all(np.isfinite(np.asarray(actual, np.float64))), f"{name}: non-finite values"
    assert err <= tol, f"{name}: max relative error {err:.3e} > {tol:.0e}"
    print(f"parity {name}: max rel err {err:.2e}")
    return err


def read_key_list(name: str) -> list[tuple[str, str, tuple[int, ...], str]]:
    """Rows (official key, torchvision key, shape, kind) of a `*_keys.txt` file of the fixture
    directory; '-' = absent."""
    path = parity_dir() / name
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 4:
            raise ValueError(f"{path}:{lineno}: expected 4 tab-separated columns, got {cols}")
        shape = tuple(int(n) for n in json.loads(cols[2]))
        rows.append((cols[0].strip(), cols[1].strip(), shape, cols[3].strip()))
    if not rows:
        raise ValueError(f"{path}: no key rows")
    return rows


def random_state_dict(name: str, column: int, seed: int) -> dict[str, np.ndarray]:
    """Random float32 weights under the keys and shapes of one column of key list `name`
    (1: torchvision's), drawn with numpy's legacy `RandomState` (a stream numpy keeps fixed
    across versions), so a script with torch and a test without it draw the same values.
    Activations stay O(1): He-scaled convs, BatchNorm near identity (but for ResNet's
    residual branches) with non-trivial running statistics; `num_batches_tracked` is an int64
    counter, as torchvision saves it."""
    rs = np.random.RandomState(seed)
    sd: dict[str, np.ndarray] = {}
    for row in read_key_list(name):
        key, shape = row[column], row[2]
        if key == "-":
            continue
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            sd[key] = np.array(7, np.int64)
            continue
        if len(shape) == 4:  # conv [O, I, kh, kw]
            value = rs.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif len(shape) == 2:  # Linear [out, in]
            value = rs.normal(0.0, 1.0 / np.sqrt(shape[1]), shape)
        elif leaf == "running_var":
            value = rs.uniform(0.5, 1.5, shape)
        elif leaf == "weight":  # BatchNorm gamma
            value = rs.uniform(0.8, 1.2, shape)
            if key.endswith("bn3.weight"):
                # A ResNet bottleneck's last BN: a small gamma keeps its branch small, so 50
                # residual sums do not double the activations 50 times.
                value *= 0.1
        else:  # BatchNorm beta, running_mean, Linear bias
            value = rs.normal(0.0, 0.1, shape)
        sd[key] = value.astype(np.float32)
    return sd


def projections(x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """[B, ...] -> [B, count]: each sample's values projected on `count` fixed random unit
    directions (legacy RandomState `seed`), a small summary that every value moves."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    directions = np.random.RandomState(seed).normal(size=(count, flat.shape[1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return flat @ directions.T
