"""One shapes GAN variant trained on a GPU without tf.data, scored along the way.

  python -m experiments.shapes_sweep.sweep PACK_DIR OUT_DIR NAME TIME_LIMIT_S [--crop] \
      [--dcgan[=W]] [--preset=P] [key=value ...]

(from the repository root). The train step is `train.gan.train_step` of `configs/shapes.py`
(its preset P, default none, with the key=value overrides,
e.g. model.df_dim=32 train.lambda1=0.0), fed from the pack (make_pack.py, render_images.py):
the whole image set sits on the device and each step draws its batch there (random images, one
random caption of each; --crop adds the pipeline's 76/64 rescale, random crop and flip), so the
host only dispatches. STEM and STREAM are the pack's frozen networks. At the steps in EVAL_AT and
when TIME_LIMIT_S (counted from the start) runs out, the EMA generator draws the pack's test
captions and the workdir's attribute classifier scores them (`shapes_metrics.attribute_accuracy`).
The pack and the variant must use the same STEM/STREAM dimensions (the same preset).
--dcgan trains the textbook conditional DCGAN of dcgan.py (same batches, sentence feature and
scoring; of the overrides only train.batch_size applies) instead of the MirrorGAN G/D; W is its
width (default 64, the textbook one).
Writes OUT_DIR/NAME.jsonl (train losses every 250 steps, eval rows) and
OUT_DIR/NAME_samples_STEP.npy (the first 16 test captions' images, uint8).
This is a research tool: the trained state is not saved.
"""

import ast
import json
import os
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np

from configs import shapes as shapes_cfg
from experiments.shapes_sweep.dcgan import make_reference
from mirrorgan_jax import hyperparameters
from mirrorgan_jax.evaluation import shapes_classifier, shapes_metrics
from mirrorgan_jax.networks import Networks
from mirrorgan_jax.train import gan

EVAL_AT = {500, 1000, 1700, 2500, 3400, 5000, 7000, 10000, 13000, 16000, 20000, 25000, 30000}


def _config(overrides, preset=""):
    config = shapes_cfg.get_config(preset)
    pairs = (item.split("=", 1) for item in overrides)
    config.update_from_flattened_dict({k: ast.literal_eval(v) for k, v in pairs})
    return config


def _resize(x, size):  # PIL-like bilinear (antialiased when shrinking), rounded like the pipeline
    return jnp.round(jax.image.resize(x, (x.shape[0], size, size, 3), "linear", antialias=True))


