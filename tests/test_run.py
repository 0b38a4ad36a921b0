"""`--mode=all` on the tiny shapes config: every stage runs, the workdir layout is the contract,
a re-run skips finished stages, sampling works from the workdir alone and from another device
count, and every bad input or damaged file met by a run over that workdir is refused at once in
one line, leaving the workdir as it was (the command line's own refusals: test_main.py)."""

import contextlib
import json
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import shapes
from mirrorgan_jax import run, sample
from mirrorgan_jax.train import damsm, stream
from tests import cli, test_checkpoints

ROOT = cli.ROOT
CONFIG = "--config=configs/shapes.py:test"


def _data(workdir) -> str:
    """The prepared data of the fixture's run, kept outside its workdir."""
    return os.path.join(os.path.dirname(workdir), "data")


def _config(workdir):
    config = shapes.get_config("test")
    config.data.data_dir = _data(workdir)
    return config


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def run_log():
    """The messages the fixture's run logged (INFO and above)."""
    return []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, run_log):
    w = str(tmp_path_factory.mktemp("run") / "w")
    handler, root = _Messages(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        run.run("all", _config(w), w, sample_args=dict(text=["a big red circle on the left"]))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    run_log.extend(handler.messages)
    return w


def test_workdir_layout(workdir):
    for path in (
        "config.json",
        "tokenizer/tokenizer.json",
        "gan/captions.txt",
        "eval/metrics.json",
        "samples/index.html",
        "samples/grid.png",
    ):
        assert os.path.isfile(os.path.join(workdir, path)), path
    assert os.path.isfile(os.path.join(_data(workdir), "prepare_report.json"))
    assert not os.path.exists(os.path.join(workdir, "data"))
    for stage in ("damsm", "stream", "gan"):
        for step in ("2", "4"):
            assert os.path.isfile(os.path.join(workdir, stage, "checkpoints", step, "digest.json"))
    for stage in ("damsm", "stream", "gan"):
        d = os.path.join(workdir, stage)
        assert os.listdir(os.path.join(d, "checkpoints")), stage
        rows = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
        assert rows and rows[-1]["step"] == 4, stage
        # Each stage's start-up, once, before its first step: counted from its own start here
        # (in-process); `main` counts the first stage's from the process start.
        startup = [r for r in rows if "startup_s" in r]
        assert [r["step"] for r in startup] == [0], stage
        assert startup[0]["startup_s"] >= startup[0]["startup_compile_s"] > 0, stage
        assert any(f.startswith("events.out.tfevents") for f in os.listdir(d)), stage
    gan_rows = [json.loads(x) for x in open(os.path.join(workdir, "gan", "metrics.jsonl"))]
    assert {"g/loss", "g/stream_ce", "g/kl", "d32/loss", "d64/loss", "g/grad_norm"} <= set(
        gan_rows[-1]
    )


def test_eval_metrics(workdir, run_log):
    m = json.load(open(os.path.join(workdir, "eval", "metrics.json")))
    # progress: the first batch of each split, then a line every few seconds
    assert any(x.startswith("eval test: ") and x.endswith(" of 16 images") for x in run_log)
    assert m["checkpoint_step"] == 4 and m["wall_time_s"] > 0
    assert set(m["splits"]) == {"test", "test_novel"}
    for split, r in m["splits"].items():
        assert r["num_images"] == 16, split
        assert 0.0 <= r["r_precision"]["top1_mean"] <= 1.0
        assert "all_correct" in json.dumps(r), split


def test_rerun_skips_finished_stages(workdir):
    before = sorted(os.listdir(os.path.join(workdir, "gan", "checkpoints")))
    run.run("train", _config(workdir), workdir)
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
    run.run("pretrain_damsm", _config(workdir), workdir)
    run.run("pretrain_stream", _config(workdir), workdir)
    for stage, report in reports.items():
        with open(os.path.join(workdir, stage, "eval.json")) as f:
            assert json.load(f) == report, stage


@contextlib.contextmanager
def _read_only(directory):
    """Every folder and file under `directory` without write permission, while inside. (root
    writes anyway: the tests' digest of the workdir is what proves nothing was written.)"""
    paths = [os.path.join(r, n) for r, dirs, files in os.walk(directory) for n in dirs + files]
    paths.append(str(directory))
    modes = {p: os.stat(p).st_mode for p in paths}
    write = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for p, mode in modes.items():
        os.chmod(p, mode & ~write)
    try:
        yield
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)


