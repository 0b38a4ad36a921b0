"""`--mode=all` on the tiny shapes config: every stage runs, the workdir layout is the contract,
a re-run skips finished stages, and sampling works from another device count."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import shapes
from mirrorgan_jax import run, sample
from mirrorgan_jax.train import damsm, stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    w = str(tmp_path_factory.mktemp("run"))
    config = shapes.get_config("test")
    run.run("all", config, w, sample_args=dict(text=["a big red circle on the left"]))
    return w


def test_workdir_layout(workdir):
    for path in (
        "config.json",
        "data/prepare_report.json",
        "eval/metrics.json",
        "samples/index.html",
        "samples/grid.png",
    ):
        assert os.path.isfile(os.path.join(workdir, path)), path
    for stage in ("damsm", "stream", "gan"):
        d = os.path.join(workdir, stage)
        assert os.listdir(os.path.join(d, "checkpoints")), stage
        rows = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
        assert rows and rows[-1]["step"] == 4, stage
        assert any(f.startswith("events.out.tfevents") for f in os.listdir(d)), stage
    gan_rows = [json.loads(x) for x in open(os.path.join(workdir, "gan", "metrics.jsonl"))]
    assert {"g/loss", "g/stream_ce", "g/kl", "d32/loss", "d64/loss", "g/grad_norm"} <= set(
        gan_rows[-1]
    )


def test_eval_metrics(workdir):
    m = json.load(open(os.path.join(workdir, "eval", "metrics.json")))
    assert m["checkpoint_step"] == 4 and m["wall_time_s"] > 0
    assert set(m["splits"]) == {"test", "test_novel"}
    for split, r in m["splits"].items():
        assert r["num_images"] == 16, split
        assert 0.0 <= r["r_precision"]["top1_mean"] <= 1.0
        assert "all_correct" in json.dumps(r), split


def test_rerun_skips_finished_stages(workdir):
    before = sorted(os.listdir(os.path.join(workdir, "gan", "checkpoints")))
    run.run("train", shapes.get_config("test"), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "gan", "checkpoints"))) == before


def test_rerun_reuses_the_pretraining_reports(workdir, monkeypatch):
    reports = {}
    for stage, key in (("damsm", "image_to_text_top1"), ("stream", "token_accuracy")):
        with open(os.path.join(workdir, stage, "eval.json")) as f:
            reports[stage] = json.load(f)
        assert reports[stage]["step"] == 4 and 0.0 <= reports[stage][key] <= 1.0, stage

    def evaluated_again(*args, **kwargs):
        raise AssertionError("a finished stage's test split was evaluated again")

    monkeypatch.setattr(damsm, "retrieval_accuracy", evaluated_again)
    monkeypatch.setattr(stream, "evaluate", evaluated_again)
    run.run("pretrain_damsm", shapes.get_config("test"), workdir)
    run.run("pretrain_stream", shapes.get_config("test"), workdir)
    for stage, report in reports.items():
        with open(os.path.join(workdir, stage, "eval.json")) as f:
            assert json.load(f) == report, stage


def test_sample_on_one_device_after_training_on_eight(workdir, tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a small green square at the top\n\na big blue star\n")
    out = tmp_path / "samples"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mirrorgan_jax.main",
            "--config=configs/shapes.py:test",
            f"--workdir={workdir}",
            "--mode=sample",
            f"--captions={captions}",
            "--text=a tiny flibbertigibbet",
            "--num_samples=2",
            f"--out={out}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "flibbertigibbet" in r.stderr  # the unknown word is reported by name
    files = set(os.listdir(out))
    for i in range(3):
        for k in range(2):
            assert f"caption{i:03d}_sample{k:02d}_stage1_64px.png" in files
            assert f"caption{i:03d}_sample{k:02d}_attention.png" in files
    html = (out / "index.html").read_text()
    assert "a big blue star" in html and "grid.png" in files


def test_sampling_input_errors(workdir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(sample.SamplingError, match="holds no captions"):
        sample.read_captions(str(empty), [])
    with pytest.raises(sample.SamplingError, match="empty caption"):
        sample.read_captions(None, ["a red circle", "   "])
    with pytest.raises(sample.SamplingError, match="no captions"):
        sample.read_captions(None, [])
    with pytest.raises(sample.SamplingError, match="no such file"):
        sample.read_captions(str(tmp_path / "missing.txt"), [])
    fresh = tmp_path / "fresh"
    os.makedirs(fresh)
    config = shapes.get_config("test")
    config.data.data_dir = os.path.join(workdir, "data")
    with pytest.raises(sample.SamplingError, match="train first"):
        sample.run(config, str(fresh), text=["a red circle"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _restore_numpy(path):
    import orbax.checkpoint as ocp

    ck = ocp.PyTreeCheckpointer()
    tree = ck.metadata(path).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ck.restore(path, restore_args=args)


def _losses_and_norms(path):
    """{(step, name): value} of the training metrics (no timings) in a metrics.jsonl."""
    out = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            for k, v in record.items():
                if "/" in k and isinstance(v, float):
                    out[(record["step"], k)] = v
    return out


def test_two_processes_train_like_one(workdir, tmp_path):
    """`--mode=train` as 2 processes x 4 CPU devices on 127.0.0.1 (jax.distributed, gloo), each
    feeding its half of every global batch, gives the fixture's in-process 8-device run: the
    same losses and norms at every logged step and the same final parameters."""
    two = tmp_path / "two"
    two.mkdir()
    for stage in ("damsm", "stream"):
        shutil.copytree(os.path.join(workdir, stage), two / stage)
    port = _free_port()
    procs = []
    for pid in range(2):
        env = {
            **os.environ,
            "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(pid),
        }
        cmd = [
            sys.executable,
            "-m",
            "mirrorgan_jax.main",
            "--config=configs/shapes.py:test",
            f"--workdir={two}",
            "--mode=train",
            f"--config.data.data_dir={os.path.join(workdir, 'data')}",
        ]
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    assert "2 processes" in logs[0]

    want = _losses_and_norms(os.path.join(workdir, "gan", "metrics.jsonl"))
    got = _losses_and_norms(two / "gan" / "metrics.jsonl")
    assert {s for s, _ in got} == {2, 4} and set(got) <= set(want)
    for key, value in got.items():
        np.testing.assert_allclose(value, want[key], rtol=1e-5, err_msg=str(key))
    ref = _restore_numpy(os.path.join(workdir, "gan", "checkpoints", "4", "state"))
    new = _restore_numpy(two / "gan" / "checkpoints" / "4" / "state")
    assert jax.tree.structure(ref) == jax.tree.structure(new)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(ref), jax.tree.leaves(new), strict=True
    ):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))
