"""Drivers of the three training stages: build nets, data and state, then `loop.run_stage`."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging

from mirrorgan_jax import (
    checkpoints,
    configuration,
    loop,
    parallel,
    pipeline,
    pretrain_backbone,
    pretrain_damsm,
    pretrain_stream,
    train_gan,
)
from mirrorgan_jax.observability import parameter_overview


def _place(mesh, state):
    return jax.device_put(state, parallel.replicated(mesh))


def _abstract(mesh, abstract_state):
    sharding = parallel.replicated(mesh)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_state
    )


def _write_json(path: str, payload: dict) -> None:
    if jax.process_index() != 0:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def _evaluate_once(path: str, step: int, evaluate) -> dict:
    """The test report of checkpoint `step`: read from `path` when it was written for that step
    (a finished stage run again is skipped, so is its evaluation), else `evaluate()` and save."""
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("step") == step:
            return saved
    report = {"step": step, **evaluate()}
    _write_json(path, report)
    return report


def _pretrain_backbone(config, workdir: str, stage: str, state, key: str, features):
    """`state` with `state.params[key]` and `state.batch_stats` replaced by
    `pretrain_backbone.pretrain` on `train` renders at the last stage's size; the report goes to
    W/<stage>/backbone_pretrain.json. Runs only when the stage starts from scratch."""
    from mirrorgan_jax.evaluation import shapes_metrics

    bp, seed = config.backbone_pretrain, config.data.shapes.seed
    size = configuration.image_sizes(config)[-1]
    variables, report = pretrain_backbone.pretrain(
        features,
        {"params": state.params[key], "batch_stats": state.batch_stats},
        shapes_metrics.render_dataset("train", bp.num_images, seed, size),
        shapes_metrics.render_dataset("test", bp.num_test_images, seed, size),
        steps=bp.steps,
        batch_size=bp.batch_size,
        lr=bp.lr,
        seed=config.seed + (0 if stage == "damsm" else 1),
    )
    _write_json(os.path.join(workdir, stage, "backbone_pretrain.json"), report)
    logging.info("%s backbone pretrained on attributes: %s", stage, report)
    return state.replace(
        params={**state.params, key: variables["params"]}, batch_stats=variables["batch_stats"]
    )


def _steps_per_epoch(config, workdir, batch_size) -> int:
    return max(1, pipeline.num_train_examples(config, workdir) // batch_size)


# ---------------------------------------------------------------- DAMSM
def run_damsm(config, workdir: str):
    """Pretrains STEM + the DAMSM image encoder; reports retrieval accuracy on the test split."""
    mesh = parallel.make_mesh()
    nets, tok = pipeline.networks(config, workdir)
    spe = _steps_per_epoch(config, workdir, config.damsm.batch_size)
    total = configuration.steps_for(config.damsm, spe * config.damsm.batch_size)
    tx = pretrain_damsm.make_tx(config, spe)
    rng = jax.random.key(config.seed)
    spec = pipeline.stage_spec("damsm", workdir, total, config.damsm, config, ("damsm/loss",))

    def init():
        state = pretrain_damsm.init_state(nets, tx, jax.random.fold_in(rng, 1))
        logging.info(parameter_overview("text encoder", state.params["text"]))
        logging.info(parameter_overview("image encoder", state.params["image"]))
        if config.backbone_pretrain.steps:
            state = _pretrain_backbone(
                config,
                workdir,
                "damsm",
                state,
                "image",
                pretrain_backbone.damsm_trunk_features(nets),
            )
        return _place(mesh, state)

    abstract = _abstract(mesh, pretrain_damsm.init_state(nets, tx, rng, abstract=True))
    state, step = loop.run_stage(
        spec,
        init,
        abstract,
        pretrain_damsm.make_train_step(nets, config, tx),
        pipeline.train_batches(config, workdir, tok, config.damsm.batch_size, mesh, config.seed),
        jax.random.fold_in(rng, 2),
    )
    report = _evaluate_once(
        os.path.join(workdir, "damsm", "eval.json"),
        step,
        lambda: pretrain_damsm.retrieval_accuracy(
            nets,
            state.params,
            state.batch_stats,
            pipeline.eval_batches(config, workdir, tok, config.damsm.batch_size, mesh, "test"),
        ),
    )
    logging.info("DAMSM test retrieval: %s", report)
    return state


# ---------------------------------------------------------------- STREAM
def run_stream(config, workdir: str):
    """Pretrains the STREAM captioner; reports teacher-forced token accuracy on test."""
    mesh = parallel.make_mesh()
    nets, tok = pipeline.networks(config, workdir)
    spe = _steps_per_epoch(config, workdir, config.stream.batch_size)
    total = configuration.steps_for(config.stream, spe * config.stream.batch_size)
    tx = pretrain_stream.make_tx(config)
    rng = jax.random.key(config.seed + 1)
    spec = pipeline.stage_spec("stream", workdir, total, config.stream, config, ("stream/ce",))

    def init():
        state = pretrain_stream.init_state(nets, tx, jax.random.fold_in(rng, 1))
        if config.stream.backbone_weights:
            state = _load_stream_backbone(config, nets, state)
        elif config.backbone_pretrain.steps:
            state = _pretrain_backbone(
                config,
                workdir,
                "stream",
                state,
                "cnn",
                pretrain_backbone.stream_backbone_features(nets),
            )
        return _place(mesh, state)

    abstract = _abstract(mesh, pretrain_stream.init_state(nets, tx, rng, abstract=True))
    state, step = loop.run_stage(
        spec,
        init,
        abstract,
        pretrain_stream.make_train_step(nets, tx, config.stream.freeze_backbone),
        pipeline.train_batches(
            config, workdir, tok, config.stream.batch_size, mesh, config.seed + 1
        ),
        jax.random.fold_in(rng, 2),
    )
    report = _evaluate_once(
        os.path.join(workdir, "stream", "eval.json"),
        step,
        lambda: pretrain_stream.evaluate(
            nets,
            state.params,
            state.batch_stats,
            pipeline.eval_batches(config, workdir, tok, config.stream.batch_size, mesh, "test"),
        ),
    )
    logging.info("STREAM test: %s", report)
    return state


def _load_stream_backbone(config, nets, state):
    """ImageNet ResNet weights (torchvision names, .npz or .pth) into the caption CNN trunk."""
    from mirrorgan_jax import safe_load
    from mirrorgan_jax.torch_import import stream as stream_import

    sd = safe_load.load_state_dict(config.stream.backbone_weights)
    backbone = stream_import.resnet_backbone_variables(sd)
    params = {**state.params, "cnn": {**state.params["cnn"], "resnet": backbone["params"]}}
    stats = {**state.batch_stats, "resnet": backbone["batch_stats"]}
    return state.replace(params=params, batch_stats=stats)


# ---------------------------------------------------------------- GAN
def restore_final(stage_dir: str, abstract, meta: dict, what: str):
    """Latest checkpoint of a finished (or imported) stage, with a clear error if none."""
    ckpt = checkpoints.Checkpointer(os.path.join(stage_dir, "checkpoints"), max_to_keep=None)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(
                f"no {what} checkpoint in {stage_dir}/checkpoints: run --mode=pretrain_"
                f"{os.path.basename(stage_dir)} (or --mode=import_torch) first"
            )
        state, _ = ckpt.restore(step, abstract, expected_meta=meta)
        return state, step
    finally:
        ckpt.close()


def restore_damsm(config, workdir: str, nets, mesh):
    """The DAMSM state (text + image encoders) of a finished or imported DAMSM stage."""
    abstract = pretrain_damsm.init_state(
        nets, pretrain_damsm.make_tx(config, 1), jax.random.key(0), abstract=True
    )
    meta = {"model": pipeline.model_fingerprint(config, "damsm")}
    state, _ = restore_final(
        os.path.join(workdir, "damsm"), _abstract(mesh, abstract), meta, "DAMSM"
    )
    return state


def load_frozen(config, workdir: str, nets, mesh) -> train_gan.Frozen:
    """STEM from W/damsm and STREAM from W/stream (pretrained or imported)."""
    rng = jax.random.key(0)
    damsm = restore_damsm(config, workdir, nets, mesh)
    stream_abs = pretrain_stream.init_state(nets, pretrain_stream.make_tx(config), rng, True)
    stream, _ = restore_final(
        os.path.join(workdir, "stream"),
        _abstract(mesh, stream_abs),
        {"model": pipeline.model_fingerprint(config, "stream")},
        "STREAM",
    )
    return train_gan.Frozen(
        text_encoder={"params": damsm.params["text"]},
        caption_cnn={"params": stream.params["cnn"], "batch_stats": stream.batch_stats},
        caption_rnn={"params": stream.params["rnn"]},
    )


def fixed_captions(config, workdir, tok, n: int = 8) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The first n test captions, tokenised: the fixed captions of the image summaries."""
    from mirrorgan_jax.data import input_pipeline

    captions = input_pipeline.load_captions(
        pipeline.data_dir(config, workdir), config.data.name, "test"
    )[:n]
    tokens, lengths = tok.encode_batch(
        captions, config.data.words_num, None, long_caption="truncate"
    )
    return captions, np.asarray(tokens), np.asarray(lengths)


