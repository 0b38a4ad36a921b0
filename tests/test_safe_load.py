"""Data and weight files from elsewhere never run code: the restricted loaders of safe_load.

No torch here: PyTorch checkpoints are either real files written by torch 2.13 (committed under
tests/testdata/torch/, see make_fixtures.py there) or built opcode by opcode below.
"""

import collections
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest

from mirrorgan_jax.safe_load import UnsafeFileError, load_pickle, load_state_dict
from tests.data.fake_layouts import (
    Build,
    Evil,
    Global,
    PersId,
    Reduce,
    Unicode,
    py2_dumps,
    py2_numpy_array,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "testdata", "torch")
REFUSED = {"os.system": "posix.system", "exec": "builtins.exec", "subprocess": "subprocess.Popen"}


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


# ---------------------------------------------------------------- plain pickles
@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_plain_data_round_trips(tmp_path, protocol):
    obj = {
        "keys": ["002.Laysan_Albatross/Laysan_Albatross_0002_1027", "x"],
        "ids": [[1, 2, 3], []],
        "vocab": {0: "<end>", 1: "bird"},
        "misc": (None, True, 2.5, -(2**70), b"\x00\xff", bytearray(b"ab"), 1 + 2j),
        "sets": [{1, 2}, frozenset({"a"})],
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
    }
    assert load_pickle(write(tmp_path / "p", pickle.dumps(obj, protocol=protocol))) == obj


def test_python2_str_needs_latin1(tmp_path):
    path = write(tmp_path / "py2.pickle", py2_dumps(["caf\xe9", {"w": 1}, Unicode("ok")]))
    with pytest.raises(UnicodeDecodeError):  # what a plain pickle.load does with py2 str
        pickle.loads(open(path, "rb").read())
    assert load_pickle(path) == ["café", {"w": 1}, "ok"]


