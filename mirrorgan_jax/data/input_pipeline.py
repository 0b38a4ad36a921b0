"""Host-only tf.data input pipeline over prepared tfds shards, yielding `schema.py` batches.

Training (`create_dataset`): an endless stream of global batches. Epoch e is the split in file
order, shuffled with a buffer seeded by (seed, e); the stream position p (0, 1, 2, ... over all
epochs) of an example seeds all its randomness (caption choice, long-caption subset, crop, flip)
statelessly. So a batch is a pure function of (seed, step), whatever the number of processes or
parallel calls: global step k is stream positions [k*B, (k+1)*B), host i takes rows
[i*B/P, (i+1)*B/P) of it, and `start_step=k` starts exactly there (skipping at most one epoch of
undecoded records). Every host reads all records and keeps its own rows before decoding.

Per example (`qiaott/MirrorGAN datasets.py TextDataset`): one of the first `captions_per_image`
captions at random, tokenized (a caption longer than `words_num` keeps a random ordered subset of
its tokens, or its first `words_num` with long_caption="truncate"); image: shorter side resized to
int(S*76/64) (bilinear, antialiased like PIL, rounded to uint8 values), random S x S crop, random
horizontal flip; with random_crop=False shorter side to S and a centre crop. Smaller stages are
resized from the crop; values in [-1, 1]; each batch sorted by caption length, descending.

Evaluation (`create_eval_dataset`): one pass, no shuffle, every example once (or every caption
once), padded to whole batches with rows marked `valid=False`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
from collections.abc import Iterator, Sequence

import numpy as np

from mirrorgan_jax import errors
from mirrorgan_jax.data import schema
from mirrorgan_jax.data.tokenizers import Tokenizer

_EPOCH_SEED_STRIDE = 1_000_003
_REBUILD = "rebuild it: --mode=prepare --config.data.overwrite=True"


class PreparedDataError(errors.Error, ValueError):
    """The prepared data is missing, incomplete or damaged (names the folder or file)."""


def find_builder_dir(data_dir: str | pathlib.Path, name: str) -> pathlib.Path:
    """The prepared tfds directory of data set `name` (e.g. <data_dir>/shapes/1.0.0).

    Looks for <data_dir>/<tfds name>/[<config>/]<x.y.z>/dataset_info.json with tfds name `name`
    or `mirrorgan_<name>`; the highest version wins. Unfinished builds (tfds' `incomplete.*`
    folders, hidden temp folders) never match.
    """
    root = pathlib.Path(data_dir)
    matches = []
    for tfds_name in (name, f"mirrorgan_{name}"):
        infos = [*root.glob(f"{tfds_name}/*/dataset_info.json")]
        infos += root.glob(f"{tfds_name}/*/*/dataset_info.json")  # with a builder config
        for info in infos:
            if re.fullmatch(r"\d+\.\d+\.\d+", info.parent.name):
                version = tuple(int(v) for v in info.parent.name.split("."))
                matches.append((version, str(info.parent)))
    if not matches:
        seen = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise PreparedDataError(
            f"no prepared data set {name!r}",
            str(root),
            f"run --mode=prepare first (the folder holds: {', '.join(seen) or 'nothing'})",
        )
    return pathlib.Path(max(matches)[1])


def num_examples(data_dir: str | pathlib.Path, name: str, split: str) -> int:
    """Number of examples of `split` in the prepared data set."""
    info = json.loads((find_builder_dir(data_dir, name) / "dataset_info.json").read_text())
    for s in info.get("splits", []):
        if s["name"] == split:
            return sum(int(n) for n in s["shardLengths"])
    splits = [s["name"] for s in info.get("splits", [])]
    raise PreparedDataError(
        f"the prepared data set has no split {split!r}",
        str(find_builder_dir(data_dir, name)),
        f"it has {splits}",
    )


def _records(data_dir, name: str, split: str):
    """(tf.data of undecoded records in file order, number of examples)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(find_builder_dir(data_dir, name)))
    if split not in builder.info.splits:
        raise PreparedDataError(
            f"the prepared data set has no split {split!r}",
            str(find_builder_dir(data_dir, name)),
            f"it has {list(builder.info.splits)}",
        )
    ds = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(add_tfds_id=False),
    )
    return ds, builder.info.splits[split].num_examples


