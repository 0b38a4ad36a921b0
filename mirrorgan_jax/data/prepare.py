"""`--mode=prepare`: build the configured data set's tfds shards and its tokenizer, once.

Layout under the data dir (config.data.data_dir, or <workdir>/data when empty):
  <tfds name>/<version>/...   the tfds shards (tfrecord), e.g. shapes/1.0.0/
  tokenizer/                   the tokenizer (`tokenizers.load_tokenizer`)
  prepare_report.json          the report; written last, so its presence means "complete"
A data dir holds one prepared data set.

Re-running with identical settings is a no-op that returns the stored report with
status "already_prepared". Different settings, or leftovers of an interrupted run, are an error
naming the difference unless config.data.overwrite, which deletes exactly those outputs first.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import time

from absl import logging

from mirrorgan_jax.data import input_pipeline, shapes, tokenizers

DATASET_NAMES = ("shapes", "cub", "coco")
_REPORT_VERSION = 1
PreparedDataError = input_pipeline.PreparedDataError


def resolve_data_dir(config_data, workdir: str | pathlib.Path) -> pathlib.Path:
    """config.data.data_dir, or <workdir>/data when it is empty."""
    return pathlib.Path(config_data.data_dir or pathlib.Path(workdir) / "data")


def tokenizer_dir(data_dir: str | pathlib.Path) -> pathlib.Path:
    """Where prepare saves the tokenizer."""
    return pathlib.Path(data_dir) / "tokenizer"


def report_path(data_dir: str | pathlib.Path) -> pathlib.Path:
    """Where prepare writes its report (json)."""
    return pathlib.Path(data_dir) / "prepare_report.json"


def prepare_settings(config_data) -> dict:
    """The config values that determine the prepared files (compared on re-runs)."""
    name = config_data.name
    if name not in DATASET_NAMES:
        raise ValueError(f"config.data.name={name!r} is unknown; expected one of {DATASET_NAMES}")
    settings = dict(name=name, tokenizer=config_data.tokenizer, vocab_size=config_data.vocab_size)
    if config_data.tokenizer not in ("attngan", "sentencepiece"):
        raise ValueError(
            f"config.data.tokenizer={config_data.tokenizer!r}; "
            "expected 'attngan' or 'sentencepiece'"
        )
    if name == "shapes":
        settings.update({f"shapes.{k}": v for k, v in sorted(config_data.shapes.items())})
    else:
        settings.update(
            manual_dir=str(config_data.manual_dir),
            captions_per_image=config_data.captions_per_image,
            skip_corrupt=config_data.skip_corrupt,
            allow_fewer_captions=config_data.allow_fewer_captions,
        )
    return settings


def _external_module(name: str):
    """The CUB/COCO builder module. Interface agreed with its author:
    build(config_data, data_dir) -> dict (its report) and
    load_captions_for_tokenizer(config_data) -> (train_captions, all_captions, wordtoix | None)."""
    # Imported here: their builders import tensorflow_datasets, which shapes runs need only
    # once they build.
    if name == "cub":
        from mirrorgan_jax.data import cub as module
    else:
        from mirrorgan_jax.data import coco as module
    return module


def _build(config_data, data_dir: pathlib.Path) -> tuple[dict, list, list, dict | None]:
    """Builds the shards; returns (builder report, train captions, all captions, wordtoix)."""
    name = config_data.name
    if name != "shapes":
        module = _external_module(name)
        report = module.build(config_data, str(data_dir))
        train, every, wordtoix = module.load_captions_for_tokenizer(config_data)
        return dict(report or {}), list(train), list(every), wordtoix
    import tensorflow_datasets as tfds

    s = dict(config_data.shapes)
    builder = shapes.Shapes(data_dir=str(data_dir), **s)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    sizes = dict(train=s["num_train"], test=s["num_test"], test_novel=s["num_test_novel"])
    per_split = {  # collected during the build; regenerated only if tfds reused old shards
        k: builder.captions.get(k) or shapes.split_captions(k, n, s["seed"])
        for k, n in sizes.items()
    }
    train = [c for caps in per_split["train"] for c in caps]
    every = [c for split in per_split.values() for caps in split for c in caps]
    return dict(builder_dir=str(builder.data_dir)), train, every, None


def _existing_outputs(data_dir: pathlib.Path, name: str, old: dict | None) -> list[pathlib.Path]:
    """Files of a previous prepare: report, tokenizer and shards (also those named in `old`)."""
    paths = [p for p in (report_path(data_dir), tokenizer_dir(data_dir)) if p.exists()]
    names = {name} | ({old.get("name")} if old and old.get("name") in DATASET_NAMES else set())
    for n in sorted(names):
        try:
            paths.append(input_pipeline.find_builder_dir(data_dir, n))
        except PreparedDataError:
            pass
    return paths


def _remove(paths: list[pathlib.Path], data_dir: pathlib.Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
            parent = path.parent  # <tfds name>/ left empty by removing <version>/
            if parent != data_dir and parent.exists() and not any(parent.iterdir()):
                parent.rmdir()
        elif path.exists():
            path.unlink()


def prepare(config, workdir: str | pathlib.Path) -> dict:
    """Builds config.data's data set and tokenizer (see the module doc); returns the report."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    data = config.data
    settings = prepare_settings(data)
    name = data.name
    data_dir = resolve_data_dir(data, workdir)
    report_file = report_path(data_dir)
    old = json.loads(report_file.read_text()) if report_file.exists() else None
    existing = _existing_outputs(data_dir, name, old)
    if old is not None:
        # A shapes set prepared before the geometry option was made in the "small" geometry.
        saved = {**({"shapes.geometry": "small"} if name == "shapes" else {}), **old["settings"]}
        diff = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
        diff.update({k: (v, None) for k, v in saved.items() if k not in settings})
        if not diff:
            return {**old, "status": "already_prepared"}
        if not data.overwrite:
            changes = ", ".join(f"{k}: prepared {a!r}, config {b!r}" for k, (a, b) in diff.items())
            raise PreparedDataError(
                f"the data folder holds {name!r} prepared with different settings ({changes})",
                str(data_dir),
                "set config.data.overwrite=True to rebuild it, or choose another data_dir",
            )
    elif existing and not data.overwrite:
        raise PreparedDataError(
            f"the data folder holds {[p.name for p in existing]} without {report_file.name} "
            "(an interrupted prepare?)",
            str(data_dir),
            "set config.data.overwrite=True to rebuild",
        )
    if data.overwrite:
        _remove(existing, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    builder_report, train_captions, all_captions, wordtoix = _build(data, data_dir)
    build_seconds = time.time() - start
    tokenizer = tokenizers.build_tokenizer(
        data.tokenizer, train_captions, all_captions, data.vocab_size, wordtoix
    )
    tokenizer.save(tokenizer_dir(data_dir))
    words = {w for c in all_captions for w in tokenizers.normalize(c).split()}
    unknown = sorted({u for w in words for u in tokenizer.unknown_words(w)})
    long_captions = _long_captions(tokenizer, all_captions, data.words_num)
    report = dict(
        report_version=_REPORT_VERSION,
        status="prepared",
        name=name,
        settings=settings,
        data_dir=str(data_dir),
        builder_dir=str(input_pipeline.find_builder_dir(data_dir, name)),
        tokenizer_dir=str(tokenizer_dir(data_dir)),
        tokenizer=data.tokenizer,
        vocab_size=tokenizer.vocab_size,
        unknown_words=unknown[:100],
        num_unknown_words=len(unknown),
        long_captions=long_captions,
        invalid_utf8=builder_report.get("invalid_utf8", []),
        splits={
            split: input_pipeline.num_examples(data_dir, name, split)
            for split in _split_names(data_dir, name)
        },
        build_seconds=round(build_seconds, 2),
        total_seconds=round(time.time() - start, 2),
        builder_report=builder_report,
    )
    report_file.write_text(json.dumps(report, indent=2, default=str))
    return report


def _long_captions(tokenizer, captions, words_num: int, listed: int = 5) -> dict:
    """How many captions have more tokens than `words_num` (training keeps `words_num` of
    them, see data.long_caption), and the longest few."""
    counts = []
    for i, caption in enumerate(captions):
        try:
            counts.append((len(tokenizer.encode(caption)), i))
        except ValueError:  # a caption without a word: never drawn for training either
            continue
    long = sorted((n, i) for n, i in counts if n > words_num)
    if long:
        logging.info(
            "%d of %d captions have more than data.words_num=%d tokens (the longest: %d); "
            "training keeps %d of their tokens (data.long_caption)",
            len(long),
            len(counts),
            words_num,
            long[-1][0],
            words_num,
        )
    return dict(
        words_num=words_num,
        count=len(long),
        longest=[
            dict(tokens=n, caption=captions[i][:120] + ("..." if len(captions[i]) > 120 else ""))
            for n, i in reversed(long[-listed:])
        ],
    )


def _split_names(data_dir: pathlib.Path, name: str) -> list[str]:
    info_file = input_pipeline.find_builder_dir(data_dir, name) / "dataset_info.json"
    info = json.loads(info_file.read_text())
    return [s["name"] for s in info.get("splits", [])]


def load_prepared(config, workdir: str | pathlib.Path) -> tuple[pathlib.Path, tokenizers.Tokenizer]:
    """(data_dir, tokenizer) of a prepared data set; a clear error when prepare has not run."""
    data_dir = resolve_data_dir(config.data, workdir)
    report_file = report_path(data_dir)
    if not report_file.exists():
        raise PreparedDataError(
            f"no prepared data set {config.data.name!r}",
            str(report_file),
            "run --mode=prepare first",
        )
    name = json.loads(report_file.read_text()).get("name")
    if name != config.data.name:
        raise PreparedDataError(
            f"the data folder holds data set {name!r}, not {config.data.name!r}",
            str(data_dir),
            "set config.data.data_dir to the folder of the right data set",
        )
    return data_dir, tokenizers.load_tokenizer(tokenizer_dir(data_dir))
