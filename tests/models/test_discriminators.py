"""Discriminators: trunk/heads shapes (incl. the 32-px extension), BN modes, parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import coco, cub, shapes
from mirrorgan_jax.models.discriminators import Discriminator, init_discriminator

B = 3


def count_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module", params=[32, 64])
def small(request):
    m = shapes.get_config("test").model
    size = request.param
    d = Discriminator(size, m.df_dim)
    variables = jax.jit(lambda r: init_discriminator(d, r, m.text_embedding_dim))(jax.random.key(0))
    images = np.random.default_rng(0).uniform(-1, 1, size=(B, size, size, 3)).astype(np.float32)
    sent = np.random.default_rng(1).normal(size=(B, m.text_embedding_dim)).astype(np.float32)
    return dict(m=m, d=d, variables=variables, images=images, sent=sent)


def test_trunk_and_heads(small):
    d, v, m = small["d"], small["variables"], small["m"]
    feats, state = d.apply(v, small["images"], train=True, mutable=["batch_stats"])
    assert feats.shape == (B, 4, 4, 8 * m.df_dim)
    v1 = {"params": v["params"], "batch_stats": state["batch_stats"]}
    uncond, _ = d.apply(
        v1, feats, train=True, method=Discriminator.uncond_logits, mutable=["batch_stats"]
    )
    cond, st2 = d.apply(
        v1,
        feats,
        small["sent"],
        train=True,
        method=Discriminator.cond_logits,
        mutable=["batch_stats"],
    )
    assert uncond.shape == cond.shape == (B,)
    assert uncond.dtype == cond.dtype == jnp.float32
    # The conditional head depends on the sentence.
    cond2 = d.apply(v1, feats, -small["sent"], train=False, method=Discriminator.cond_logits)
    cond3 = d.apply(v1, feats, small["sent"], train=False, method=Discriminator.cond_logits)
    assert not np.allclose(np.asarray(cond2), np.asarray(cond3))
    old = v["batch_stats"]["cond"]["joint_conv"]["bn"]["mean"]
    assert not np.allclose(old, st2["batch_stats"]["cond"]["joint_conv"]["bn"]["mean"])


def test_eval_mode_uses_running_stats(small):
    d, v = small["d"], small["variables"]
    images = small["images"]
    f_all = d.apply(v, images, train=False)
    f_one = d.apply(v, images[:1], train=False)
    np.testing.assert_allclose(np.asarray(f_all[:1]), np.asarray(f_one), atol=1e-5)
    t_all, _ = d.apply(v, images, train=True, mutable=["batch_stats"])
    t_two, _ = d.apply(v, images[:2], train=True, mutable=["batch_stats"])
    assert not np.allclose(np.asarray(t_all[:2]), np.asarray(t_two), atol=1e-5)


def test_32px_layout():
    """Non-official 32 px: three stride-2 convs to 4x4 (4df), then Block3x3 4df -> 8df."""
    m = shapes.get_config("test").model
    d = Discriminator(32, m.df_dim)
    p = jax.eval_shape(lambda: init_discriminator(d, jax.random.key(0), m.text_embedding_dim))
    p = p["params"]
    assert set(p["img_code_s16"]) == {"conv0", "down1", "down2"}
    assert p["img_code_s8_1"]["conv"]["kernel"].shape == (3, 3, 4 * m.df_dim, 8 * m.df_dim)
    assert set(p) == {"img_code_s16", "img_code_s8_1", "uncond", "cond"}


def test_without_batchnorm():
    """discriminator_batchnorm=False (an option): the same convolutions without `bn` entries or
    batch statistics, and in train mode each sample's features no longer depend on the rest of
    the batch."""
    m = shapes.get_config("test").model
    official = Discriminator(64, m.df_dim)
    with_bn = jax.eval_shape(
        lambda: init_discriminator(official, jax.random.key(0), m.text_embedding_dim)
    )
    d = Discriminator(64, m.df_dim, batchnorm=False)
    v = jax.jit(lambda r: init_discriminator(d, r, m.text_embedding_dim))(jax.random.key(0))
    assert set(v) == {"params"}

    def paths(tree):
        return {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}

    bn_paths = paths(with_bn["params"])
    assert paths(v["params"]) == {p for p in bn_paths if "'bn'" not in p}
    assert len(bn_paths) > len(paths(v["params"]))
    images = np.random.default_rng(0).uniform(-1, 1, size=(B, 64, 64, 3)).astype(np.float32)
    apply = jax.jit(lambda x: d.apply(v, x, train=True))
    np.testing.assert_allclose(apply(images)[:1], apply(images[:1]), rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="image_size"):
        Discriminator(48, 4).init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)), train=False)
    with pytest.raises(ValueError, match=r"\[B, 64, 64, 3\]"):
        Discriminator(64, 4).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)


def test_official_init(small):
    df = small["m"].df_dim
    p = small["variables"]["params"]
    k = np.asarray(p["img_code_s16"]["down2"]["conv"]["kernel"]).reshape(-1, 4 * df)
    np.testing.assert_allclose(k.T @ k, np.eye(4 * df), atol=1e-5)  # orthogonal columns
    bound = 1.0 / np.sqrt(8 * df * 16)  # PyTorch's default conv bias init (weights_init skips it)
    for head in ("uncond", "cond"):
        bias = np.asarray(p[head]["outlogits"]["bias"])
        assert bias.shape == (1,) and abs(bias[0]) <= bound and bias[0] != 0.0
    gamma = np.asarray(p["cond"]["joint_conv"]["bn"]["scale"])
    assert abs(gamma.mean() - 1.0) < 0.01 and 0.005 < gamma.std() < 0.04
    assert np.all(np.asarray(p["cond"]["joint_conv"]["bn"]["bias"]) == 0.0)


@pytest.mark.parametrize(
    "config_module, expected",
    [
        (cub, {64: 6_313_730, 128: 19_424_002, 256: 71_858_946}),
        (coco, {64: 13_304_450, 128: 42_800_258, 256: 160_774_274}),
    ],
)
def test_parameter_count(config_module, expected):
    m = config_module.get_config().model
    for size, n in expected.items():
        d = Discriminator(size, m.df_dim)
        shapes_ = jax.eval_shape(
            lambda d=d: init_discriminator(d, jax.random.key(0), m.text_embedding_dim)
        )
        assert count_params(shapes_["params"]) == n, size
    trunk = jax.eval_shape(
        lambda: Discriminator(64, m.df_dim).init(
            jax.random.key(0), jnp.zeros((2, 64, 64, 3)), train=False
        )
    )
    heads = 8 * m.df_dim * 16 + 1 + (8 * m.df_dim + m.text_embedding_dim) * 8 * m.df_dim * 9
    heads += 2 * 8 * m.df_dim + 8 * m.df_dim * 16 + 1
    assert count_params(trunk["params"]) == expected[64] - heads


def test_spectral_norm_keeps_params_and_normalises_kernels():
    """With spectral_norm the params are the plain D's (same names and shapes); batch_stats
    hold one power-iteration state per conv; the estimate converges to each kernel's largest
    singular value, so the D's output no longer depends on the scale of its kernels."""
    m = shapes.get_config("test").model
    plain = Discriminator(32, m.df_dim, batchnorm=False)
    sn = Discriminator(32, m.df_dim, batchnorm=False, spectral_norm=True)
    init = lambda d: init_discriminator(d, jax.random.key(0), m.text_embedding_dim)  # noqa: E731
    v_plain, v_sn = init(plain), init(sn)
    assert "batch_stats" not in v_plain
    shapes_of = lambda t: jax.tree.map(lambda x: x.shape, t)  # noqa: E731
    assert shapes_of(v_sn["params"]) == shapes_of(v_plain["params"])
    kernels = [p for p, _ in jax.tree_util.tree_flatten_with_path(v_plain["params"])[0]
               if p[-1].key == "kernel"]  # fmt: skip
    sigmas = [p for p, _ in jax.tree_util.tree_flatten_with_path(v_sn["batch_stats"])[0]
              if p[-1].key.endswith("/sigma")]  # fmt: skip
    assert len(sigmas) == len(kernels) == 7  # the trunk's four, joint_conv, two outlogits
    images = np.random.default_rng(0).uniform(-1, 1, (B, 32, 32, 3)).astype(np.float32)

    def converged(params):
        stats = v_sn["batch_stats"]
        for _ in range(30):  # power iteration on these small kernels
            _, upd = sn.apply(
                {"params": params, "batch_stats": stats}, images, train=True,
                mutable=["batch_stats"],
            )  # fmt: skip
            stats = upd["batch_stats"]
        return stats

    # Scaled kernels (the official orthogonal init has all singular values 1).
    scaled = jax.tree.map(lambda x: 3.0 * x, v_sn["params"])
    stats = converged(scaled)
    kernel = np.asarray(scaled["img_code_s16"]["conv0"]["kernel"])
    sigma = float(stats["img_code_s16"]["conv0_sn"]["conv0/kernel/sigma"])
    top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    np.testing.assert_allclose(sigma, top, rtol=1e-3)
    out_sn = sn.apply({"params": scaled, "batch_stats": stats}, images, train=False)
    out_sn1 = sn.apply(
        {"params": v_sn["params"], "batch_stats": converged(v_sn["params"])}, images, train=False
    )
    np.testing.assert_allclose(out_sn, out_sn1, rtol=1e-3, atol=1e-5)
    out_plain = plain.apply({"params": scaled}, images, train=False)
    assert not np.allclose(out_plain, out_sn, rtol=1e-2)