def load_captions(
    data_dir: str | pathlib.Path, name: str, split: str, per_image: int | None = 1
) -> list[str]:
    """Raw captions of `split` in file order (the eval order): the first `per_image` captions of
    every example (None: all of them), flattened."""
    records, _ = _records(data_dir, name, split)
    captions = []
    for caps in _read(records.map(lambda r: r["captions"]), (data_dir, name, split)):
        captions += [c.decode("utf-8") for c in caps[:per_image]]
    return captions


def _read(ds, where: tuple) -> Iterator:
    """`ds.as_numpy_iterator()`, a damaged record file of split `where` = (data_dir, name,
    split) said as a `PreparedDataError` naming the file."""
    import tensorflow as tf

    try:
        yield from ds.as_numpy_iterator()
    except tf.errors.DataLossError as e:
        raise _damaged(*where, e) from e


def _tf_message(error: Exception) -> str:
    """A TensorFlow error's own sentence, without the op and function names around it."""
    text = errors.one_line(getattr(error, "message", str(error)))
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text).split(" [Op:")[0]
    # the record reader's "truncated record at 123' failed with ...": its quote opens nowhere
    return text.replace("' failed with ", ": ")


def _damaged(data_dir, name: str, split: str, error: Exception) -> PreparedDataError:
    """TensorFlow's DataLossError names no file: the split's record files are read one by one
    to find the damaged one."""
    import tensorflow as tf

    builder_dir = find_builder_dir(data_dir, name)
    for path in sorted(builder_dir.glob(f"*-{split}.tfrecord*")):
        try:
            for _ in tf.data.TFRecordDataset(str(path)):
                pass
        except tf.errors.DataLossError as e:
            return PreparedDataError(
                "a prepared data file is damaged", str(path), f"{_tf_message(e)}; {_REBUILD}"
            )
    return PreparedDataError(
        f"the prepared {split!r} data is damaged",
        str(builder_dir),
        f"{_tf_message(error)}; {_REBUILD}",
    )


@dataclasses.dataclass(frozen=True)
class Source:
    """A prepared data set as batches are read from it: where it is (`data_dir`, tfds `name`),
    how captions become tokens (`tokenizer`, `words_num`, the first `captions_per_image` of each
    image, `long_caption` "subset" (official) or "truncate"), and the image size of every
    generator stage, smallest first."""

    data_dir: str | pathlib.Path
    name: str
    tokenizer: Tokenizer
    image_sizes: Sequence[int]
    words_num: int
    captions_per_image: int = 10
    long_caption: str = "subset"

    def check(self, batch_size: int, host: tuple[int, int]) -> None:
        index, count = host
        sizes = list(self.image_sizes)
        if not sizes or sizes != sorted(sizes):
            raise ValueError(f"image_sizes must be increasing, got {self.image_sizes}")
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"host index {index} not in [0, host count {count})")
        if batch_size % count:
            raise ValueError(f"global batch_size={batch_size} not divisible by {count} hosts")
        if self.long_caption not in ("subset", "truncate"):
            raise ValueError(f"long_caption={self.long_caption!r}; expected 'subset' or 'truncate'")
        if self.words_num < 1:
            raise ValueError(f"words_num must be >= 1, got {self.words_num}")

    def records(self, split: str):
        return _records(self.data_dir, self.name, split)

    def where(self, split: str) -> tuple:
        return (self.data_dir, self.name, split)


