"""torch_import/damsm.py: a torchvision `inception_v3` ImageNet state dict becomes the DAMSM image
encoder's trunk, and the trunk then computes what torchvision computes with the same weights.

The reference is torchvision itself: `tests/testdata/torch/make_imagenet_trunks.py` ran
torchvision's Inception-v3 the way the official CNN_ENCODER does (bilinear resize of the
[-1, 1] image to 299, Conv2d_1a_3x3 .. Mixed_7c, eval mode) on weights that
`parity_utils.random_state_dict` draws from a seed under the exact torchvision keys and shapes
(`inception_v3_keys.txt`, AuxLogits and fc included), and stored summaries of its outputs. Here
the same draws go through the converter into the model built from the CUB config
(`Networks.init_image_encoder(trunk=...)`, as `damsm.trunk_weights` does), no torch needed. An
independent re-implementation in numpy would share this port's reading of torchvision; the
library's own forward does not.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import cub
from mirrorgan_jax.models.image_encoder import ImageEncoder
from mirrorgan_jax.networks import Networks
from mirrorgan_jax.torch_import import damsm
from mirrorgan_jax.torch_import.common import WeightMismatchError
from tests.parity_utils import assert_close, projections, random_state_dict

# The seeds make_imagenet_trunks.py drew with.
INCEPTION_SEED, PROJECTION_SEED = 11, 14
TOL = 1e-4  # float32 through ~50 layers, two conv libraries


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return random_state_dict("inception_v3_keys.txt", 1, INCEPTION_SEED)


def test_the_draws_are_those_of_the_reference(state_dict, reference):
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.bn.running_var"):
        np.testing.assert_array_equal(
            state_dict[key].ravel()[:8], reference[f"check/inception/{key}"]
        )
    assert any(k.startswith("AuxLogits.") for k in state_dict) and "fc.weight" in state_dict


@pytest.fixture(scope="module")
def maps(state_dict, reference):
    """Mixed_6e and Mixed_7c of the CUB config's image encoder with the converted trunk, on
    the reference's 64x64 images (resized to 299 inside the encoder)."""
    trunk = damsm.inception_v3_trunk_variables(state_dict, source="inception_v3.pth")
    nets = Networks.from_config(cub.get_config(), n_words=50)
    variables = nets.init_image_encoder(jax.random.key(0), trunk=trunk)
    forward = jax.jit(
        lambda v, x: nets.image_encoder.apply(v, x, method=ImageEncoder.trunk_features)
    )
    region, global_map = forward(variables, reference["input/images"])
    return np.asarray(region), np.asarray(global_map)


def test_the_converted_trunk_computes_what_torchvision_computes(maps, reference):
    region, global_map = maps
    assert region.shape == (2, 17, 17, 768) and global_map.shape == (2, 8, 8, 2048)
    for name, x in (("mixed_6e", region), ("mixed_7c", global_map)):
        want = f"inception/{name}"
        assert_close(x.mean(axis=(1, 2)), reference[f"{want}_mean"], f"{name} mean", TOL)
        assert_close(x[:, 0, 0], reference[f"{want}_corner"], f"{name} corner", TOL)
        h, w = x.shape[1:3]
        assert_close(x[:, h // 2, w // 2], reference[f"{want}_centre"], f"{name} centre", TOL)
        got = projections(x, 8, PROJECTION_SEED)
        assert_close(got, reference[f"{want}_projections"], f"{name} projections", TOL)
    # The code's input: the official avg_pool2d(8) is the mean over Mixed_7c's 8x8 positions.
    assert_close(global_map.mean(axis=(1, 2)), reference["inception/code_input"], "code", TOL)


@pytest.mark.parametrize(
    "change, named",
    [
        ("missing", "Mixed_6b.branch7x7_2.conv.weight"),
        ("shape", "Mixed_6b.branch7x7_2.conv.weight"),  # 1x7 stored as 7x1
        ("bn shape", "Mixed_5c.branch_pool.bn.running_var"),
        ("extra", "Mixed_8a.conv.weight"),
    ],
)
def test_a_wrong_key_or_shape_is_refused_with_the_key_named(state_dict, change, named):
    sd = dict(state_dict)
    if change == "missing":
        del sd[named]
    elif change == "shape":
        sd[named] = np.swapaxes(sd[named], 2, 3)
    elif change == "bn shape":
        sd[named] = sd[named][:-1]
    else:
        sd[named] = np.zeros((8, 8, 1, 1), np.float32)
    with pytest.raises(WeightMismatchError, match=named.replace(".", r"\.")) as err:
        damsm.inception_v3_trunk_variables(sd, source="damsm.trunk_weights=inception_v3.pth")
    assert "damsm.trunk_weights=inception_v3.pth" in str(err.value)
    if change == "shape":
        assert "(128, 128, 7, 1)" in str(err.value) and "(128, 128, 1, 7)" in str(err.value)
