"""What the CUB and COCO builders share: reading the user's files, checking them, building safely.

The builders never download anything: they read a folder the user supplies (`data.manual_dir`).
`build_with` validates the whole folder first (required files, pickles through the restricted
loader of `mirrorgan_jax.safe_load`, caption counts, image headers), then lets tfds write the
shards into a temporary folder next to the target and only swaps the finished data set into
place at the end, so a failed build never touches data prepared earlier.
"""

from __future__ import annotations

import abc
import dataclasses
import io
import os
import re
import shutil
import tempfile
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from mirrorgan_jax import errors
from mirrorgan_jax.data import schema
from mirrorgan_jax.safe_load import load_pickle

SPLITS = ("train", "test")
_WORD = re.compile(r"\w+")


class DataLayoutError(errors.Error, ValueError):
    """The supplied folder is missing something or holds a file in an unexpected form."""


class CorruptImageError(DataLayoutError):
    """An image file cannot be decoded (names the file)."""


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """The `config.data` fields the builders read."""

    captions_per_image: int = 10
    skip_corrupt: bool = False
    allow_fewer_captions: bool = False
    overwrite: bool = False

    @classmethod
    def from_config(cls, config_data: Any) -> "BuildOptions":
        return cls(
            captions_per_image=int(config_data.captions_per_image),
            skip_corrupt=bool(config_data.skip_corrupt),
            allow_fewer_captions=bool(config_data.allow_fewer_captions),
            overwrite=bool(config_data.overwrite),
        )


@dataclasses.dataclass
class Example:
    """One image to store: where it is, its captions, class id and (CUB) bounding box."""

    key: str
    image_path: str
    captions: list[str]
    class_id: int
    bbox: tuple[int, int, int, int] | None = None  # x, y, w, h (CUB only)


@dataclasses.dataclass
class Plan:
    """Everything validated about a folder before anything is written."""

    layout: str
    splits: dict[str, list[Example]]
    wordtoix: dict[str, int] | None = None
    skipped: list[dict] = dataclasses.field(default_factory=list)
    # caption files that are not valid UTF-8 (`read_caption_file`): file, line, bytes replaced
    invalid_utf8: list[dict] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------- checking the folder
def require(root: str, entries: Sequence[str], layout: str) -> None:
    """Raise one error listing every missing entry (names ending in '/' are folders)."""
    if not root or not os.path.isdir(root):
        raise DataLayoutError(
            f"data.manual_dir {root!r} is not an existing folder. Expected layout:\n{layout}"
        )
    missing = []
    for entry in entries:
        path = os.path.join(root, entry)
        if not (os.path.isdir(path) if entry.endswith("/") else os.path.isfile(path)):
            missing.append(path)
    if missing:
        raise DataLayoutError(
            f"{root}: missing required entries:\n  "
            + "\n  ".join(missing)
            + f"\nExpected:\n{layout}"
        )


def read_filenames(path: str) -> list[str]:
    """`{train,test}/filenames.pickle`: a list of keys (py2 str, read as latin1)."""
    value = load_pickle(path)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DataLayoutError(f"{path}: expected a list of file keys, got {type(value).__name__}")
    keys = []
    for i, key in enumerate(value):
        key = key.decode("latin1") if isinstance(key, bytes) else key
        if not isinstance(key, str) or not key:
            raise DataLayoutError(f"{path}: entry {i} is {key!r}, expected a non-empty file key")
        keys.append(key)
    dupes = sorted({k for k in keys if keys.count(k) > 1}) if len(set(keys)) != len(keys) else []
    if dupes:
        raise DataLayoutError(f"{path}: keys listed more than once: {dupes[:5]}")
    return keys


