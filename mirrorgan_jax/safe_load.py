"""Loading data and weight files from elsewhere without ever running code from them.

Python pickles can call any importable function while they load (`os.system`, `exec`, ...), and
PyTorch checkpoints are pickles. Every pickle this project reads goes through one of two
restricted unpicklers here, which resolve only an explicit allowlist of globals; anything else
raises `UnsafeFileError` naming the file and the refused global. There is no fallback to an
unrestricted loader, ever.

* `load_pickle(path)`: plain data only (None, bool, int, float, complex, str, bytes, bytearray,
  list, tuple, dict, set, frozenset, OrderedDict) and numpy arrays / scalars of plain dtypes
  (bool, integers, floats, complex, fixed-width bytes/unicode). Numpy values are rebuilt here
  from their raw bytes (`np.frombuffer`), never by numpy's own unpickling hooks. Python-2 pickles
  (protocol 2, `__builtin__` / `copy_reg` names, py2 `str`) are read with `encoding='latin1'`.
* `load_state_dict(path)`: weight files -> flat `{name: np.ndarray}`. `.npz` via
  `np.load(allow_pickle=False)`; PyTorch checkpoints (the zip format of torch >= 1.6 and the
  legacy format of torch <= 1.5 / `_use_new_zipfile_serialization=False`) via
  `torch.load(weights_only=True)` when torch is installed, else via the reader here, which allows
  only the tensor-rebuilding functions of `torch._utils`, the typed (CPU or CUDA) storage
  classes and `collections.OrderedDict`, and builds numpy arrays from the raw storage bytes.

Every allowlisted callable is a fresh copy per load and the placeholder objects refuse pickle's
BUILD, so a file can neither change this module's behaviour for later files nor alter a tensor's
bounds after they were checked.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import copyreg
import io
import math
import os
import pickle
import re
import types
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

from mirrorgan_jax import errors

__all__ = ["CorruptFileError", "UnsafeFileError", "load_pickle", "load_state_dict"]


class UnsafeFileError(errors.Error, ValueError):
    """A data or weight file asked for something that could run code; it was not loaded."""

    def __init__(self, path: os.PathLike | str, refused: str, detail: str = ""):
        self.path = os.fspath(path)
        self.refused = refused
        super().__init__(
            "refused to load a file that could run code",
            self.path,
            f"it needs {refused!r}, which is not on the allowlist of plain data types"
            + (f" {detail}" if detail else "")
            + "; nothing from the file was used. Use a file of plain arrays (.npz) or data",
        )


class CorruptFileError(errors.Error, ValueError):
    """A data or weight file is not a readable file of the kind it should be (names the file)."""


class _Refused(Exception):
    """Raised inside an unpickler; turned into `UnsafeFileError` with the file name."""

    def __init__(self, refused: str, detail: str = ""):
        super().__init__(refused)
        self.refused, self.detail = refused, detail


class _Placeholder:
    """Base of the objects handed to a pickle: no attributes can be set, no BUILD, no hashing."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"BUILD on {type(self).__name__}", "this object takes no pickled state")


# ---------------------------------------------------------------- numpy, rebuilt from raw bytes
_PLAIN_DTYPE_KINDS = "biufcSU"  # bool, int, uint, float, complex, bytes, unicode (no O, V, M, m)


class _DtypeProxy:
    """Stands in for `numpy.dtype(code)`; its BUILD may only set the byte order."""

    __slots__ = ("dtype",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, spec: Any):
        if not isinstance(spec, str) or len(spec) > 16:
            raise _Refused("numpy.dtype", f"only short dtype codes are accepted, got {spec!r:.40}")
        dtype = np.dtype(spec)
        if dtype.kind not in _PLAIN_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype:
            raise _Refused("numpy.dtype", f"dtype {spec!r} is not a plain numeric/string dtype")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        ok = isinstance(state, tuple) and len(state) >= 5 and all(s is None for s in state[2:5])
        if not ok or state[1] not in ("<", ">", "|", "="):
            raise _Refused("numpy.dtype", f"unexpected dtype state {state!r:.80}")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _raw_bytes(data: Any, what: str) -> bytes:
    if isinstance(data, str):  # Python-2 str read with encoding='latin1'
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise _Refused(what, f"raw data must be bytes, got {type(data).__name__}")


