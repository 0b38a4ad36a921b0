"""experiments/shapes_sweep, end to end on a tiny workdir: the pack (make_pack), its images
(render_images), and one step of two variants, the DCGAN reference and a one-stage MirrorGAN
without STREAM, each scored by the pack's classifier (sweep)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shapes
from experiments.shapes_sweep import make_pack, render_images, sweep
from mirrorgan_jax import checkpoints, hyperparameters, parallel, run
from mirrorgan_jax import workdir as wd
from mirrorgan_jax.evaluation import shapes_classifier
from mirrorgan_jax.models.layers import jit_init
from mirrorgan_jax.train import damsm, stream


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """A pack made from a `:test` workdir with prepared data, fresh DAMSM and STREAM states as
    finished stages, and an attribute classifier (what make_pack reads)."""
    root = tmp_path_factory.mktemp("sweep")
    workdir, pack_dir = str(root / "w"), str(root / "pack")
    config = shapes.get_config("test")
    run.run("prepare", config, workdir)
    nets, _ = wd.load_networks(config, workdir)
    mesh = parallel.make_mesh()
    states = {
        "damsm": damsm.init_state(
            nets, damsm.make_tx(hyperparameters.damsm(config), 1), jax.random.key(0)
        ),
        "stream": stream.init_state(
            nets, stream.make_tx(hyperparameters.stream(config)), jax.random.key(1)
        ),
    }
    for stage, state in states.items():
        directory = os.path.join(workdir, stage, "checkpoints")
        with checkpoints.Checkpointer(directory, async_save=False) as c:
            meta = {"model": wd.model_fingerprint(config, stage)}
            c.save(1, parallel.replicate(mesh, state), meta=meta)
    wd.write_config(config, workdir)  # as the training run that made those stages does
    classifier = shapes_classifier.AttributeClassifier(image_size=32)  # untrained: it only scores
    variables = jit_init(classifier.init, jax.random.key(2), jnp.zeros((1, 32, 32, 3)))
    os.makedirs(os.path.join(workdir, "eval"))
    shapes_classifier.save_classifier(
        os.path.join(workdir, "eval", "shapes_classifier.npz"), {"params": variables["params"]}
    )
    make_pack.main(workdir, pack_dir, n_train=16, n_test=8, preset="test")
    render_images.main(pack_dir, processes=1)  # no fork of a process that runs JAX
    return pack_dir


def test_pack_holds_what_a_sweep_reads(pack):
    with open(os.path.join(pack, "meta.json")) as f:
        meta = json.load(f)
    assert meta["n_train"] == 16 and meta["n_words"] > 2
    images = np.load(os.path.join(pack, "images.npy"))
    assert images.shape == (16, 64, 64, 3) and images.dtype == np.uint8
    with np.load(os.path.join(pack, "pack.npz")) as p:
        assert p["tokens"].shape[:2] == (16, 10) and p["test_tokens"].shape[0] == 8
        assert p["test_attributes"].shape == (8, 9)
    assert os.path.isfile(os.path.join(pack, "frozen.msgpack"))


@pytest.mark.parametrize(
    "name, overrides, dcgan",
    [("dcgan", [], 8), ("one_stage", ["model.branch_num=1", "train.lambda1=0.0"], 0)],
)
def test_one_step_and_scores(pack, tmp_path, name, overrides, dcgan):
    """With no time left after the first step, a variant evaluates once and stops."""
    sweep.main(pack, str(tmp_path), name, 0.0, False, overrides, dcgan=dcgan, preset="test")
    with open(tmp_path / f"{name}.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["what"] for r in rows] == ["config", "compiled", "eval"]
    scores = rows[-1]
    assert scores["step"] == 1 and 0.0 <= scores["colour"] <= 1.0 and "layout" in scores
    samples = np.load(tmp_path / f"{name}_samples_1.npy")
    assert samples.shape[0] == 8 and samples.dtype == np.uint8