@dataclasses.dataclass(frozen=True)
class _ExampleFn:
    """Turns one undecoded record + its stream position into a schema example (stateless)."""

    source: Source
    random_crop: bool
    seed: int

    def _tokenize(self, caption: bytes, seed: np.ndarray):
        rng = np.random.default_rng(seed.astype(np.uint64).tolist())
        src = self.source
        tokens, lengths = src.tokenizer.encode_batch(
            [caption.decode("utf-8")], src.words_num, rng, src.long_caption
        )
        return tokens[0], lengths[0]

    def __call__(self, position, record, caption_index=None):
        import tensorflow as tf

        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(position, tf.int64)])
        seeds = tf.random.experimental.stateless_split(seed, 4)  # [4, 2]
        captions = record["captions"]
        count = tf.minimum(tf.shape(captions)[0], self.source.captions_per_image)
        tf.debugging.assert_positive(count, message="an example has no caption")
        if caption_index is None:
            caption_index = tf.random.stateless_uniform(
                [], seeds[0], minval=0, maxval=count, dtype=tf.int32
            )
        caption = captions[tf.math.floormod(caption_index, count)]
        tokens, length = tf.numpy_function(
            self._tokenize, [caption, seeds[1]], [tf.int32, tf.int32], stateful=False
        )
        tokens.set_shape([self.source.words_num])
        length.set_shape([])
        image = tf.io.decode_image(record["image"], channels=3, expand_animations=False)
        return dict(
            images=self._images(image, seeds[2], seeds[3]),
            tokens=tokens,
            lengths=length,
            class_id=tf.cast(record["class_id"], tf.int32),
            attributes=tf.cast(record["attributes"], tf.int32),
            key=record["key"],
            caption_index=tf.cast(caption_index, tf.int32),
            valid=tf.constant(True),
        )

    def _images(self, image, crop_seed, flip_seed):
        import tensorflow as tf

        sizes = tuple(self.source.image_sizes)
        size = sizes[-1]
        if self.random_crop:
            image = _resize_shorter(image, int(size * 76 / 64))
            image = tf.image.stateless_random_crop(image, [size, size, 3], seed=crop_seed)
            image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        else:
            image = _resize_shorter(image, size)
            top = (tf.shape(image)[0] - size) // 2
            left = (tf.shape(image)[1] - size) // 2
            image = image[top : top + size, left : left + size]
        image = tf.ensure_shape(image, [size, size, 3])
        stages = [_resize(image, s, s) for s in sizes[:-1]] + [image]
        return tuple(tf.cast(x, tf.float32) / 127.5 - 1.0 for x in stages)


def _resize(image, height, width):
    """PIL-like bilinear resize (antialiased when shrinking), rounded to uint8 values (float)."""
    import tensorflow as tf

    out = tf.image.resize(image, [height, width], method="bilinear", antialias=True)
    return tf.clip_by_value(tf.round(out), 0.0, 255.0)


def _resize_shorter(image, size: int):
    """torchvision Scale(size): shorter side -> size, longer side int(size * long / short)."""
    import tensorflow as tf

    h, w = tf.shape(image)[0], tf.shape(image)[1]
    hf, wf = tf.cast(h, tf.float64), tf.cast(w, tf.float64)
    new_h = tf.where(h <= w, size, tf.cast(tf.floor(size * hf / wf), tf.int32))
    new_w = tf.where(h <= w, tf.cast(tf.floor(size * wf / hf), tf.int32), size)
    return _resize(image, new_h, new_w)


def _sort_by_length(batch):
    import tensorflow as tf

    order = tf.argsort(batch["lengths"], direction="DESCENDING", stable=True)
    return {k: tuple(tf.gather(x, order) for x in v) if k == "images" else tf.gather(v, order)
            for k, v in batch.items()}  # fmt: skip


def _to_numpy(ds, keep_eval_keys: bool, where: tuple) -> Iterator[dict]:
    for batch in _read(ds, where):
        batch["images"] = list(batch["images"])
        if not keep_eval_keys:
            batch.pop("caption_index")
            batch.pop("valid")
        yield batch


