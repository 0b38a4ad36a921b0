"""Renders the pack's shapes train images (64 px) into PACK_DIR/images.npy, on every core.

python launch/shapes_sweep/render_images.py PACK_DIR
"""

import json
import multiprocessing
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from mirrorgan_jax.data import shapes  # noqa: E402


def _render(args):
    index, seed = args
    return shapes.render_example(index, "train", seed, 64)["image"]


if __name__ == "__main__":
    pack = sys.argv[1]
    with open(os.path.join(pack, "meta.json")) as f:
        meta = json.load(f)
    jobs = [(i, meta["data_seed"]) for i in range(meta["n_train"])]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        images = np.stack(pool.map(_render, jobs, chunksize=256))  # [N, 64, 64, 3] uint8
    np.save(os.path.join(pack, "images.npy"), images)
    print("rendered", images.shape)