class _NdarrayClass(_Placeholder):
    """Stands in for the `numpy.ndarray` class: only usable as `_reconstruct`'s first argument."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        raise _Refused("numpy.ndarray", "calling the ndarray constructor directly is refused")


class _ArrayProxy:
    """Result of `numpy.core.multiarray._reconstruct`; BUILD gives it shape, dtype and bytes."""

    __slots__ = ("value",)
    __hash__ = None  # type: ignore[assignment]

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise _Refused("numpy.ndarray", f"unexpected array state of type {type(state)}")
        _, shape, dtype, fortran, data = state
        if not isinstance(dtype, _DtypeProxy):
            raise _Refused("numpy.ndarray", "the array's dtype is not a plain numpy.dtype")
        if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise _Refused("numpy.ndarray", f"bad array shape {shape!r:.80}")
        raw = _raw_bytes(data, "numpy.ndarray")
        count = math.prod(shape)
        if len(raw) != count * dtype.dtype.itemsize:
            raise _Refused("numpy.ndarray", f"{len(raw)} bytes do not fill shape {shape}")
        flat = np.frombuffer(raw, dtype=dtype.dtype, count=count)
        self.value = flat.reshape(shape, order="F" if fortran else "C").copy()


def _np_dtype(spec, align=False, copy=True):
    return _DtypeProxy(spec)


def _np_reconstruct(subtype, shape, dtype):
    if not isinstance(subtype, _NdarrayClass):
        raise _Refused("numpy.core.multiarray._reconstruct", "only plain numpy.ndarray is accepted")
    return _ArrayProxy()


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, _DtypeProxy) or data is None:
        raise _Refused("numpy.core.multiarray.scalar", "only plain numeric scalars are accepted")
    raw = _raw_bytes(data, "numpy.core.multiarray.scalar")
    if len(raw) != dtype.dtype.itemsize:
        raise _Refused("numpy.core.multiarray.scalar", "scalar bytes do not match its dtype")
    return np.frombuffer(raw, dtype=dtype.dtype)[0]


# ---------------------------------------------------------------- plain-data allowlist
_PLAIN_TYPES = (set, frozenset, bytearray, bytes, complex, list, dict, tuple, str, int, float, bool)


def _codecs_encode(text, encoding="utf-8"):
    """`_codecs.encode`, which protocol-2 pickles written by Python 3 use for `bytes`."""
    if not isinstance(text, str) or codecs.lookup(str(encoding)).name not in ("iso8859-1", "utf-8"):
        raise _Refused("_codecs.encode", "only text -> latin-1/utf-8 bytes is accepted")
    return text.encode(encoding)


def _copyreg_reconstructor(cls, base, state):
    """`copy_reg._reconstructor` restricted to the plain builtin types."""
    if cls not in _PLAIN_TYPES + (collections.OrderedDict,) or base not in _PLAIN_TYPES + (object,):
        raise _Refused("copyreg._reconstructor", f"class {cls!r:.60} is not a plain type")
    return copyreg._reconstructor(cls, base, state)


def _fresh(fn: Callable) -> Callable:
    """A private copy of `fn`, so attributes a pickle sets on it die with that load."""
    return types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__)


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")


def _plain_globals() -> dict[tuple[str, str], Any]:
    """The allowlist of `load_pickle` (canonical Python-3 names), fresh for every load."""
    return {
        **{("builtins", t.__name__): t for t in _PLAIN_TYPES},
        ("builtins", "object"): object,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("copyreg", "_reconstructor"): _fresh(_copyreg_reconstructor),
        ("_codecs", "encode"): _fresh(_codecs_encode),
        ("numpy", "ndarray"): _NdarrayClass(),
        ("numpy", "dtype"): _fresh(_np_dtype),
        **{(m, "_reconstruct"): _fresh(_np_reconstruct) for m in _NUMPY_CORE},
        **{(m, "scalar"): _fresh(_np_scalar) for m in _NUMPY_CORE},
    }


def _canonical(module: str, name: str) -> tuple[str, str]:
    """Python-2 names (`__builtin__.unicode`, `copy_reg`) -> their Python-3 names."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in `allowed` (canonical names)."""

    def __init__(self, file, allowed: Mapping[tuple[str, str], Any], encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        key = _canonical(module, name)
        if key not in self.allowed:
            written, refused = f"{module}.{name}", ".".join(key)
            raise _Refused(refused, "" if written == refused else f"(written as {written!r})")
        return self.allowed[key]


def _replace(obj: Any, kind: type, resolve: Callable[[Any], Any], seen: set | None = None) -> Any:
    """Walk lists/dicts/tuples, replacing instances of `kind` by `resolve(obj)`."""
    if isinstance(obj, kind):
        return resolve(obj)
    seen = set() if seen is None else seen
    if id(obj) in seen or not isinstance(obj, (list, dict, tuple)):
        return obj
    seen.add(id(obj))
    if isinstance(obj, list):
        obj[:] = [_replace(v, kind, resolve, seen) for v in obj]
    elif isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _replace(obj[k], kind, resolve, seen)
    else:
        items = tuple(_replace(v, kind, resolve, seen) for v in obj)
        if any(a is not b for a, b in zip(items, obj, strict=True)):
            return items
    return obj


def _array_value(proxy: _ArrayProxy) -> np.ndarray:
    if not hasattr(proxy, "value"):
        raise _Refused("numpy.ndarray", "an array was never given its data")
    return proxy.value


def _guarded(path: str, fn: Callable[[], Any]) -> Any:
    """Run `fn`; refusals become `UnsafeFileError`, any other failure a `CorruptFileError`."""
    try:
        return fn()
    except _Refused as e:
        raise UnsafeFileError(path, e.refused, e.detail) from None
    except (UnsafeFileError, CorruptFileError, FileNotFoundError):
        raise
    except Exception as e:  # malformed input of any kind: say which file
        raise CorruptFileError(
            f"{path}: not a readable file of this kind ({type(e).__name__}: {e})"
        ) from None


def _load_plain(path: str, f, encoding: str = "latin1") -> Any:
    unpickler = _RestrictedUnpickler(f, _plain_globals(), encoding)
    return _guarded(path, lambda: _replace(unpickler.load(), _ArrayProxy, _array_value))


def load_pickle(path: os.PathLike | str) -> Any:
    """Load a plain-data pickle (any protocol, Python 2 or 3) without running code.

    Raises `UnsafeFileError` (naming the file and the global) for anything beyond plain data and
    plain numpy arrays, `CorruptFileError` for a file that is not a pickle, `FileNotFoundError` if
    absent.
    """
    with open(path, "rb") as f:
        return _load_plain(os.fspath(path), f)


# ---------------------------------------------------------------- PyTorch checkpoints
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "<u2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "ComplexFloatStorage": "<c8",
    "ComplexDoubleStorage": "<c16",
}  # fmt: skip
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PROTOCOL = 1001


