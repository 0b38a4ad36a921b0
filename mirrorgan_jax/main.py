"""Entry point: flags -> `run.run` (or `run.describe`), which dispatches by --mode.

python -m mirrorgan_jax.main --config=configs/shapes.py --workdir=runs/shapes [--mode=all]

How it ends: 0 when done; the project's own errors (`errors.Error`: a flag, a config value, a
data layout, a corrupt or unsafe file, a mismatch, a sampling input, a checkpoint) print one line
`error: <what> (<file/key/value>): <what to do>` and end with status 2 (`--verbose` or
MIRRORGAN_VERBOSE=1 adds the traceback); a training stage stopped by SIGTERM/SIGINT saves its
checkpoint and ends with 128 + the signal number; anything else is a bug: its traceback, status 1.
"""

from __future__ import annotations

import logging as std_logging
import os
import re
import sys
import time
import traceback
from typing import NoReturn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mirrorgan_jax import configuration, errors, parallel  # noqa: E402

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
VERBOSE_ENV = "MIRRORGAN_VERBOSE"

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
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, f"Print an error's traceback too (also: {VERBOSE_ENV}=1)."
)
flags.mark_flags_as_required(["config"])


class _QuietLibraries(std_logging.Filter):
    """Drops INFO chatter of Orbax/tfds/TF (per-save thread logs); warnings still show, but
    Orbax's about the array handler `checkpoints` sets on CPU on purpose."""

    _NOISY = ("/orbax/", "/tensorflow_datasets/", "/tensorflow/", "/jax/_src/")

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.WARNING:
            return not record.getMessage().endswith("overriding jax.Array")
        return not any(p in record.pathname for p in self._NOISY)


def _verbose() -> bool:
    if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return True
    if flags.FLAGS.is_parsed():
        return _VERBOSE.value
    return any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in sys.argv[1:])


def _exit(status: int, line: str | None, exc: BaseException | None = None) -> NoReturn:
    """Ends the process at once with `status`, `line` the last thing it prints.

    os._exit, not sys.exit: the interpreter's shutdown would run the destructors of tf.data
    iterators and Orbax's threads, which can hang or print after the line; every stage has
    closed its own by the time an error gets here."""
    if exc is not None and (line is None or _verbose()):
        traceback.print_exception(exc)
    if line is not None:
        print(line, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _config_argument() -> str:
    given = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--config=")]
    return given[-1] if given else ""


def _command_line_error(e: Exception, args: list[str]) -> configuration.ConfigError:
    """A flag or config-file error of absl or ml_collections, said in one line."""
    error = configuration.ConfigError
    if isinstance(e, flags.UnrecognizedFlagError):
        if e.flagname.startswith("config."):
            return error(
                "unknown config key",
                f"--{e.flagname}",
                "the keys and their defaults are in configs/common.py",
            )
        return error("unknown flag", f"--{e.flagname}", "--helpshort lists the flags")
    text = str(e)
    if isinstance(e, AttributeError) and e.args and isinstance(e.args[0], KeyError):
        e = e.args[0]
    if isinstance(e, KeyError):
        # ml_collections, overriding a key the config does not have: "'key'\nDid you mean ..."
        message = str(e.args[0]) if e.args else ""
        key, _, hint = message.partition("\n")
        key = key.strip("'\"")
        given = [a.split("=")[0] for a in args if a.startswith("--config.")]
        named = [a for a in given if key in a[2:].split(".")]
        return error(
            "unknown config key",
            named[0] if named else key,
            (hint.strip() + " " if hint.strip() else "")
            + "The keys and their defaults are in configs/common.py",
        )
    if isinstance(e, OSError) or "Failed loading config file" in text:
        return error(
            "config file not found",
            f"--config={_config_argument()}",
            "give the path of a config file, e.g. --config=configs/shapes.py",
        )
    found = re.match(r"flag (--[^=]+)=(.*?): (.*)", text, re.S)
    if not found:
        return error("command line not understood", " ".join(args), errors.one_line(text))
    name, value, detail = found.groups()
    if "must have a value other than None" in detail:
        return error("missing flag", name, f"pass {name}=..., e.g. --config=configs/shapes.py")
    if "Error whilst parsing config file" in detail:
        lines = [ln for ln in detail.splitlines() if ln.strip()]
        return error("the config file failed to load", f"{name}={value}", lines[-1].strip())
    return error("bad flag value", f"{name}={value}", errors.one_line(detail))


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # absl's flags.Error, or whatever ml_collections raised
        _exit(2, f"error: {_command_line_error(e, argv[1:])}", e)


def _run(argv: list[str]) -> None:
    if len(argv) > 1:
        raise configuration.ConfigError(
            "unexpected arguments", " ".join(argv[1:]), "every flag is written --name=value"
        )
    logging.get_absl_handler().addFilter(_QuietLibraries())
    try:
        config = _CONFIG.value
        config.keys()  # a config file that failed to load raises here, not above
    except Exception as e:  # a config file that is missing or fails to load
        raise _command_line_error(e, argv[1:]) from e
    mode = _MODE.value
    workdir = _WORKDIR.value
    if mode != "describe" and not workdir:
        raise configuration.ConfigError(
            "missing flag", "--workdir", f"--mode={mode} needs --workdir=DIR"
        )
    device_count = process_count = None
    if mode not in ("describe", "prepare"):
        # prepare runs on one host (worker 0) and must not wait for the others
        parallel.maybe_initialize_distributed()
        device_count, process_count = jax.device_count(), jax.process_count()
    configuration.validate(
        config,
        mode,
        device_count=device_count,
        process_count=process_count or 1,
        num_samples=_NUM_SAMPLES.value,
        seed=_SEED.value,
    )
    # Imported once every flag and config value is known good: it brings TensorFlow, whose
    # import is most of the time a refused command would otherwise take.
    from mirrorgan_jax import observability, run

    if mode == "describe":
        run.describe(config, workdir)
        return
    started = observability.process_start_time()
    logging.info("started %.1f s ago (interpreter and imports)", time.time() - started)
    run.run(
        mode,
        config,
        workdir,
        started=started,
        compilation_cache=True,
        sample_args=dict(
            captions=_CAPTIONS.value,
            text=list(_TEXT.value),
            num_samples=_NUM_SAMPLES.value,
            out=_OUT.value,
            seed=_SEED.value,
        ),
    )
    logging.info("done: --mode=%s", mode)


def main(argv: list[str]) -> None:
    try:
        _run(argv)
    except errors.Error as e:
        _exit(e.exit_status, f"{e.label}: {errors.one_line(str(e))}", e)
    except Exception as e:  # a bug: its traceback, and the process still ends
        _exit(1, None, e)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
