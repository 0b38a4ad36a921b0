"""`--mode=pretrain_damsm` on the CUB config (the fake CUB layout) from a torchvision Inception-v3
file (`damsm.trunk_weights`, converted): the image encoder's trunk is the file's and stays
frozen (`damsm.freeze_trunk` unset), the DAMSM losses fall, and a file that does not fit is
refused with the key and the config key named before anything is written."""

import json
import os

import jax
import numpy as np
import pytest

from configs import cub
from mirrorgan_jax import parallel, run
from mirrorgan_jax import workdir as wd
from mirrorgan_jax.torch_import import damsm as damsm_import
from mirrorgan_jax.torch_import.common import WeightMismatchError
from tests.data import fake_layouts as fl
from tests.parity_utils import random_state_dict

STEPS = 8


def _config(root: str, weights: str):
    c = cub.get_config()
    c.data.manual_dir = os.path.join(root, "birds")
    c.damsm.trunk_weights = weights
    # Batch 8: one image per fake device; the official input (299) and networks.
    c.damsm.update(batch_size=8, steps=STEPS, log_every=1, checkpoint_every=STEPS)
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("imagenet"))
    fl.make_cub(os.path.join(root, "birds"))
    sd = random_state_dict("inception_v3_keys.txt", 1, seed=3)  # torchvision's keys
    weights = os.path.join(root, "inception_v3.npz")
    np.savez(weights, **sd)
    config = _config(root, weights)
    workdir = os.path.join(root, "w")
    run.run("prepare", config, workdir)
    run.run("pretrain_damsm", config, workdir)
    return config, workdir, sd


def test_the_damsm_losses_fall(trained):
    _, workdir, _ = trained
    with open(os.path.join(workdir, "damsm", "metrics.jsonl")) as f:
        losses = [row["damsm/loss"] for row in map(json.loads, f) if "damsm/loss" in row]
    assert len(losses) == STEPS and np.all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses


def test_the_trunk_is_the_files_and_stays_frozen(trained):
    config, workdir, sd = trained
    nets, _ = wd.load_networks(config, workdir)
    state = wd.restore_damsm(config, workdir, nets, parallel.make_mesh())
    assert int(state.step) == STEPS
    want = damsm_import.inception_v3_trunk_variables(sd)
    got = jax.tree.leaves(state.params["image"]["trunk"])
    for a, b in zip(got, jax.tree.leaves(want["params"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    # The heads trained. The trunk's BatchNorm ran in train mode, as the official
    # `pretrain_DAMSM.py` runs CNN_ENCODER (`cnn_model.train()`), so its running statistics
    # moved although its parameters are frozen.
    fresh = nets.init_image_encoder(jax.random.key(0), trunk=want)
    kernel = state.params["image"]["emb_cnn_code"]["kernel"]
    assert not np.allclose(np.asarray(kernel), fresh["params"]["emb_cnn_code"]["kernel"])
    stats = state.batch_stats["trunk"]["Conv2d_1a_3x3"]["bn"]["mean"]
    assert not np.allclose(np.asarray(stats), want["batch_stats"]["Conv2d_1a_3x3"]["bn"]["mean"])


def test_a_file_that_does_not_fit_is_refused_with_the_key_named(trained, tmp_path):
    config, workdir, sd = trained
    broken = {k: v for k, v in sd.items() if k != "Mixed_6e.branch7x7dbl_3.bn.running_var"}
    path = str(tmp_path / "broken.npz")
    np.savez(path, **broken)
    config = _config(str(tmp_path), path)
    config.data.data_dir = wd.data_dir(config, workdir)  # the prepared CUB set
    with pytest.raises(WeightMismatchError, match=r"Mixed_6e\.branch7x7dbl_3\.bn\.running_var"):
        run.run("pretrain_damsm", config, str(tmp_path / "w"))
    checkpoints = tmp_path / "w" / "damsm" / "checkpoints"
    assert not checkpoints.exists() or not os.listdir(checkpoints)
    config.damsm.trunk_weights = str(tmp_path / "nowhere.pth")
    with pytest.raises(FileNotFoundError, match=r"damsm\.trunk_weights=.*nowhere\.pth"):
        run.run("pretrain_damsm", config, str(tmp_path / "w"))
