"""The workdir contract: what a run directory holds, and how every mode reads it back.

Layout (other tools rely on it):
  W/config.json        the config of the run (a run with a different model config is refused)
  W/tokenizer/         the tokenizer the run trains with, copied from the prepared data when a
                       training stage starts, so that sampling needs only the workdir
  W/data/              prepared tfds shards + tokenizer (unless config.data.data_dir is set)
  W/damsm/ W/stream/ W/gan/   each: checkpoints/ (Orbax), metrics.jsonl, TensorBoard events;
                       damsm/ and stream/ also eval.json (the test report of the final step),
                       gan/images/ the sample grids written during training, gan/captions.txt
                       their captions (the default captions of --mode=sample)
  W/eval/metrics.json  W/eval/shapes_classifier.npz (shapes)  W/eval/fid_reference_<split>.npz
  W/samples/           PNGs, attention maps, grid.png, index.html
  W/jax_cache/         JAX's persistent compilation cache of the training modes, made once
                       their checks pass (unless `compilation_cache_dir` or
                       $JAX_COMPILATION_CACHE_DIR names another folder, or "off")
Every checkpoint's meta holds its stage's `model_fingerprint`; restoring one written for other
networks is refused with the differing keys.

Who writes what: `check` reads everything a mode will rely on before it starts, and writes
nothing; config.json and W/tokenizer are written only by the training modes, after `check`;
`eval` and `sample` write only W/eval and their output folder, and open checkpoints read-only,
so they can read a workdir a run is training in.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from mirrorgan_jax import checkpoints, configuration, errors, hyperparameters, networks, parallel
from mirrorgan_jax.data import input_pipeline, tokenizers
from mirrorgan_jax.train import damsm, gan, stream
from mirrorgan_jax.train.state import GanState

# The model config values that decide the DAMSM and STREAM networks; the GAN stage depends on all.
_STAGE_FIELDS = {
    "damsm": (
        "n_words",
        "word_embedding_dim",
        "text_embedding_dim",
        "text_dropout",
        "damsm_backbone",
        "damsm_image_size",
    ),
    "stream": (
        "n_words",
        "stream_backbone",
        "stream_embed_size",
        "stream_hidden_size",
        "stream_image_size",
        "base_size",
        "branch_num",
    ),
}


# The stages whose checkpoints each mode resumes or reads.
_STAGES_OF_MODE = {
    "all": ("damsm", "stream", "gan"),
    "pretrain_damsm": ("damsm",),
    "pretrain_stream": ("stream",),
    "train": ("damsm", "stream", "gan"),
    "eval": ("damsm", "gan"),
    "sample": ("damsm", "gan"),
}
TRAINING_MODES = ("all", "pretrain_damsm", "pretrain_stream", "train")
CAPTIONS_FILE = "captions.txt"


class WorkdirError(errors.Error, ValueError):
    """A file of the workdir is unreadable, or the workdir lacks what a mode needs."""


def data_dir(config, workdir: str) -> str:
    return config.data.data_dir or os.path.join(workdir, "data")


def stage_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage)


def checkpoint_dir(workdir: str, stage: str) -> str:
    return os.path.join(stage_dir(workdir, stage), "checkpoints")


def compilation_cache_dir(config, workdir: str | None) -> str | None:
    """Where JAX keeps compiled programs across processes (None: nowhere), so a restart
    compiles nothing an earlier run compiled: `config.compilation_cache_dir` when it names a
    folder, "off" for none, and when it is unset $JAX_COMPILATION_CACHE_DIR, else W/jax_cache
    (`workdir` None: a mode that writes only its outputs, so no cache in the workdir)."""
    value = config.compilation_cache_dir
    if value == "off":
        return None
    if value:
        return os.path.expanduser(value)
    default = None if workdir is None else os.path.join(workdir, "jax_cache")
    return os.environ.get(parallel.ENV_COMPILATION_CACHE) or default


def model_fingerprint(config, stage: str = "gan") -> dict:
    """The model config values that decide a stage's networks (saved with and checked against
    its checkpoints). The GAN stage depends on all of them; DAMSM and STREAM only on their own
    networks, so their checkpoints can be shared by runs that differ only in the generator."""
    model = json.loads(config.model.to_json())
    fields = _STAGE_FIELDS.get(stage)
    return model if fields is None else {k: model[k] for k in fields}


def read_config(workdir: str) -> dict | None:
    """W/config.json, or None when there is none."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
        if not isinstance(saved, dict):
            raise ValueError(f"a JSON {type(saved).__name__}, not an object")
        return saved
    except (OSError, ValueError) as e:
        raise WorkdirError(
            "unreadable config.json",
            path,
            f"{errors.one_line(str(e))}; restore it from a copy, or move it away (the "
            "checkpoints still check the model config on their own)",
        ) from None


