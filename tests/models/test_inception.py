"""models/inception.py's FIDInceptionV3 (pytorch-fid's FID Inception-v3) and its state-dict
converter (the DAMSM InceptionV3 is checked against the official code in
test_parity_stream_damsm.py).

No real weights exist here, so the state dict is fake: the exact key names and shapes of
pytorch-fid's `fid_inception_v3()` (torchvision Inception3(num_classes=1008, aux_logits=False)
with FIDInceptionA/C/E_1/E_2, which keep torchvision's submodule names and shapes), written out
below from the pytorch-fid and torchvision sources, filled with random He-scaled values.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirrorgan_jax.models.inception import (
    BasicConv2d,
    FCHead,
    avg_pool_3x3_exclude_pad,
    make_fid_inception_fn,
    max_pool_3x3_same,
    preprocess,
)
from mirrorgan_jax.torch_import.common import WeightMismatchError
from mirrorgan_jax.torch_import.fid_inception import (
    expected_variables,
    fid_inception_variables,
    load_fid_inception,
)

TORCHVISION_KEYS = os.path.join(
    os.path.dirname(__file__), "..", "testdata", "parity", "inception_v3_keys.txt"
)

# ----------------------------------------------------------------------------- key table
# (BasicConv2d name, in_channels, out_channels, kh, kw), from torchvision's Inception3.__init__
# and the InceptionA..E constructors (the FID blocks subclass them without changing layers).


def _block_a(p: str, cin: int, pool: int) -> list[tuple]:
    return [
        (f"{p}.branch1x1", cin, 64, 1, 1),
        (f"{p}.branch5x5_1", cin, 48, 1, 1),
        (f"{p}.branch5x5_2", 48, 64, 5, 5),
        (f"{p}.branch3x3dbl_1", cin, 64, 1, 1),
        (f"{p}.branch3x3dbl_2", 64, 96, 3, 3),
        (f"{p}.branch3x3dbl_3", 96, 96, 3, 3),
        (f"{p}.branch_pool", cin, pool, 1, 1),
    ]


def _block_b(p: str, cin: int) -> list[tuple]:
    return [
        (f"{p}.branch3x3", cin, 384, 3, 3),
        (f"{p}.branch3x3dbl_1", cin, 64, 1, 1),
        (f"{p}.branch3x3dbl_2", 64, 96, 3, 3),
        (f"{p}.branch3x3dbl_3", 96, 96, 3, 3),
    ]


def _block_c(p: str, cin: int, c7: int) -> list[tuple]:
    return [
        (f"{p}.branch1x1", cin, 192, 1, 1),
        (f"{p}.branch7x7_1", cin, c7, 1, 1),
        (f"{p}.branch7x7_2", c7, c7, 1, 7),
        (f"{p}.branch7x7_3", c7, 192, 7, 1),
        (f"{p}.branch7x7dbl_1", cin, c7, 1, 1),
        (f"{p}.branch7x7dbl_2", c7, c7, 7, 1),
        (f"{p}.branch7x7dbl_3", c7, c7, 1, 7),
        (f"{p}.branch7x7dbl_4", c7, c7, 7, 1),
        (f"{p}.branch7x7dbl_5", c7, 192, 1, 7),
        (f"{p}.branch_pool", cin, 192, 1, 1),
    ]


def _block_d(p: str, cin: int) -> list[tuple]:
    return [
        (f"{p}.branch3x3_1", cin, 192, 1, 1),
        (f"{p}.branch3x3_2", 192, 320, 3, 3),
        (f"{p}.branch7x7x3_1", cin, 192, 1, 1),
        (f"{p}.branch7x7x3_2", 192, 192, 1, 7),
        (f"{p}.branch7x7x3_3", 192, 192, 7, 1),
        (f"{p}.branch7x7x3_4", 192, 192, 3, 3),
    ]


def _block_e(p: str, cin: int) -> list[tuple]:
    return [
        (f"{p}.branch1x1", cin, 320, 1, 1),
        (f"{p}.branch3x3_1", cin, 384, 1, 1),
        (f"{p}.branch3x3_2a", 384, 384, 1, 3),
        (f"{p}.branch3x3_2b", 384, 384, 3, 1),
        (f"{p}.branch3x3dbl_1", cin, 448, 1, 1),
        (f"{p}.branch3x3dbl_2", 448, 384, 3, 3),
        (f"{p}.branch3x3dbl_3a", 384, 384, 1, 3),
        (f"{p}.branch3x3dbl_3b", 384, 384, 3, 1),
        (f"{p}.branch_pool", cin, 192, 1, 1),
    ]


BASIC_CONVS = [
    ("Conv2d_1a_3x3", 3, 32, 3, 3),
    ("Conv2d_2a_3x3", 32, 32, 3, 3),
    ("Conv2d_2b_3x3", 32, 64, 3, 3),
    ("Conv2d_3b_1x1", 64, 80, 1, 1),
    ("Conv2d_4a_3x3", 80, 192, 3, 3),
    *_block_a("Mixed_5b", 192, 32),
    *_block_a("Mixed_5c", 256, 64),
    *_block_a("Mixed_5d", 288, 64),
    *_block_b("Mixed_6a", 288),
    *_block_c("Mixed_6b", 768, 128),
    *_block_c("Mixed_6c", 768, 160),
    *_block_c("Mixed_6d", 768, 160),
    *_block_c("Mixed_6e", 768, 192),
    *_block_d("Mixed_7a", 768),
    *_block_e("Mixed_7b", 1280),
    *_block_e("Mixed_7c", 2048),
]
NUM_CLASSES = 1008
# torchvision Inception3(aux_logits=False, num_classes=1008): 23,834,568 trunk+fc(1000) params
# minus AuxLogits, plus 8 more classes -> 23,850,960.
NUM_PARAMS = 23_850_960


def fid_key_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of pt_inception-2015-12-05-6726825d.pth with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, kh, kw in BASIC_CONVS:
        shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for k in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{k}"] = (cout,)
    shapes["fc.weight"] = (NUM_CLASSES, 2048)
    shapes["fc.bias"] = (NUM_CLASSES,)
    return shapes


def fake_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights that keep activations O(1): He-scaled convs, BN near identity."""
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape in fid_key_shapes().items():
        if key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif key.endswith("running_var"):
            v = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("bn.weight"):
            v = rng.uniform(0.8, 1.2, shape)
        elif key == "fc.weight":
            v = rng.normal(0.0, 0.05, shape)
        else:  # bn.bias, running_mean, fc.bias
            v = rng.normal(0.0, 0.1, shape)
        sd[key] = v.astype(np.float32)
    return sd


