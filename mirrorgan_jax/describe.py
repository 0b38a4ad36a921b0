"""`--mode=describe`: a parameter table per component, without data or training."""

from __future__ import annotations

import json
import os

import jax

from mirrorgan_jax.networks import Networks, count_params


def _sub(variables, name: str) -> int:
    return count_params({"params": variables["params"].get(name, {})})


def describe(config, workdir: str | None = None) -> dict:
    """Count every network's parameters (shapes only) and print/write the table."""
    nets = Networks.from_config(config)
    rng = jax.random.key(0)
    g = nets.init_generator(rng, abstract=True)
    cnn = nets.init_caption_cnn(rng, abstract=True)
    rows = {
        "text_encoder (STEM)": count_params(nets.init_text_encoder(rng, abstract=True)),
        "generator (GLAM + CA)": count_params(g),
        "  conditioning augmentation": _sub(g, "ca"),
    }
    for i, size in enumerate(nets.image_sizes):
        rows[f"discriminator {size}"] = count_params(nets.init_discriminator(i, rng, abstract=True))
    rows["caption CNN (STREAM encoder)"] = count_params(cnn)
    rows["  ResNet trunk"] = _sub(cnn, "resnet")
    rows["caption RNN (STREAM decoder)"] = count_params(nets.init_caption_rnn(rng, abstract=True))
    damsm = nets.init_image_encoder(rng, abstract=True)
    rows["image encoder (DAMSM)"] = count_params(damsm)
    rows["  Inception trunk"] = _sub(damsm, "trunk")
    width = max(len(k) for k in rows)
    print(f"{'component':<{width}}  {'parameters':>12}")
    for name, n in rows.items():
        print(f"{name:<{width}}  {n:>12,}")
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "describe.json"), "w") as f:
            json.dump({k.strip(): v for k, v in rows.items()}, f, indent=2)
    return rows
