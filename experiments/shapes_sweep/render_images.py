"""Renders the pack's shapes train images (64 px) into PACK_DIR/images.npy, on every core.

python -m experiments.shapes_sweep.render_images PACK_DIR   (from the repository root)
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

import numpy as np

from mirrorgan_jax.data import shapes


def _render(args):
    index, seed, geometry = args
    return shapes.render_example(index, "train", seed, 64, geometry)["image"]


def main(pack: str, processes: int | None = None) -> None:
    """processes: worker processes (default one per core; 1 renders in this process)."""
    with open(os.path.join(pack, "meta.json")) as f:
        meta = json.load(f)
    geometry = meta.get("geometry", "small")  # packs made before the option: the old geometry
    jobs = [(i, meta["data_seed"], geometry) for i in range(meta["n_train"])]
    if processes == 1:
        images = np.stack([_render(job) for job in jobs])  # [N, 64, 64, 3] uint8
    else:
        with multiprocessing.Pool(processes or os.cpu_count()) as pool:
            images = np.stack(pool.map(_render, jobs, chunksize=256))
    np.save(os.path.join(pack, "images.npy"), images)
    print("rendered", images.shape)


if __name__ == "__main__":
    main(sys.argv[1])
