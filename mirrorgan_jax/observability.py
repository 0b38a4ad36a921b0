"""Metric writers of a stage: TensorBoard events, metrics.jsonl and the console; the process's
start time, from which a stage's `startup_s` is counted."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
from clu import metric_writers
from clu.metric_writers import interface

# When this module was first imported: the process start where /proc cannot say.
_IMPORTED_AT = time.time()


def process_start_time() -> float:
    """The Unix time this process started (the interpreter's start, so its imports count in
    a start-up time). Read from /proc on Linux; elsewhere the first import of this module."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22, start time in clock ticks since boot; the name (field 2) may hold spaces.
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _IMPORTED_AT
    age = uptime - started_ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - max(age, 0.0)


class JsonlWriter(interface.MetricWriter):
    """Appends one JSON object per write_scalars call to `<dir>/metrics.jsonl`.

    resume_step: the step a resumed run starts from; rows of later steps (logged by the run
    that stopped, and logged again by this one) are dropped first, so that every step appears
    once however often a stage is resumed."""

    def __init__(self, directory: str, resume_step: int | None = None):
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "metrics.jsonl")
        if resume_step is not None and os.path.exists(path):
            _drop_rows_after(path, resume_step)
        self._f = open(path, "a")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def write_summaries(self, step, values, metadata=None):
        pass

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_hparams(self, hparams):
        pass

    def flush(self):
        self._f.flush()

    def close(self):
        self._f.close()


def _drop_rows_after(path: str, step: int) -> None:
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            row_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):  # a line cut short by a killed run
            continue
        if row_step <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) == len(lines):
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def make_writer(stage_dir: str, resume_step: int | None = None) -> metric_writers.MetricWriter:
    """TensorBoard events + metrics.jsonl in `stage_dir`, and console logging; main process
    only. resume_step: see `JsonlWriter`."""
    if jax.process_index() != 0:
        return metric_writers.MultiWriter([])
    return metric_writers.MultiWriter(
        [
            metric_writers.SummaryWriter(stage_dir),
            JsonlWriter(stage_dir, resume_step),
            metric_writers.LoggingWriter(),
        ]
    )