def read_class_info(path: str, count: int) -> list[int]:
    """`{train,test}/class_info.pickle`: one int class id per image (list or numpy array)."""
    value = load_pickle(path)
    values = value.tolist() if isinstance(value, np.ndarray) else value
    ok = isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
    )
    if not ok:
        raise DataLayoutError(f"{path}: expected a list of int class ids, got {type(value)}")
    if len(values) != count:
        raise DataLayoutError(f"{path}: {len(values)} class ids for {count} images")
    return [int(v) for v in values]


@dataclasses.dataclass
class CaptionsPickle:
    """The official `[train_caps, test_caps, ixtoword, wordtoix]` pickle."""

    path: str
    train: list[list[int]]
    test: list[list[int]]
    ixtoword: dict[int, str]
    wordtoix: dict[str, int]


def read_captions_pickle(path: str) -> CaptionsPickle:
    value = load_pickle(path)
    if not (isinstance(value, (list, tuple)) and len(value) >= 4):
        raise DataLayoutError(f"{path}: expected [train_caps, test_caps, ixtoword, wordtoix]")
    train, test, ixtoword, wordtoix = value[:4]
    for name, caps in (("train_caps", train), ("test_caps", test)):
        if not isinstance(caps, list) or not all(isinstance(c, (list, tuple)) for c in caps):
            raise DataLayoutError(f"{path}: {name} is not a list of token-id lists")
    if not isinstance(ixtoword, dict) or not isinstance(wordtoix, dict):
        raise DataLayoutError(f"{path}: ixtoword and wordtoix must be dicts")
    text = lambda w: w.decode("latin1") if isinstance(w, bytes) else w
    try:
        ixtoword = {int(i): text(w) for i, w in ixtoword.items()}
        wordtoix = {text(w): int(i) for w, i in wordtoix.items()}
    except (TypeError, ValueError) as e:
        raise DataLayoutError(f"{path}: bad vocabulary entry ({e})") from None
    if not all(isinstance(w, str) for w in wordtoix):
        raise DataLayoutError(f"{path}: wordtoix keys must be words (str)")
    return CaptionsPickle(path, train, test, ixtoword, wordtoix)


def clean_captions(lines: Sequence[str]) -> list[str]:
    """The official caption rules: empty / wordless captions skipped, U+FFFD U+FFFD -> ' '."""
    out = []
    for line in lines:
        line = " ".join(line.replace("\ufffd\ufffd", " ").split())
        if line and _WORD.search(line.lower()):
            out.append(line)
    return out


def select_captions(captions: list[str], options: BuildOptions, source: str) -> list[str]:
    """Keep the first `captions_per_image`; fewer is an error unless allowed (and >= 1)."""
    n = options.captions_per_image
    if len(captions) < n and not (options.allow_fewer_captions and captions):
        hint = "" if not captions else "; set data.allow_fewer_captions=True to accept fewer"
        raise DataLayoutError(
            f"{source}: {len(captions)} captions, data.captions_per_image={n} expected{hint}"
        )
    return captions[:n]


def read_caption_file(
    path: str, options: BuildOptions, invalid_utf8: list[dict] | None = None
) -> list[str]:
    """The captions of one file. Bytes that are not UTF-8 become U+FFFD, as the official reader
    does; such a file is listed in `invalid_utf8` (file, first bad line, bytes replaced)."""
    if not os.path.isfile(path):
        raise DataLayoutError(f"caption file {path} is missing")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        text = raw.decode("utf-8", errors="replace")
        if invalid_utf8 is not None:
            invalid_utf8.append(
                {
                    "file": path,
                    "line": raw[: e.start].count(b"\n") + 1,
                    "replaced": text.count("\ufffd") - raw.count("\ufffd".encode()),
                }
            )
    return select_captions(clean_captions(text.split("\n")), options, path)