class _StorageType(_Placeholder):
    """Stands in for a `torch.<X>Storage` class: only usable inside a storage persistent id."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])

    def __call__(self, *args, **kwargs):
        raise _Refused(f"torch.{self.name}", "calling a storage class is refused")


class _StorageRef(_Placeholder):
    __slots__ = ("kind", "key", "numel", "view")

    def __init__(self, kind: _StorageType, key: str, numel: int, view: Any):
        self.kind, self.key, self.numel, self.view = kind, key, numel, view


class _TensorRef(_Placeholder):
    """A tensor whose storage bytes are read after the pickle (bounds checked then)."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any):
        if not isinstance(storage, _StorageRef):
            raise _Refused("torch._utils._rebuild_tensor_v2", "its storage is not a torch storage")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, meta=None):
    return _TensorRef(storage, offset, size, stride)


def _rebuild_tensor(storage, offset, size, stride):  # files written by torch < 0.4
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    if not isinstance(data, _TensorRef):
        raise _Refused("torch._utils._rebuild_parameter", "its data is not a tensor")
    return data


def _torch_globals() -> dict[tuple[str, str], Any]:
    """The allowlist of the torch-free checkpoint reader, fresh for every load."""
    return {
        **_plain_globals(),
        ("torch._utils", "_rebuild_tensor_v2"): _fresh(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_tensor"): _fresh(_rebuild_tensor),
        ("torch._utils", "_rebuild_parameter"): _fresh(_rebuild_parameter),
        **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
        # legacy files saved from GPU tensors name the CUDA storage classes (same bytes)
        **{("torch.cuda", name): _StorageType(name) for name in _STORAGE_DTYPES},
    }


class _TorchUnpickler(_RestrictedUnpickler):
    """Reads a checkpoint's object pickle; storages become `_StorageRef`s collected by key."""

    def __init__(self, file):
        super().__init__(file, _torch_globals(), encoding="utf-8")  # torch.load's default
        self.storages: dict[str, _StorageRef] = {}

    def persistent_load(self, pid: Any) -> _StorageRef:
        ok = isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
        if not ok or not isinstance(pid[1], _StorageType):
            raise _Refused("persistent id", f"only torch storages are accepted, got {pid!r:.80}")
        _, kind, key, _location, numel, *view = pid
        view = view[0] if view else None
        if not (isinstance(key, str) and isinstance(numel, int) and numel >= 0):
            raise _Refused("persistent id", f"malformed storage id {pid!r:.80}")
        if view is not None:  # legacy storage view: (view_key, offset, size), in elements
            if not (isinstance(view, tuple) and len(view) == 3):
                raise _Refused("persistent id", f"malformed storage view {view!r:.80}")
        ref = self.storages.setdefault(key, _StorageRef(kind, key, numel, None))
        if ref.kind is not kind or ref.numel != numel:
            raise ValueError(f"storage {key!r} is declared twice with different types/sizes")
        return _StorageRef(kind, key, numel, view) if view is not None else ref


def _tensor_to_array(ref: _TensorRef, storages: Mapping[str, np.ndarray]) -> np.ndarray:
    """Copy a (possibly strided) tensor out of its storage after checking every bound."""
    data = storages[ref.storage.key]
    if ref.storage.view is not None:
        _, v_off, v_size = ref.storage.view
        if not (isinstance(v_off, int) and isinstance(v_size, int) and 0 <= v_off <= len(data)):
            raise ValueError(f"bad storage view {ref.storage.view!r}")
        data = data[v_off : v_off + v_size]
    offset, size, stride = ref.offset, ref.size, ref.stride
    ints = lambda t: isinstance(t, tuple) and all(type(i) is int and i >= 0 for i in t)
    if not (type(offset) is int and offset >= 0 and ints(size) and ints(stride)):
        raise ValueError(f"bad tensor offset/size/stride {offset!r}/{size!r}/{stride!r}")
    if len(size) != len(stride):
        raise ValueError(f"tensor size {size} and stride {stride} differ in length")
    if math.prod(size) > 0:  # exact Python ints: no overflow in the bounds check
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= len(data):
            raise ValueError(f"tensor reads element {last} of a storage of {len(data)}")
        strides = tuple(s * data.itemsize for s in stride)
        view = np.lib.stride_tricks.as_strided(data[offset:], size, strides, writeable=False)
        out = np.array(view).astype(data.dtype.newbyteorder("="))
    else:
        out = np.zeros(size, dtype=data.dtype.newbyteorder("="))
    if ref.storage.kind.name == "BFloat16Storage":  # upper half of a float32
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def _storage_array(kind: _StorageType, raw: bytes, numel: int, big: bool, where: str):
    dtype = kind.dtype.newbyteorder(">") if big else kind.dtype
    if len(raw) < numel * dtype.itemsize:
        raise CorruptFileError(
            f"{where}: storage has {len(raw)} bytes, {numel * dtype.itemsize} needed"
        )
    return np.frombuffer(raw, dtype=dtype, count=numel)


def _read_torch_zip(path: str, zf: zipfile.ZipFile) -> Any:
    names = set(zf.namelist())
    pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise CorruptFileError(
            f"{path}: a PyTorch zip checkpoint has one '<name>/data.pkl'; found {pkls}"
        )
    prefix = pkls[0][: -len("data.pkl")]
    big = prefix + "byteorder" in names and zf.read(prefix + "byteorder").strip() == b"big"
    unpickler = _TorchUnpickler(io.BytesIO(zf.read(pkls[0])))
    obj = _guarded(path, unpickler.load)
    storages = {}
    for key, st in unpickler.storages.items():
        record = f"{prefix}data/{key}"
        if record not in names:
            raise CorruptFileError(f"{path}: storage record {record!r} is missing")
        storages[key] = _storage_array(st.kind, zf.read(record), st.numel, big, f"{path}:{record}")
    return _guarded(
        path, lambda: _replace(obj, _TensorRef, lambda r: _tensor_to_array(r, storages))
    )


def _read_torch_legacy(path: str, f) -> Any:
    header = [_load_plain(path, f, "utf-8") for _ in range(3)]  # magic, protocol, system info
    if header[0] != _TORCH_MAGIC or header[1] != _TORCH_LEGACY_PROTOCOL:
        raise CorruptFileError(
            f"{path}: not a PyTorch checkpoint (bad magic number or protocol version)"
        )
    big = isinstance(header[2], dict) and header[2].get("little_endian") is False
    unpickler = _TorchUnpickler(f)
    obj = _guarded(path, unpickler.load)
    keys = _load_plain(path, f, "utf-8")
    if not isinstance(keys, list) or set(keys) != set(unpickler.storages):
        raise CorruptFileError(f"{path}: the stored storages {keys!r:.80} do not match the tensors")
    storages = {}
    for key in keys:  # each: int64 element count, then the raw bytes
        st = unpickler.storages[key]
        numel = int.from_bytes(f.read(8), "big" if big else "little")
        if numel != st.numel:
            raise CorruptFileError(
                f"{path}: storage {key!r} has {numel} elements, {st.numel} declared"
            )
        raw = f.read(numel * st.kind.dtype.itemsize)
        storages[key] = _storage_array(st.kind, raw, numel, big, f"{path}: storage {key!r}")
    return _guarded(
        path, lambda: _replace(obj, _TensorRef, lambda r: _tensor_to_array(r, storages))
    )


def _torch_load(path: str, torch) -> Any:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's own refusal (its advice to disable it omitted)
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        refused = found.group(1) if found else "a global outside torch's weights-only allowlist"
        raise UnsafeFileError(path, refused, "(refused by torch.load(weights_only=True))") from None
    except (RuntimeError, ValueError, EOFError, OSError) as e:
        raise CorruptFileError(f"{path}: not a readable PyTorch checkpoint ({e})") from None

    def to_numpy(t):
        t = t.detach().cpu()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()

    return _replace(obj, torch.Tensor, to_numpy)


_NESTED_KEYS = ("state_dict", "model", "model_state_dict")


def _as_state_dict(obj: Any, path: str) -> dict[str, np.ndarray]:
    """Unwrap {'state_dict': ...}/{'model': ...}, check types, strip DataParallel 'module.'."""
    while isinstance(obj, Mapping) and not all(isinstance(v, np.ndarray) for v in obj.values()):
        inner = [k for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)]
        if not inner:
            break
        obj = obj[inner[0]]
    if not isinstance(obj, Mapping):
        raise CorruptFileError(f"{path}: expected a state dict (name -> tensor), got {type(obj)}")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, (np.ndarray, np.generic)):
            raise CorruptFileError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a "
                f"flat state dict, optionally nested under one of {_NESTED_KEYS}"
            )
        name = key[len("module.") :] if key.startswith("module.") else key
        if name in out:
            raise CorruptFileError(f"{path}: {key!r} and another key both map to {name!r}")
        out[name] = np.asarray(value)
    return out


