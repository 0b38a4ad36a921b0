"""Tiny fake CUB / COCO folders in the exact official layouts, and Python-2 style pickles.

`py2_dumps` writes protocol-2 pickles opcode by opcode the way Python 2 did: `str` values become
SHORT_BINSTRING/BINSTRING (raw latin-1 bytes, so `encoding='latin1'` matters on Python 3),
`Unicode(...)` becomes BINUNICODE, and `Global` / `Reduce` / `Build` / `PersId` write those
opcodes literally, which is how the tests build PyTorch checkpoints without torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import struct
from typing import Any

import numpy as np
from PIL import Image


# ---------------------------------------------------------------- Python-2 style pickles
@dataclasses.dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclasses.dataclass(frozen=True)
class Reduce:
    func: Any
    args: tuple


@dataclasses.dataclass(frozen=True)
class Build:
    obj: Any
    state: Any


@dataclasses.dataclass(frozen=True)
class PersId:
    pid: Any


@dataclasses.dataclass(frozen=True)
class Unicode:
    text: str


def _emit(obj: Any, out: bytearray) -> None:
    if obj is None:
        out += pickle.NONE
    elif obj is True or obj is False:
        out += pickle.NEWTRUE if obj else pickle.NEWFALSE
    elif isinstance(obj, int):
        if 0 <= obj < 256:
            out += pickle.BININT1 + bytes([obj])
        elif -(2**31) <= obj < 2**31:
            out += pickle.BININT + struct.pack("<i", obj)
        else:
            raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
            out += pickle.LONG1 + bytes([len(raw)]) + raw
    elif isinstance(obj, float):
        out += pickle.BINFLOAT + struct.pack(">d", obj)
    elif isinstance(obj, (str, bytes)):  # a Python-2 str: raw bytes
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            out += pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw
        else:
            out += pickle.BINSTRING + struct.pack("<i", len(raw)) + raw
    elif isinstance(obj, Unicode):
        raw = obj.text.encode("utf-8")
        out += pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw
    elif isinstance(obj, list):
        out += pickle.EMPTY_LIST + pickle.MARK
        for v in obj:
            _emit(v, out)
        out += pickle.APPENDS
    elif isinstance(obj, tuple):
        out += pickle.MARK
        for v in obj:
            _emit(v, out)
        out += pickle.TUPLE
    elif isinstance(obj, dict):
        out += pickle.EMPTY_DICT + pickle.MARK
        for k, v in obj.items():
            _emit(k, out)
            _emit(v, out)
        out += pickle.SETITEMS
    elif isinstance(obj, Global):
        out += pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii")
    elif isinstance(obj, Reduce):
        _emit(obj.func, out)
        _emit(tuple(obj.args), out)
        out += pickle.REDUCE
    elif isinstance(obj, Build):
        _emit(obj.obj, out)
        _emit(obj.state, out)
        out += pickle.BUILD
    elif isinstance(obj, PersId):
        _emit(obj.pid, out)
        out += pickle.BINPERSID
    else:
        raise TypeError(f"py2_dumps cannot write {type(obj)}")


def py2_dumps(obj: Any) -> bytes:
    """A protocol-2 pickle written the way Python 2 wrote it (see module docstring)."""
    out = bytearray(pickle.PROTO + b"\x02")
    _emit(obj, out)
    return bytes(out + pickle.STOP)


def py2_numpy_array(values: list[int]) -> Reduce | Build:
    """A numpy int64 array pickled as Python 2 + numpy 1.x did (raw data as a py2 str)."""
    core = "numpy.core.multiarray"
    arr = Reduce(Global(core, "_reconstruct"), (Global("numpy", "ndarray"), (0,), "b"))
    dtype = Build(
        Reduce(Global("numpy", "dtype"), ("i8", False, True)),
        (3, "<", None, None, None, -1, -1, 0),
    )
    raw = np.asarray(values, dtype="<i8").tobytes().decode("latin1")
    return Build(arr, (1, (len(values),), dtype, False, raw))


def dump(path: str, obj: Any, style: str = "py2") -> None:
    """Write `obj` as a pickle: 'py2' (hand-made opcodes) or 'py3' (pickle.dumps protocol 2)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = py2_dumps(obj) if style == "py2" else pickle.dumps(obj, protocol=2)
    with open(path, "wb") as f:
        f.write(data)


