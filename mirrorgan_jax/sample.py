"""`--mode=sample`: captions -> images of every stage, word-attention maps and a gallery.

Samples with the generator's EMA parameters and BN statistics, the text encoder and the
tokenizer of the workdir, restored onto whatever devices this machine has.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging

from mirrorgan_jax import parallel, visualize
from mirrorgan_jax import workdir as wd
from mirrorgan_jax.train import damsm, gan


class SamplingError(ValueError):
    """Bad sampling input: no captions, an empty caption, no trained generator."""


def read_captions(captions_file: str | None, text: list[str]) -> list[str]:
    """Captions from a file (one per line; blank lines ignored) and from --text, in order."""
    captions: list[str] = []
    if captions_file:
        if not os.path.isfile(captions_file):
            raise SamplingError(f"--captions={captions_file}: no such file")
        with open(captions_file, encoding="utf-8") as f:
            from_file = [line.strip() for line in f if line.strip()]
        if not from_file:
            raise SamplingError(f"--captions={captions_file}: the file holds no captions")
        captions += from_file
    for i, t in enumerate(text):
        if not t.strip():
            raise SamplingError(f"--text number {i + 1} is an empty caption")
        captions.append(t.strip())
    if not captions:
        raise SamplingError("no captions: pass --captions=FILE and/or --text='...'")
    return captions


def run(
    config,
    workdir: str,
    captions: str | None = None,
    text: list[str] | None = None,
    num_samples: int | None = None,
    out: str | None = None,
    seed: int | None = None,
) -> dict:
    """Draws `num_samples` images per caption; writes PNGs, attention maps, grid, index.html."""
    if captions is None and not text:
        captions_list = wd.fixed_captions(config, workdir, wd.load_tokenizer(config, workdir))[0]
    else:
        captions_list = read_captions(captions, text or [])
    gan_dir = wd.stage_dir(workdir, "gan")
    if not os.path.isdir(os.path.join(gan_dir, "checkpoints")):
        raise SamplingError(
            f"{gan_dir}/checkpoints does not exist: train first (--mode=train) or import a "
            "generator (--mode=import_torch)"
        )
    mesh = parallel.make_mesh()
    nets, tok = wd.load_networks(config, workdir)
    gan_state, step = wd.restore_gan(config, workdir, nets, mesh)
    g_vars = gan_state.generator.ema_variables()
    text_vars = damsm.text_encoder_variables(wd.restore_damsm(config, workdir, nets, mesh))
    frozen = gan.Frozen(text_encoder=text_vars, caption_cnn=None, caption_rnn=None)
    num = num_samples or config.sample.num_samples
    out = out or os.path.join(workdir, "samples")
    os.makedirs(out, exist_ok=True)
    rng = jax.random.key(config.seed if seed is None else seed)

    unknown = {c: tok.unknown_words(c) for c in captions_list}
    for c, words in unknown.items():
        if words:
            logging.warning("caption %r: unknown words %s were %s", c, words, tok.unknown_policy)
    tokens, lengths = tok.encode_batch(
        captions_list, config.data.words_num, None, long_caption="truncate"
    )
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    if np.any(lengths == 0):
        bad = [c for c, n in zip(captions_list, lengths) if n == 0]
        raise SamplingError(f"captions with no known word (nothing to condition on): {bad}")

    gen = jax.jit(lambda t, ln, r: gan.generate(nets, g_vars, frozen, t, ln, r))
    entries, last_stage = [], []
    for k in range(num):
        outputs = gen(tokens, lengths, jax.random.fold_in(rng, k))
        images = [np.asarray(x, np.float32) for x in outputs.images]
        attention = [np.asarray(a, np.float32) for a in outputs.attention]
        last_stage.append(images[-1])
        for i, caption in enumerate(captions_list):
            stem = f"caption{i:03d}_sample{k:02d}"
            paths = []
            for s, img in enumerate(images):
                p = f"{stem}_stage{s}_{img.shape[1]}px.png"
                visualize.save_png(os.path.join(out, p), visualize.to_uint8(img[i]))
                paths.append(p)
            att_path = None
            if attention:
                words = tok.decode_words(tokens[i][: lengths[i]])
                fig = visualize.attention_figure(images[-1][i], attention[-1][i], words)
                att_path = f"{stem}_attention.png"
                visualize.save_png(os.path.join(out, att_path), fig)
            entries.append(
                dict(
                    caption=caption,
                    images=paths,
                    attention=att_path,
                    unknown_words=unknown[caption],
                )
            )
    grid = visualize.image_grid(np.concatenate(last_stage, axis=0), ncols=len(captions_list))
    visualize.save_png(os.path.join(out, "grid.png"), grid)
    visualize.write_gallery(out, entries)
    logging.info(
        "wrote %d images for %d captions to %s (generator step %d)",
        num * len(captions_list),
        len(captions_list),
        out,
        step,
    )
    return {"out": out, "entries": entries, "step": step}