def test_sample_on_one_device_from_the_workdir_alone(workdir, tmp_path):
    """Trained on 8 devices, sampled on 1 with only --config and --workdir (the data is
    elsewhere) from a read-only workdir: a damaged newest generator step falls back to the one
    before with a warning, an unknown word and a long caption are reported, progress shows, and
    nothing in the workdir changes (a save in flight of a training run is left alone)."""
    w = shutil.copytree(workdir, tmp_path / "w")
    newest = w / "gan" / "checkpoints" / "4" / "state"
    data_file = max((p for p in newest.rglob("*") if p.parent.name == "d"), key=os.path.getsize)
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    (w / "gan" / "checkpoints" / "9.orbax-checkpoint-tmp-123").mkdir()
    before = cli.digest(w)
    captions = tmp_path / "captions.txt"
    captions.write_text("a small green square at the top\n\na big blue star\n")
    long_caption = " ".join(["a big red circle"] * 60)  # 240 tokens
    out = tmp_path / "samples"
    with _read_only(w):
        r = cli.main(
            CONFIG,
            f"--workdir={w}",
            "--mode=sample",
            f"--captions={captions}",
            "--text=a tiny flibbertigibbet",
            f"--text={long_caption}",
            "--num_samples=2",
            f"--out={out}",
            timeout=300,
            env=cli.ONE_DEVICE,
        )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"checkpoint step 4 in {w}/gan/checkpoints is skipped" in r.stderr
    assert "(generator step 2)" in r.stderr
    assert "flibbertigibbet" in r.stderr  # the unknown word is reported by name
    assert "caption 4 'a big red circle a big red circle" in r.stderr
    assert "has 240 tokens: the last 222 are dropped (data.words_num=18)" in r.stderr
    assert "sample: 8 of 8 images" in r.stderr
    assert (
        cli.digest(w) == before
        and (w / "gan" / "checkpoints" / "9.orbax-checkpoint-tmp-123").is_dir()
    )
    files = set(os.listdir(out))
    for i in range(4):
        for k in range(2):
            assert f"caption{i:03d}_sample{k:02d}_stage1_64px.png" in files
            assert f"caption{i:03d}_sample{k:02d}_attention.png" in files
    html = (out / "index.html").read_text()
    assert "a big blue star" in html and "grid.png" in files


