"""The command line: describe prints official counts; bad modes, keys, values fail clearly."""

import json
import os
import subprocess
import sys

import pytest

from configs import cub, shapes
from mirrorgan_jax import configuration
from mirrorgan_jax.run import describe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CUB_COUNTS = {
    "text_encoder (STEM)": 2_075_320,
    "generator (GLAM + CA)": 7_105_392,
    "conditioning augmentation": 102_800,
    "discriminator 64": 6_313_730,
    "discriminator 128": 19_424_002,
    "discriminator 256": 71_858_946,
    "caption CNN (STREAM encoder)": 58_668_864,
    "caption RNN (STREAM decoder)": 5_768_010,
    "image encoder (DAMSM)": 22_506_720,
}


def _main(*args, timeout=120):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XLA_FLAGS": ""}
    return subprocess.run(
        [sys.executable, "-m", "mirrorgan_jax.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_describe_cub_gives_official_counts(tmp_path, capsys):
    rows = describe(cub.get_config(), str(tmp_path))
    got = {k.strip(): v for k, v in rows.items()}
    for name, count in CUB_COUNTS.items():
        assert got[name] == count, name
    saved = json.loads((tmp_path / "describe.json").read_text())
    assert saved["generator (GLAM + CA)"] == 7_105_392
    assert "7,105,392" in capsys.readouterr().out


def test_describe_from_the_command_line(tmp_path):
    r = _main("--config=configs/coco.py", "--mode=describe", f"--workdir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "13,853,408" in r.stdout and "160,774,274" in r.stdout
    assert json.loads((tmp_path / "describe.json").read_text())["discriminator 256"] == 160774274


def test_unknown_mode_is_a_clear_error():
    r = _main("--config=configs/shapes.py:test", "--mode=fly", "--workdir=/tmp/x")
    assert r.returncode != 0
    assert "fly" in r.stderr and "describe" in r.stderr


def test_unknown_config_key_is_a_clear_error():
    r = _main("--config=configs/shapes.py:test", "--mode=describe", "--config.model.no_such=1")
    assert r.returncode != 0
    assert "no_such" in r.stderr


def test_bad_config_values_name_the_key():
    c = shapes.get_config("test")
    c.model.word_attention_mask = "sometimes"
    with pytest.raises(configuration.ConfigError, match="model.word_attention_mask"):
        configuration.validate(c)
    c = shapes.get_config("test")
    c.train.batch_size = 0
    with pytest.raises(configuration.ConfigError, match="train.batch_size"):
        configuration.validate(c)
    c = shapes.get_config("test")
    c.model.ca_noise_scale = -0.5
    with pytest.raises(configuration.ConfigError, match=r"model.ca_noise_scale=-0.5"):
        configuration.validate(c)
    c = shapes.get_config("test")
    c.train.r1_gamma = -0.1
    with pytest.raises(configuration.ConfigError, match=r"train.r1_gamma=-0.1: expected"):
        configuration.validate(c)
    c = shapes.get_config("test")
    c.model.discriminator_batchnorm = None
    with pytest.raises(configuration.ConfigError, match=r"model.discriminator_batchnorm=None"):
        configuration.validate(c)
    with pytest.raises(ValueError, match="preset"):
        shapes.get_config("fast")