def main(pack_dir, out_dir, name, limit, crop, overrides, dcgan=0, preset=""):
    t_start = time.time()
    config = _config(overrides, preset)
    with open(os.path.join(pack_dir, "meta.json")) as f:
        meta = json.load(f)
    nets = Networks.from_config(config, n_words=meta["n_words"])
    hyper = hyperparameters.gan(config)
    pack = np.load(os.path.join(pack_dir, "pack.npz"))
    with open(os.path.join(pack_dir, "frozen.msgpack"), "rb") as f:
        frozen_state = flax.serialization.msgpack_restore(f.read())
    frozen = gan.Frozen(**jax.tree.map(jnp.asarray, frozen_state))
    classifier, _ = shapes_classifier.load_classifier(
        os.path.join(pack_dir, "shapes_classifier.npz")
    )
    predict = shapes_classifier.make_predict_fn(classifier)

    images = jnp.asarray(np.load(os.path.join(pack_dir, "images.npy")))  # [N, 64, 64, 3] uint8
    tokens = jnp.asarray(pack["tokens"].astype(np.int32))  # [N, 10, T]
    lengths = jnp.asarray(pack["lengths"].astype(np.int32))  # [N, 10]
    n, b = images.shape[0], config.train.batch_size

    def make_batch(key):
        k_img, k_cap, k_x, k_y, k_flip = jax.random.split(key, 5)
        idx = jax.random.randint(k_img, (b,), 0, n)
        cap = jax.random.randint(k_cap, (b,), 0, 10)
        x = images[idx].astype(jnp.float32)  # [B, 64, 64, 3]
        if crop:  # the pipeline's 76/64 rescale, random 64 px crop, random horizontal flip
            big = _resize(x, 76)
            ox = jax.random.randint(k_x, (b,), 0, 13)
            oy = jax.random.randint(k_y, (b,), 0, 13)

            def cut(im, left, top):
                return jax.lax.dynamic_slice(im, (top, left, 0), (64, 64, 3))

            x = jax.vmap(cut)(big, ox, oy)
            flip = jax.random.bernoulli(k_flip, 0.5, (b,))
            x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
        stages = [_resize(x, s) if s != 64 else x for s in nets.image_sizes]
        return {
            "images": [im / 127.5 - 1.0 for im in stages],
            "tokens": tokens[idx, cap],
            "lengths": lengths[idx, cap],
            "class_id": jnp.zeros((b,), jnp.int32),  # unused by the GAN step
        }

    if dcgan:
        encode = lambda t, n: gan.encode_text(nets, frozen, t, n)[1]  # noqa: E731
        sent_dim = jax.eval_shape(encode, tokens[:1, 0], lengths[:1, 0]).shape[-1]
        ref_init, ref_step, ref_sample = make_reference(nets, frozen, b, sent_dim, dcgan)

    @jax.jit
    def step(state, key):
        k_batch, k_step = jax.random.split(key)
        batch = make_batch(k_batch)
        if dcgan:
            return ref_step(state, batch, k_step)
        return gan.train_step(state, batch, k_step, frozen, nets=nets, hyper=hyper)

    @jax.jit
    def generate(state, tok, length, key):
        if dcgan:
            return ref_sample(state, tok, length, key)
        g_vars = state.generator.ema_variables()
        return gan.generate(nets, g_vars, frozen, tok, length, key).images[-1]

    test_tokens, test_lengths = pack["test_tokens"], pack["test_lengths"]

    def evaluate(state, at):
        preds = []
        for i in range(0, test_tokens.shape[0], 100):
            x = generate(
                state, test_tokens[i : i + 100], test_lengths[i : i + 100], jax.random.key(100 + i)
            )
            x = jnp.clip(x.astype(jnp.float32), -1, 1)  # [100, S, S, 3]
            if i == 0:
                grid = np.asarray(jnp.round((x[:16] + 1) * 127.5)).astype(np.uint8)
                np.save(os.path.join(out_dir, f"{name}_samples_{at}.npy"), grid)
            preds.append(np.asarray(predict(x)[0]))
        acc = shapes_metrics.attribute_accuracy(np.concatenate(preds), pack["test_attributes"])
        return {k: round(v, 4) for k, v in acc.items() if "/" not in k or k == "field/shape0"}

    log = open(os.path.join(out_dir, f"{name}.jsonl"), "a")

    def emit(record):
        record = {"name": name, "t": round(time.time() - t_start, 1), **record}
        log.write(json.dumps(record) + "\n")
        log.flush()
        print(json.dumps(record), flush=True)

    device = jax.devices()[0].device_kind
    emit({"what": "config", "overrides": overrides, "crop": crop, "dcgan": dcgan, "n_train": n,
          "device": device})  # fmt: skip
    if dcgan:
        state = ref_init(jax.random.key(config.seed + 3))
    else:
        state = gan.init_gan_state(nets, hyper, jax.random.key(config.seed + 3))
    rng = jax.random.key(config.seed + 2)
    i, t0 = 0, None
    while True:
        state, m = step(state, jax.random.fold_in(rng, i))
        i += 1
        if i == 1:
            jax.block_until_ready(m)
            t0 = time.time()
            emit({"what": "compiled"})
        if i % 50 == 0:  # keep the host close to the device, so the time limit holds
            jax.block_until_ready(m)
        if i % 250 == 0:
            losses = {k: round(float(v), 4) for k, v in m.items() if "norm" not in k}
            rate = round((i - 1) / (time.time() - t0), 1)
            emit({"what": "train", "step": i, "steps_per_s": rate, **losses})
        over = time.time() - t_start > limit
        if i in EVAL_AT or over:
            emit({"what": "eval", "step": i, **evaluate(state, i)})
        if over:
            break


if __name__ == "__main__":
    args = sys.argv[5:]
    widths = [int(a.partition("=")[2] or 64) for a in args if a.startswith("--dcgan")]
    presets = [a.partition("=")[2] for a in args if a.startswith("--preset=")]
    main(
        sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), "--crop" in args,
        [a for a in args if "=" in a and not a.startswith("--")], (widths or [0])[0],
        (presets or [""])[0],
    )  # fmt: skip
