"""Entry point: flags -> `run.run` (or `run.describe`), which dispatches by --mode.

python -m mirrorgan_jax.main --config=configs/shapes.py --workdir=runs/shapes [--mode=all]
"""

from __future__ import annotations

import logging as std_logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mirrorgan_jax import configuration, parallel, run  # noqa: E402

MODES = (
    "all",
    "prepare",
    "describe",
    "import_torch",
    "pretrain_damsm",
    "pretrain_stream",
    "train",
    "eval",
    "sample",
)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, samples).")
_MODE = flags.DEFINE_enum("mode", "all", MODES, "What to run.")
_CAPTIONS = flags.DEFINE_string("captions", None, "--mode=sample: file with one caption per line.")
_TEXT = flags.DEFINE_multi_string("text", [], "--mode=sample: a caption (repeatable).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", None, "--mode=sample: images per caption.")
_OUT = flags.DEFINE_string("out", None, "--mode=sample: output folder (default <workdir>/samples).")
_SEED = flags.DEFINE_integer("seed", None, "--mode=sample/eval: random seed.")
flags.mark_flags_as_required(["config"])


class _QuietLibraries(std_logging.Filter):
    """Drops INFO chatter of Orbax/tfds/TF (per-save thread logs); warnings still show."""

    _NOISY = ("/orbax/", "/tensorflow_datasets/", "/tensorflow/", "/jax/_src/")

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.WARNING:
            return True
        return not any(p in record.pathname for p in self._NOISY)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    config = _CONFIG.value
    configuration.validate(config)
    mode = _MODE.value
    workdir = _WORKDIR.value
    if mode != "describe" and not workdir:
        raise app.UsageError(f"--workdir is required for --mode={mode}")

    if mode == "describe":
        run.describe(config, workdir)
        return

    if mode != "prepare":  # prepare runs on one host (worker 0) and must not wait for others
        parallel.maybe_initialize_distributed()
    run.run(
        mode,
        config,
        workdir,
        sample_args=dict(
            captions=_CAPTIONS.value,
            text=list(_TEXT.value),
            num_samples=_NUM_SAMPLES.value,
            out=_OUT.value,
            seed=_SEED.value,
        ),
    )
    logging.info("done: --mode=%s", mode)


if __name__ == "__main__":
    app.run(main)
