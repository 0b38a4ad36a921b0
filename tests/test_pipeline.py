"""pipeline.write_config: the workdir's config.json guard."""

import json

import pytest

from configs import shapes
from mirrorgan_jax import checkpoints, pipeline


def test_write_config_refuses_another_model_and_accepts_keys_added_later(tmp_path):
    config = shapes.get_config("test")
    pipeline.write_config(config, str(tmp_path))
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert saved["model"]["ca_noise_scale"] == config.model.ca_noise_scale == 0.0

    # A config.json from before `model.ca_noise_scale` existed: absent means 1.0 (official).
    del saved["model"]["ca_noise_scale"]
    path.write_text(json.dumps(saved))
    mismatch = checkpoints.ConfigMismatchError
    with pytest.raises(mismatch, match=r"ca_noise_scale: saved 1.0, now 0.0"):
        pipeline.write_config(config, str(tmp_path))
    assert "ca_noise_scale" not in json.loads(path.read_text())["model"]  # left as it was
    config.model.ca_noise_scale = 1.0
    pipeline.write_config(config, str(tmp_path))

    config.model.gf_dim = 8
    with pytest.raises(mismatch, match=r"model.gf_dim: saved 4, now 8"):
        pipeline.write_config(config, str(tmp_path))
