"""The workdir contract: what a run directory holds, and how every mode reads it back.

Layout (other tools rely on it):
  W/config.json        the config of the run (a run with a different model config is refused)
  W/data/              prepared tfds shards + tokenizer (unless config.data.data_dir is set)
  W/damsm/ W/stream/ W/gan/   each: checkpoints/ (Orbax), metrics.jsonl, TensorBoard events;
                       damsm/ and stream/ also eval.json (the test report of the final step),
                       gan/images/ the sample grids written during training
  W/eval/metrics.json  W/eval/shapes_classifier.npz (shapes)  W/eval/fid_reference_<split>.npz
  W/samples/           PNGs, attention maps, grid.png, index.html
Every checkpoint's meta holds its stage's `model_fingerprint`; restoring one written for other
networks is refused with the differing keys.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from mirrorgan_jax import checkpoints, hyperparameters, networks, parallel
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


def data_dir(config, workdir: str) -> str:
    return config.data.data_dir or os.path.join(workdir, "data")


def stage_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage)


def model_fingerprint(config, stage: str = "gan") -> dict:
    """The model config values that decide a stage's networks (saved with and checked against
    its checkpoints). The GAN stage depends on all of them; DAMSM and STREAM only on their own
    networks, so their checkpoints can be shared by runs that differ only in the generator."""
    model = json.loads(config.model.to_json())
    fields = _STAGE_FIELDS.get(stage)
    return model if fields is None else {k: model[k] for k in fields}


def write_config(config, workdir: str) -> None:
    """Writes W/config.json; refuses a workdir whose saved model config differs."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    current = json.loads(config.to_json())
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        diffs = checkpoints.config_differences(
            {"model": saved.get("model", {})}, {"model": current["model"]}, ("saved", "now")
        )
        if diffs:
            raise checkpoints.ConfigMismatchError(
                f"{path} was written by a run with a different model config: "
                + "; ".join(diffs)
                + ". Use another --workdir or the same config."
            )
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


def load_tokenizer(config, workdir: str) -> tokenizers.Tokenizer:
    return tokenizers.load_tokenizer(os.path.join(data_dir(config, workdir), "tokenizer"))


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
    """The first n test captions, tokenised: those of the GAN stage's image summaries and the
    default of `--mode=sample`."""
    captions = input_pipeline.load_captions(data_dir(config, workdir), config.data.name, "test")[:n]
    tokens, lengths = tok.encode_batch(
        captions, config.data.words_num, None, long_caption="truncate"
    )
    return captions, np.asarray(tokens), np.asarray(lengths)


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
    """(state, step) of the latest checkpoint of a finished (or imported) stage, with a clear
    error if there is none."""
    directory = os.path.join(stage_dir(workdir, stage), "checkpoints")
    ckpt = checkpoints.Checkpointer(directory, max_to_keep=None)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(
                f"no {what} checkpoint in {directory}: run {_PRODUCED_BY[stage]} "
                "(or --mode=import_torch) first"
            )
        state, _ = ckpt.restore(
            step, abstract, expected_meta=meta, legacy=LEGACY_LAYOUTS.get(stage, ())
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


def restore_frozen(config, workdir: str, nets, mesh, damsm_state=None) -> gan.Frozen:
    """STEM from W/damsm (or the given DAMSM state) and STREAM from W/stream (pretrained or
    imported): the networks the GAN stage keeps fixed."""
    if damsm_state is None:
        damsm_state = restore_damsm(config, workdir, nets, mesh)
    meta = {"model": model_fingerprint(config, "stream")}
    stream_state, _ = restore_final(
        workdir, "stream", abstract_stream(config, nets, mesh), meta, "STREAM"
    )
    return gan.Frozen(
        text_encoder=damsm.text_encoder_variables(damsm_state),
        caption_cnn=stream.caption_cnn_variables(stream_state),
        caption_rnn=stream.caption_rnn_variables(stream_state),
    )


def restore_gan(config, workdir: str, nets, mesh) -> tuple[GanState, int]:
    """(GAN state, step) of the latest GAN checkpoint, trained or imported."""
    meta = {"model": model_fingerprint(config)}
    return restore_final(workdir, "gan", abstract_gan(config, nets, mesh), meta, "generator")