def check_config(config, workdir: str) -> None:
    """Refuses a workdir whose W/config.json holds another model config; writes nothing."""
    saved = read_config(workdir)
    if saved is None:
        return
    current = json.loads(config.model.to_json())
    diffs = checkpoints.config_differences(
        {"model": saved.get("model", {})}, {"model": current}, ("saved", "now")
    )
    if diffs:
        raise checkpoints.ConfigMismatchError(
            "the workdir was written by a run with a different model config",
            os.path.join(workdir, "config.json"),
            "; ".join(diffs) + ". Use another --workdir, or the config it was written with",
        )


def check(config, workdir: str, modes) -> None:
    """Every check a run of `modes` can make before it starts; reads, never writes: the saved
    config, the model config of each stage's newest readable checkpoint, the files the config
    names."""
    check_config(config, workdir)
    stages = sorted({s for m in modes for s in _STAGES_OF_MODE.get(m, ())})
    for stage in stages:
        directory = checkpoint_dir(workdir, stage)
        if not os.path.isdir(directory):
            continue
        ckpt = checkpoints.Checkpointer(directory, read_only=True)
        try:
            ckpt.check_meta({"model": model_fingerprint(config, stage)})
        finally:
            ckpt.close()
    _check_named_files(config, modes)


def _check_named_files(config, modes) -> None:
    named = []
    if {"all", "pretrain_stream"} & set(modes):
        named.append(("stream.backbone_weights", config.stream.backbone_weights))
    if {"all", "eval"} & set(modes):
        named.append(("eval.inception_weights", config.eval.inception_weights))
    if "import_torch" in modes:
        for key, value in config.weights.items():
            named += [(f"weights.{key}", f.strip()) for f in value.split(",")]
    for key, path in named:
        if path and not os.path.isfile(path):
            raise configuration.ConfigError(
                "file not found",
                f"config.{key}={path}",
                "give the path of an existing file (or '' for none)",
            )


