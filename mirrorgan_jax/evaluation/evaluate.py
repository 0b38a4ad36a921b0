"""`--mode=eval` -> W/eval/metrics.json: R-precision, IS/FID (with user-supplied Inception
weights) and, on `shapes`, semantic accuracy from an attribute classifier.

Protocol (docs/official-differences.md, "Evaluation"): `eval.num_images` generated images of
the last stage, one random caption of a split image each, looping over the split as DM-GAN
does; the EMA generator in eval mode (BN running statistics, CA still sampling). R-precision
follows DM-GAN: the true caption plus 99 captions of other classes, cosine of DAMSM codes,
top-k, 10 folds.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mirrorgan_jax import parallel
from mirrorgan_jax import workdir as wd
from mirrorgan_jax.evaluation import (
    fid,
    inception_score,
    r_precision,
    shapes_classifier,
    shapes_metrics,
)
from mirrorgan_jax.models.inception import make_fid_inception_fn
from mirrorgan_jax.torch_import.fid_inception import load_fid_inception
from mirrorgan_jax.train import damsm, gan

_PROGRESS_EVERY_S = 10.0


def _eval_batches(config, workdir, tok, split, captions, seed):
    ev = config.eval
    return wd.eval_batches(
        config, workdir, tok, split, ev.batch_size, ev.words_num, captions=captions, seed=seed
    )


def _valid(batch) -> np.ndarray:
    return np.asarray(batch["valid"], bool)


class Evaluator:
    """Jitted pieces shared by every split: text codes, generation, DAMSM image codes."""

    def __init__(self, config, workdir: str):
        self.config = config
        self.workdir = workdir
        self.mesh = parallel.make_mesh()
        self.nets, self.tok = wd.load_networks(config, workdir)
        nets = self.nets
        gan_state, self.step = wd.restore_gan(config, workdir, nets, self.mesh)
        g_vars = gan_state.generator.ema_variables()
        damsm_state = wd.restore_damsm(config, workdir, nets, self.mesh)
        text_vars = damsm.text_encoder_variables(damsm_state)
        image_vars = damsm.image_encoder_variables(damsm_state)
        frozen = gan.Frozen(text_encoder=text_vars, caption_cnn=None, caption_rnn=None)

        @jax.jit
        def sentence(tokens, lengths):
            return nets.text_encoder.apply(text_vars, tokens, lengths, train=False)[1]

        @jax.jit
        def generate(tokens, lengths, rng):
            out = gan.generate(nets, g_vars, frozen, tokens, lengths, rng)
            last = out.images[-1].astype(jnp.float32)
            _, code = nets.image_encoder.apply(image_vars, last, train=False)
            return last, code.astype(jnp.float32)

        self.sentence, self.generate = sentence, generate

    def device(self, batch):
        return parallel.shard_batch(self.mesh, batch)

    def caption_pool(self, split: str):
        """Sentence codes and class ids of every caption of the split (R-precision pool)."""
        codes, classes = [], []
        for batch in _eval_batches(self.config, self.workdir, self.tok, split, "all", 0):
            ok = _valid(batch)
            d = self.device(batch)
            codes.append(np.asarray(self.sentence(d["tokens"], d["lengths"]))[ok])
            classes.append(np.asarray(batch["class_id"])[ok])
        return np.concatenate(codes), np.concatenate(classes)

    def run_split(self, split: str, num_images: int, seed: int, extra=None) -> dict:
        """Generates `num_images` images from `split` captions and scores them."""
        ev = self.config.eval
        pool_codes, pool_classes = self.caption_pool(split)
        rng_np = np.random.default_rng(seed)
        ranks, done, passes = [], 0, 0
        base = jax.random.key(seed)
        last_report = 0.0  # the first batch is reported, then one line every few seconds
        while done < num_images:
            for batch in _eval_batches(
                self.config, self.workdir, self.tok, split, "random", seed + passes
            ):
                if done >= num_images:
                    break
                ok = _valid(batch)
                d = self.device(batch)
                images, codes = self.generate(
                    d["tokens"], d["lengths"], jax.random.fold_in(base, done)
                )
                true_sent = np.asarray(self.sentence(d["tokens"], d["lengths"]))
                take = ok & (np.cumsum(ok) <= num_images - done)
                cls = np.asarray(batch["class_id"])[take]
                idx = r_precision.select_mismatched_captions(
                    cls, pool_classes, ev.r_precision_candidates - 1, rng_np
                )
                ranks.append(
                    np.asarray(
                        r_precision.true_caption_rank(
                            np.asarray(codes)[take], true_sent[take], pool_codes[idx]
                        )
                    )
                )
                if extra is not None:
                    extra.update(np.asarray(images)[take], batch, take)
                done += int(take.sum())
                if time.time() - last_report >= _PROGRESS_EVERY_S:
                    logging.info("eval %s: %d of %d images", split, done, num_images)
                    last_report = time.time()
            passes += 1
        ranks = np.concatenate(ranks)
        result = {
            "r_precision": r_precision.r_precision_from_ranks(
                ranks, folds=ev.r_precision_folds, rng=np.random.default_rng(seed)
            )
        }
        result["num_images"] = int(done)
        result["passes"] = passes
        return result


class InceptionMetrics:
    """IS and FID with the pytorch-fid Inception network (weights from the user)."""

    def __init__(self, config, workdir, mesh):
        # pool3 for FID; logits without the fc bias for IS, as OpenAI's IS code computes them
        variables = load_fid_inception(config.eval.inception_weights)
        self.apply = make_fid_inception_fn(variables, input_range="[-1,1]", logits_bias=False)
        self.fake = fid.ActivationStatistics()
        self.probs = []
        self.config, self.workdir, self.mesh = config, workdir, mesh

    def update(self, images, batch, take):
        pool, logits = self.apply(images)
        self.fake.update(np.asarray(pool))
        self.probs.append(np.asarray(jax.nn.softmax(logits, axis=-1)))

    def reference(self, split: str, evaluator: Evaluator):
        """Statistics of the real split, computed once and cached in W/eval/."""
        path = os.path.join(self.workdir, "eval", f"fid_reference_{split}.npz")
        if os.path.exists(path):
            return fid.load_statistics(path)
        stats = fid.ActivationStatistics()
        for batch in _eval_batches(self.config, self.workdir, evaluator.tok, split, 0, 0):
            ok = _valid(batch)
            pool, _ = self.apply(np.asarray(batch["images"][-1])[ok])
            stats.update(np.asarray(pool))
        mu, sigma = stats.statistics()
        fid.save_statistics(path, mu, sigma)
        return mu, sigma

    def result(self, split, evaluator) -> dict:
        mu_r, sigma_r = self.reference(split, evaluator)
        mu_f, sigma_f = self.fake.statistics()
        probs = np.concatenate(self.probs)
        is_mean, is_std = inception_score.inception_score(probs, splits=min(10, len(probs)))
        return {
            "fid": fid.frechet_distance(mu_f, sigma_f, mu_r, sigma_r),
            "inception_score_mean": is_mean,
            "inception_score_std": is_std,
        }


def run(config, workdir: str) -> dict:
    """Evaluates the latest generator; writes and returns W/eval/metrics.json."""
    t0 = time.time()
    ev = Evaluator(config, workdir)
    splits = [config.eval.split]
    if config.data.name == "shapes" and config.eval.split == "test":
        splits.append("test_novel")
    shapes_eval = ShapesSemantics(config, workdir) if config.data.name == "shapes" else None
    metrics = {"checkpoint_step": int(ev.step), "splits": {}}
    for split in splits:
        extras = []
        incep = None
        if config.eval.inception_weights:
            incep = InceptionMetrics(config, workdir, ev.mesh)
            extras.append(incep)
        elif split == splits[0]:
            logging.info(
                "IS/FID skipped: set --config.eval.inception_weights=FILE (pytorch-fid "
                "Inception weights, .npz or .pth) to compute them"
            )
        acc = shapes_eval.start(split) if shapes_eval else None
        if acc is not None:
            extras.append(acc)
        result = ev.run_split(split, config.eval.num_images, config.seed + 7, extra=_Fanout(extras))
        if incep is not None:
            result.update(incep.result(split, ev))
        if acc is not None:
            result.update(acc.result())
        result["split"] = split
        metrics["splits"][split] = result
        logging.info("eval %s: %s", split, json.dumps(result))
    if shapes_eval is not None:
        metrics["classifier"] = shapes_eval.report
    # The frozen networks' own test reports (DAMSM retrieval and, on shapes, the sentence
    # probe; STREAM token accuracy), so that one file holds every number of the run.
    for stage in ("damsm", "stream"):
        path = os.path.join(wd.stage_dir(workdir, stage), "eval.json")
        if os.path.exists(path):
            with open(path) as f:
                metrics[stage] = json.load(f)
    metrics["wall_time_s"] = time.time() - t0
    if jax.process_index() == 0:
        out = os.path.join(workdir, "eval")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics


class ShapesSemantics:
    """Semantic accuracy on `shapes`: an attribute classifier trained on real images (once,
    cached as W/eval/shapes_classifier.npz) scores every generated image against the attributes
    of its caption; its features give a domain FID against the real images of the same batches.
    """

    def __init__(self, config, workdir: str):
        sc = shapes_classifier
        path = os.path.join(workdir, "eval", "shapes_classifier.npz")
        geometry = config.data.shapes.geometry
        if os.path.exists(path):
            variables, self.report = sc.load_classifier(path)
            # Classifiers saved before the geometry option were trained on the "small" one.
            trained_on = self.report.get("geometry", "small")
            if trained_on != geometry:
                raise wd.WorkdirError(
                    f"the shapes classifier was trained on geometry {trained_on!r}, the config "
                    f"says config.data.shapes.geometry={geometry!r}",
                    path,
                    "evaluate with the geometry the run was trained on, or move the file away "
                    "to train a new classifier",
                )
        else:
            ev = config.eval
            variables, self.report = sc.train_classifier(
                num_train=ev.classifier_train_images,
                steps=ev.classifier_steps,
                image_size=config.data.shapes.image_size,
                num_test=ev.classifier_test_images,
                seed=config.seed,
                data_seed=config.data.shapes.seed,
                geometry=geometry,
            )
            if jax.process_index() == 0:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                sc.save_classifier(path, variables, self.report)
        logging.info("shapes classifier on real images: %s", json.dumps(self.report, default=str))
        self.predict = sc.make_predict_fn(variables)

    def start(self, split: str) -> "_SemanticAccumulator":
        return _SemanticAccumulator(self)


class _SemanticAccumulator:
    def __init__(self, owner: ShapesSemantics):
        self.owner = owner
        self.preds, self.targets, self.fake_feats, self.real_feats = [], [], [], []

    def update(self, images, batch, take):
        pred, feats = self.owner.predict(jnp.asarray(images))
        _, real = self.owner.predict(jnp.asarray(np.asarray(batch["images"][-1])[take]))
        self.preds.append(np.asarray(pred))
        self.fake_feats.append(np.asarray(feats))
        self.real_feats.append(np.asarray(real))
        self.targets.append(np.asarray(batch["attributes"])[take])

    def result(self) -> dict:
        sm = shapes_metrics
        acc = sm.attribute_accuracy(np.concatenate(self.preds), np.concatenate(self.targets))
        fid_value = sm.domain_fid(np.concatenate(self.real_feats), np.concatenate(self.fake_feats))
        return {"semantic_accuracy": acc, "domain_fid": fid_value}


class _Fanout:
    def __init__(self, targets):
        self.targets = targets

    def update(self, images, batch, take):
        for t in self.targets:
            t.update(images, batch, take)