def create_dataset(
    source: Source,
    split: str,
    batch_size: int,
    *,
    random_crop: bool = True,
    seed: int = 0,
    shuffle_buffer: int | None = 2048,
    start_step: int = 0,
    prefetch: int = 2,
    sort_by_length: bool = True,
    host: tuple[int, int] = (0, 1),
) -> Iterator[dict]:
    """Endless iterator of this host's training batches (numpy, `schema.py` layout).

    batch_size is global; host (index i, count P) gets rows [i*B/P, (i+1)*B/P) of every global
    batch. Batch k of the iterator is global step start_step + k. `shuffle_buffer=None` reads
    every epoch in file order. Keys: images (list, smallest stage first), tokens, lengths,
    class_id, attributes, key.
    """
    import tensorflow as tf

    source.check(batch_size, host)
    index, count_hosts = host
    records, count = source.records(split)
    if count < 1:
        raise PreparedDataError(
            f"the prepared {split!r} split is empty",
            str(find_builder_dir(source.data_dir, source.name)),
            _REBUILD,
        )
    local = batch_size // count_hosts
    first_epoch, skip = divmod(start_step * batch_size, count)

    def epoch(e):
        d = records
        if shuffle_buffer:
            d = d.shuffle(shuffle_buffer, seed=seed * _EPOCH_SEED_STRIDE + e)
        return d.enumerate().map(lambda j, r: (e * count + j, r))

    ds = tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(epoch).skip(skip)
    ds = ds.filter(lambda pos, r: (pos % batch_size) // local == index)
    fn = _ExampleFn(source, random_crop, seed)
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(local, drop_remainder=True)
    if sort_by_length:
        ds = ds.map(_sort_by_length)
    return _to_numpy(ds.prefetch(prefetch), keep_eval_keys=False, where=source.where(split))


@dataclasses.dataclass
class EvalBatches:
    """One evaluation pass: iterate it (re-iterable) for numpy batches with `schema.py` keys plus
    valid bool [B] (False on padding rows: zero images, token 1, length 1, class_id -1, key b'')
    and caption_index int32 [B] (-1 on padding). Every host yields `num_batches` batches."""

    dataset: object  # tf.data.Dataset
    num_examples: int  # valid rows over all hosts
    num_batches: int
    where: tuple = ()  # (data_dir, name, split), to name a damaged file

    def __iter__(self) -> Iterator[dict]:
        return _to_numpy(self.dataset, keep_eval_keys=True, where=self.where)

    def __len__(self) -> int:
        return self.num_batches


def create_eval_dataset(
    source: Source,
    split: str,
    batch_size: int,
    *,
    captions: str | int = "random",
    random_crop: bool = False,
    seed: int = 0,
    sort_by_length: bool = True,
    prefetch: int = 2,
    host: tuple[int, int] = (0, 1),
) -> EvalBatches:
    """One deterministic pass over `split` (file order, no shuffle, no repeat).

    captions: "random" (one caption per image drawn from (seed, index), the official sampling),
    "all" (each image once per caption index 0..captions_per_image-1, cycling when an image has
    fewer), or an int k (caption k, modulo the image's count). Host (index i, count P) takes the
    examples with position % P == i. The last batch is padded (valid=False) so that every host
    yields the same number of batches.
    """
    import tensorflow as tf

    source.check(batch_size, host)
    process_index, process_count = host
    records, count = source.records(split)
    fn = _ExampleFn(source, random_crop, seed)
    if captions == "all":
        per = source.captions_per_image
        ds = records.flat_map(lambda r: tf.data.Dataset.from_tensors(r).repeat(per))
        ds = ds.enumerate().map(lambda pos, r: (pos, r, tf.cast(pos % per, tf.int32)))
        total = count * per
    elif captions == "random" or isinstance(captions, int):
        ds = records.enumerate()
        if isinstance(captions, int):
            ds = ds.map(lambda pos, r: (pos, r, tf.constant(captions, tf.int32)))
        total = count
    else:
        raise ValueError(f"captions={captions!r}; expected 'random', 'all' or an int")
    ds = ds.filter(lambda pos, *rest: pos % process_count == process_index)
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    local = batch_size // process_count
    mine = len(range(process_index, total, process_count))
    num_batches = math.ceil(math.ceil(total / process_count) / local)
    padding = _padding_example(source.image_sizes, source.words_num)
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_batches * local - mine))
    ds = ds.batch(local, drop_remainder=True)
    if sort_by_length:
        ds = ds.map(_sort_by_length)
    return EvalBatches(ds.prefetch(prefetch), total, num_batches, source.where(split))


def _padding_example(image_sizes, words_num):
    import tensorflow as tf

    tokens = np.zeros((words_num,), np.int32)
    tokens[0] = 1
    return dict(
        images=tuple(tf.zeros((s, s, 3), tf.float32) for s in image_sizes),
        tokens=tf.constant(tokens),
        lengths=tf.constant(1, tf.int32),
        class_id=tf.constant(-1, tf.int32),
        attributes=tf.fill([schema.NUM_ATTRIBUTES], tf.constant(-1, tf.int32)),
        key=tf.constant(b""),
        caption_index=tf.constant(-1, tf.int32),
        valid=tf.constant(False),
    )
