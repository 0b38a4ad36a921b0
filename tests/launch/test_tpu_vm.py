"""launch/tpu_vm.sh: the gcloud commands it builds, --dry-run, validation, and the worker-side
command lines themselves (run here in a fake home with a fake venv, as a worker would run them).

No JAX and no network: `gcloud` is tests/testdata/fake_gcloud, which logs its argv as JSON lines.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE_GCLOUD = REPO / "tests" / "testdata" / "fake_gcloud"
TPU = ["compute", "tpus", "tpu-vm"]
BASE_ENV = {"PROJECT": "my-project", "BUCKET": "gs://my-bucket"}
JOBS = ("train", "eval", "sample")
FIND_LINKS = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"

FAKE_PYTHON = """#!/usr/bin/env bash
# fake venv python: record argv and JAX_PLATFORMS, then stay alive for FAKE_MAIN_SLEEP seconds
# (written to a temporary file and renamed, so a reader never sees it half written)
if [ "$1" = "-c" ]; then echo "fake python -c"; exit 0; fi
{ printf '%s\\n' "$@"; echo "JAX_PLATFORMS=${JAX_PLATFORMS:-}"; } > "$HOME/python_argv.tmp"
mv "$HOME/python_argv.tmp" "$HOME/python_argv.txt"
echo "fake main running"
exec sleep "${FAKE_MAIN_SLEEP:-30}"
"""
FAKE_PIP = """#!/usr/bin/env bash
echo "$*" >> "$HOME/pip_calls.txt"
"""


def locked_jax_version() -> str:
    text = (REPO / "requirements-lock.txt").read_text()
    match = re.search(r"^jax(\[[\w,]+\])?==(\S+)", text, re.M)
    assert match, "requirements-lock.txt has no jax pin"
    return match.group(2)


def make_checkout(root: Path) -> Path:
    """A small copy of the repository (the script, lock file, configs) plus things setup must
    leave behind (.venv, .git, caches, runs); keeps the tests fast and independent of edits."""
    for rel in ("launch/tpu_vm.sh", "requirements-lock.txt", "mirrorgan_jax/__init__.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((REPO / rel).read_bytes())
    (root / "launch" / "tpu_vm.sh").chmod(0o755)
    for config in (REPO / "configs").glob("*.py"):
        (root / "configs").mkdir(exist_ok=True)
        (root / "configs" / config.name).write_bytes(config.read_bytes())
    for junk in (
        ".venv/bin/python",
        ".git/HEAD",
        "runs/cub/checkpoint",
        "mirrorgan_jax/__pycache__/x.pyc",
        ".pytest_cache/v",
        "mirrorgan_jax.egg-info/PKG-INFO",
    ):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk\n")
    return root / "launch" / "tpu_vm.sh"


class Launcher:
    """Runs launch/tpu_vm.sh (from a small copy of the checkout) with the fake gcloud first on
    PATH and a clean environment."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.script = make_checkout(tmp / "checkout")
        self.bin = tmp / "bin"
        self.bin.mkdir()
        (self.bin / "gcloud").symlink_to(FAKE_GCLOUD)
        self.log = tmp / "gcloud.jsonl"
        self.scp_dir = tmp / "scp"
        self.scp_dir.mkdir()

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "HOME": str(self.tmp),
            "TMPDIR": str(self.tmp),
            "LC_ALL": "C",
            "FAKE_GCLOUD_LOG": str(self.log),
            "FAKE_GCLOUD_SCP_DIR": str(self.scp_dir),
        }
        env.update(extra or {})
        return env

    def run(self, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        """Runs the script; returns the process result and the gcloud calls made by this run."""
        if self.log.exists():
            self.log.unlink()
        proc = subprocess.run(
            [str(self.script), *args],
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        calls = []
        if self.log.exists():
            calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return proc, calls


@pytest.fixture
def launcher(tmp_path: Path) -> Launcher:
    return Launcher(tmp_path)


def flag(argv: list[str], name: str) -> str:
    """The value of --name=value in argv (exactly one occurrence)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name} occurs {len(values)} times in {argv}"
    return values[0]


def main_argv(command: str) -> list[str]:
    """The arguments after `-m mirrorgan_jax.main` in a worker command (inside `bash -c '...'`)."""
    outer = shlex.split(command)
    i = next(k for k in range(len(outer) - 1) if outer[k : k + 2] == ["bash", "-c"])
    inner = shlex.split(outer[i + 2])
    j = inner.index("mirrorgan_jax.main")
    assert inner[j - 1] == "-m" and inner[j - 2] == ".venv/bin/python"
    return inner[j + 1 :]


def the_call(calls: list[list[str]], verb: str) -> list[str]:
    found = [c for c in calls if c[:4] == TPU + [verb]]
    assert len(found) == 1, f"expected one `tpu-vm {verb}` call, got {calls}"
    return found[0]


def assert_zone_project(argv: list[str], zone: str = "us-central2-b") -> None:
    assert flag(argv, "zone") == zone
    assert flag(argv, "project") == "my-project"


# ---- create / delete -------------------------------------------------------------------------


@pytest.mark.parametrize("accel", ["v4-8", "v4-32"])
def test_create_and_delete(launcher: Launcher, accel: str):
    proc, calls = launcher.run("create", ACCELERATOR_TYPE=accel, **BASE_ENV)
    assert proc.returncode == 0, proc.stderr
    assert calls == [
        TPU
        + [
            "create",
            f"mirrorgan-{accel}",
            f"--accelerator-type={accel}",
            "--version=tpu-ubuntu2204-base",
            "--zone=us-central2-b",
            "--project=my-project",
        ]
    ]
    proc, calls = launcher.run("delete", ACCELERATOR_TYPE=accel, TPU_NAME="my-tpu", **BASE_ENV)
    assert proc.returncode == 0, proc.stderr
    assert calls == [
        TPU + ["delete", "my-tpu", "--quiet", "--zone=us-central2-b", "--project=my-project"]
    ]


@pytest.mark.parametrize(
    "accel,zone,runtime",
    [
        ("v5litepod-16", "us-west4-a", "v2-alpha-tpuv5-lite"),
        ("v5p-16", "us-east5-a", "v2-alpha-tpuv5"),
        ("v6e-8", "us-east1-d", "v2-alpha-tpuv6e"),
    ],
)
def test_runtime_default_per_family(launcher: Launcher, accel: str, zone: str, runtime: str):
    proc, calls = launcher.run("create", ACCELERATOR_TYPE=accel, ZONE=zone, SPOT="1", **BASE_ENV)
    assert proc.returncode == 0, proc.stderr
    argv = the_call(calls, "create")
    assert flag(argv, "version") == runtime
    assert flag(argv, "accelerator-type") == accel
    assert "--spot" in argv
    assert_zone_project(argv, zone)


def test_create_reserved_and_explicit_runtime(launcher: Launcher):
    proc, calls = launcher.run(
        "create",
        RESERVED="1",
        RUNTIME_VERSION="tpu-vm-base",
        CREATE_ARGS="--network=n1",
        **BASE_ENV,
    )
    assert proc.returncode == 0, proc.stderr
    argv = the_call(calls, "create")
    assert "--reserved" in argv and "--spot" not in argv and "--network=n1" in argv
    assert flag(argv, "version") == "tpu-vm-base"


# ---- setup -----------------------------------------------------------------------------------


@pytest.mark.parametrize("accel", ["v4-8", "v4-32"])
def test_setup_copies_checkout_and_installs_on_every_worker(launcher: Launcher, accel: str):
    proc, calls = launcher.run("setup", ACCELERATOR_TYPE=accel, **BASE_ENV)
    assert proc.returncode == 0, proc.stderr
    assert [c[3] for c in calls] == ["scp", "ssh"]
    scp, ssh = calls
    assert scp[-3:] == ["--worker=all", "--zone=us-central2-b", "--project=my-project"]
    assert scp[5] == f"mirrorgan-{accel}:mirrorgan_jax.tar.gz"
    assert not Path(scp[4]).exists(), "the local tarball is removed after the copy"
    assert ssh[4] == f"mirrorgan-{accel}" and flag(ssh, "worker") == "all"
    assert_zone_project(ssh)
    command = flag(ssh, "command")
    pip_steps = [
        "pip install -q -r requirements-lock.txt",
        f"pip install -q 'jax[tpu]=={locked_jax_version()}' -f {FIND_LINKS}",
        "pip install -q --no-deps -e .",
    ]
    positions = [command.index(step) for step in pip_steps]
    assert positions == sorted(positions), "lock file, then jax[tpu], then the package"
    assert "python3.11 -m venv .venv" in command

    # the tarball: the checkout without .venv/.git/caches
    (tarball,) = launcher.scp_dir.iterdir()
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert {"./launch/tpu_vm.sh", "./requirements-lock.txt", "./mirrorgan_jax/__init__.py"} <= set(
        names
    )
    assert {"./configs/cub.py", "./configs/shapes.py"} <= set(names)
    for banned in (
        ".venv",
        ".git",
        "runs",
        "__pycache__",
        ".pytest_cache",
        "mirrorgan_jax.egg-info",
    ):
        assert not [n for n in names if f"/{banned}/" in n + "/"], banned


def test_setup_command_runs_on_a_worker(launcher: Launcher, tmp_path: Path):
    """Plays a worker: unpack into ~/mirrorgan_jax (keeping .venv and logs), then the pip steps."""
    proc, calls = launcher.run("setup", PYTHON="python3", **BASE_ENV)
    assert proc.returncode == 0, proc.stderr
    home = tmp_path / "worker"
    checkout = home / "mirrorgan_jax"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / "logs").mkdir()
    (checkout / "logs" / "train.log").write_text("old log\n")
    (checkout / "stale.py").write_text("# removed upstream\n")
    for name, text in (("python", FAKE_PYTHON), ("pip", FAKE_PIP)):
        exe = checkout / ".venv" / "bin" / name
        exe.write_text(text)
        exe.chmod(0o755)
    (tarball,) = launcher.scp_dir.iterdir()
    (home / "mirrorgan_jax.tar.gz").write_bytes(tarball.read_bytes())

    command = flag(the_call(calls, "ssh"), "command")
    env = launcher.env({"HOME": str(home)})
    worker = subprocess.run(
        ["bash", "-c", command], env=env, cwd=home, capture_output=True, text=True, timeout=120
    )
    assert worker.returncode == 0, worker.stderr
    assert (checkout / "launch" / "tpu_vm.sh").is_file()
    assert (checkout / "configs" / "cub.py").is_file()
    assert not (checkout / "stale.py").exists()
    assert (checkout / "logs" / "train.log").read_text() == "old log\n"
    assert not (home / "mirrorgan_jax.tar.gz").exists()
    assert (home / "pip_calls.txt").read_text().splitlines() == [
        "install -q --upgrade pip",
        "install -q -r requirements-lock.txt",
        f"install -q jax[tpu]=={locked_jax_version()} -f {FIND_LINKS}",
        "install -q --no-deps -e .",
    ]


def test_setup_from_repo_url_skips_the_copy(launcher: Launcher):
    proc, calls = launcher.run(
        "setup", REPO_URL="https://example.com/me/mirrorgan_jax.git", REPO_REF="v1", **BASE_ENV
    )
    assert proc.returncode == 0, proc.stderr
    assert [c[3] for c in calls] == ["ssh"]
    command = flag(calls[0], "command")
    assert "git clone --depth 1 --branch v1 https://example.com/me/mirrorgan_jax.git" in command
    assert list(launcher.scp_dir.iterdir()) == []


def test_failed_gcloud_step_stops_the_script(launcher: Launcher):
    proc, calls = launcher.run("setup", FAKE_GCLOUD_FAIL="scp", **BASE_ENV)
    assert proc.returncode != 0
    assert [c[3] for c in calls] == ["scp"], "no ssh after a failed copy"


# ---- prepare / train / eval / sample ---------------------------------------------------------


@pytest.mark.parametrize("accel", ["v4-8", "v4-32"])
def test_prepare_runs_once_on_worker_0(launcher: Launcher, accel: str):
    proc, calls = launcher.run("prepare", ACCELERATOR_TYPE=accel, **BASE_ENV)
    assert proc.returncode == 0, proc.stderr
    ssh = the_call(calls, "ssh")
    assert flag(ssh, "worker") == "0"
    assert_zone_project(ssh)
    command = flag(ssh, "command")
    assert main_argv(command) == [
        "--config=configs/cub.py",
        "--workdir=gs://my-bucket/runs/cub",
        "--mode=prepare",
        "--config.data.data_dir=gs://my-bucket/data",
        "--config.data.manual_dir=$HOME/mirrorgan_raw/cub",
    ]
    assert "gcloud storage rsync --recursive gs://my-bucket/raw/cub" in command
    assert "JAX_PLATFORMS=cpu" in command and "nohup" in command


def test_prepare_without_staging_and_shapes(launcher: Launcher):
    _, calls = launcher.run("prepare", STAGE_MANUAL="0", MANUAL_DIR="gs://raw/birds", **BASE_ENV)
    args = main_argv(flag(the_call(calls, "ssh"), "command"))
    assert flag(args, "config.data.manual_dir") == "gs://raw/birds"
    _, calls = launcher.run("prepare", CONFIG="configs/shapes.py", **BASE_ENV)
    args = main_argv(flag(the_call(calls, "ssh"), "command"))
    assert not [a for a in args if a.startswith("--config.data.manual_dir")]
    assert flag(args, "workdir") == "gs://my-bucket/runs/shapes"


@pytest.mark.parametrize("accel", ["v4-8", "v4-32"])
@pytest.mark.parametrize("job", JOBS)
def test_jobs_run_on_every_worker(launcher: Launcher, accel: str, job: str):
    proc, calls = launcher.run(
        job,
        "--text=a small red bird",
        ACCELERATOR_TYPE=accel,
        CONFIG="configs/cub.py",
        EXTRA_ARGS="--config.train.steps=100 --config.seed=3",
        **BASE_ENV,
    )
    assert proc.returncode == 0, proc.stderr
    ssh = the_call(calls, "ssh")
    assert ssh[4] == f"mirrorgan-{accel}"
    assert flag(ssh, "worker") == "all"
    assert_zone_project(ssh)
    command = flag(ssh, "command")
    assert main_argv(command) == [
        "--config=configs/cub.py",
        "--workdir=gs://my-bucket/runs/cub",
        f"--mode={job}",
        "--config.data.data_dir=gs://my-bucket/data",
        "--config.train.steps=100",
        "--config.seed=3",
        "--text=a small red bird",
    ]
    assert "setsid nohup" in command and f">> logs/{job}.log" in command
    assert "JAX_PLATFORMS" not in command, "jobs other than prepare use the TPU"
    # multi-host: every worker joins one program through jax.distributed.initialize()
    assert ("MIRRORGAN_DISTRIBUTED=1" in command) == (accel == "v4-32")


def test_stage_data_copies_the_shards_to_each_worker(launcher: Launcher):
    proc, calls = launcher.run("train", STAGE_DATA="1", ACCELERATOR_TYPE="v4-32", **BASE_ENV)
    assert proc.returncode == 0, proc.stderr
    command = flag(the_call(calls, "ssh"), "command")
    assert flag(main_argv(command), "config.data.data_dir") == "$HOME/mirrorgan_data"
    script = shlex.split(command)[shlex.split(command).index("-c") + 1]
    assert script.startswith(
        'mkdir -p "$HOME/mirrorgan_data" && gcloud storage rsync --recursive gs://my-bucket/data '
        '"$HOME/mirrorgan_data" && exec '
    )


def test_run_any_mode_and_custom_paths(launcher: Launcher):
    proc, calls = launcher.run(
        "run",
        "pretrain_damsm",
        CONFIG="configs/coco.py",
        WORKDIR="gs://other/w",
        DATA_DIR="gs://other/d",
        **BASE_ENV,
    )
    assert proc.returncode == 0, proc.stderr
    ssh = the_call(calls, "ssh")
    assert flag(ssh, "worker") == "all"
    args = main_argv(flag(ssh, "command"))
    assert args[:4] == [
        "--config=configs/coco.py",
        "--workdir=gs://other/w",
        "--mode=pretrain_damsm",
        "--config.data.data_dir=gs://other/d",
    ]
    proc, _ = launcher.run("run", "frobnicate", **BASE_ENV)
    assert proc.returncode != 0 and "frobnicate" in proc.stderr


def test_run_all_only_on_a_single_host(launcher: Launcher):
    proc, calls = launcher.run("run", "all", ACCELERATOR_TYPE="v4-8", **BASE_ENV)
    assert proc.returncode == 0, proc.stderr
    assert flag(main_argv(flag(the_call(calls, "ssh"), "command")), "mode") == "all"
    proc, calls = launcher.run("run", "all", ACCELERATOR_TYPE="v4-32", **BASE_ENV)
    assert proc.returncode != 0 and "prepare on all 4 hosts" in proc.stderr and calls == []
    proc, calls = launcher.run("run", "prepare", **BASE_ENV)
    assert proc.returncode != 0 and "prepare subcommand" in proc.stderr and calls == []


def test_job_lifecycle_on_a_worker(launcher: Launcher, tmp_path: Path):
    """The worker-side commands: start detached, refuse a second job, show the log, stop it."""
    home = tmp_path / "worker"
    bindir = home / "mirrorgan_jax" / ".venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").write_text(FAKE_PYTHON)
    (bindir / "python").chmod(0o755)
    worker_env = launcher.env({"HOME": str(home), "FAKE_MAIN_SLEEP": "60"})

    def on_worker(subcommand: str, *args: str) -> subprocess.CompletedProcess:
        proc, calls = launcher.run(subcommand, *args, **BASE_ENV)
        assert proc.returncode == 0, proc.stderr
        command = flag(the_call(calls, "ssh"), "command")
        return subprocess.run(
            ["bash", "-c", command],
            env=worker_env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=60,
        )

    pid_file = home / "mirrorgan_jax" / "logs" / "train.pid"
    pid = None
    try:
        started = on_worker("train", "--config.seed=7")
        assert started.returncode == 0, started.stderr
        assert "started train" in started.stdout
        pid = int(pid_file.read_text())
        argv_file = home / "python_argv.txt"
        wait_for(argv_file.exists, "the job to start")
        assert argv_file.read_text().splitlines() == [
            "-m",
            "mirrorgan_jax.main",
            "--config=configs/cub.py",
            "--workdir=gs://my-bucket/runs/cub",
            "--mode=train",
            "--config.data.data_dir=gs://my-bucket/data",
            "--config.seed=7",
            "JAX_PLATFORMS=",
        ]
        assert alive(pid)

        again = on_worker("eval")
        assert again.returncode == 1
        assert "already runs job train" in again.stderr

        logs = on_worker("logs")
        assert logs.returncode == 0 and "fake main running" in logs.stdout

        stopped = on_worker("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped train" in stopped.stdout
        wait_for(lambda: not alive(pid), "the job to stop")
        assert not pid_file.exists()
    finally:
        if pid is not None and alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_prepare_on_a_worker_stages_raw_data(launcher: Launcher, tmp_path: Path):
    home = tmp_path / "worker"
    bindir = home / "mirrorgan_jax" / ".venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").write_text(FAKE_PYTHON)
    (bindir / "python").chmod(0o755)
    proc, calls = launcher.run("prepare", **BASE_ENV)
    assert proc.returncode == 0, proc.stderr
    command = flag(the_call(calls, "ssh"), "command")
    launcher.log.unlink()
    env = launcher.env({"HOME": str(home), "FAKE_MAIN_SLEEP": "0"})
    worker = subprocess.run(
        ["bash", "-c", command], env=env, cwd=home, capture_output=True, text=True, timeout=60
    )
    assert worker.returncode == 0, worker.stderr
    argv_file = home / "python_argv.txt"
    wait_for(argv_file.exists, "prepare to start")
    staged = home / "mirrorgan_raw" / "cub"
    assert staged.is_dir()
    lines = argv_file.read_text().splitlines()
    assert f"--config.data.manual_dir={staged}" in lines
    assert lines[-1] == "JAX_PLATFORMS=cpu"
    rsync = [json.loads(line) for line in launcher.log.read_text().splitlines()]
    assert rsync == [["storage", "rsync", "--recursive", "gs://my-bucket/raw/cub", str(staged)]]


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ---- ssh / dry run ---------------------------------------------------------------------------


@pytest.mark.parametrize("accel", ["v4-8", "v4-32"])
def test_check_initialises_jax_on_every_worker(launcher: Launcher, accel: str):
    proc, calls = launcher.run("check", ACCELERATOR_TYPE=accel, PROJECT="my-project")
    assert proc.returncode == 0, proc.stderr
    ssh = the_call(calls, "ssh")
    assert flag(ssh, "worker") == "all"
    assert_zone_project(ssh)
    words = shlex.split(flag(ssh, "command"))
    assert words[:4] == ["cd", "$HOME/mirrorgan_jax", "&&", ".venv/bin/python"]
    code = words[words.index("-c") + 1]
    compile(code, "<check>", "exec")
    assert "jax.distributed.initialize()" in code and "jax.device_count()" in code


def test_ssh_to_a_worker(launcher: Launcher):
    proc, calls = launcher.run("ssh", WORKER="2", ACCELERATOR_TYPE="v4-32", **BASE_ENV)
    assert proc.returncode == 0, proc.stderr
    assert calls == [
        TPU
        + ["ssh", "mirrorgan-v4-32", "--worker=2", "--zone=us-central2-b", "--project=my-project"]
    ]


SUBCOMMANDS = [
    ("create",),
    ("setup",),
    ("check",),
    ("prepare",),
    ("train", "--text=it's a bird"),
    ("eval",),
    ("sample", "--num_samples=2"),
    ("ssh",),
    ("logs", "eval"),
    ("stop",),
    ("delete",),
]


def normalise(argv: list[str]) -> list[str]:
    return [re.sub(r"-src-\d+\.tar\.gz", "-src-PID.tar.gz", a) for a in argv]


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=lambda a: a[0])
@pytest.mark.parametrize("how", ["flag", "env"])
def test_dry_run_prints_exactly_the_commands(launcher: Launcher, args: tuple[str, ...], how: str):
    env = dict(BASE_ENV, ACCELERATOR_TYPE="v4-32", EXTRA_ARGS="--config.seed='1 2'")
    if how == "flag":
        dry, calls = launcher.run("--dry-run", *args, **env)
    else:
        dry, calls = launcher.run(*args, DRY_RUN="1", **env)
    assert dry.returncode == 0, dry.stderr
    assert calls == [] and not launcher.log.exists(), "a dry run runs no gcloud"
    assert not list(launcher.tmp.glob("*.tar.gz")), "a dry run writes no tarball"
    assert dry.stdout.startswith("# ") and "4 host(s)" in dry.stdout
    printed = [shlex.split(line) for line in dry.stdout.splitlines() if not line.startswith("#")]

    real, calls = launcher.run(*args, **env)
    assert real.returncode == 0, real.stderr
    printed_gcloud = [normalise(argv[1:]) for argv in printed if argv[0] == "gcloud"]
    assert printed_gcloud == [normalise(c) for c in calls]
    expected_tools = (["tar"] if args[0] == "setup" else []) + ["gcloud"] * len(calls)
    assert [argv[0] for argv in printed] == expected_tools


def test_dry_run_flag_after_the_subcommand_is_not_passed_to_main(launcher: Launcher):
    proc, calls = launcher.run("train", "--dry-run", **BASE_ENV)
    assert proc.returncode == 0 and calls == []
    assert "--dry-run" not in proc.stdout.split("--command=", 1)[1]


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["create", "setup", "prepare", "train", "ssh", "delete"])
def test_missing_project_is_named(launcher: Launcher, sub: str):
    proc, calls = launcher.run(sub, BUCKET="gs://my-bucket")
    assert proc.returncode != 0
    assert "PROJECT is not set" in proc.stderr
    assert calls == []


@pytest.mark.parametrize("sub", ["prepare", *JOBS])
def test_missing_or_bad_bucket_is_named(launcher: Launcher, sub: str):
    proc, calls = launcher.run(sub, PROJECT="my-project")
    assert proc.returncode != 0 and "BUCKET is not set" in proc.stderr and calls == []
    proc, calls = launcher.run(sub, PROJECT="my-project", BUCKET="/data/local")
    assert proc.returncode != 0 and "BUCKET='/data/local'" in proc.stderr and calls == []


def test_multi_host_needs_a_shared_workdir(launcher: Launcher):
    proc, calls = launcher.run("train", ACCELERATOR_TYPE="v4-32", WORKDIR="/tmp/run", **BASE_ENV)
    assert proc.returncode != 0 and "WORKDIR='/tmp/run'" in proc.stderr and calls == []
    proc, calls = launcher.run("train", ACCELERATOR_TYPE="v4-8", WORKDIR="/tmp/run", **BASE_ENV)
    assert proc.returncode == 0, proc.stderr
    assert flag(main_argv(flag(the_call(calls, "ssh"), "command")), "workdir") == "/tmp/run"


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"ACCELERATOR_TYPE": "v5litepod-16"}, "ZONE is not set"),
        ({"ACCELERATOR_TYPE": "tpu-big"}, "ACCELERATOR_TYPE='tpu-big'"),
        ({"ACCELERATOR_TYPE": "v4-12"}, "multiples of 8"),
        ({"SPOT": "1", "RESERVED": "1"}, "at most one of SPOT, PREEMPTIBLE, RESERVED"),
        ({"SPOT": "yes"}, "SPOT='yes'"),
        ({"TPU_NAME": "My_TPU"}, "TPU_NAME='My_TPU'"),
        ({"CONFIG": "configs/nope.py"}, "configs/nope.py does not exist"),
    ],
)
def test_bad_settings_are_named(launcher: Launcher, env: dict[str, str], needle: str):
    proc, calls = launcher.run("create", **{**BASE_ENV, **env})
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert calls == []


@pytest.mark.parametrize("args", [("frobnicate",), ()], ids=["unknown", "none"])
def test_unknown_or_missing_subcommand_prints_usage(launcher: Launcher, args: tuple[str, ...]):
    proc, calls = launcher.run(*args, **BASE_ENV)
    assert proc.returncode != 0
    assert "Usage:" in proc.stderr and "Subcommands" in proc.stderr
    assert all(a in proc.stderr for a in args)
    assert calls == []


@pytest.mark.parametrize(
    "accel,summary",
    [
        ("v4-8", "v4-8: 4 chips, 4 JAX devices, 1 host(s) (single-host)"),
        ("v4-32", "v4-32: 16 chips, 16 JAX devices, 4 host(s) (multi-host"),
        ("v4-128", "v4-128: 64 chips, 64 JAX devices, 16 host(s) (multi-host"),
        ("v5litepod-8", "v5litepod-8: 8 chips, 8 JAX devices, 1 host(s) (single-host)"),
        ("v5litepod-16", "v5litepod-16: 16 chips, 16 JAX devices, 2 host(s) (multi-host"),
        ("v5p-16", "v5p-16: 8 chips, 8 JAX devices, 2 host(s) (multi-host"),
    ],
)
def test_help_reports_hosts_without_project(launcher: Launcher, accel: str, summary: str):
    proc, calls = launcher.run("help", ACCELERATOR_TYPE=accel)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and summary in proc.stdout
    assert calls == []