def captions_from_pickle(
    caps: CaptionsPickle, split: str, keys: list[str], options: BuildOptions
) -> list[list[str]]:
    """Caption strings rebuilt from the pickle's token ids (used when `text/` is absent)."""
    ids = caps.train if split == "train" else caps.test
    n = options.captions_per_image
    if len(ids) != len(keys) * n:
        raise DataLayoutError(
            f"{caps.path}: {len(ids)} {split} captions for {len(keys)} images; expected "
            f"{n} per image (data.captions_per_image)"
        )
    words = lambda row: " ".join(caps.ixtoword.get(int(i), "") for i in row).strip()
    out = []
    for i, key in enumerate(keys):
        rows = [words(r) for r in ids[i * n : (i + 1) * n]]
        out.append(select_captions([r for r in rows if r], options, f"{caps.path} ({key})"))
    return out


def require_files(paths: Sequence[str], what: str) -> None:
    """Raise one error counting the missing files of `paths` and listing the first ten."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataLayoutError(
            f"{len(missing)} {what} are missing, e.g.:\n  " + "\n  ".join(missing[:10])
        )


def check_images(plan: Plan, options: BuildOptions) -> None:
    """Every image exists and has a readable header; corrupt ones fail or are skipped."""
    from PIL import Image

    missing = []
    for split, examples in plan.splits.items():
        kept = []
        for ex in examples:
            if not os.path.isfile(ex.image_path):
                missing.append(ex.image_path)
                continue
            try:
                with Image.open(ex.image_path) as im:
                    _ = im.size
            except Exception as e:  # unreadable header: any exception PIL raises
                if not options.skip_corrupt:
                    raise CorruptImageError(
                        f"{ex.image_path}: not a readable image ({e}); set "
                        "data.skip_corrupt=True to skip such images"
                    ) from None
                plan.skipped.append(skipped_entry(split, ex, e))
                continue
            kept.append(ex)
        plan.splits[split] = kept
    require_files(missing, "image files")
    for split, examples in plan.splits.items():
        if not examples:
            raise DataLayoutError(f"split {split!r} has no usable images")


def skipped_entry(split: str, ex: Example, error: Exception) -> dict:
    return {"split": split, "key": ex.key, "file": ex.image_path, "error": str(error)}


def decode_rgb(path: str):
    """Fully decode an image as RGB (PIL), raising `CorruptImageError` naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB"), im.format, im.mode
    except Exception as e:  # truncated / corrupt data: any exception PIL raises
        raise CorruptImageError(f"{path}: cannot decode image ({e})") from None


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- the tfds builder base


class RealDataBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of `Cub` and `Coco`: features from `schema`, splits train/test, tfrecord shards."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    DESCRIPTION = ""
    # No checksums file to look up (nothing is downloaded); tfds' lookup of it for a builder
    # inside a package imports the `importlib_resources` backport, not a dependency here.
    code_path = None

    def __init__(self, *, options: BuildOptions | None = None, plan: Plan | None = None, **kw):
        self._options = options or BuildOptions()
        self._plan = plan
        self.skipped: list[dict] = []
        kw.setdefault("file_format", "tfrecord")
        super().__init__(**kw)

    @classmethod
    @abc.abstractmethod
    def make_plan(cls, manual_dir: str, options: BuildOptions, check: bool = True) -> Plan:
        """Read and validate the folder (`check`: also image files) without writing anything."""

    @abc.abstractmethod
    def encode_image(self, example: Example) -> bytes:
        """The stored image bytes (may raise `CorruptImageError`)."""

    @classmethod
    def build(cls, config_data: Any, data_dir: str) -> dict:
        """Prepare the data set from `config_data.manual_dir` into `data_dir` (`build_with`)."""
        return build_with(cls, config_data, data_dir)

    @classmethod
    def load_captions_for_tokenizer(
        cls, config_data: Any
    ) -> tuple[list[str], list[str], dict | None]:
        """(train captions, train + test captions, official wordtoix or None) from the raw
        folder."""
        options = BuildOptions.from_config(config_data)
        manual_dir = os.path.abspath(os.path.expanduser(str(config_data.manual_dir or "")))
        return captions_for_tokenizer(cls.make_plan(manual_dir, options, check=False))

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.DESCRIPTION, features=schema.tfds_features()
        )

    def _split_generators(self, dl_manager):
        plan = self._plan or self.make_plan(os.fspath(dl_manager.manual_dir), self._options)
        return {split: self._generate_examples(split, plan.splits[split]) for split in SPLITS}

    def _generate_examples(self, split: str, examples: list[Example]) -> Iterator:
        attributes = np.full((schema.NUM_ATTRIBUTES,), -1, np.int64)
        for ex in examples:
            try:
                image = self.encode_image(ex)
            except CorruptImageError as e:
                if not self._options.skip_corrupt:
                    raise
                self.skipped.append(skipped_entry(split, ex, e))
                continue
            record = {"image": image, "captions": ex.captions, "class_id": ex.class_id}
            yield ex.key, {**record, "key": ex.key, "attributes": attributes}


