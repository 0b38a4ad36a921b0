"""Metric writers (TensorBoard + metrics.jsonl + console) and per-network norm summaries."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers
from clu.metric_writers import interface


class JsonlWriter(interface.MetricWriter):
    """Appends one JSON object per write_scalars call to `<dir>/metrics.jsonl`."""

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self._f = open(os.path.join(directory, "metrics.jsonl"), "a")

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


def make_writer(stage_dir: str) -> metric_writers.MetricWriter:
    """TensorBoard events + metrics.jsonl in `stage_dir`, and console logging; main process only."""
    if jax.process_index() != 0:
        return metric_writers.MultiWriter([])
    return metric_writers.MultiWriter(
        [
            metric_writers.SummaryWriter(stage_dir),
            JsonlWriter(stage_dir),
            metric_writers.LoggingWriter(),
        ]
    )


def parameter_overview(name: str, params) -> str:
    """A short table of a network's parameter shapes and total count."""
    flat = jax.tree_util.tree_leaves_with_path(params)
    lines = [f"{name}: {sum(int(np.prod(x.shape)) for _, x in flat):,} parameters"]
    for path, x in flat[:200]:
        lines.append(f"  {jax.tree_util.keystr(path):<70} {tuple(x.shape)}")
    if len(flat) > 200:
        lines.append(f"  ... {len(flat) - 200} more")
    return "\n".join(lines)