def test_numpy_arrays_and_scalars(tmp_path):
    arrays = [
        np.arange(6, dtype=np.int64).reshape(2, 3),
        np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        np.array([True, False]),
        np.array(["ab", "c"]),
        np.zeros((0, 3), dtype=">f8"),
    ]
    obj = [arrays, np.int64(7), np.float32(0.5), {"nested": (arrays[0],)}]
    got = load_pickle(write(tmp_path / "np", pickle.dumps(obj, protocol=2)))
    for a, b in zip(got[0], arrays, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert got[1] == 7 and got[1].dtype == np.int64 and got[2] == np.float32(0.5)
    np.testing.assert_array_equal(got[3]["nested"][0], arrays[0])
    py2 = load_pickle(write(tmp_path / "py2np", py2_dumps(py2_numpy_array([200, 1, -3]))))
    assert py2.dtype == np.int64 and py2.tolist() == [200, 1, -3]


@pytest.mark.parametrize(
    "obj, refused",
    [
        (np.array([None, 1], dtype=object), "numpy.dtype"),
        (np.zeros(2, dtype=[("a", "i4")]), "numpy.dtype"),
        (np.ma.masked_array([1, 2]), "numpy.ma.core._mareconstruct"),
    ],
)
def test_numpy_beyond_plain_dtypes_is_refused(tmp_path, obj, refused):
    path = write(tmp_path / "np", pickle.dumps(obj, protocol=2))
    with pytest.raises(UnsafeFileError, match=refused):
        load_pickle(path)


@pytest.mark.parametrize("how", sorted(REFUSED))
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_code_execution_is_refused(tmp_path, how, protocol):
    marker = str(tmp_path / "PWNED")
    payload = {"keys": ["a", Evil(marker, how)]}
    path = write(tmp_path / "evil.pickle", pickle.dumps(payload, protocol=protocol))
    with pytest.raises(UnsafeFileError) as err:
        load_pickle(path)
    assert err.value.path == path and err.value.refused == REFUSED[how]
    assert path in str(err.value) and REFUSED[how] in str(err.value)
    assert isinstance(err.value, ValueError)
    assert not os.path.exists(marker)


@pytest.mark.parametrize(
    "payload, refused",
    [
        (Reduce(Global("__builtin__", "eval"), ("1",)), "builtins.eval"),
        (Reduce(Global("__builtin__", "getattr"), ([], "append")), "builtins.getattr"),
        (
            Reduce(
                Global("copy_reg", "_reconstructor"),
                (Global("os", "stat_result"), Global("__builtin__", "object"), None),
            ),
            "os.stat_result",
        ),  # noqa: E501
        (
            Reduce(
                Global("copy_reg", "_reconstructor"),
                (Global("__builtin__", "object"), Global("__builtin__", "object"), None),
            ),
            "copyreg._reconstructor",
        ),  # noqa: E501
        (Reduce(Global("numpy", "ndarray"), ((1000,),)), "numpy.ndarray"),
        (Reduce(Global("_codecs", "encode"), (Unicode("x"), Unicode("rot13"))), "_codecs.encode"),
        (
            Reduce(
                Global("numpy.core.multiarray", "_reconstruct"),
                (Global("__builtin__", "list"), (0,), "b"),
            ),
            "_reconstruct",
        ),  # noqa: E501
        (
            Build(
                Reduce(Global("numpy", "dtype"), ("i8", False, True)),
                (3, "|", None, ("a",), {}, -1, -1, 0),
            ),
            "numpy.dtype",
        ),  # noqa: E501
    ],
)
def test_other_escapes_are_refused(tmp_path, payload, refused):
    path = write(tmp_path / "evil.pickle", py2_dumps([payload]))
    with pytest.raises(UnsafeFileError, match=refused):
        load_pickle(path)


def test_state_set_on_allowlisted_functions_dies_with_the_load(tmp_path):
    # BUILD with slot state calls setattr: here it changes the default encoding of this load's
    # copy of the `_codecs.encode` stand-in, which a later file must not see.
    attack = Build(Global("_codecs", "encode"), (None, {"__defaults__": ("rot13",)}))
    load_pickle(write(tmp_path / "a", py2_dumps([attack])))
    one_arg = Reduce(Global("_codecs", "encode"), (Unicode("x"),))  # uses the default encoding
    assert load_pickle(write(tmp_path / "b", py2_dumps([one_arg]))) == [b"x"]
    with pytest.raises(UnsafeFileError, match="_codecs.encode"):
        load_pickle(write(tmp_path / "c", py2_dumps([attack, one_arg])))


def test_malformed_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="not a readable") as err:
        load_pickle(write(tmp_path / "junk", b"\x80\x02]q\x00(K\x01"))
    assert str(tmp_path / "junk") in str(err.value)
    with pytest.raises(ValueError, match="persistent"):
        load_pickle(write(tmp_path / "pid", py2_dumps([PersId("x")])))
    with pytest.raises(FileNotFoundError):
        load_pickle(tmp_path / "absent")


# ---------------------------------------------------------------- PyTorch checkpoints
EXPECTED = {
    "0.weight": np.arange(4, dtype=np.float32).reshape(2, 2, 1, 1) / 4,
    "0.bias": np.array([0.5, -0.5], np.float32),
    "1.weight": np.array([1, 2], np.float32),
    "1.bias": np.array([0.1, 0.2], np.float32),
    "1.running_mean": np.array([0.25, -0.25], np.float32),
    "1.running_var": np.array([1.5, 2.5], np.float32),
    "1.num_batches_tracked": np.array(7, np.int64),
    "extra.view_t": np.arange(6, dtype=np.float64).reshape(2, 3).T,
    "extra.view_row": np.array([3, 4, 5], np.float64),
    "extra.half": np.array([1.5, -2.0], np.float16),
    "extra.bf16": np.array([1.0, -3.0], np.float32),
    "extra.mask": np.array([True, False, True]),
    "extra.i32": np.array([[1, -2]], np.int32),
    "extra.u8": np.array([255, 0], np.uint8),
}


def assert_state_dict(got, expected):
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


@pytest.mark.parametrize("name", ["state_dict_zip.pth.bin", "checkpoint_legacy.pth.bin"])
def test_real_torch_files_without_torch(name):
    # the legacy one is {'state_dict': {'module.' + k: v}, 'epoch': 3} (DataParallel style)
    assert_state_dict(load_state_dict(os.path.join(FIXTURES, name), use_torch=False), EXPECTED)
    assert_state_dict(load_state_dict(os.path.join(FIXTURES, name)), EXPECTED)
    assert "torch" not in sys.modules


