"""The driver behind every --mode, and `--mode=all` chaining them.

`--mode=all`: prepare -> pretrain_damsm -> pretrain_stream -> train -> eval -> sample; every
stage is skipped when its final checkpoint exists and resumed when a partial one does. The
training drivers here build networks, data and state, then hand them to `loop.run_stage`; the
other modes live in their own modules (`data.prepare`, `torch_import.import_all`,
`evaluation.evaluate`, `sample`), which only this module imports. What the drivers read and
write is the workdir contract of `workdir.py`: every mode first checks the workdir (reading
only), and only a training mode then writes W/config.json.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import logging
from clu import parameter_overview

from mirrorgan_jax import hyperparameters, loop, networks, parallel, safe_load, sample, visualize
from mirrorgan_jax import workdir as wd
from mirrorgan_jax.data import input_pipeline, prepare, shapes
from mirrorgan_jax.evaluation import evaluate, text_probe
from mirrorgan_jax.torch_import import damsm as damsm_import
from mirrorgan_jax.torch_import import import_all
from mirrorgan_jax.torch_import import stream as stream_import
from mirrorgan_jax.train import backbone, damsm, gan, stream

STAGES = ("prepare", "pretrain_damsm", "pretrain_stream", "train", "eval", "sample")


# When the stage now running started, for its `startup_s` (`loop.StageSpec.started`): the
# process start for the first mode `run` runs in a process, the mode's own start after it.
_stage_started: list[float | None] = [None]


def run(
    mode: str,
    config,
    workdir: str,
    sample_args: dict | None = None,
    started: float | None = None,
    compilation_cache: bool = False,
) -> None:
    """Runs one mode (or all stages in order). started: the Unix time this process started
    (`observability.process_start_time()`), from which the first stage's `startup_s` counts;
    None: from the stage's own start. compilation_cache: use JAX's persistent compilation cache
    (`workdir.compilation_cache_dir`) once the workdir's checks have passed."""
    drivers: dict[str, Callable[[], Any]] = {
        "prepare": lambda: prepare.prepare(config, workdir),
        "import_torch": lambda: import_all.import_all(config, workdir),
        "pretrain_damsm": lambda: run_damsm(config, workdir),
        "pretrain_stream": lambda: run_stream(config, workdir),
        "train": lambda: run_gan(config, workdir),
        "eval": lambda: evaluate.run(config, workdir),
        "sample": lambda: sample.run(config, workdir, **(sample_args or {})),
    }
    modes = STAGES if mode == "all" else (mode,)
    unknown = [m for m in modes if m not in drivers]
    if unknown:
        raise ValueError(f"unknown mode {unknown[0]!r}; expected one of {(*drivers, 'all')}")
    wd.check(config, workdir, modes)
    trains = mode in wd.TRAINING_MODES
    if trains:
        wd.write_config(config, workdir)
    if compilation_cache:
        # After the checks, so that a refused run leaves the workdir as it was; the other
        # modes write only their outputs, so their cache is never the workdir's.
        parallel.enable_compilation_cache(
            wd.compilation_cache_dir(config, workdir if trains else None)
        )
    for i, m in enumerate(modes):
        logging.info("==== stage %s ====", m)
        _stage_started[0] = started if i == 0 and started is not None else time.time()
        drivers[m]()


def describe(config, workdir: str | None = None) -> dict:
    """`--mode=describe`: every network's parameter count (shapes only, no data), printed and,
    with a workdir, written to W/describe.json."""
    nets = networks.Networks.from_config(config)
    rng = jax.random.key(0)

    def count(params) -> int:
        return int(parameter_overview.count_parameters(params))

    def params(variables, part=None):
        p = variables["params"]
        return p if part is None else p.get(part, {})

    g = nets.init_generator(rng, abstract=True)
    cnn = nets.init_caption_cnn(rng, abstract=True)
    image = nets.init_image_encoder(rng, abstract=True)
    rows = {
        "text_encoder (STEM)": count(params(nets.init_text_encoder(rng, abstract=True))),
        "generator (GLAM + CA)": count(params(g)),
        "  conditioning augmentation": count(params(g, "ca")),
    }
    for i, size in enumerate(nets.image_sizes):
        rows[f"discriminator {size}"] = count(params(nets.init_discriminator(i, rng, True)))
    rows["caption CNN (STREAM encoder)"] = count(params(cnn))
    rows["  ResNet trunk"] = count(params(cnn, "resnet"))
    rows["caption RNN (STREAM decoder)"] = count(params(nets.init_caption_rnn(rng, True)))
    rows["image encoder (DAMSM)"] = count(params(image))
    rows["  Inception trunk"] = count(params(image, "trunk"))
    width = max(len(k) for k in rows)
    print(f"{'component':<{width}}  {'parameters':>12}")
    for name, n in rows.items():
        print(f"{name:<{width}}  {n:>12,}")
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "describe.json"), "w") as f:
            json.dump({k.strip(): v for k, v in rows.items()}, f, indent=2)
    return rows