def write_config(config, workdir: str) -> None:
    """Writes W/config.json (training modes, once every check has passed); refuses a workdir
    whose saved model config differs."""
    check_config(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    current = json.loads(config.to_json())
    if jax.process_index() == 0:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(current, f, indent=2, sort_keys=True)
        os.replace(tmp, path)


def write_json(path: str, payload: dict) -> None:
    """A report file of the workdir, written by the main process only."""
    if jax.process_index() != 0:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


# ---------------------------------------------------------------------------------- data


def tokenizer_dir(workdir: str) -> str:
    return os.path.join(workdir, "tokenizer")


def load_tokenizer(config, workdir: str) -> tokenizers.Tokenizer:
    """The workdir's own tokenizer (W/tokenizer), or the prepared data's for a workdir that
    has none yet."""
    own = tokenizer_dir(workdir)
    if os.path.isdir(own):
        return tokenizers.load_tokenizer(own)
    return tokenizers.load_tokenizer(os.path.join(data_dir(config, workdir), "tokenizer"))


def keep_tokenizer(config, workdir: str) -> None:
    """A training stage starts: the prepared data's tokenizer becomes the workdir's own
    (W/tokenizer), unless it has one, which is then used from here on."""
    own = tokenizer_dir(workdir)
    if os.path.isdir(own) or jax.process_index() != 0:
        return
    source = os.path.join(data_dir(config, workdir), "tokenizer")
    tokenizers.load_tokenizer(source)  # there and readable
    tmp = own + ".tmp"
    if os.path.isdir(tmp):  # left by a run killed while copying
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    os.replace(tmp, own)


def load_networks(config, workdir: str) -> tuple[networks.Networks, tokenizers.Tokenizer]:
    """The networks sized by the prepared tokenizer's vocabulary, and the tokenizer."""
    tok = load_tokenizer(config, workdir)
    return networks.Networks.from_config(config, n_words=tok.vocab_size), tok


def data_source(
    config, workdir: str, tokenizer, words_num: int, long_caption: str = "subset"
) -> input_pipeline.Source:
    """The prepared data of the workdir (or of config.data.data_dir), captions cut to
    `words_num` tokens by `long_caption`."""
    return input_pipeline.Source(
        data_dir=data_dir(config, workdir),
        name=config.data.name,
        tokenizer=tokenizer,
        image_sizes=networks.image_sizes(config),
        words_num=words_num,
        captions_per_image=config.data.captions_per_image,
        long_caption=long_caption,
    )


def this_host() -> tuple[int, int]:
    """(index, count) of this process: which rows of each global batch it reads."""
    return jax.process_index(), jax.process_count()


def eval_batches(
    config,
    workdir: str,
    tokenizer,
    split: str,
    batch_size: int,
    words_num: int,
    captions: str | int = "random",
    seed: int = 0,
) -> input_pipeline.EvalBatches:
    """One pass over `split` of the prepared data, this process's rows, as numpy batches.
    Long captions keep the official random subset of words, whatever data.long_caption says
    for training."""
    return input_pipeline.create_eval_dataset(
        data_source(config, workdir, tokenizer, words_num),
        split,
        batch_size,
        captions=captions,
        seed=seed,
        host=this_host(),
    )


def fixed_captions(config, workdir, tok, n: int = 8) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The first n test captions, tokenised: those of the GAN stage's image summaries (kept in
    W/gan/captions.txt) and the default of `--mode=sample`."""
    captions = input_pipeline.load_captions(data_dir(config, workdir), config.data.name, "test")[:n]
    tokens, lengths = tok.encode_batch(
        captions, config.data.words_num, None, long_caption="truncate"
    )
    return captions, np.asarray(tokens), np.asarray(lengths)


def write_captions(workdir: str, captions: list[str]) -> None:
    """W/gan/captions.txt: the captions of the GAN stage's image summaries."""
    if jax.process_index() != 0:
        return
    path = os.path.join(stage_dir(workdir, "gan"), CAPTIONS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(" ".join(c.split()) + "\n" for c in captions))


