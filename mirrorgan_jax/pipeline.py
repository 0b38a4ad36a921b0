"""The stages behind every --mode, and `--mode=all` chaining them.

Workdir layout (a contract other tools rely on):
  W/config.json        the config of the run (a run with a different model config is refused)
  W/data/              prepared tfds shards + tokenizer (unless config.data.data_dir is set)
  W/damsm/ W/stream/ W/gan/   each: checkpoints/ (Orbax), metrics.jsonl, TensorBoard events
  W/eval/metrics.json  W/samples/
`--mode=all`: prepare -> pretrain_damsm -> pretrain_stream -> train -> eval -> sample; every
stage is skipped when its final checkpoint exists and resumed when a partial one does.
"""

from __future__ import annotations

import json
import os

import jax
from absl import logging

from mirrorgan_jax import checkpoints, configuration, loop, parallel
from mirrorgan_jax.networks import Networks

STAGES = ("prepare", "pretrain_damsm", "pretrain_stream", "train", "eval", "sample")


def data_dir(config, workdir: str) -> str:
    return config.data.data_dir or os.path.join(workdir, "data")


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


def load_tokenizer(config, workdir: str):
    from mirrorgan_jax.data import tokenizers

    return tokenizers.load_tokenizer(os.path.join(data_dir(config, workdir), "tokenizer"))


def networks(config, workdir: str):
    tok = load_tokenizer(config, workdir)
    return Networks.from_config(config, n_words=tok.vocab_size), tok


def train_batches(config, workdir: str, tokenizer, batch_size: int, mesh, seed: int):
    """`start_step -> iterator` of device batches (global batch sharded on 'data')."""
    from mirrorgan_jax.data import input_pipeline

    def make(start_step: int):
        it = input_pipeline.create_dataset(
            data_dir=data_dir(config, workdir),
            name=config.data.name,
            split="train",
            tokenizer=tokenizer,
            image_sizes=configuration.image_sizes(config),
            batch_size=batch_size,
            words_num=config.data.words_num,
            long_caption=config.data.long_caption,
            random_crop=config.data.random_crop,
            shuffle=True,
            seed=seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            start_step=start_step,
            captions_per_image=config.data.captions_per_image,
            shuffle_buffer=config.data.shuffle_buffer,
            prefetch=config.data.prefetch,
        )
        return (parallel.shard_batch(mesh, b) for b in it)

    return make


def eval_batches(
    config, workdir: str, tokenizer, batch_size: int, mesh, split: str, words_num: int | None = None
):
    """Iterator of device batches over one pass of `split` (no augmentation)."""
    from mirrorgan_jax.data import input_pipeline

    it = input_pipeline.create_eval_dataset(
        data_dir=data_dir(config, workdir),
        name=config.data.name,
        split=split,
        tokenizer=tokenizer,
        image_sizes=configuration.image_sizes(config),
        batch_size=batch_size,
        words_num=words_num or config.data.words_num,
        captions_per_image=config.data.captions_per_image,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return (parallel.shard_batch(mesh, b) for b in it)


def num_train_examples(config, workdir: str) -> int:
    from mirrorgan_jax.data import input_pipeline

    return input_pipeline.num_examples(data_dir(config, workdir), config.data.name, "train")


def stage_spec(name: str, workdir: str, total: int, stage_cfg, config, loss_keys) -> loop.StageSpec:
    return loop.StageSpec(
        name=name,
        stage_dir=os.path.join(workdir, name),
        total_steps=total,
        checkpoint_every=stage_cfg.checkpoint_every,
        keep_checkpoints=getattr(stage_cfg, "keep_checkpoints", 2),
        log_every=getattr(stage_cfg, "log_every", 100),
        meta={"model": model_fingerprint(config, name)},
        loss_keys=loss_keys,
    )


def run(mode: str, config, workdir: str, sample_args: dict | None = None) -> None:
    """Runs one mode (or all stages in order)."""
    write_config(config, workdir)
    modes = STAGES if mode == "all" else (mode,)
    for m in modes:
        logging.info("==== stage %s ====", m)
        if m == "prepare":
            from mirrorgan_jax.data import prepare

            prepare.prepare(config, workdir)
        elif m == "import_torch":
            from mirrorgan_jax import import_torch

            import_torch.import_all(config, workdir)
        elif m == "pretrain_damsm":
            from mirrorgan_jax import stages

            stages.run_damsm(config, workdir)
        elif m == "pretrain_stream":
            from mirrorgan_jax import stages

            stages.run_stream(config, workdir)
        elif m == "train":
            from mirrorgan_jax import stages

            stages.run_gan(config, workdir)
        elif m == "eval":
            from mirrorgan_jax import evaluate

            evaluate.run(config, workdir)
        elif m == "sample":
            from mirrorgan_jax import sample

            sample.run(config, workdir, **(sample_args or {}))
        else:
            raise ValueError(f"unknown mode {m!r}; expected one of {STAGES + ('all',)}")
