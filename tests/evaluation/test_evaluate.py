"""The IS/FID path of --mode=eval with a weights file (random weights in pytorch-fid's key
names): features accumulate, the cached reference statistics are used, numbers are finite."""

import os

import numpy as np
import pytest

from configs import shapes
from mirrorgan_jax import parallel
from mirrorgan_jax.evaluation import evaluate, fid
from tests.models.test_inception import fake_state_dict


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    d = tmp_path_factory.mktemp("incep")
    weights = str(d / "pt_inception.npz")
    np.savez(weights, **fake_state_dict(0))
    config = shapes.get_config("test")
    config.eval.inception_weights = weights
    workdir = str(d / "w")
    return evaluate.InceptionMetrics(config, workdir, parallel.make_mesh()), workdir


def test_is_and_fid_from_a_weights_file(metrics):
    m, workdir = metrics
    rs = np.random.RandomState(0)
    fake = rs.uniform(-1, 1, (4, 64, 64, 3)).astype(np.float32)
    m.update(fake, None, None)
    m.update(fake[::-1].copy(), None, None)
    pool, _ = m.apply(rs.uniform(-1, 1, (4, 64, 64, 3)).astype(np.float32))
    real = np.asarray(pool, np.float64)
    os.makedirs(os.path.join(workdir, "eval"))
    mu, sigma = fid.activation_statistics(np.concatenate([real, real[::-1] + 1e-3]))
    fid.save_statistics(os.path.join(workdir, "eval", "fid_reference_test.npz"), mu, sigma)
    out = m.result("test", evaluator=None)  # the cached reference: no data set needed
    assert np.isfinite(out["fid"]) and out["fid"] >= 0
    assert out["inception_score_mean"] >= 1.0 - 1e-6
    assert m.fake.count == 8