def default_captions(config, workdir: str) -> list[str]:
    """The captions `--mode=sample` draws when given none: W/gan/captions.txt, or for a workdir
    without it the prepared data's first test captions."""
    path = os.path.join(stage_dir(workdir, "gan"), CAPTIONS_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    try:
        return fixed_captions(config, workdir, load_tokenizer(config, workdir))[0]
    except (input_pipeline.PreparedDataError, tokenizers.TokenizerError):
        raise WorkdirError(
            "no captions to draw",
            f"{path}, or the prepared data's test captions",
            "pass --text='...' and/or --captions=FILE",
        ) from None


# ---------------------------------------------------------------------------------- states


def _gan_before_train_states(target: GanState) -> checkpoints.LegacyLayout:
    """GAN checkpoints written before the stage held one TrainState per network: one flat
    record (`step`, `g_params`, `g_batch_stats`, `g_opt`, `ema_params` and tuples `d_params`,
    `d_batch_stats`, `d_opts`); every network's step was the stage's."""
    g, ds = target.generator, target.discriminators
    old = {
        "step": g.step,
        "g_params": g.params,
        "g_batch_stats": g.batch_stats,
        "g_opt": g.opt_state,
        "ema_params": g.ema_params,
        "d_params": tuple(d.params for d in ds),
        "d_batch_stats": tuple(d.batch_stats for d in ds),
        "d_opts": tuple(d.opt_state for d in ds),
    }

    def convert(r: dict) -> GanState:
        # Each network gets its own copy of the step: a train step donates its state's buffers.
        return GanState(
            generator=g.replace(
                step=r["step"],
                params=r["g_params"],
                batch_stats=r["g_batch_stats"],
                opt_state=r["g_opt"],
                ema_params=r["ema_params"],
            ),
            discriminators=tuple(
                d.replace(step=jnp.copy(r["step"]), params=p, batch_stats=s, opt_state=o)
                for d, p, s, o in zip(
                    ds, r["d_params"], r["d_batch_stats"], r["d_opts"], strict=True
                )
            ),
        )

    return checkpoints.LegacyLayout(keys=frozenset(old), target=old, convert=convert)


_PRODUCED_BY = {
    "damsm": "--mode=pretrain_damsm",
    "stream": "--mode=pretrain_stream",
    "gan": "--mode=train",
}
# Earlier checkpoint layouts of each stage that still restore.
LEGACY_LAYOUTS = {"gan": (_gan_before_train_states,)}


def restore_final(workdir: str, stage: str, abstract, meta: dict, what: str):
    """(state, step) of the latest good checkpoint of a finished (or imported) stage (a damaged
    newer step is skipped with a warning), with a clear error if there is none. Read-only."""
    directory = checkpoint_dir(workdir, stage)
    ckpt = checkpoints.Checkpointer(directory, read_only=True)
    try:
        if not ckpt.all_steps():
            raise checkpoints.CheckpointError(
                f"no {what} checkpoint",
                directory,
                f"run {_PRODUCED_BY[stage]} (or --mode=import_torch) first",
            )
        step, state, _ = ckpt.restore_latest(
            abstract, expected_meta=meta, legacy=LEGACY_LAYOUTS.get(stage, ())
        )
        return state, step
    finally:
        ckpt.close()


def abstract_damsm(config, nets, mesh):
    """The DAMSM stage's state (text + image encoders), shapes only, replicated on `mesh`."""
    tx = damsm.make_tx(hyperparameters.damsm(config), 1)
    return parallel.abstract_replicated(mesh, damsm.init_state(nets, tx, jax.random.key(0), True))


def abstract_stream(config, nets, mesh):
    """The STREAM stage's state (caption CNN + RNN), shapes only, replicated on `mesh`."""
    tx = stream.make_tx(hyperparameters.stream(config))
    return parallel.abstract_replicated(mesh, stream.init_state(nets, tx, jax.random.key(0), True))


def abstract_gan(config, nets, mesh) -> GanState:
    """The GAN stage's state, shapes only, replicated on `mesh`."""
    hyper = hyperparameters.gan(config)
    state = gan.init_gan_state(nets, hyper, jax.random.key(0), abstract=True)
    return parallel.abstract_replicated(mesh, state)


def restore_damsm(config, workdir: str, nets, mesh):
    """The DAMSM state of a finished or imported DAMSM stage."""
    meta = {"model": model_fingerprint(config, "damsm")}
    return restore_final(workdir, "damsm", abstract_damsm(config, nets, mesh), meta, "DAMSM")[0]


def _only(abstract, *kept: str):
    """`abstract` (a state's shapes) with every leaf outside the subtrees `kept` ("params/text",
    ...) replaced by `checkpoints.SKIP`: a restore reads only the kept ones."""

    def keep_or_skip(path, leaf):
        name = checkpoints.leaf_name(path)
        wanted = any(name == k or name.startswith(k + "/") for k in kept)
        return leaf if wanted else checkpoints.SKIP

    return jax.tree_util.tree_map_with_path(keep_or_skip, abstract)


def restore_frozen(config, workdir: str, nets, mesh, damsm_state=None) -> gan.Frozen:
    """STEM from W/damsm (or the given DAMSM state) and STREAM from W/stream (pretrained or
    imported): the networks the GAN stage keeps fixed. Only their weights are read; the DAMSM
    image encoder and both optimiser states stay on disk."""
    if damsm_state is None:
        meta = {"model": model_fingerprint(config, "damsm")}
        target = _only(abstract_damsm(config, nets, mesh), "params/text")
        damsm_state, _ = restore_final(workdir, "damsm", target, meta, "DAMSM")
    meta = {"model": model_fingerprint(config, "stream")}
    target = _only(abstract_stream(config, nets, mesh), "params", "batch_stats")
    stream_state, _ = restore_final(workdir, "stream", target, meta, "STREAM")
    return gan.Frozen(
        text_encoder=damsm.text_encoder_variables(damsm_state),
        caption_cnn=stream.caption_cnn_variables(stream_state),
        caption_rnn=stream.caption_rnn_variables(stream_state),
    )


def restore_gan(config, workdir: str, nets, mesh) -> tuple[GanState, int]:
    """(GAN state, step) of the latest GAN checkpoint, trained or imported."""
    meta = {"model": model_fingerprint(config)}
    return restore_final(workdir, "gan", abstract_gan(config, nets, mesh), meta, "generator")
