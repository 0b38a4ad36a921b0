"""COCO-2014 captions, from the raw release or from the AttnGAN folder layout
(`taoxugit/AttnGAN code/datasets.py TextDataset`).

    python -m mirrorgan_jax.main --config=configs/coco.py --mode=prepare \
        --config.data.manual_dir=/path/to/coco

Which layout is present is detected: the AttnGAN one (`{train,test}/filenames.pickle`) wins when
both are there, since its test split and vocabulary are the ones released weights were trained
with. Splits: train = train2014, test = val2014. Keys are the image file names without extension
(`COCO_train2014_000000000009`, as in AttnGAN). `class_id` is the image's index in its split
(the official code uses `arange`): the order of `filenames.pickle`, or the sorted keys of the raw
release. Raw release: the first 5 captions of each image in annotation-file order. JPEG files
are stored byte for byte; other formats are re-encoded losslessly as RGB PNG.
"""

from __future__ import annotations

import json
import os

from mirrorgan_jax.data import real_common as rc

RAW_LAYOUT = """\
  Raw COCO-2014 release:
    coco/                                  <- data.manual_dir
      train2014/COCO_train2014_<id>.jpg    82,783 images (split 'train')
      val2014/COCO_val2014_<id>.jpg        40,504 images (split 'test')
      annotations/captions_train2014.json
      annotations/captions_val2014.json
"""
ATTNGAN_LAYOUT = """\
  AttnGAN layout:
    coco/                                  <- data.manual_dir
      images/<key>.jpg                     (or the raw train2014/ and val2014/ folders)
      train/filenames.pickle, test/filenames.pickle   keys (82,783 / 40,470)
      text/<key>.txt                       captions, one per line (at least 5)
      captions.pickle                      optional (required without text/):
                                           [train_caps, test_caps, ixtoword, wordtoix]
"""
RAW_SPLITS = {"train": "train2014", "test": "val2014"}


def detect_layout(root: str) -> str:
    """'attngan' or 'raw'; an error describing both layouts if neither is there."""
    exists = lambda *p: os.path.isfile(os.path.join(root, *p))
    if exists("train", "filenames.pickle") or exists("test", "filenames.pickle"):
        return "attngan"
    if os.path.isdir(os.path.join(root, "annotations")):
        return "raw"
    rc.require(root, [], RAW_LAYOUT + ATTNGAN_LAYOUT)  # a clear error if the folder is absent
    raise rc.DataLayoutError(
        f"{root}: neither COCO layout found (no train/filenames.pickle, no annotations/). "
        f"Expected one of:\n{RAW_LAYOUT}{ATTNGAN_LAYOUT}"
    )


def read_annotations(path: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(key -> image file name, key -> captions in file order) from captions_*2014.json."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        images = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        captions: dict[int, list[str]] = {i: [] for i in images}
        for ann in data["annotations"]:
            captions[int(ann["image_id"])].append(str(ann["caption"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise rc.DataLayoutError(
            f"{path}: not a COCO captions file ({type(e).__name__}: {e}); expected "
            "{'images': [{'id', 'file_name'}], 'annotations': [{'image_id', 'caption'}]}"
        ) from None
    files = {os.path.splitext(name)[0]: name for name in images.values()}
    caps = {os.path.splitext(images[i])[0]: c for i, c in captions.items()}
    return files, caps


def _raw_plan(root: str, options: rc.BuildOptions) -> rc.Plan:
    rc.require(
        root,
        [f"{d}/" for d in RAW_SPLITS.values()]
        + [f"annotations/captions_{d}.json" for d in RAW_SPLITS.values()],
        RAW_LAYOUT,
    )
    splits = {}
    for split, folder in RAW_SPLITS.items():
        path = os.path.join(root, "annotations", f"captions_{folder}.json")
        files, caps = read_annotations(path)
        splits[split] = [
            rc.Example(
                key,
                os.path.join(root, folder, files[key]),
                rc.select_captions(rc.clean_captions(caps[key]), options, f"{path} ({key})"),
                index,
            )
            for index, key in enumerate(sorted(files))
        ]
    return rc.Plan("raw", splits)


def _image_path(root: str, key: str) -> str:
    path = os.path.join(root, "images", key + ".jpg")
    if os.path.isdir(os.path.join(root, "images")):
        return path
    for folder in RAW_SPLITS.values():  # AttnGAN metadata next to the raw image folders
        if key.startswith(f"COCO_{folder}_"):
            return os.path.join(root, folder, key + ".jpg")
    return path


def _attngan_plan(root: str, options: rc.BuildOptions) -> rc.Plan:
    caps_path = os.path.join(root, "captions.pickle")
    has_pickle = os.path.isfile(caps_path)
    required = ["train/filenames.pickle", "test/filenames.pickle"] + (
        [] if has_pickle else ["text/"]
    )
    rc.require(root, required, ATTNGAN_LAYOUT)
    caps = rc.read_captions_pickle(caps_path) if has_pickle else None
    text_dir = os.path.join(root, "text")
    splits, invalid_utf8 = {}, []
    for split in rc.SPLITS:
        keys = rc.read_filenames(os.path.join(root, split, "filenames.pickle"))
        if os.path.isdir(text_dir):
            files = [os.path.join(text_dir, k + ".txt") for k in keys]
            rc.require_files(files, f"caption files of split {split!r}")
            captions = [rc.read_caption_file(p, options, invalid_utf8) for p in files]
        else:
            captions = rc.captions_from_pickle(caps, split, keys, options)
        splits[split] = [
            rc.Example(k, _image_path(root, k), c, i)
            for i, (k, c) in enumerate(zip(keys, captions, strict=True))
        ]
    return rc.Plan("attngan", splits, caps.wordtoix if caps else None, invalid_utf8=invalid_utf8)


class Coco(rc.RealDataBuilder):
    """COCO-2014 captions (raw release or AttnGAN layout; nothing is downloaded)."""

    DESCRIPTION = "COCO-2014 images with 5 captions each (train2014 / val2014)."
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point data.manual_dir at a folder in one of these layouts:\n" + RAW_LAYOUT + ATTNGAN_LAYOUT
    )

    @classmethod
    def make_plan(cls, manual_dir: str, options: rc.BuildOptions, check: bool = True) -> rc.Plan:
        layout = detect_layout(manual_dir)
        plan = (_attngan_plan if layout == "attngan" else _raw_plan)(manual_dir, options)
        if check:
            rc.check_images(plan, options)
        return plan

    def encode_image(self, example: rc.Example) -> bytes:
        image, fmt, mode = rc.decode_rgb(example.image_path)
        if fmt == "JPEG" and mode in ("RGB", "L"):
            with open(example.image_path, "rb") as f:
                return f.read()
        return rc.png_bytes(image)


# The interface `data/prepare.py` uses (see `real_common.RealDataBuilder`).
build = Coco.build
load_captions_for_tokenizer = Coco.load_captions_for_tokenizer
