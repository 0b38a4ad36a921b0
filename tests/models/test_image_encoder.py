"""DAMSM image encoder: parameter counts (the official ones) and shapes of the full Inception-v3
model (jax.eval_shape only), and real forwards of the tiny `shapes` trunk."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shapes
from mirrorgan_jax.models.image_encoder import ImageEncoder


def n_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def random_variables(abstract, seed: int):
    """Concrete variables for an abstract tree, drawn with numpy (no `init` compile): kernels
    N(0, 2/fan_in), BN scale/var U(0.9, 1.1), other leaves N(0, 0.1^2)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(path[-1].key)
        if name == "kernel":
            x = rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
        elif name in ("scale", "var"):
            x = rng.uniform(0.9, 1.1, leaf.shape)
        else:
            x = rng.normal(0.0, 0.1, leaf.shape)
        return jnp.asarray(x, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def test_inception_v3_param_count_and_shapes():
    model = ImageEncoder("inception_v3", nef=256)
    images = jnp.zeros((2, 256, 256, 3))
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), images))
    assert n_params(v["params"]) == 22_506_720
    assert n_params(v["params"]["trunk"]) == 21_785_568
    heads = n_params(v["params"]["emb_features"]) + n_params(v["params"]["emb_cnn_code"])
    assert heads == 721_152
    assert "AuxLogits" not in v["params"]["trunk"]
    region, code = jax.eval_shape(lambda v: model.apply(v, images), v)
    assert region.shape == (2, 17, 17, 256) and code.shape == (2, 256)
    m6e, m7c = jax.eval_shape(
        lambda v: model.apply(v, images, method=ImageEncoder.trunk_features), v
    )
    assert m6e.shape == (2, 17, 17, 768) and m7c.shape == (2, 8, 8, 2048)
    # bfloat16 trunk: outputs stay float32, BN statistics float32.
    bf16 = model.clone(dtype=jnp.bfloat16)
    (region, code), upd = jax.eval_shape(
        lambda v: bf16.apply(v, images, True, mutable=["batch_stats"]), v
    )
    assert region.dtype == code.dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(upd))


def test_unknown_backbone():
    with pytest.raises(ValueError, match="backbone"):
        jax.eval_shape(
            lambda: ImageEncoder("resnet", nef=8).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
        )


@pytest.fixture(scope="module")
def tiny():
    """The `shapes:test` DAMSM image encoder with random variables and one jitted run."""
    m = shapes.get_config("test").model
    model = ImageEncoder(m.damsm_backbone, nef=m.text_embedding_dim, image_size=m.damsm_image_size)
    images = jax.random.uniform(jax.random.key(0), (2, 48, 48, 3), minval=-1.0, maxval=1.0)
    v = random_variables(jax.eval_shape(lambda: model.init(jax.random.key(1), images)), 3)
    bf16 = model.clone(dtype=jnp.bfloat16)

    @jax.jit
    def run(v, x):
        out = {"eval": model.apply(v, x)}
        maps = model.apply(v, x, method=ImageEncoder.trunk_features)
        out["maps"] = maps
        out["heads"] = model.apply(v, *maps, method=ImageEncoder.heads)
        out["train"], out["updates"] = model.apply(v, x, True, mutable=["batch_stats"])
        out["bf16"] = bf16.apply(v, x)
        return out

    return dict(model=model, v=v, out=run(v, images))


def test_tiny_shapes(tiny):
    model, out = tiny["model"], tiny["out"]
    size, nef = model.image_size, model.nef
    region, code = out["eval"]
    assert region.shape == (2, size // 8, size // 8, nef) and code.shape == (2, nef)
    m_region, m_global = out["maps"]
    assert m_region.shape == (2, size // 8, size // 8, model.tiny_widths[2])
    assert m_global.shape == (2, size // 16, size // 16, model.tiny_widths[3])
    # __call__ = trunk_features then heads.
    np.testing.assert_allclose(out["heads"][0], region, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["heads"][1], code, rtol=1e-6, atol=1e-6)


def test_tiny_train_mode_updates_statistics(tiny):
    out, v = tiny["out"], tiny["v"]
    assert not np.allclose(out["train"][1], out["eval"][1])  # batch vs running statistics
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), out["updates"]["batch_stats"], v["batch_stats"]
    )
    assert all(jax.tree.leaves(changed))


def test_tiny_bfloat16(tiny):
    out = tiny["out"]
    for low, ref in zip(out["bf16"], out["eval"], strict=True):
        assert low.dtype == jnp.float32
        assert float(jnp.max(jnp.abs(low - ref)) / jnp.max(jnp.abs(ref))) < 0.1