@pytest.mark.parametrize("how", ["no_metadata", "overwritten"])  # truncated: the test above
def test_sampling_falls_back_from_a_damaged_newest_step(how, workdir, tmp_path):
    """Its _METADATA deleted, or 4 KB of an array file overwritten in place (the same size):
    the newest generator step is skipped with a warning naming it, the one before is used, and
    nothing in the workdir changes."""
    w = shutil.copytree(workdir, tmp_path / "w")
    test_checkpoints.damage(str(w / "gan" / "checkpoints" / "4"), how)
    before = cli.digest(w)
    r = cli.main(
        CONFIG,
        f"--workdir={w}",
        "--mode=sample",
        "--text=a big red circle",
        "--num_samples=1",
        f"--out={tmp_path / 'out'}",
        timeout=120,
        env=cli.ONE_DEVICE,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    warned = [x for x in r.stderr.splitlines() if "is skipped" in x]
    assert len(warned) == 1 and f"checkpoint step 4 in {w}/gan/checkpoints" in warned[0], warned
    assert "(generator step 2)" in r.stderr
    assert cli.digest(w) == before


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
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("a red circle\na caf\xe9 square\n".encode("latin-1"))
    with pytest.raises(sample.SamplingError, match=r"not UTF-8 text .*byte 18 \(line 2\)"):
        sample.read_captions(str(latin1), [])
    fresh = tmp_path / "fresh"
    os.makedirs(fresh)
    with pytest.raises(sample.SamplingError, match="train first"):
        sample.run(_config(workdir), str(fresh), text=["a red circle"])


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
        env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the default: W/jax_cache
        cmd = [
            sys.executable,
            "-m",
            "mirrorgan_jax.main",
            "--config=configs/shapes.py:test",
            f"--workdir={two}",
            "--mode=train",
            f"--config.data.data_dir={_data(workdir)}",
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

    # `main` counts the start-up from the process start (imports included) and keeps what it
    # compiled in W/jax_cache.
    rows = [json.loads(x) for x in open(two / "gan" / "metrics.jsonl")]
    startup = [r for r in rows if "startup_s" in r]
    assert [r["step"] for r in startup] == [0]
    assert startup[0]["startup_s"] > startup[0]["startup_before_stage_s"] > 0
    assert os.listdir(two / "jax_cache")

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
        # The two processes sum each gradient over the devices in another order. Where the
        # per-device terms nearly cancel, the sum keeps few exact digits, and Adam's moments
        # carry that over: such elements are held to a fraction of their leaf's scale.
        scale = float(np.max(np.abs(a))) if np.size(a) else 0.0
        np.testing.assert_allclose(
            b, a, rtol=1e-4, atol=max(1e-5, 1e-3 * scale), err_msg=jax.tree_util.keystr(path)
        )


# ---------------------------------------------------------------------------------- refusals


def _largest_data_file(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=os.path.getsize)


def _truncate(path, size=None):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2 if size is None else size)


class _Evil:
    """Unpickling it runs os.system: the restricted loader must refuse it, never call it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _another_width_in_config_json(workdir, tmp_path):
    w = workdir
    return (
        w,
        ["--mode=train", "--config.model.gf_dim=8"],
        (
            f"error: the workdir was written by a run with a different model config "
            f"({w}/config.json): model.gf_dim: saved 4, now 8. Use another --workdir, or the "
            "config it was written with"
        ),
    )


def _another_width_without_config_json(workdir, tmp_path):
    w = shutil.copytree(workdir, tmp_path / "w")
    os.remove(w / "config.json")
    return (
        w,
        ["--mode=train", "--config.model.gf_dim=24"],
        (
            f"error: checkpoint written for a different model config ({w}/gan/checkpoints step 4): "
            "model.gf_dim: checkpoint 4, current 24. Use another workdir, or the config it was "
            "written with"
        ),
    )


def _broken_config_json(workdir, tmp_path):
    w = shutil.copytree(workdir, tmp_path / "w")
    broken = '{"model": {"gf_dim": 4,'
    (w / "config.json").write_text(broken)
    with pytest.raises(json.JSONDecodeError) as decoding:
        json.loads(broken)
    return (
        w,
        ["--mode=sample", "--text=a red circle"],
        (
            f"error: unreadable config.json ({w}/config.json): {decoding.value}; restore it from "
            "a copy, or move it away (the checkpoints still check the model config on their own)"
        ),
    )


def _a_batch_the_devices_do_not_split(workdir, tmp_path):
    # Before, this restored the checkpoint, failed in shard_batch and then hung for good.
    return (
        workdir,
        [
            "--mode=train",
            "--config.train.batch_size=12",
            f"--config.data.data_dir={_data(workdir)}",
        ],
        (
            "error: the global batch does not split over the 8 devices "
            "(config.train.batch_size=12): use a multiple of 8"
        ),
    )


def _no_generator_checkpoint(workdir, tmp_path):
    w = shutil.copytree(workdir, tmp_path / "w")
    shutil.rmtree(w / "gan" / "checkpoints")
    (w / "gan" / "checkpoints").mkdir()
    return (
        w,
        ["--mode=sample", "--text=a red circle"],
        (
            f"error: no generator checkpoint ({w}/gan/checkpoints): run --mode=train (or "
            "--mode=import_torch) first"
        ),
    )


def _every_generator_step_damaged(workdir, tmp_path):
    w = shutil.copytree(workdir, tmp_path / "w")
    for step in ("2", "4"):
        _truncate(_largest_data_file(w / "gan" / "checkpoints" / step / "state"))
    return (
        w,
        ["--mode=sample", "--text=a red circle"],
        f"error: no usable checkpoint ({w}/gan/checkpoints): every step is damaged (step 2: ...",
    )


def _caption_without_a_known_piece(workdir, tmp_path):
    return (
        workdir,
        ["--mode=sample", "--text=ŧŧŧ", f"--out={tmp_path / 'out'}"],
        (
            "error: caption 1 has no word or piece the tokenizer knows ('ŧŧŧ'): write it with "
            "words of the training captions"
        ),
    )


def _truncated_record_file(workdir, tmp_path):
    data = shutil.copytree(_data(workdir), tmp_path / "data")
    shard = data / "shapes" / "1.0.0" / "shapes-test.tfrecord-00000-of-00001"
    _truncate(shard, 30000)
    return (
        workdir,
        ["--mode=eval", f"--config.data.data_dir={data}"],
        f"error: a prepared data file is damaged ({shard}): truncated record at ...",
    )


def _weight_file_that_runs_code(workdir, tmp_path):
    w = tmp_path / "fresh"
    w.mkdir()
    marker, evil = tmp_path / "ran", tmp_path / "netG.pth"
    evil.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    return (
        w,
        ["--mode=import_torch", f"--config.weights.generator={evil}", "--config.model.n_words=40"],
        (
            f"error: refused to load a file that could run code ({evil}): it needs "
            "'posix.system', which is not on the allowlist of plain data types; nothing from the "
            "file was used. Use a file of plain arrays (.npz) or data"
        ),
    )


REFUSALS = {
    "another model width in config.json": _another_width_in_config_json,
    "another model width, config.json gone": _another_width_without_config_json,
    "a broken config.json": _broken_config_json,
    "a batch the 8 devices do not split": _a_batch_the_devices_do_not_split,
    "no generator checkpoint": _no_generator_checkpoint,
    "every generator step damaged": _every_generator_step_damaged,
    "a caption without a known piece": _caption_without_a_known_piece,
    "a truncated record file": _truncated_record_file,
    "a weight file that runs code": _weight_file_that_runs_code,
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_run_over_a_workdir_refuses_bad_input_in_one_line(case, workdir, tmp_path):
    """The expected line, or its beginning where it ends in '...'."""
    w, args, line = REFUSALS[case](workdir, tmp_path)
    got = cli.refused([CONFIG, f"--workdir={w}", *args], w)
    if line.endswith("..."):
        assert got.startswith(line[:-3]), got
    else:
        assert got == line
    assert "pretrain_gan" not in got  # not a mode
    assert not (tmp_path / "ran").exists()


def test_a_failure_inside_the_training_loop_ends_the_process(workdir, tmp_path):
    """A damaged record file met by the training loop, after the checkpoint was restored and the
    input pipeline started: one line naming the file, and the process ends (its tf.data
    iterator and Orbax threads closed; before, it hung in the iterator's destructor)."""
    w = shutil.copytree(workdir, tmp_path / "w")
    data = shutil.copytree(_data(workdir), tmp_path / "data")
    shard = data / "shapes" / "1.0.0" / "shapes-train.tfrecord-00000-of-00001"
    _truncate(shard)
    args = [f"--config.data.data_dir={data}", "--config.train.steps=6"]
    r = cli.main(CONFIG, f"--workdir={w}", "--mode=train", *args, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-3000:]
    assert "gan: resumed from step 4" in r.stderr and "Traceback" not in r.stderr
    assert lines[-1].startswith(f"error: a prepared data file is damaged ({shard}): "), lines[-1]


def test_sampling_while_a_run_trains_in_the_workdir_then_sigterm(workdir, tmp_path):
    """A run goes on training (saving every 3 steps, keeping two) while samples are drawn from
    its workdir: both succeed and the sampler never removes anything of the trainer's. Then
    SIGTERM: the run saves the step it is at and ends with 143, naming that step."""
    w = shutil.copytree(workdir, tmp_path / "w")
    checkpoints = w / "gan" / "checkpoints"
    trainer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mirrorgan_jax.main",
            CONFIG,
            f"--workdir={w}",
            "--mode=train",
            f"--config.data.data_dir={_data(workdir)}",
            "--config.train.steps=100000",
            "--config.train.checkpoint_every=3",
            "--config.train.keep_checkpoints=2",
            "--config.train.image_every=100000",
        ],
        cwd=ROOT,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    steps = []
    try:
        deadline = time.time() + 300
        while not (checkpoints / "6").exists():
            assert trainer.poll() is None, "the trainer ended early"
            assert time.time() < deadline, "the trainer saved no step"
            time.sleep(0.1)
        while len(steps) < 3:
            config = shapes.get_config("test")
            drawn = sample.run(config, str(w), text=["a big red circle"], out=str(tmp_path / "o"))
            steps.append(drawn["step"])
        assert trainer.poll() is None, "the trainer ended while samples were drawn"
        trainer.send_signal(signal.SIGTERM)
        log = trainer.communicate(timeout=120)[1]
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    assert trainer.returncode == 128 + signal.SIGTERM, log[-3000:]
    last = log.strip().splitlines()[-1]
    stopped = re.fullmatch(
        rf"stopped: gan stage stopped by signal 15 at step (\d+) \({checkpoints}\): checkpoint "
        "saved; the same command resumes from it",
        last,
    )
    assert stopped, last
    at = int(stopped.group(1))
    saved = sorted(int(s) for s in os.listdir(checkpoints))
    assert saved[-1] == at and len(saved) == 2, saved
    assert (checkpoints / str(at) / "digest.json").is_file()
    assert steps and all(6 <= s <= at and s % 3 == 0 for s in steps), steps