def _split_counts(builder) -> dict[str, int]:
    return {s: int(builder.info.splits[s].num_examples) for s in SPLITS}


def build_with(builder_cls: type[RealDataBuilder], config_data: Any, data_dir: str) -> dict:
    """Validate `config_data.manual_dir`, build into a temp folder, swap into `data_dir`.

    Returns the report: name, layout, data/builder dirs, counts per split, skipped images.
    An existing prepared set is reused unless `config_data.overwrite`; it is replaced only
    after the new one was written completely.
    """
    options = BuildOptions.from_config(config_data)
    data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    name, version = builder_cls.name, str(builder_cls.VERSION)
    final = os.path.join(data_dir, name, version)
    report = {"name": name, "data_dir": data_dir, "builder_dir": final}
    report["manual_dir"] = str(config_data.manual_dir or "")
    if os.path.isfile(os.path.join(final, "dataset_info.json")) and not options.overwrite:
        counts = _split_counts(builder_cls(data_dir=data_dir))
        return {
            **report,
            "reused": True,
            "layout": None,
            "splits": counts,
            "skipped": [],
            "num_skipped": 0,
        }

    manual_dir = os.path.abspath(os.path.expanduser(str(config_data.manual_dir or "")))
    plan = builder_cls.make_plan(manual_dir, options)
    os.makedirs(data_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-building-", dir=data_dir)
    try:
        builder = builder_cls(data_dir=tmp, options=options, plan=plan)
        builder.download_and_prepare(
            download_dir=os.path.join(tmp, "downloads"),
            download_config=tfds.download.DownloadConfig(
                manual_dir=manual_dir, try_download_gcs=False
            ),
        )
        os.makedirs(os.path.dirname(final), exist_ok=True)
        old = os.path.join(tmp, "previous")
        if os.path.exists(final):
            os.rename(final, old)
        try:
            os.rename(os.path.join(tmp, name, version), final)
        except OSError:
            if os.path.exists(old):
                os.rename(old, final)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    skipped = plan.skipped + builder.skipped
    counts = _split_counts(builder_cls(data_dir=data_dir))
    for bad in plan.invalid_utf8:
        logging.warning(
            "%s: not valid UTF-8 from line %d on; %d byte sequence(s) read as U+FFFD",
            bad["file"],
            bad["line"],
            bad["replaced"],
        )
    return {
        **report,
        "reused": False,
        "layout": plan.layout,
        "splits": counts,
        "skipped": skipped,
        "num_skipped": len(skipped),
        "invalid_utf8": plan.invalid_utf8,
        "num_invalid_utf8": len(plan.invalid_utf8),
    }


def captions_for_tokenizer(plan: Plan) -> tuple[list[str], list[str], dict[str, int] | None]:
    """(train captions, train + test captions, official wordtoix or None)."""
    train = [c for ex in plan.splits["train"] for c in ex.captions]
    test = [c for ex in plan.splits["test"] for c in ex.captions]
    return train, train + test, plan.wordtoix
