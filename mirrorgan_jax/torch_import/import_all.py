"""`--mode=import_torch`: released PyTorch weights -> Orbax checkpoints in the workdir layout.

Reads the files named in `config.weights` (`.pth`, legacy or zip, through the restricted loader;
or `.npz` with the official key names, which needs no torch):
  text_encoder + image_encoder (AttnGAN DAMSM)  -> W/damsm/checkpoints  (marked final)
  caption_cnn + caption_rnn (STREAM)            -> W/stream/checkpoints (marked final)
  generator (+ discriminators, optional)        -> W/gan/checkpoints at step 0 (EMA = G)
Every file is converted and checked against the configured networks before anything is
written: a missing or unexpected key, a wrong shape or vocabulary size raises
`WeightMismatchError` naming the key, both shapes and the config value to change.
"""

from __future__ import annotations

import os

import jax
from absl import logging

from mirrorgan_jax import checkpoints, configuration, hyperparameters, parallel, safe_load
from mirrorgan_jax import workdir as wd
from mirrorgan_jax.data import tokenizers
from mirrorgan_jax.networks import Networks
from mirrorgan_jax.torch_import import common, damsm, gan, stream
from mirrorgan_jax.train import damsm as damsm_train
from mirrorgan_jax.train import stream as stream_train
from mirrorgan_jax.train.state import joint_state

_HINT = {
    "text_encoder": "model.n_words (the vocabulary), model.word_embedding_dim, "
    "model.text_embedding_dim",
    "image_encoder": "model.damsm_backbone, model.text_embedding_dim",
    "generator": "model.gf_dim, model.z_dim, model.condition_dim, model.r_num, "
    "model.branch_num, model.text_embedding_dim",
    "discriminator": "model.df_dim, model.text_embedding_dim, model.branch_num",
    "caption_cnn": "model.stream_backbone, model.stream_embed_size",
    "caption_rnn": "model.n_words, model.stream_embed_size, model.stream_hidden_size",
}


def _convert(path: str, convert, expected, hint_key: str):
    sd = safe_load.load_state_dict(path)
    variables = convert(sd)
    common.check_against(variables, expected, source=path, hint=_HINT[hint_key])
    return variables


def _file_or_fresh(path: str, convert, init, key, hint_key: str):
    """The file's converted variables, checked against `init`'s shapes; without a file, fresh
    random ones from `init(key)`."""
    if path:
        return _convert(path, convert, init(key, abstract=True), hint_key)
    return init(key)


def _n_words(config, workdir: str) -> int | None:
    try:
        return wd.load_tokenizer(config, workdir).vocab_size
    except tokenizers.TokenizerError:
        return None


def import_all(config, workdir: str) -> dict:
    """Converts every configured file, then writes the checkpoints. Returns what was written."""
    w = config.weights
    if not any([w.text_encoder, w.image_encoder, w.generator, w.caption_cnn, w.caption_rnn]):
        raise configuration.ConfigError(
            "--mode=import_torch: no file given",
            "config.weights",
            "set --config.weights.text_encoder / image_encoder / generator / discriminators / "
            "caption_cnn / caption_rnn",
        )
    nets = Networks.from_config(config, n_words=config.model.n_words or _n_words(config, workdir))
    rng = jax.random.key(0)
    states = {}

    # Convert and check everything first: nothing is written if any file does not fit. Only
    # the networks no file provides get random weights; optimiser states start fresh.
    if w.text_encoder or w.image_encoder:
        kt, ki = jax.random.split(rng)
        text = _file_or_fresh(
            w.text_encoder, gan.text_encoder_variables, nets.init_text_encoder, kt, "text_encoder"
        )
        image = _file_or_fresh(
            w.image_encoder,
            damsm.image_encoder_variables,
            nets.init_image_encoder,
            ki,
            "image_encoder",
        )
        tx = damsm_train.make_tx(hyperparameters.damsm(config), 1)
        variables = {"text": text, "image": image}
        states["damsm"] = jax.jit(lambda v: joint_state(tx, v, "image"))(variables)
    if w.caption_cnn or w.caption_rnn:
        kc, kr = jax.random.split(rng)
        cnn = _file_or_fresh(
            w.caption_cnn, stream.caption_cnn_variables, nets.init_caption_cnn, kc, "caption_cnn"
        )
        rnn = _file_or_fresh(
            w.caption_rnn, stream.caption_rnn_variables, nets.init_caption_rnn, kr, "caption_rnn"
        )
        tx = stream_train.make_tx(hyperparameters.stream(config))
        states["stream"] = jax.jit(lambda v: joint_state(tx, v, "cnn"))({"cnn": cnn, "rnn": rnn})
    if w.generator:
        hyper = hyperparameters.gan(config)
        g = _file_or_fresh(
            w.generator,
            lambda sd: gan.generator_variables(sd, len(nets.image_sizes)),
            nets.init_generator,
            rng,
            "generator",
        )
        d_files = [f.strip() for f in w.discriminators.split(",") if f.strip()]
        if d_files and len(d_files) != len(nets.image_sizes):
            raise configuration.ConfigError(
                f"the model has {len(nets.image_sizes)} stages ({nets.image_sizes}), the "
                f"discriminators {len(d_files)} files",
                f"config.weights.discriminators={w.discriminators}",
                "give one file per stage",
            )
        ds = [
            _file_or_fresh(
                d_files[i] if d_files else "",
                lambda sd, s=nets.image_sizes[i]: gan.discriminator_variables(sd, s),
                lambda k, abstract=False, i=i: nets.init_discriminator(i, k, abstract=abstract),
                key,
                "discriminator",
            )
            for i, key in enumerate(jax.random.split(rng, len(nets.image_sizes)))
        ]
        states["gan"] = jax.jit(hyper.gan_state)(g, ds)  # EMA = G; fresh optimiser states

    for name in states:
        directory = os.path.join(wd.stage_dir(workdir, name), "checkpoints")
        if os.path.isdir(directory) and os.listdir(directory):
            raise wd.WorkdirError(
                "the workdir already holds checkpoints of this stage, refusing to overwrite them",
                directory,
                "use another --workdir",
            )
    wd.write_config(config, workdir)
    mesh = parallel.make_mesh()
    written = {}
    for name, state in states.items():
        directory = os.path.join(wd.stage_dir(workdir, name), "checkpoints")
        ckpt = checkpoints.Checkpointer(directory, max_to_keep=None)
        try:
            final = name != "gan"  # pretrained encoders stand for finished stages
            ckpt.save(
                0,
                parallel.replicate(mesh, state),
                meta={
                    "model": wd.model_fingerprint(config, name),
                    "step": 0,
                    "final": final,
                    "imported": True,
                },
                force=True,
            )
            ckpt.wait_until_finished()
        finally:
            ckpt.close()
        written[name] = directory
        logging.info("imported %s -> %s", name, directory)
    return written
