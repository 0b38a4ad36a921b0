"""CUB-200-2011 with the Reed et al. captions, in the AttnGAN/MirrorGAN folder layout
(`qiaott/MirrorGAN datasets.py TextDataset`).

    python -m mirrorgan_jax.main --config=configs/cub.py --mode=prepare \
        --config.data.manual_dir=/path/to/birds

Images are stored already cropped with the official bounding-box rule (`crop_box`), as PNG so
the stored pixels equal what the official loader sees after its crop. `class_id` comes from
`{train,test}/class_info.pickle` when present, else from the number of the key's class folder
(`002.Laysan_Albatross/...` -> 2, the 1-based CUB class number). Only equality of ids matters
downstream (DAMSM losses mask same-class captions; R-precision draws captions of other classes).
"""

from __future__ import annotations

import os
import re

from mirrorgan_jax.data import real_common as rc

LAYOUT = """\
  birds/                                   <- data.manual_dir
    CUB_200_2011/images/<key>.jpg          11,788 images, <key> e.g.
                                           002.Laysan_Albatross/Laysan_Albatross_0002_1027
    CUB_200_2011/images.txt                '<image id> <key>.jpg' per line
    CUB_200_2011/bounding_boxes.txt        '<image id> <x> <y> <width> <height>' per line
    train/filenames.pickle                 list of the 8,855 train keys
    test/filenames.pickle                  list of the 2,933 test keys
    text/<key>.txt                         10 captions per image, one per line (empty lines skipped)
    train/class_info.pickle, test/class_info.pickle        optional: class id per image
    bird_captions.pickle or captions.pickle                optional (required without text/):
                                           [train_caps, test_caps, ixtoword, wordtoix]
"""
CAPTION_PICKLES = ("bird_captions.pickle", "captions.pickle")


def crop_box(width: int, height: int, bbox: tuple[int, int, int, int]) -> tuple[int, ...]:
    """The official crop (`get_imgs`): square of side 2r, r = int(max(w, h) * 0.75), centred
    on the bbox, clipped at the image borders. Returns (x1, y1, x2, y2) for `PIL.Image.crop`."""
    x, y, w, h = bbox
    r = int(max(w, h) * 0.75)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)


def _read_rows(path: str, columns: int) -> dict[int, list[str]]:
    rows = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != columns or not parts[0].isdigit():
                raise rc.DataLayoutError(f"{path}:{n}: expected {columns} fields, got {line!r}")
            rows[int(parts[0])] = parts[1:]
    return rows


def read_bboxes(root: str) -> dict[str, tuple[int, int, int, int]]:
    """key -> (x, y, w, h) from images.txt + bounding_boxes.txt (truncated to int, as official)."""
    images_txt = os.path.join(root, "CUB_200_2011", "images.txt")
    boxes_txt = os.path.join(root, "CUB_200_2011", "bounding_boxes.txt")
    names, boxes = _read_rows(images_txt, 2), _read_rows(boxes_txt, 5)
    out = {}
    for image_id, (name,) in names.items():
        if image_id not in boxes:
            raise rc.DataLayoutError(f"{boxes_txt}: no box for image id {image_id} ({name})")
        try:
            box = tuple(int(float(v)) for v in boxes[image_id])
        except ValueError:
            raise rc.DataLayoutError(f"{boxes_txt}: bad box for image id {image_id}") from None
        out[os.path.splitext(name)[0]] = box
    return out


def class_from_key(key: str, split: str) -> int:
    found = re.match(r"(\d+)\.", key.split("/")[0])
    if not found:
        raise rc.DataLayoutError(
            f"key {key!r}: cannot derive a class id (expected '<number>.<class name>/<image>'); "
            f"supply {split}/class_info.pickle"
        )
    return int(found.group(1))


class Cub(rc.RealDataBuilder):
    """CUB-200-2011 + Reed captions from the AttnGAN `birds/` folder (nothing is downloaded)."""

    DESCRIPTION = "CUB-200-2011 birds, bbox-cropped, with 10 Reed et al. captions per image."
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point data.manual_dir at the AttnGAN/MirrorGAN `birds` folder (metadata from the "
        "AttnGAN release, images from CUB_200_2011.tgz):\n" + LAYOUT
    )

    @classmethod
    def make_plan(cls, manual_dir: str, options: rc.BuildOptions, check: bool = True) -> rc.Plan:
        caps_path = next(
            (os.path.join(manual_dir, p) for p in CAPTION_PICKLES
             if os.path.isfile(os.path.join(manual_dir, p))),
            None,
        )  # fmt: skip
        text_dir = os.path.join(manual_dir, "text")
        required = ["train/filenames.pickle", "test/filenames.pickle"]
        if check:
            required += [
                "CUB_200_2011/images/", "CUB_200_2011/images.txt", "CUB_200_2011/bounding_boxes.txt"
            ]  # fmt: skip
        if caps_path is None:
            required.append("text/")
        rc.require(manual_dir, required, LAYOUT)
        caps = rc.read_captions_pickle(caps_path) if caps_path else None
        bboxes = read_bboxes(manual_dir) if check else {}
        use_text = os.path.isdir(text_dir)

        splits, invalid_utf8 = {}, []
        for split in rc.SPLITS:
            keys = rc.read_filenames(os.path.join(manual_dir, split, "filenames.pickle"))
            info = os.path.join(manual_dir, split, "class_info.pickle")
            if os.path.isfile(info):
                class_ids = rc.read_class_info(info, len(keys))
            else:
                class_ids = [class_from_key(k, split) for k in keys]
            if use_text:
                files = [os.path.join(text_dir, k + ".txt") for k in keys]
                rc.require_files(files, f"caption files of split {split!r}")
                captions = [rc.read_caption_file(p, options, invalid_utf8) for p in files]
            else:
                captions = rc.captions_from_pickle(caps, split, keys, options)
            if check:
                unknown = [k for k in keys if k not in bboxes]
                if unknown:
                    raise rc.DataLayoutError(
                        f"{split}/filenames.pickle lists keys that CUB_200_2011/images.txt lacks, "
                        f"e.g. {unknown[:5]}"
                    )
            image_dir = os.path.join(manual_dir, "CUB_200_2011", "images")
            splits[split] = [
                rc.Example(k, os.path.join(image_dir, k + ".jpg"), c, i, bboxes.get(k))
                for k, c, i in zip(keys, captions, class_ids, strict=True)
            ]
        plan = rc.Plan(
            "attngan", splits, caps.wordtoix if caps else None, invalid_utf8=invalid_utf8
        )
        if check:
            rc.check_images(plan, options)
        return plan

    def encode_image(self, example: rc.Example) -> bytes:
        image, _, _ = rc.decode_rgb(example.image_path)
        box = crop_box(image.width, image.height, example.bbox)
        if box[2] <= box[0] or box[3] <= box[1]:
            raise rc.DataLayoutError(
                f"{example.image_path}: bounding box {example.bbox} lies outside the "
                f"{image.width}x{image.height} image"
            )
        return rc.png_bytes(image.crop(box))


# The interface `data/prepare.py` uses (see `real_common.RealDataBuilder`).
build = Cub.build
load_captions_for_tokenizer = Cub.load_captions_for_tokenizer