def run_gan(config, workdir: str):
    """MirrorGAN training with frozen STEM and STREAM."""
    from mirrorgan_jax import visualize

    mesh = parallel.make_mesh()
    nets, tok = pipeline.networks(config, workdir)
    spe = _steps_per_epoch(config, workdir, config.train.batch_size)
    total = configuration.steps_for(config.train, spe * config.train.batch_size)
    hyper = train_gan.GanHyper.from_config(config)
    rng = jax.random.key(config.seed + 2)
    frozen = load_frozen(config, workdir, nets, mesh)
    loss_keys = tuple(f"d{s}/loss" for s in nets.image_sizes) + ("g/loss",)
    spec = pipeline.stage_spec("gan", workdir, total, config.train, config, loss_keys)

    def init():
        state = train_gan.init_gan_state(nets, hyper, jax.random.fold_in(rng, 1))
        logging.info(parameter_overview("generator", state.g_params))
        for s, p in zip(nets.image_sizes, state.d_params):
            logging.info(parameter_overview(f"discriminator {s}", p))
        return _place(mesh, state)

    captions, tokens, lengths = fixed_captions(config, workdir, tok)
    sample_rng = jax.random.key(100)
    gen = jax.jit(lambda p, s, t, ln, r: train_gan.generate(nets, p, s, frozen, t, ln, r))
    image_dir = os.path.join(workdir, "gan", "images")

    def on_log(step, state, writer):
        if step % config.train.image_every and step != total:
            return {}
        out = gen(state.ema_params, state.g_batch_stats, tokens, lengths, sample_rng)
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

    abstract = _abstract(mesh, train_gan.init_gan_state(nets, hyper, rng, abstract=True))
    state, _ = loop.run_stage(
        spec,
        init,
        abstract,
        train_gan.make_train_step(nets, hyper, frozen),
        pipeline.train_batches(
            config, workdir, tok, config.train.batch_size, mesh, config.seed + 2
        ),
        jax.random.fold_in(rng, 2),
        on_log=on_log,
    )
    logging.info("GAN stage finished; captions of the image summaries: %s", captions)
    return state