@pytest.fixture(scope="module")
def state_dict():
    return fake_state_dict()


@pytest.fixture(scope="module")
def converted(state_dict):
    return fid_inception_variables(state_dict, source="fake")


@pytest.fixture(scope="module")
def forward(converted):
    """One jitted forward at batch 2 on 48x48 images in [-1, 1] (resized to 299)."""
    images = jax.random.uniform(jax.random.key(1), (2, 48, 48, 3), minval=-1.0, maxval=1.0)
    pool3, logits = make_fid_inception_fn(converted, input_range="[-1,1]")(images)
    return np.asarray(pool3), np.asarray(logits)


# ----------------------------------------------------------------------------- keys / conversion


def test_key_table_matches_torchvision_key_list():
    """The trunk keys equal torchvision inception_v3's (minus AuxLogits); fc has 1008 rows."""
    tv = {}
    with open(TORCHVISION_KEYS) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            _, key, shape, _ = line.rstrip("\n").split("\t")
            if key == "-" or key.startswith("AuxLogits.") or key.endswith("num_batches_tracked"):
                continue
            tv[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    tv["fc.weight"], tv["fc.bias"] = (NUM_CLASSES, 2048), (NUM_CLASSES,)
    assert fid_key_shapes() == tv


def test_converted_tree_matches_module_exactly(converted):
    expected = expected_variables()
    exp = {
        jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)
    }
    got = {
        jax.tree_util.keystr(k): np.shape(v)
        for k, v in jax.tree_util.tree_leaves_with_path(converted)
    }
    assert got == exp
    assert sum(np.size(v) for v in jax.tree.leaves(converted["params"])) == NUM_PARAMS
    assert len(jax.tree.leaves(converted["batch_stats"])) == 2 * len(BASIC_CONVS)


