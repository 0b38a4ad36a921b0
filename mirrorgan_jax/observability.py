"""Metric writers of a stage: TensorBoard events, metrics.jsonl and the console."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
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