def load_state_dict(
    path: os.PathLike | str, use_torch: bool | None = None
) -> dict[str, np.ndarray]:
    """Read a weight file into a flat `{name: np.ndarray}` without running code from it.

    Accepts `.npz` (no pickled objects) and PyTorch checkpoints (`.pth`, `.pt`, `.pkl`, `.bin`;
    zip or legacy format, recognised from the content, not the name). A checkpoint dict is
    unwrapped from 'state_dict' / 'model' / 'model_state_dict' and 'module.' prefixes are removed;
    bfloat16 becomes float32. `use_torch`: None uses `torch.load(weights_only=True)` when torch
    is installed, False always uses the built-in restricted reader, True requires torch.
    Raises `UnsafeFileError` for a file that needs any other global (never loads it otherwise).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file {path!r} does not exist")
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if all(n.endswith(".npy") for n in names):
            try:
                with np.load(path, allow_pickle=False) as npz:
                    return _as_state_dict({k: npz[k] for k in npz.files}, path)
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise UnsafeFileError(path, "a numpy object array (pickle)") from None
                raise CorruptFileError(f"{path}: unreadable .npz ({e})") from None
    else:
        with open(path, "rb") as f:
            if f.read(1) != b"\x80":
                raise CorruptFileError(
                    f"{path}: not a weight file this project reads (expected .npz, or a PyTorch "
                    "checkpoint in zip or legacy pickle format)"
                )
    torch = None
    if use_torch is not False:
        try:
            import torch  # optional extra, imported only here
        except ImportError:
            if use_torch:
                raise
    if torch is not None:
        return _as_state_dict(_torch_load(path, torch), path)
    if is_zip:
        with zipfile.ZipFile(path) as zf:
            return _as_state_dict(_read_torch_zip(path, zf), path)
    with open(path, "rb") as f:
        return _as_state_dict(_read_torch_legacy(path, f), path)