def test_conversion_layouts(converted, state_dict):
    p, s = converted["params"], converted["batch_stats"]
    np.testing.assert_array_equal(
        p["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
        state_dict["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0),
    )
    assert p["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"].shape == (1, 7, 128, 128)
    np.testing.assert_array_equal(p["fc"]["kernel"], state_dict["fc.weight"].T)
    np.testing.assert_array_equal(
        s["Mixed_7c"]["branch_pool"]["bn"]["var"], state_dict["Mixed_7c.branch_pool.bn.running_var"]
    )


def test_num_batches_tracked_is_ignored(state_dict):
    sd = dict(state_dict, **{"Conv2d_1a_3x3.bn.num_batches_tracked": np.array(7, np.int64)})
    fid_inception_variables(sd, source="with counters")


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_bad_state_dict_names_the_key(state_dict, change):
    sd = dict(state_dict)
    key = "Mixed_5c.branch5x5_2.conv.weight"
    if change == "missing":
        del sd[key]
    elif change == "extra":
        key = "AuxLogits.fc.weight"
        sd[key] = np.zeros((NUM_CLASSES, 768), np.float32)
    else:
        sd[key] = np.zeros((64, 48, 3, 3), np.float32)
    with pytest.raises(WeightMismatchError, match="Mixed_5c|AuxLogits") as err:
        fid_inception_variables(sd, source="bad.pth")
    assert "bad.pth" in str(err.value)


def test_load_npz_round_trip(tmp_path, state_dict, converted):
    path = tmp_path / "pt_inception.npz"
    small = {k: v.astype(np.float16) for k, v in state_dict.items()}  # half the bytes
    np.savez(path, **small)
    loaded = load_fid_inception(path)
    np.testing.assert_array_equal(
        loaded["params"]["Conv2d_1a_3x3"]["conv"]["kernel"],
        small["Conv2d_1a_3x3.conv.weight"].astype(np.float32).transpose(2, 3, 1, 0),
    )
    assert jax.tree.structure(loaded) == jax.tree.structure(converted)
    with pytest.raises(ValueError, match="inception_weights"):
        load_fid_inception("")
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_fid_inception(tmp_path / "nowhere.npz")


# ----------------------------------------------------------------------------- forward


def test_forward_shapes_and_logits(forward, state_dict):
    pool3, logits = forward
    assert pool3.shape == (2, 2048) and logits.shape == (2, NUM_CLASSES)
    assert np.all(np.isfinite(pool3)) and np.all(np.isfinite(logits))
    assert np.all(pool3 >= 0.0) and pool3.std() > 1e-3  # mean of ReLU maps, not degenerate
    assert not np.allclose(pool3[0], pool3[1])  # the two images differ
    ref = pool3.astype(np.float64) @ state_dict["fc.weight"].T.astype(np.float64)
    np.testing.assert_allclose(logits, ref + state_dict["fc.bias"], rtol=1e-4, atol=1e-4)


def test_unbiased_logits_head(converted, state_dict):
    """logits_bias=False drops fc.bias only (checked on the fc head, not a second forward)."""
    x = jax.random.normal(jax.random.key(2), (3, 2048))
    fc = {"params": converted["params"]["fc"]}
    with_bias = FCHead(NUM_CLASSES, True).apply(fc, x)
    without = FCHead(NUM_CLASSES, False).apply(fc, x)
    np.testing.assert_allclose(
        with_bias - without, np.broadcast_to(state_dict["fc.bias"], (3, NUM_CLASSES)), atol=1e-5
    )


def test_basic_conv_matches_torch_conv_semantics(converted, state_dict):
    """A converted 1x7 BasicConv2d equals a direct OIHW cross-correlation -> BN(eval) -> ReLU."""
    name = "Mixed_6b.branch7x7_2"
    x = np.random.default_rng(3).normal(size=(1, 5, 9, 128)).astype(np.float32)  # NHWC
    mod_vars = {
        "params": converted["params"]["Mixed_6b"]["branch7x7_2"],
        "batch_stats": converted["batch_stats"]["Mixed_6b"]["branch7x7_2"],
    }
    got = BasicConv2d(128, (1, 7), padding=(0, 3)).apply(mod_vars, jnp.asarray(x), False)
    w = state_dict[f"{name}.conv.weight"].astype(np.float64)  # [O, I, 1, 7]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (3, 3), (0, 0)))
    conv = np.zeros((1, 5, 9, 128))
    for j in range(9):
        conv[:, :, j, :] = np.einsum("bhki,oik->bho", xp[:, :, j : j + 7, :], w[:, :, 0, :])
    bn = state_dict
    y = (conv - bn[f"{name}.bn.running_mean"]) / np.sqrt(bn[f"{name}.bn.running_var"] + 1e-3)
    y = np.maximum(y * bn[f"{name}.bn.weight"] + bn[f"{name}.bn.bias"], 0.0)
    np.testing.assert_allclose(np.asarray(got), y, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- pools / input


def test_avg_pool_excludes_padding():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # rows 0..3: [0,1,2,3], [4,5,6,7], ...
    y = np.asarray(avg_pool_3x3_exclude_pad(x))[0, :, :, 0]
    assert y[0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)  # corner: 4 in-image pixels
    assert y[0, 1] == pytest.approx((0 + 1 + 2 + 4 + 5 + 6) / 6)  # edge: 6
    assert y[1, 1] == pytest.approx((0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10) / 9)  # interior: 9
    assert y[3, 3] == pytest.approx((10 + 11 + 14 + 15) / 4)


def test_max_pool_padding_never_wins():
    x = -1.0 - jnp.arange(9.0).reshape(1, 3, 3, 1)  # all negative
    y = np.asarray(max_pool_3x3_same(x))[0, :, :, 0]
    assert y[2, 2] == -5.0  # max of -5, -6, -8, -9 (a zero pad would give 0)
    assert y[0, 0] == -1.0


def _torch_bilinear_1d(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix of F.interpolate(bilinear, align_corners=False) along one axis.

    Source coordinates in float32, as ATen computes them for float32 images.
    """
    m = np.zeros((n_out, n_in))
    scale = np.float32(n_in) / np.float32(n_out)
    for d in range(n_out):
        src = max(scale * (np.float32(d) + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = float(src) - i0
        m[d, i0] += 1.0 - lam
        m[d, i1] += lam
    return m


@pytest.mark.parametrize("size", [(13, 7), (420, 330)])  # up- and (non-antialiased) downsampling
def test_preprocess_matches_pytorch_fid(size):
    h, w = size
    x01 = np.random.default_rng(4).uniform(size=(2, h, w, 3)).astype(np.float32)
    rows, cols = _torch_bilinear_1d(h, 299), _torch_bilinear_1d(w, 299)
    want = 2.0 * np.einsum("oh,bhwc,pw->bopc", rows, x01, cols, optimize=True) - 1.0
    got01 = np.asarray(preprocess(jnp.asarray(x01), "[0,1]"))
    got11 = np.asarray(preprocess(jnp.asarray(2.0 * x01 - 1.0), "[-1,1]"))
    np.testing.assert_allclose(got01, want, atol=1e-5)
    np.testing.assert_allclose(got11, want, atol=1e-5)
    with pytest.raises(ValueError, match="input_range"):
        preprocess(jnp.asarray(x01), "[0,255]")
    with pytest.raises(ValueError, match="NHWC"):
        preprocess(jnp.zeros((2, 3, 8, 8)), "[0,1]")
