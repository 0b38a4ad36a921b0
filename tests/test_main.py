"""The command line: describe prints official counts; a bad flag, config file, key or value is
refused at once, in one line naming it, with status 2 and nothing written."""

import json
import os
import subprocess
import sys

import pytest

from configs import cub, shapes
from mirrorgan_jax import configuration
from mirrorgan_jax.run import describe
from tests import cli

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


def test_describe_cub_gives_official_counts(tmp_path, capsys):
    rows = describe(cub.get_config(), str(tmp_path))
    got = {k.strip(): v for k, v in rows.items()}
    for name, count in CUB_COUNTS.items():
        assert got[name] == count, name
    saved = json.loads((tmp_path / "describe.json").read_text())
    assert saved["generator (GLAM + CA)"] == 7_105_392
    assert "7,105,392" in capsys.readouterr().out


def test_describe_from_the_command_line(tmp_path):
    r = cli.main(
        "--config=configs/coco.py", "--mode=describe", f"--workdir={tmp_path}", env=cli.ONE_DEVICE
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "13,853,408" in r.stdout and "160,774,274" in r.stdout
    assert json.loads((tmp_path / "describe.json").read_text())["discriminator 256"] == 160774274


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A workdir with a config.json and a checkpoint-like folder: refusals must not touch it."""
    w = tmp_path_factory.mktemp("refused")
    (w / "config.json").write_text(shapes.get_config("test").to_json())
    (w / "gan" / "checkpoints" / "4").mkdir(parents=True)
    (w / "gan" / "checkpoints" / "4" / "digest.json").write_text("{}")
    return w


# (command-line arguments after --config/--workdir, the line main must print)
BAD_COMMAND_LINES = {
    "unknown config key": (
        ["--mode=train", "--config.model.no_such=1"],
        "error: unknown config key (--config.model.no_such): The keys and their defaults are in "
        "configs/common.py",
    ),
    "misspelt config key": (
        ["--config.model.gf_dmi=8"],
        'error: unknown config key (--config.model.gf_dmi): Did you mean "gf_dim" instead of '
        '"gf_dmi"? The keys and their defaults are in configs/common.py',
    ),
    "unknown mode": (
        ["--mode=fly"],
        "error: bad flag value (--mode=fly): value should be one of <all|prepare|describe|"
        "import_torch|pretrain_damsm|pretrain_stream|train|eval|sample>",
    ),
    "value of the wrong type": (
        ["--config.train.steps=abc"],
        "error: bad flag value (--config.train.steps=abc): invalid literal for int() with base "
        "10: 'abc'",
    ),
    "negative step count": (
        ["--mode=train", "--config.train.steps=-5"],
        "error: bad config value (config.train.steps=-5): expected an integer >= 0",
    ),
    "checkpoint interval 0": (
        ["--mode=train", "--config.train.checkpoint_every=0"],
        "error: bad config value (config.train.checkpoint_every=0): expected an integer >= 1",
    ),
    "learning rate not a number": (
        ["--config.train.lr_g=nan"],
        "error: bad config value (config.train.lr_g=nan): expected a finite number > 0",
    ),
    "no sample drawn": (
        ["--mode=sample", "--num_samples=0"],
        "error: bad flag value (--num_samples=0): expected >= 1",
    ),
    "batch not divisible by the 8 devices": (
        ["--mode=train", "--config.train.batch_size=12"],
        "error: the global batch does not split over the 8 devices "
        "(config.train.batch_size=12): use a multiple of 8",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_COMMAND_LINES))
def test_a_bad_command_line_is_refused_in_one_line(case, workdir):
    args, line = BAD_COMMAND_LINES[case]
    config = "--config=configs/shapes.py:test"
    assert cli.refused([config, f"--workdir={workdir}", *args], workdir) == line


def test_config_file_errors_are_said_in_one_line(workdir):
    base = [f"--workdir={workdir}"]
    assert cli.refused([*base, "--config=configs/nope.py"], workdir) == (
        "error: config file not found (--config=configs/nope.py): give the path of a config "
        "file, e.g. --config=configs/shapes.py"
    )
    assert cli.refused([*base, "--config=configs/shapes.py:fast"], workdir) == (
        "error: the config file failed to load (--config=configs/shapes.py:fast): ValueError: "
        "configs/shapes.py: unknown preset 'fast'; "
        "expected '', 'shape_aware', 'long', 'quick' or 'test'"
    )
    assert cli.refused([*base, "--mode=train"], workdir) == (
        "error: missing flag (--config): pass --config=..., e.g. --config=configs/shapes.py"
    )


def test_verbose_adds_the_traceback(workdir):
    args = ["--config=configs/shapes.py:test", f"--workdir={workdir}", "--config.train.steps=-5"]
    r = cli.main(*args, "--verbose", timeout=60)
    assert r.returncode == 2 and "Traceback" in r.stderr and "ConfigError" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: bad config value")
    r = cli.main(*args, timeout=60, env={"MIRRORGAN_VERBOSE": "1"})
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_bad_config_values_name_the_key():
    def refused_value(key, value, match):
        c = shapes.get_config("test")
        section, name = key.split(".")
        with c.unlocked():
            c[section][name] = value
        with pytest.raises(configuration.ConfigError, match=match):
            configuration.validate(c)

    refused_value("model.word_attention_mask", "sometimes", r"word_attention_mask='sometimes'")
    refused_value("train.batch_size", 0, r"config.train.batch_size=0\): expected an integer >= 1")
    refused_value("model.ca_noise_scale", -0.5, r"model.ca_noise_scale=-0.5\): expected")
    refused_value("train.r1_gamma", -0.1, r"train.r1_gamma=-0.1\): expected a finite number >= 0")
    refused_value("model.discriminator_batchnorm", None, r"discriminator_batchnorm=None")
    refused_value("train.beta1", 1.0, r"train.beta1=1.0\): expected a finite number >= 0 and < 1")
    refused_value("damsm.lr_decay", 0.0, r"damsm.lr_decay=0.0\): expected .*> 0 and <= 1")
    refused_value("train.lambda1", float("inf"), r"train.lambda1=inf")
    refused_value("train.image_every", 0, r"train.image_every=0")
    refused_value("eval.r_precision_candidates", 1, r"r_precision_candidates=1")
    c = shapes.get_config("test")
    c.stream.steps = c.stream.epochs = 0
    with pytest.raises(configuration.ConfigError, match=r"nothing to train \(config.stream.steps"):
        configuration.validate(c)
    with pytest.raises(ValueError, match="preset"):
        shapes.get_config("fast")
    c = shapes.get_config("test")  # train.batch_size 8
    configuration.validate(c, "train", device_count=8, process_count=2)
    with pytest.raises(configuration.ConfigError, match=r"3 devices.*train.batch_size=8"):
        configuration.validate(c, "train", device_count=3)
    configuration.validate(c, "sample", device_count=3)  # sampling splits no batch
    with pytest.raises(configuration.ConfigError, match=r"--seed=-1"):
        configuration.validate(c, "sample", seed=-1)


_A_BUG = """
import sys
from absl import app
from mirrorgan_jax import main, run

def a_bug(*args, **kwargs):
    raise RuntimeError("a bug, not a refused input")

run.run = a_bug
sys.argv = ["main", "--config=configs/shapes.py:test", "--workdir={workdir}", "--mode=train"]
app.run(main.main, flags_parser=main._parse_flags)
"""


def test_a_bug_keeps_its_traceback_and_status_1(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", _A_BUG.format(workdir=tmp_path)],
        cwd=cli.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert r.returncode == 1, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert "Traceback" in r.stderr and lines[-1] == "RuntimeError: a bug, not a refused input"
    assert not any(line.startswith("error:") for line in lines)


def test_trunk_weights_need_the_inception_trunk_and_one_source():
    c = shapes.get_config("test")  # the tiny DAMSM trunk
    c.damsm.trunk_weights = "inception_v3.pth"
    with pytest.raises(configuration.ConfigError, match=r"damsm_backbone='tiny'.*'inception_v3'"):
        configuration.validate(c)
    c.model.damsm_backbone = "inception_v3"
    c.backbone_pretrain.update(steps=10, num_images=4)
    with pytest.raises(configuration.ConfigError, match="two sources give the DAMSM trunk"):
        configuration.validate(c)
    c = cub.get_config()
    c.damsm.trunk_weights = "inception_v3.pth"
    configuration.validate(c)
    line = cli.refused(
        ["--config=configs/cub.py", "--mode=describe", "--config.damsm.freeze_trunk=maybe"]
    )
    assert "freeze_trunk" in line