_STORAGE = {"f4": "FloatStorage", "f8": "DoubleStorage", "i8": "LongStorage", "f2": "HalfStorage"}


def tensor(arr: np.ndarray, key: str, legacy: bool, offset=0, strides=None, numel=None):
    """`_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` by hand."""
    storage = Global("torch", _STORAGE[arr.dtype.str[1:]])
    pid = (Unicode("storage"), storage, Unicode(key), Unicode("cpu"), numel or arr.size)
    strides = strides or tuple(s // arr.itemsize for s in arr.strides)
    hooks = Reduce(Global("collections", "OrderedDict"), ())
    args = (PersId(pid + ((None,) if legacy else ())), offset, arr.shape, strides, False, hooks)
    return Reduce(Global("torch._utils", "_rebuild_tensor_v2"), args)


def torch_zip(path, obj, storages: dict[str, bytes], prefix="archive") -> str:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/data.pkl", py2_dumps(obj))
        z.writestr(f"{prefix}/byteorder", "little")
        for key, raw in storages.items():
            z.writestr(f"{prefix}/data/{key}", raw)
        z.writestr(f"{prefix}/version", "3\n")
    return str(path)


def torch_legacy(path, obj, storages: dict[str, tuple[int, bytes]], big=False, header=None):
    order = "big" if big else "little"
    with open(path, "wb") as f:
        f.write(header or pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": not big}, protocol=2))
        f.write(py2_dumps(obj))
        f.write(pickle.dumps(list(storages), protocol=2))
        for numel, raw in storages.values():
            f.write(numel.to_bytes(8, order) + raw)
    return str(path)


def test_hand_built_zip_checkpoint(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    sd = {
        Unicode("module.w"): tensor(w, "0", False),
        Unicode("b"): tensor(np.arange(2.0), "1", False),
    }
    path = torch_zip(
        tmp_path / "m.pth",
        {Unicode("model"): sd},
        {"0": w.tobytes(), "1": np.arange(2.0).tobytes()},
    )
    assert_state_dict(load_state_dict(path, use_torch=False), {"w": w, "b": np.arange(2.0)})


def test_hand_built_legacy_checkpoint_big_endian_and_views(tmp_path):
    base = np.arange(12, dtype=np.int64)
    window = tensor(base[:6].reshape(2, 3), "k", True, offset=2, strides=(1, 2), numel=12)
    # a storage view (torch < 0.4): elements 4..6 of storage 'k', as storage 'v'
    pid = (Unicode("storage"), Global("torch", "LongStorage"), Unicode("k"), Unicode("cpu"), 12)
    args = (PersId(pid + ((Unicode("v"), 4, 3),)), 0, (3,), (1,), False, None)
    view = Reduce(Global("torch._utils", "_rebuild_tensor_v2"), args)
    obj = {Unicode("window"): window, Unicode("view"): view}
    path = torch_legacy(tmp_path / "l.pt", obj, {"k": (12, base.astype(">i8").tobytes())}, big=True)
    got = load_state_dict(path, use_torch=False)
    np.testing.assert_array_equal(got["window"], [[2, 4, 6], [3, 5, 7]])
    np.testing.assert_array_equal(got["view"], [4, 5, 6])
    assert got["window"].dtype == np.int64 and got["view"].dtype == np.int64


def test_legacy_checkpoint_saved_from_gpu(tmp_path):
    # torch <= 1.5 named the CUDA storage class of GPU tensors (AttnGAN-era checkpoints)
    w = np.arange(3, dtype=np.float32)
    pid = (
        Unicode("storage"),
        Global("torch.cuda", "FloatStorage"),
        Unicode("7"),
        Unicode("cuda:0"),
        3,
        None,
    )
    args = (PersId(pid), 0, (3,), (1,), False, Reduce(Global("collections", "OrderedDict"), ()))
    obj = {Unicode("w"): Reduce(Global("torch._utils", "_rebuild_tensor_v2"), args)}
    path = torch_legacy(tmp_path / "gpu.pth", obj, {"7": (3, w.tobytes())})
    np.testing.assert_array_equal(load_state_dict(path, use_torch=False)["w"], w)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "legacy_header"])
def test_crafted_checkpoints_are_refused(tmp_path, fmt):
    marker = str(tmp_path / "PWNED")
    evil = Reduce(Global("posix", "system"), (Unicode(f"touch {marker}"),))
    obj = {Unicode("w"): tensor(np.zeros(1, np.float32), "0", fmt != "zip"), Unicode("x"): evil}
    if fmt == "zip":
        path = torch_zip(tmp_path / "evil.pth", obj, {"0": b"\x00" * 4})
    elif fmt == "legacy":
        path = torch_legacy(tmp_path / "evil.pth", obj, {"0": (1, b"\x00" * 4)})
    else:  # the very first pickle (the magic number) is the payload
        path = torch_legacy(tmp_path / "evil.pth", {}, {}, header=py2_dumps(evil))
    with pytest.raises(UnsafeFileError, match="posix.system") as err:
        load_state_dict(path, use_torch=False)
    assert path in str(err.value)
    assert not os.path.exists(marker)


@pytest.mark.parametrize(
    "storage, refused",
    [
        (Global("torch", "QUInt8Storage"), "torch.QUInt8Storage"),
        (Unicode("x"), "persistent id"),
    ],
)
def test_unknown_storages_are_refused(tmp_path, storage, refused):
    pid = (Unicode("storage"), storage, Unicode("0"), Unicode("cpu"), 1)
    obj = {
        Unicode("w"): Reduce(
            Global("torch._utils", "_rebuild_tensor_v2"), (PersId(pid), 0, (1,), (1,), False, None)
        )
    }
    with pytest.raises(UnsafeFileError, match=refused):
        load_state_dict(torch_zip(tmp_path / "s.pth", obj, {"0": b"\x00" * 4}), use_torch=False)


def test_out_of_bounds_tensors_and_tampering(tmp_path):
    t = tensor(np.zeros(4, np.float32), "0", False)
    zeros = {"0": b"\x00" * 16}
    assert load_state_dict(
        torch_zip(tmp_path / "ok.pth", {Unicode("w"): t}, zeros), use_torch=False
    )
    with pytest.raises(ValueError, match="storage has 4 bytes, 16 needed"):
        load_state_dict(
            torch_zip(tmp_path / "s.pth", {Unicode("w"): t}, {"0": b"\x00" * 4}), use_torch=False
        )
    past_end = Reduce(t.func, t.args[:1] + (3, (4,), (1,), False, None))  # reads elements 3..6
    with pytest.raises(ValueError, match="reads element 6 of a storage of 4"):
        load_state_dict(
            torch_zip(tmp_path / "b.pth", {Unicode("w"): past_end}, zeros), use_torch=False
        )
    tampered = Build(t, (None, {"stride": (-1,)}))  # BUILD on the checked tensor placeholder
    with pytest.raises(UnsafeFileError, match="BUILD"):
        load_state_dict(
            torch_zip(tmp_path / "t.pth", {Unicode("w"): tampered}, zeros), use_torch=False
        )


def test_npz_and_other_files(tmp_path):
    np.savez(tmp_path / "w.npz", **{"module.a": np.ones(2, np.float32), "b": np.arange(3)})
    got = load_state_dict(tmp_path / "w.npz")
    assert sorted(got) == ["a", "b"] and got["a"].dtype == np.float32
    np.savez(tmp_path / "o.npz", a=np.array([None], dtype=object))
    with pytest.raises(UnsafeFileError, match="object array"):
        load_state_dict(tmp_path / "o.npz")
    with pytest.raises(ValueError, match="not a weight file"):
        load_state_dict(write(tmp_path / "x.pth", b"hello"))
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / "absent.pth")
    with pytest.raises(ImportError):  # torch is an optional extra, not installed for the tests
        load_state_dict(os.path.join(FIXTURES, "state_dict_zip.pth.bin"), use_torch=True)
    sd = {Unicode("w"): tensor(np.zeros(1, np.float32), "0", False), Unicode("epoch"): 3}
    with pytest.raises(ValueError, match="'epoch' is a int, not a tensor"):
        load_state_dict(torch_zip(tmp_path / "e.pth", sd, {"0": b"\x00" * 4}), use_torch=False)
