"""`--mode=sample`: captions -> images of every stage, word-attention maps and a gallery.

Samples with the generator's EMA parameters and BN statistics, the text encoder and the
tokenizer of the workdir, restored onto whatever devices this machine has. Reads the workdir
only (its checkpoints read-only, so a run may be training in it) and writes only to the output
folder. The captions are checked before any checkpoint is read: a caption with no word or piece
the tokenizer knows is refused, a longer one than data.words_num is cut with a warning.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging

from mirrorgan_jax import errors, parallel, visualize
from mirrorgan_jax import workdir as wd
from mirrorgan_jax.train import damsm, gan

_PROGRESS_EVERY_S = 10.0


class SamplingError(errors.Error, ValueError):
    """Bad sampling input: no captions, an empty caption, no trained generator."""


def read_captions(captions_file: str | None, text: list[str]) -> list[str]:
    """Captions from a file (one per line; blank lines ignored) and from --text, in order."""
    captions: list[str] = []
    if captions_file:
        if not os.path.isfile(captions_file):
            raise SamplingError(
                "no such file",
                f"--captions={captions_file}",
                "give a text file, one caption a line",
            )
        with open(captions_file, "rb") as f:
            raw = f.read()
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise SamplingError(
                "the captions file is not UTF-8 text",
                f"--captions={captions_file}",
                f"byte {e.start} (line {line}) is not UTF-8; save the file as UTF-8",
            ) from None
        from_file = [line.strip() for line in lines if line.strip()]
        if not from_file:
            raise SamplingError("the file holds no captions", f"--captions={captions_file}")
        captions += from_file
    for i, t in enumerate(text):
        if not t.strip():
            raise SamplingError("empty caption", f"--text number {i + 1}", "give some words")
        captions.append(t.strip())
    if not captions:
        raise SamplingError("no captions", "", "pass --captions=FILE and/or --text='...'")
    return captions


def _shown(caption: str) -> str:
    return repr(caption if len(caption) <= 60 else caption[:57] + "...")


def encode_captions(tok, captions: list[str], words_num: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [N, words_num], lengths [N]) of the captions, cut to their first words_num tokens.

    Reports unknown words and cut captions (which one, how many tokens dropped); refuses a
    caption with nothing the tokenizer knows (it would condition on padding or <unk> only)."""
    for i, caption in enumerate(captions):
        try:
            ids = tok.encode(caption)
        except ValueError as e:
            raise SamplingError(
                f"caption {i + 1} cannot be read", _shown(caption), str(e)
            ) from None
        if not tok.has_known_piece(ids):
            raise SamplingError(
                f"caption {i + 1} has no word or piece the tokenizer knows",
                _shown(caption),
                "write it with words of the training captions",
            )
        unknown = tok.unknown_words(caption)
        if unknown:
            logging.warning(
                "caption %d %s: unknown words %s were %s",
                i + 1,
                _shown(caption),
                unknown,
                tok.unknown_policy,
            )
        if len(ids) > words_num:
            logging.warning(
                "caption %d %s has %d tokens: the last %d are dropped (data.words_num=%d)",
                i + 1,
                _shown(caption),
                len(ids),
                len(ids) - words_num,
                words_num,
            )
    tokens, lengths = tok.encode_batch(captions, words_num, None, long_caption="truncate")
    return np.asarray(tokens), np.asarray(lengths)


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
        captions_list = wd.default_captions(config, workdir)
    else:
        captions_list = read_captions(captions, text or [])
    num = config.sample.num_samples if num_samples is None else num_samples
    if num < 1:
        raise SamplingError("bad flag value", f"--num_samples={num}", "expected >= 1")
    tok = wd.load_tokenizer(config, workdir)
    tokens, lengths = encode_captions(tok, captions_list, config.data.words_num)
    gan_dir = wd.checkpoint_dir(workdir, "gan")
    if not os.path.isdir(gan_dir):
        raise SamplingError(
            "no trained generator",
            gan_dir,
            "train first (--mode=train) or import a generator (--mode=import_torch)",
        )
    mesh = parallel.make_mesh()
    nets, tok = wd.load_networks(config, workdir)
    gan_state, step = wd.restore_gan(config, workdir, nets, mesh)
    g_vars = gan_state.generator.ema_variables()
    text_vars = damsm.text_encoder_variables(wd.restore_damsm(config, workdir, nets, mesh))
    frozen = gan.Frozen(text_encoder=text_vars, caption_cnn=None, caption_rnn=None)
    out = out or os.path.join(workdir, "samples")
    os.makedirs(out, exist_ok=True)
    rng = jax.random.key(config.seed if seed is None else seed)

    gen = jax.jit(lambda t, ln, r: gan.generate(nets, g_vars, frozen, t, ln, r))
    # Captions go through in chunks of one shape (the last one padded), compiled once.
    chunk = min(config.sample.batch_size, len(captions_list))
    starts = range(0, len(captions_list), chunk)
    entries, last_stage = [], []
    done, total, last_report = 0, num * len(captions_list), 0.0
    for k in range(num):
        per_draw = []
        for first in starts:
            rows = np.arange(first, first + chunk) % len(captions_list)
            key = jax.random.fold_in(rng, k)
            outputs = gen(
                tokens[rows], lengths[rows], jax.random.fold_in(key, first) if first else key
            )
            n = min(chunk, len(captions_list) - first)
            images = [np.asarray(x, np.float32)[:n] for x in outputs.images]
            attention = [np.asarray(a, np.float32)[:n] for a in outputs.attention]
            per_draw.append(images[-1])
            for j in range(n):
                i = first + j
                entries.append(_save(out, tok, captions_list[i], i, k, images, attention, j,
                                     tokens[i][: lengths[i]]))  # fmt: skip
            done += n
            if time.time() - last_report >= _PROGRESS_EVERY_S or done == total:
                logging.info("sample: %d of %d images", done, total)
                last_report = time.time()
        last_stage.append(np.concatenate(per_draw, axis=0))
    grid = visualize.image_grid(np.concatenate(last_stage, axis=0), ncols=len(captions_list))
    visualize.save_png(os.path.join(out, "grid.png"), grid)
    visualize.write_gallery(out, entries)
    logging.info(
        "wrote %d images for %d captions to %s (generator step %d)",
        total,
        len(captions_list),
        out,
        step,
    )
    return {"out": out, "entries": entries, "step": step}


def _save(out, tok, caption, i, k, images, attention, j, ids) -> dict:
    """One caption's images of draw k (row j of the chunk): a PNG per stage, its attention."""
    stem = f"caption{i:03d}_sample{k:02d}"
    paths = []
    for s, img in enumerate(images):
        p = f"{stem}_stage{s}_{img.shape[1]}px.png"
        visualize.save_png(os.path.join(out, p), visualize.to_uint8(img[j]))
        paths.append(p)
    att_path = None
    if attention:
        fig = visualize.attention_figure(images[-1][j], attention[-1][j], tok.decode_words(ids))
        att_path = f"{stem}_attention.png"
        visualize.save_png(os.path.join(out, att_path), fig)
    return dict(
        caption=caption, images=paths, attention=att_path, unknown_words=tok.unknown_words(caption)
    )
