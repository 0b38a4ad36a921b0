"""Running `python -m mirrorgan_jax.main` as a user does, for the tests of the command line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_DEVICE = {"XLA_FLAGS": ""}


def main(*args: str, timeout: float = 120, env: dict | None = None, **kwargs):
    """The finished process (stdout, stderr as text); 8 CPU devices unless `env` says else."""
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "mirrorgan_jax.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )


def digest(directory) -> str:
    """One hash of every folder's path and every file's path and bytes under `directory` (an
    empty folder made, or one removed, changes it too)."""
    h = hashlib.sha256()
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        h.update(b"dir\0" + os.path.relpath(root, directory).encode() + b"\0")
        for name in sorted(names):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, directory).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def refused(args, workdir=None, timeout: float = 60, env: dict | None = None) -> str:
    """Runs main with `args` and asserts the project's way of refusing: status 2 within
    `timeout` seconds, nothing on stdout, the one `error:` line last on stderr, no traceback,
    and `workdir` (when given) byte for byte as it was. Returns that line."""
    before = digest(workdir) if workdir is not None else None
    start = time.time()
    r = main(*args, timeout=timeout, env=env)
    took = time.time() - start
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr[-3000:]
    assert took < timeout
    assert r.stdout == "" and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], r.stderr[-3000:]
    if workdir is not None:
        assert digest(workdir) == before, "the refused run changed the workdir"
    return lines[-1]