class Evil:
    """Pickles to a call that creates `marker` when (and only when) unpickled unsafely."""

    def __init__(self, marker: str, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "os.system":
            return os.system, (f"touch {self.marker}",)
        if self.how == "exec":
            return exec, (f"open({self.marker!r}, 'w').close()",)
        import subprocess

        return subprocess.Popen, (["touch", self.marker],)


# ---------------------------------------------------------------- images and captions
def write_image(path: str, width: int, height: int, seed: int, fmt: str = "JPEG") -> None:
    """A smooth colour pattern (so crops are recognisable) saved as JPEG (or `fmt`)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 255, size=3)
    img = np.stack([(base[c] + (c + 1) * 3 * xx + (3 - c) * 2 * yy) % 256 for c in range(3)], -1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(img.astype(np.uint8))
    image.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def caption_lines(key: str, count: int) -> list[str]:
    return [
        f"a small bird number {i} with {key.split('/')[-1].lower()} feathers" for i in range(count)
    ]


def caption_file_text(captions: list[str]) -> str:
    """Official-style caption file: blank and wordless lines mixed in (all skipped)."""
    lines = [captions[0], "", "  ...  "] + captions[1:]
    return "\n".join(lines) + "\n"


def tokens(caption: str) -> list[str]:
    return caption.lower().replace(".", " ").split()


def captions_pickle(train: list[list[str]], test: list[list[str]]) -> list:
    """[train_caps, test_caps, ixtoword, wordtoix] as AttnGAN's build_dictionary makes it."""
    wordtoix, ixtoword = {"<end>": 0}, {0: "<end>"}
    for caps in train + test:
        for cap in caps:
            for w in tokens(cap):
                if w not in wordtoix:
                    ixtoword[len(wordtoix)] = w
                    wordtoix[w] = len(wordtoix)
    ids = lambda split: [[wordtoix[w] for w in tokens(c)] for caps in split for c in caps]
    return [ids(train), ids(test), ixtoword, wordtoix]


@dataclasses.dataclass
class FakeSet:
    """What a fake folder holds, for the tests to compare against."""

    root: str
    keys: dict[str, list[str]]
    captions: dict[str, list[str]]
    class_ids: dict[str, int]
    bboxes: dict[str, tuple[float, float, float, float]] = dataclasses.field(default_factory=dict)
    images: dict[str, str] = dataclasses.field(default_factory=dict)


CUB_KEYS = {
    "train": [
        "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111",
        "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55",
        "002.Laysan_Albatross/Laysan_Albatross_0002_1027",
    ],
    "test": [
        "003.Sooty_Albatross/Sooty_Albatross_0001_1071",
        "003.Sooty_Albatross/Sooty_Albatross_0003_796360",
    ],
}
# (width, height) and bbox (x, y, w, h): centred, clipped left/top, clipped right/bottom, ...
CUB_GEOMETRY = [
    ((40, 32), (12.0, 8.0, 14.0, 12.0)),
    ((36, 30), (0.0, 1.0, 20.0, 10.0)),
    ((30, 40), (14.0, 22.0, 15.0, 17.9)),
    ((33, 27), (5.0, 5.0, 8.0, 16.0)),
    ((24, 24), (2.0, 3.0, 20.0, 19.0)),
]


def make_cub(
    root: str,
    captions_per_image: int = 10,
    extra_captions: int = 1,
    class_info: str | None = "list",  # "list" | "numpy" | None
    pickle_name: str | None = "bird_captions.pickle",
    style: str = "py2",
    text: bool = True,
) -> FakeSet:
    """Write a tiny `birds/` folder (5 images) in the AttnGAN/MirrorGAN layout."""
    keys = {s: list(v) for s, v in CUB_KEYS.items()}
    all_keys = keys["train"] + keys["test"]
    cub = os.path.join(root, "CUB_200_2011")
    captions, bboxes, images = {}, {}, {}
    with (
        open(os.path.join(_mkdir(cub), "images.txt"), "w") as fi,
        open(os.path.join(cub, "bounding_boxes.txt"), "w") as fb,
    ):
        for i, (key, ((w, h), box)) in enumerate(zip(all_keys, CUB_GEOMETRY, strict=True), 1):
            images[key] = os.path.join(cub, "images", key + ".jpg")
            write_image(images[key], w, h, seed=i)
            fi.write(f"{i} {key}.jpg\n")
            fb.write(f"{i} " + " ".join(f"{v:.1f}" for v in box) + "\n")
            bboxes[key] = box
            caps = caption_lines(key, captions_per_image + extra_captions)
            captions[key] = caps[:captions_per_image]
            if text:
                path = _mkdir(os.path.join(root, "text", key + ".txt"), parent=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(caption_file_text(caps))
    class_ids = {k: 100 + i for i, k in enumerate(all_keys)}  # differ from the key's class number
    for split, ks in keys.items():
        dump(os.path.join(root, split, "filenames.pickle"), list(ks), style)
        ids = [class_ids[k] for k in ks]
        if class_info == "list":
            dump(os.path.join(root, split, "class_info.pickle"), ids, style)
        elif class_info == "numpy":
            path = os.path.join(root, split, "class_info.pickle")
            if style == "py2":
                dump(path, py2_numpy_array(ids), "py2")
            else:
                dump(path, np.asarray(ids, dtype=np.int64), "py3")
    if pickle_name:
        caps = captions_pickle(*[[captions[k] for k in keys[s]] for s in ("train", "test")])
        dump(os.path.join(root, pickle_name), caps, style)
    return FakeSet(root, keys, captions, class_ids, bboxes, images)


COCO_KEYS = {
    "train": ["COCO_train2014_000000000009", "COCO_train2014_000000000025"],
    "test": ["COCO_val2014_000000000042", "COCO_val2014_000000000073"],
}


def make_coco_raw(root: str, captions_per_image: int = 6) -> FakeSet:
    """Raw COCO-2014: train2014/, val2014/, annotations/captions_{train,val}2014.json."""
    keys = {s: list(v) for s, v in COCO_KEYS.items()}
    captions, images, class_ids = {}, {}, {}
    image_id = 1
    for split, folder in (("train", "train2014"), ("test", "val2014")):
        data = {"info": {}, "images": [], "annotations": []}
        for index, key in enumerate(sorted(keys[split])):
            images[key] = os.path.join(root, folder, key + ".jpg")
            write_image(images[key], 20 + 4 * index, 16, seed=image_id)
            if index == 1:  # a greyscale JPEG, as COCO has
                Image.open(images[key]).convert("L").save(images[key], quality=95)
            data["images"].append({"id": image_id, "file_name": key + ".jpg", "width": 20})
            caps = [f"A photo of thing {image_id} number {c}." for c in range(captions_per_image)]
            caps[0] += "\n"  # COCO captions sometimes hold newlines
            for c, cap in enumerate(caps):
                data["annotations"].append(
                    {"id": 1000 * image_id + c, "image_id": image_id, "caption": cap}
                )
            captions[key] = [" ".join(c.split()) for c in caps[:5]]
            class_ids[key] = index
            image_id += 1
        path = os.path.join(_mkdir(os.path.join(root, "annotations")), f"captions_{folder}.json")
        with open(path, "w") as f:
            json.dump(data, f)
    return FakeSet(root, keys, captions, class_ids, images=images)


def make_coco_attngan(root: str, style: str = "py2", text: bool = True) -> FakeSet:
    """AttnGAN COCO: images/<key>.jpg, {train,test}/filenames.pickle, text/, captions.pickle."""
    keys = {"train": COCO_KEYS["train"][::-1], "test": list(COCO_KEYS["test"])}
    captions, images, class_ids = {}, {}, {}
    for split, ks in keys.items():
        dump(os.path.join(root, split, "filenames.pickle"), ks, style)
        for index, key in enumerate(ks):
            images[key] = os.path.join(root, "images", key + ".jpg")
            write_image(images[key], 18, 22, seed=50 + index)
            caps = [f"a picture of {key[-2:]} item {c}" for c in range(5)]
            captions[key], class_ids[key] = caps, index
            if text:
                path = _mkdir(os.path.join(root, "text", key + ".txt"), parent=True)
                with open(path, "w") as f:
                    f.write("\n".join(caps) + "\n")
    caps = captions_pickle(*[[captions[k] for k in keys[s]] for s in ("train", "test")])
    dump(os.path.join(root, "captions.pickle"), caps, style)
    return FakeSet(root, keys, captions, class_ids, images=images)


def _mkdir(path: str, parent: bool = False) -> str:
    os.makedirs(os.path.dirname(path) if parent else path, exist_ok=True)
    return path
