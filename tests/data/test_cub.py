"""CUB builder: a tiny folder in the exact AttnGAN layout, prepared end to end and read back."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import cub as cub_config
from mirrorgan_jax.data import cub
from mirrorgan_jax.data.real_common import CorruptImageError, DataLayoutError
from mirrorgan_jax.safe_load import UnsafeFileError
from tests.data import fake_layouts as fl


def data_config(root, **overrides):
    c = cub_config.get_config().data
    c.manual_dir = str(root)
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def read_split(data_dir, split):
    ds = cub.Cub(data_dir=str(data_dir)).as_dataset(split=split, shuffle_files=False)
    return {ex["key"].decode(): ex for ex in tfds.as_numpy(ds)}


def official_crop(path, bbox):
    """The official bounding-box crop (`datasets.py get_imgs`), written out independently of the
    code under test."""
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = img.shape[:2]
    x, y, bw, bh = (int(v) for v in bbox)  # pandas .astype(int) truncates
    r = int(max(bw, bh) * 0.75)
    cx, cy = (2 * x + bw) // 2, (2 * y + bh) // 2
    return img[max(0, cy - r) : min(h, cy + r), max(0, cx - r) : min(w, cx + r)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("birds")
    fake = fl.make_cub(str(root))
    data_dir = tmp_path_factory.mktemp("prepared")
    report = cub.build(data_config(root), str(data_dir))
    return fake, data_dir, report, {s: read_split(data_dir, s) for s in ("train", "test")}


def test_report_counts_and_location(built):
    fake, data_dir, report, _ = built
    assert report["splits"] == {"train": 3, "test": 2}
    assert report["skipped"] == [] and report["num_skipped"] == 0 and not report["reused"]
    assert report["builder_dir"] == os.path.join(str(data_dir), "cub", "1.0.0")
    # self-contained after the swap out of the temporary build folder
    assert sorted(os.listdir(data_dir)) == ["cub"]
    ro = tfds.builder_from_directory(report["builder_dir"])
    assert ro.info.splits["test"].num_examples == 2


def test_images_are_cropped_by_the_official_rule(built):
    fake, _, _, splits = built
    shapes = set()
    for split, keys in fake.keys.items():
        for key in keys:
            expected = official_crop(fake.images[key], fake.bboxes[key])
            got = splits[split][key]["image"]
            np.testing.assert_array_equal(got, expected)  # PNG storage: lossless after the crop
            shapes.add(got.shape[:2])
    assert (21, 25) in shapes  # clipped at the border: no longer square
    assert (22, 21) in shapes  # 17.9 truncated to 17 first (r = 12, not 13)


def test_captions_keys_and_class_ids(built):
    fake, _, _, splits = built
    for split, keys in fake.keys.items():
        assert sorted(splits[split]) == sorted(keys)
        for key in keys:
            ex = splits[split][key]
            assert [c.decode() for c in ex["captions"]] == fake.captions[key]  # first 10 kept
            assert len(ex["captions"]) == 10
            assert ex["class_id"] == fake.class_ids[key]  # from class_info.pickle
            np.testing.assert_array_equal(ex["attributes"], -np.ones(9))


def test_existing_set_is_reused_unless_overwrite(built):
    fake, data_dir, _, _ = built
    report = cub.build(data_config("/nonexistent/birds"), str(data_dir))
    assert report["reused"] and report["splits"] == {"train": 3, "test": 2}


def test_tokenizer_captions_and_official_vocabulary(tmp_path):
    fake = fl.make_cub(str(tmp_path), style="py2")
    train, everything, wordtoix = cub.load_captions_for_tokenizer(data_config(tmp_path))
    assert train == [c for k in fake.keys["train"] for c in fake.captions[k]]
    assert everything == train + [c for k in fake.keys["test"] for c in fake.captions[k]]
    assert wordtoix["<end>"] == 0 and wordtoix["feathers"] > 0


def test_class_ids_from_numpy_class_info_and_from_the_key(tmp_path):
    options = cub.rc.BuildOptions()
    for style in ("py2", "py3"):
        root = tmp_path / f"np_{style}"
        fake = fl.make_cub(str(root), class_info="numpy", style=style)
        plan = cub.Cub.make_plan(str(root), options, check=False)
        assert [e.class_id for e in plan.splits["test"]] == [
            fake.class_ids[k] for k in fake.keys["test"]
        ]
    fl.make_cub(str(tmp_path / "derived"), class_info=None)
    plan = cub.Cub.make_plan(str(tmp_path / "derived"), options, check=False)
    assert [e.class_id for e in plan.splits["train"]] == [1, 1, 2]  # '002.Laysan_Albatross' -> 2
    assert [e.class_id for e in plan.splits["test"]] == [3, 3]


def test_captions_from_the_pickle_when_text_is_absent(tmp_path):
    for name in ("captions.pickle", "bird_captions.pickle"):
        root = tmp_path / name
        fake = fl.make_cub(str(root), pickle_name=name, text=False, style="py3")
        train, _, wordtoix = cub.load_captions_for_tokenizer(data_config(root))
        assert train == [c for k in fake.keys["train"] for c in fake.captions[k]]
        assert wordtoix is not None


# ---------------------------------------------------------------- bad input
def test_missing_manual_dir_and_missing_files_are_listed(tmp_path):
    with pytest.raises(DataLayoutError, match="(?s)not an existing folder.*CUB_200_2011/images"):
        cub.build(data_config(tmp_path / "absent"), str(tmp_path / "out"))
    fl.make_cub(str(tmp_path / "b"))
    os.remove(tmp_path / "b" / "CUB_200_2011" / "bounding_boxes.txt")
    os.remove(tmp_path / "b" / "test" / "filenames.pickle")
    with pytest.raises(DataLayoutError) as err:
        cub.build(data_config(tmp_path / "b"), str(tmp_path / "out"))
    assert "bounding_boxes.txt" in str(err.value) and "test/filenames.pickle" in str(err.value)
    assert not os.path.exists(tmp_path / "out" / "cub")


def test_too_few_captions(tmp_path):
    fake = fl.make_cub(str(tmp_path), captions_per_image=8, extra_captions=0)
    short = os.path.join(str(tmp_path), "text", fake.keys["train"][0] + ".txt")
    with pytest.raises(DataLayoutError, match="(?s)8 captions.*captions_per_image=10") as err:
        cub.build(data_config(tmp_path), str(tmp_path / "out"))
    assert short in str(err.value)
    train, _, _ = cub.load_captions_for_tokenizer(data_config(tmp_path, allow_fewer_captions=True))
    assert len(train) == 3 * 8


def test_missing_caption_and_image_files(tmp_path):
    fake = fl.make_cub(str(tmp_path))
    os.remove(fake.images[fake.keys["test"][1]])
    with pytest.raises(DataLayoutError, match="1 image files are missing") as err:
        cub.build(data_config(tmp_path), str(tmp_path / "out"))
    assert fake.images[fake.keys["test"][1]] in str(err.value)
    os.remove(tmp_path / "text" / (fake.keys["train"][2] + ".txt"))
    with pytest.raises(DataLayoutError, match="caption files of split 'train'"):
        cub.build(data_config(tmp_path), str(tmp_path / "out"))


@pytest.fixture
def corrupt_folder(tmp_path):
    fake = fl.make_cub(str(tmp_path / "birds"))
    garbage = fake.images[fake.keys["train"][1]]
    with open(garbage, "wb") as f:
        f.write(b"this is not an image")
    truncated = fake.images[fake.keys["test"][0]]
    with open(truncated, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])  # header fine, pixel data cut
    return fake, garbage, truncated


def test_corrupt_image_fails_before_writing(tmp_path, corrupt_folder):
    fake, garbage, _ = corrupt_folder
    with pytest.raises(CorruptImageError, match="skip_corrupt") as err:
        cub.build(data_config(tmp_path / "birds"), str(tmp_path / "out"))
    assert garbage in str(err.value)
    assert not os.path.exists(tmp_path / "out")  # validated before anything was written


def test_truncated_image_fails_and_keeps_earlier_data(tmp_path, corrupt_folder, built):
    fake, garbage, truncated = corrupt_folder
    _, data_dir, _, _ = built
    with open(garbage, "wb") as f:  # only the truncated one remains broken
        f.write(open(fake.images[fake.keys["train"][0]], "rb").read())
    before = sorted(os.listdir(os.path.join(data_dir, "cub", "1.0.0")))
    config = data_config(tmp_path / "birds", overwrite=True)
    with pytest.raises(CorruptImageError) as err:
        cub.build(config, str(data_dir))
    assert truncated in str(err.value)
    assert sorted(os.listdir(os.path.join(data_dir, "cub", "1.0.0"))) == before
    assert sorted(os.listdir(data_dir)) == ["cub"]  # the temporary build folder is gone
    assert len(read_split(data_dir, "train")) == 3


def test_skip_corrupt_skips_and_reports(tmp_path, corrupt_folder):
    fake, garbage, truncated = corrupt_folder
    report = cub.build(data_config(tmp_path / "birds", skip_corrupt=True), str(tmp_path / "out"))
    assert report["splits"] == {"train": 2, "test": 1} and report["num_skipped"] == 2
    assert sorted(s["file"] for s in report["skipped"]) == sorted([garbage, truncated])
    assert {s["key"] for s in report["skipped"]} == {fake.keys["train"][1], fake.keys["test"][0]}
    assert set(read_split(tmp_path / "out", "test")) == {fake.keys["test"][1]}


# ---------------------------------------------------------------- untrusted pickles
@pytest.mark.parametrize(
    "role, how",
    [
        ("train/filenames.pickle", "os.system"),
        ("test/class_info.pickle", "exec"),
        ("bird_captions.pickle", "subprocess"),
        ("captions.pickle", "os.system"),
    ],
)
def test_crafted_pickles_are_refused(tmp_path, role, how):
    root = tmp_path / "birds"
    name = "captions.pickle" if role == "captions.pickle" else "bird_captions.pickle"
    fl.make_cub(str(root), pickle_name=name)
    marker = str(tmp_path / "PWNED")
    payload = ["001.Black_footed_Albatross/x", fl.Evil(marker, how)]
    fl.dump(str(root / role), payload if "filenames" in role else fl.Evil(marker, how), "py3")
    refused = {
        "os.system": "posix.system",
        "exec": "builtins.exec",
        "subprocess": "subprocess.Popen",
    }
    for call in (
        lambda: cub.build(data_config(root), str(tmp_path / "out")),
        lambda: cub.load_captions_for_tokenizer(data_config(root)),
    ):
        with pytest.raises(UnsafeFileError) as err:
            call()
        assert str(root / role) in str(err.value) and refused[how] in str(err.value)
    assert not os.path.exists(marker)
    assert not os.path.exists(tmp_path / "out" / "cub")
