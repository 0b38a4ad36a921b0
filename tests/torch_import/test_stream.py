"""torch_import/stream.py: a torchvision `resnet152` ImageNet state dict becomes the caption CNN's
backbone, which then computes what torchvision computes with the same weights.

As in test_damsm.py, the reference is torchvision's own forward
(`tests/testdata/torch/make_imagenet_trunks.py`) of weights `parity_utils.random_state_dict`
draws from a seed under the exact torchvision keys (`resnet152_keys.txt`, fc included); here
they go through the converter into the CUB config's caption CNN
(`Networks.init_caption_cnn(backbone=...)`, as `stream.backbone_weights` does).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import cub
from mirrorgan_jax.networks import Networks
from mirrorgan_jax.torch_import import stream
from mirrorgan_jax.torch_import.common import WeightMismatchError
from tests.parity_utils import assert_close, random_state_dict

RESNET_SEED = 12  # the seed make_imagenet_trunks.py drew with


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return random_state_dict("resnet152_keys.txt", 1, RESNET_SEED)


def test_the_converted_resnet152_computes_what_torchvision_computes(state_dict, reference):
    for key in ("conv1.weight", "layer4.2.bn3.running_mean"):
        np.testing.assert_array_equal(state_dict[key].ravel()[:8], reference[f"check/resnet/{key}"])
    backbone = stream.resnet_backbone_variables(state_dict, source="resnet152.pth")
    nets = Networks.from_config(cub.get_config(), n_words=50)
    variables = nets.init_caption_cnn(jax.random.key(0), backbone=backbone)
    layer4 = jax.jit(
        lambda v, x: nets.caption_cnn.apply(v, x, method=lambda m, x: m.resnet(x, False))
    )(variables, reference["input/images"])
    assert_close(np.asarray(layer4), reference["resnet/layer4"], "resnet152 layer4", 1e-4)


def test_a_missing_key_is_refused_with_the_key_named(state_dict):
    sd = {k: v for k, v in state_dict.items() if k != "layer3.17.bn2.running_var"}
    with pytest.raises(WeightMismatchError, match=r"layer3\.17\.bn2\.running_var"):
        stream.resnet_backbone_variables(sd, source="stream.backbone_weights=resnet152.pth")
