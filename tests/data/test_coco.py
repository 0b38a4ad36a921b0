"""COCO builder: the raw release and the AttnGAN layout, prepared end to end and read back."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import coco as coco_config
from mirrorgan_jax.data import coco
from mirrorgan_jax.data.real_common import CorruptImageError, DataLayoutError
from mirrorgan_jax.safe_load import UnsafeFileError
from tests.data import fake_layouts as fl


def data_config(root, **overrides):
    c = coco_config.get_config().data
    c.manual_dir = str(root)
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def read_split(data_dir, split):
    ds = coco.Coco(data_dir=str(data_dir)).as_dataset(split=split, shuffle_files=False)
    return {ex["key"].decode(): ex for ex in tfds.as_numpy(ds)}


def prepare(tmp_path_factory, make):
    root = tmp_path_factory.mktemp("coco")
    fake = make(str(root))
    data_dir = tmp_path_factory.mktemp("prepared")
    report = coco.build(data_config(root), str(data_dir))
    return fake, report, {s: read_split(data_dir, s) for s in ("train", "test")}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return prepare(tmp_path_factory, fl.make_coco_raw)


@pytest.fixture(scope="module")
def attngan(tmp_path_factory):
    return prepare(tmp_path_factory, fl.make_coco_attngan)


@pytest.mark.parametrize("which", ["raw", "attngan"])
def test_prepared_records(which, request):
    fake, report, splits = request.getfixturevalue(which)
    assert report["layout"] == which and report["splits"] == {"train": 2, "test": 2}
    for split, keys in fake.keys.items():
        assert sorted(splits[split]) == sorted(keys)
        for key in keys:
            ex = splits[split][key]
            assert [c.decode() for c in ex["captions"]] == fake.captions[key]  # first 5
            assert ex["class_id"] == fake.class_ids[key]  # index in the split
            expected = np.asarray(Image.open(fake.images[key]).convert("RGB"))
            assert ex["image"].shape == expected.shape  # greyscale JPEG decoded as RGB
            # JPEG bytes are stored unchanged (next test); TF's JPEG decoder differs from PIL's
            # (which the official loader uses) by a few levels on this sawtooth test pattern
            assert np.abs(ex["image"].astype(int) - expected).mean() < 3


def test_jpeg_bytes_are_stored_unchanged(raw, tmp_path):
    fake, report, _ = raw
    ds = tfds.builder_from_directory(report["builder_dir"]).as_dataset(
        split="train", decoders={"image": tfds.decode.SkipDecoding()}
    )
    stored = {ex["key"].decode(): ex["image"] for ex in tfds.as_numpy(ds)}
    for key in fake.keys["train"]:
        with open(fake.images[key], "rb") as f:
            assert stored[key] == f.read()


def test_tokenizer_captions(tmp_path):
    fake = fl.make_coco_attngan(str(tmp_path / "a"), style="py2", text=False)
    train, everything, wordtoix = coco.load_captions_for_tokenizer(data_config(tmp_path / "a"))
    assert train == [c for k in fake.keys["train"] for c in fake.captions[k]]
    assert len(everything) == 4 * 5 and wordtoix["picture"] > 0
    fake = fl.make_coco_raw(str(tmp_path / "r"))
    train, everything, wordtoix = coco.load_captions_for_tokenizer(data_config(tmp_path / "r"))
    assert train == [c for k in sorted(fake.keys["train"]) for c in fake.captions[k]]
    assert wordtoix is None and len(everything) == 20


def test_attngan_metadata_next_to_raw_image_folders(tmp_path):
    fake = fl.make_coco_attngan(str(tmp_path))
    for key, path in fake.images.items():
        folder = "train2014" if "train2014" in key else "val2014"
        os.makedirs(tmp_path / folder, exist_ok=True)
        os.rename(path, tmp_path / folder / os.path.basename(path))
    os.rmdir(tmp_path / "images")
    plan = coco.Coco.make_plan(str(tmp_path), coco.rc.BuildOptions(captions_per_image=5))
    assert plan.splits["test"][0].image_path == str(
        tmp_path / "val2014" / (fake.keys["test"][0] + ".jpg")
    )


# ---------------------------------------------------------------- bad input
def test_missing_folder_and_files(tmp_path):
    with pytest.raises(
        DataLayoutError, match="(?s)not an existing folder.*captions_train2014.json"
    ):
        coco.build(data_config(tmp_path / "absent"), str(tmp_path / "out"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DataLayoutError, match="neither COCO layout"):
        coco.build(data_config(tmp_path / "empty"), str(tmp_path / "out"))
    fl.make_coco_raw(str(tmp_path / "r"))
    os.remove(tmp_path / "r" / "annotations" / "captions_val2014.json")
    with pytest.raises(DataLayoutError, match="captions_val2014.json"):
        coco.build(data_config(tmp_path / "r"), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_fewer_than_five_captions(tmp_path):
    fl.make_coco_raw(str(tmp_path), captions_per_image=4)
    path = str(tmp_path / "annotations" / "captions_train2014.json")
    with pytest.raises(DataLayoutError, match="4 captions, data.captions_per_image=5") as err:
        coco.build(data_config(tmp_path), str(tmp_path / "out"))
    assert path in str(err.value) and "allow_fewer_captions" in str(err.value)
    train, _, _ = coco.load_captions_for_tokenizer(data_config(tmp_path, allow_fewer_captions=True))
    assert len(train) == 2 * 4


def test_not_a_captions_json(tmp_path):
    fl.make_coco_raw(str(tmp_path))
    path = tmp_path / "annotations" / "captions_train2014.json"
    path.write_text(json.dumps({"images": [{"id": 1}]}))
    with pytest.raises(DataLayoutError, match="not a COCO captions file") as err:
        coco.load_captions_for_tokenizer(data_config(tmp_path))
    assert str(path) in str(err.value)


def test_corrupt_image_error_or_skip(tmp_path):
    fake = fl.make_coco_attngan(str(tmp_path / "c"))
    bad = fake.images[fake.keys["test"][1]]
    with open(bad, "wb") as f:
        f.write(b"\x00" * 64)
    with pytest.raises(CorruptImageError) as err:
        coco.build(data_config(tmp_path / "c"), str(tmp_path / "out"))
    assert bad in str(err.value)
    report = coco.build(data_config(tmp_path / "c", skip_corrupt=True), str(tmp_path / "out"))
    assert report["splits"] == {"train": 2, "test": 1}
    assert [s["file"] for s in report["skipped"]] == [bad]


@pytest.mark.parametrize(
    "role, how",
    [
        ("train/filenames.pickle", "subprocess"),
        ("test/filenames.pickle", "exec"),
        ("captions.pickle", "os.system"),
    ],
)
def test_crafted_pickles_are_refused(tmp_path, role, how):
    root = tmp_path / "coco"
    fl.make_coco_attngan(str(root))
    marker = str(tmp_path / "PWNED")
    fl.dump(str(root / role), [fl.Evil(marker, how)], "py3")
    for call in (
        lambda: coco.build(data_config(root), str(tmp_path / "out")),
        lambda: coco.load_captions_for_tokenizer(data_config(root)),
    ):
        with pytest.raises(UnsafeFileError, match=str(root / role)):
            call()
    assert not os.path.exists(marker)
