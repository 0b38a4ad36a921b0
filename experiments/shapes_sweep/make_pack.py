"""Builds the pack a GPU shapes sweep reads (run here, with the repo's venv; needs a workdir that
has finished pretrain_damsm, pretrain_stream and eval, e.g. the one `make run` leaves).

  python -m experiments.shapes_sweep.make_pack WORKDIR PACK_DIR [N_TRAIN [N_TEST [PRESET]]]

(from the repository root; PRESET: the workdir's `configs/shapes.py` preset, default none).
PACK_DIR gets: pack.npz (train captions tokenised [N, 10, T], test tokens/lengths/attributes),
frozen.msgpack (STEM + STREAM variables), shapes_classifier.npz, meta.json. No images: the
device renders them (render_images.py), so the pack stays a few MB.
"""

import json
import os
import shutil
import sys

import flax
import jax
import numpy as np

from configs import shapes as shapes_cfg
from mirrorgan_jax import parallel
from mirrorgan_jax import workdir as wd
from mirrorgan_jax.data import shapes


def main(
    workdir: str, out: str, n_train: int = 20000, n_test: int = 1000, preset: str = ""
) -> None:
    config = shapes_cfg.get_config(preset)
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)["data"]
    config.data.data_dir = saved["data_dir"]  # "" -> W/data (wd.data_dir)
    # Workdirs from before the geometry option were prepared in the "small" geometry.
    geometry = config.data.shapes.geometry = saved["shapes"].get("geometry", "small")
    nets, tok = wd.load_networks(config, workdir)
    seed, words = config.data.shapes.seed, config.data.words_num
    tokens = np.zeros((n_train, 10, words), np.int16)
    lengths = np.zeros((n_train, 10), np.int8)
    for i, captions in enumerate(shapes.split_captions("train", n_train, seed)):
        tokens[i], lengths[i] = tok.encode_batch(captions, words, None, long_caption="truncate")
    test_tokens = np.zeros((n_test, words), np.int32)
    test_lengths = np.zeros((n_test,), np.int32)
    for i, captions in enumerate(shapes.split_captions("test", n_test, seed)):
        # caption i % 10 of test example i
        t, n = tok.encode_batch([captions[i % 10]], words, None, long_caption="truncate")
        test_tokens[i], test_lengths[i] = t[0], n[0]
    attributes = [
        shapes.sample_scene(i, "test", seed, geometry).attributes() for i in range(n_test)
    ]
    os.makedirs(out, exist_ok=True)
    frozen = wd.restore_frozen(config, workdir, nets, parallel.make_mesh())
    state = jax.tree.map(np.asarray, flax.serialization.to_state_dict(frozen))
    with open(os.path.join(out, "frozen.msgpack"), "wb") as f:
        f.write(flax.serialization.msgpack_serialize(state))
    np.savez_compressed(
        os.path.join(out, "pack.npz"), tokens=tokens, lengths=lengths, test_tokens=test_tokens,
        test_lengths=test_lengths, test_attributes=np.stack(attributes),
    )  # fmt: skip
    shutil.copy(os.path.join(workdir, "eval", "shapes_classifier.npz"), out)
    with open(os.path.join(out, "meta.json"), "w") as f:
        meta = dict(n_words=tok.vocab_size, data_seed=seed, n_train=n_train, geometry=geometry)
        json.dump(meta, f)
    print(f"pack written to {out}: {n_train} train captions sets, {n_test} test captions")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:5]), *sys.argv[5:6])