# ---------------------------------------------------------------------------------- shared


def steps_for(stage_config, num_examples: int) -> int:
    """Number of optimiser steps of a stage: `steps` when set, else epochs x batches per epoch."""
    if stage_config.steps:
        return int(stage_config.steps)
    return int(stage_config.epochs) * max(1, math.floor(num_examples / stage_config.batch_size))


def _steps_per_epoch(config, workdir: str, batch_size: int) -> int:
    n = input_pipeline.num_examples(wd.data_dir(config, workdir), config.data.name, "train")
    return max(1, n // batch_size)


def train_batches(config, workdir: str, tokenizer, batch_size: int, mesh, seed: int):
    """`start_step -> iterator` of device batches (global batch sharded on 'data')."""

    source = wd.data_source(
        config, workdir, tokenizer, config.data.words_num, config.data.long_caption
    )

    def make(start_step: int):
        it = input_pipeline.create_dataset(
            source,
            "train",
            batch_size,
            random_crop=config.data.random_crop,
            seed=seed,
            shuffle_buffer=config.data.shuffle_buffer,
            start_step=start_step,
            prefetch=config.data.prefetch,
            host=wd.this_host(),
        )
        return (parallel.shard_batch(mesh, b) for b in it)

    return make


def _stage_spec(stage: str, workdir: str, total: int, config, loss_keys) -> loop.StageSpec:
    stage_config = config[{"damsm": "damsm", "stream": "stream", "gan": "train"}[stage]]
    return loop.StageSpec(
        name=stage,
        stage_dir=wd.stage_dir(workdir, stage),
        total_steps=total,
        checkpoint_every=stage_config.checkpoint_every,
        keep_checkpoints=getattr(stage_config, "keep_checkpoints", 2),
        log_every=getattr(stage_config, "log_every", 100),
        meta={"model": wd.model_fingerprint(config, stage)},
        loss_keys=loss_keys,
        legacy=wd.LEGACY_LAYOUTS.get(stage, ()),
        started=_stage_started[0],
    )


def _log_parameters(name: str, params) -> None:
    overview = parameter_overview.get_parameter_overview(params, include_stats=False)
    logging.info("%s:\n%s", name, overview)


def _evaluate_once(path: str, step: int, evaluate_fn: Callable[[], dict]) -> dict:
    """The test report of checkpoint `step`: read from `path` when it was written for that step
    (a finished stage run again is skipped, so is its evaluation), else `evaluate_fn()`, saved."""
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("step") == step:
            return saved
    report = {"step": step, **evaluate_fn()}
    wd.write_json(path, report)
    return report


# ---------------------------------------------------------------------------------- DAMSM, STREAM


def _pretrain(
    config, workdir: str, stage: str, seed: int, hyper, train, make_tx, init_state, evaluate_fn
):
    """The DAMSM or STREAM stage: train (or resume, or skip when finished), then the test report
    of the final step in W/<stage>/eval.json.

    hyper: the stage's hyperparameters; train: its module (`train.damsm`, `train.stream`:
    `init_state`, `make_train_step`); make_tx(hyper, steps_per_epoch) -> its optimiser;
    init_state(nets, tx, rng) -> a fresh state ready to train (only called when the stage has
    no checkpoint yet); evaluate_fn(nets, state, batches) -> the test report."""
    stage_config = config[stage]
    batch_size = stage_config.batch_size
    mesh = parallel.make_mesh()
    wd.keep_tokenizer(config, workdir)
    nets, tok = wd.load_networks(config, workdir)
    spe = _steps_per_epoch(config, workdir, batch_size)
    total = steps_for(stage_config, spe * batch_size)
    tx = make_tx(hyper, spe)
    rng = jax.random.key(seed)
    loss_key = {"damsm": "damsm/loss", "stream": "stream/ce"}[stage]
    spec = _stage_spec(stage, workdir, total, config, (loss_key,))

    def init():
        return parallel.replicate(mesh, init_state(nets, tx, jax.random.fold_in(rng, 1)))

    abstract = parallel.abstract_replicated(mesh, train.init_state(nets, tx, rng, abstract=True))
    state, step = loop.run_stage(
        spec,
        init,
        abstract,
        train.make_train_step(nets, hyper),
        train_batches(config, workdir, tok, batch_size, mesh, seed),
        jax.random.fold_in(rng, 2),
    )

    def test_batches():
        batches = wd.eval_batches(config, workdir, tok, "test", batch_size, config.data.words_num)
        return (parallel.shard_batch(mesh, b) for b in batches)

    report = _evaluate_once(
        os.path.join(wd.stage_dir(workdir, stage), "eval.json"),
        step,
        lambda: evaluate_fn(nets, state, test_batches()),
    )
    logging.info("%s test report: %s", stage, report)
    return state


def _pretrain_backbone(config, workdir: str, stage: str, variables: dict, features) -> dict:
    """`variables` ({"params", "batch_stats"} of a backbone's network) after
    `train.backbone.pretrain` on `train` renders at the last stage's size; the report goes to
    W/<stage>/backbone_pretrain.json."""
    bp, seed = config.backbone_pretrain, config.data.shapes.seed
    geometry = config.data.shapes.geometry
    size = networks.image_sizes(config)[-1]
    variables, report = backbone.pretrain(
        features,
        variables,
        shapes.render_dataset("train", bp.num_images, seed, size, geometry=geometry),
        shapes.render_dataset("test", bp.num_test_images, seed, size, geometry=geometry),
        steps=bp.steps,
        batch_size=bp.batch_size,
        lr=bp.lr,
        seed=config.seed + (0 if stage == "damsm" else 1),
    )
    wd.write_json(os.path.join(wd.stage_dir(workdir, stage), "backbone_pretrain.json"), report)
    logging.info("%s backbone pretrained on attributes: %s", stage, report)
    return variables


def run_damsm(config, workdir: str):
    """Pretrains STEM + the DAMSM image encoder; reports retrieval accuracy on the test split."""

    def init_state(nets, tx, rng):
        trunk = None
        if config.damsm.trunk_weights:
            trunk = _imagenet_inception(config.damsm.trunk_weights)
        state = damsm.init_state(nets, tx, rng, image_trunk=trunk)
        _log_parameters("text encoder", state.params["text"])
        _log_parameters("image encoder", state.params["image"])
        if not config.backbone_pretrain.steps:
            return state
        variables = _pretrain_backbone(
            config,
            workdir,
            "damsm",
            damsm.image_encoder_variables(state),
            backbone.damsm_trunk_features(nets),
        )
        params = {**state.params, "image": variables["params"]}
        return state.replace(params=params, batch_stats=variables["batch_stats"])

    def evaluate_fn(nets, state, batches):
        report = damsm.retrieval_accuracy(nets, state.params, state.batch_stats, batches)
        if config.data.name == "shapes":
            report["sentence_probe"] = _sentence_probe(config, workdir, nets, state.params["text"])
            logging.info("DAMSM sentence-embedding probe (test): %s", report["sentence_probe"])
        return report

    hyper = hyperparameters.damsm(config)
    return _pretrain(
        config,
        workdir,
        "damsm",
        config.seed,
        hyper,
        damsm,
        damsm.make_tx,
        init_state,
        evaluate_fn,
    )


# Train captions the sentence probe is fitted on (the first examples' captions, all of each).
PROBE_TRAIN_CAPTIONS = 20000


def _sentence_probe(config, workdir: str, nets, text_params) -> dict[str, float]:
    """`text_probe.linear_probe` of the STEM sentence embedding: fitted on `train` captions,
    scored on every `test` caption."""
    tok = wd.load_tokenizer(config, workdir)
    data_dir, words = wd.data_dir(config, workdir), config.data.words_num

    def embed(split):
        captions = input_pipeline.load_captions(data_dir, "shapes", split, per_image=None)
        captions = captions[:PROBE_TRAIN_CAPTIONS] if split == "train" else captions
        tokens, lengths = tok.encode_batch(captions, words, None, long_caption="truncate")
        embeddings = damsm.sentence_embeddings(nets, text_params, tokens, lengths)
        return embeddings, text_probe.caption_attributes(captions)

    return text_probe.linear_probe(*embed("train"), *embed("test"))


def run_stream(config, workdir: str):
    """Pretrains the STREAM captioner; reports teacher-forced token accuracy on test."""

    def init_state(nets, tx, rng):
        resnet = None
        if config.stream.backbone_weights:
            resnet = _imagenet_resnet(config.stream.backbone_weights)
        state = stream.init_state(nets, tx, rng, cnn_backbone=resnet)
        if resnet is not None or not config.backbone_pretrain.steps:
            return state
        variables = _pretrain_backbone(
            config,
            workdir,
            "stream",
            stream.caption_cnn_variables(state),
            backbone.stream_backbone_features(nets),
        )
        params = {**state.params, "cnn": variables["params"]}
        return state.replace(params=params, batch_stats=variables["batch_stats"])

    def evaluate_fn(nets, state, batches):
        return stream.evaluate(nets, state.params, state.batch_stats, batches)

    return _pretrain(
        config,
        workdir,
        "stream",
        config.seed + 1,
        hyperparameters.stream(config),
        stream,
        lambda hyper, _steps_per_epoch: stream.make_tx(hyper),  # no per-epoch schedule
        init_state,
        evaluate_fn,
    )


def _imagenet_resnet(path: str) -> dict:
    """The caption CNN's ResNet {params, batch_stats} from ImageNet weights (torchvision
    `resnet*` names, .npz or .pth through the restricted reader)."""
    source = f"stream.backbone_weights={path}"
    return stream_import.resnet_backbone_variables(_weights_file(path, source), source)


def _imagenet_inception(path: str) -> dict:
    """The DAMSM image encoder's trunk {params, batch_stats} from ImageNet weights
    (torchvision `inception_v3` names, .npz or .pth through the restricted reader)."""
    source = f"damsm.trunk_weights={path}"
    return damsm_import.inception_v3_trunk_variables(_weights_file(path, source), source)


def _weights_file(path: str, source: str) -> dict:
    try:
        return safe_load.load_state_dict(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}: no such file") from None


# ---------------------------------------------------------------------------------- GAN


def run_gan(config, workdir: str):
    """MirrorGAN training with frozen STEM and STREAM."""
    mesh = parallel.make_mesh()
    wd.keep_tokenizer(config, workdir)
    nets, tok = wd.load_networks(config, workdir)
    spe = _steps_per_epoch(config, workdir, config.train.batch_size)
    total = steps_for(config.train, spe * config.train.batch_size)
    hyper = hyperparameters.gan(config)
    rng = jax.random.key(config.seed + 2)
    frozen = wd.restore_frozen(config, workdir, nets, mesh)
    loss_keys = tuple(f"d{s}/loss" for s in nets.image_sizes) + ("g/loss",)
    spec = _stage_spec("gan", workdir, total, config, loss_keys)

    def init():
        state = gan.init_gan_state(nets, hyper, jax.random.fold_in(rng, 1))
        _log_parameters("generator", state.generator.params)
        for s, d in zip(nets.image_sizes, state.discriminators, strict=True):
            _log_parameters(f"discriminator {s}", d.params)
        return parallel.replicate(mesh, state)

    captions, tokens, lengths = wd.fixed_captions(config, workdir, tok)
    wd.write_captions(workdir, captions)
    sample_rng = jax.random.key(100)
    generate = jax.jit(lambda v, t, ln, r: gan.generate(nets, v, frozen, t, ln, r))
    image_dir = os.path.join(wd.stage_dir(workdir, "gan"), "images")

    def on_log(step, state, writer):
        if step % config.train.image_every and step != total:
            return {}
        out = generate(state.generator.ema_variables(), tokens, lengths, sample_rng)
        images = [np.asarray(x, np.float32) for x in out.images]
        grid = visualize.image_grid(images[-1])
        summaries = {"samples": grid[None]}
        if out.attention:
            words = [tok.decode_words(t[:n]) for t, n in zip(tokens, lengths)]
            att = visualize.attention_figure(
                images[-1][0], np.asarray(out.attention[-1][0], np.float32), words[0]
            )
            summaries["attention"] = att[None]
        writer.write_images(step, summaries)
        if jax.process_index() == 0:
            os.makedirs(image_dir, exist_ok=True)
            visualize.save_png(os.path.join(image_dir, f"step_{step:07d}.png"), grid)
        return {}

    state, _ = loop.run_stage(
        spec,
        init,
        wd.abstract_gan(config, nets, mesh),
        gan.make_train_step(nets, hyper, frozen),
        train_batches(config, workdir, tok, config.train.batch_size, mesh, config.seed + 2),
        jax.random.fold_in(rng, 2),
        on_log=on_log,
    )
    logging.info("GAN stage finished; captions of the image summaries: %s", captions)
    return state
