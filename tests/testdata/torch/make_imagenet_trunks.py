"""Regenerates imagenet_trunks.npz (run by hand, never by the tests): torchvision's own forward of
`inception_v3` and `resnet152` with random weights, the reference the converted ImageNet trunks
are checked against in tests/torch_import/test_damsm.py and test_stream.py.

Needs torch and torchvision (an optional extra) in a separate environment, e.g.
  python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch torchvision numpy
  /tmp/torchvenv/bin/python tests/testdata/torch/make_imagenet_trunks.py
The weights are not stored: `tests/parity_utils.random_state_dict` draws them from a seed under
the exact torchvision keys of `tests/testdata/parity/*_keys.txt`, here and in the tests. Stored:
the inputs, small summaries of the outputs (means, a few positions, projections on fixed random
directions, `parity_utils.projections`) and a few weight values (`check/...`) that show the
draws agree.

Inception-v3 runs as the official DAMSM image encoder runs it (`taoxugit/AttnGAN code/model.py
CNN_ENCODER.forward`): the [-1, 1] image resized to 299 by bilinear interpolation
(`nn.Upsample(size=(299, 299), mode='bilinear')`, align_corners False as PyTorch >= 0.4), the
torchvision blocks from Conv2d_1a_3x3 to Mixed_7c with the two stride-2 max pools, no
`transform_input`; Mixed_6e is the region map and Mixed_7c the global map (avg_pool2d 8 ->
the pooled code input). ResNet-152 runs as torchvision's backbone (conv1 .. layer4, the input
as given), whose layer4 map the caption CNN pools. Both in eval mode (running statistics).
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))  # the repo root

from tests.parity_utils import projections, random_state_dict  # noqa: E402

INCEPTION_SEED, RESNET_SEED, INPUT_SEED, PROJECTION_SEED = 11, 12, 13, 14
N_PROJECTIONS = 8
CHECK_KEYS = {
    "inception": ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.bn.running_var"),
    "resnet": ("conv1.weight", "layer4.2.bn3.running_mean"),
}


def load(net: torch.nn.Module, sd: dict) -> torch.nn.Module:
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    return net.eval()


def nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy().astype(np.float32)


def summaries(prefix: str, maps: np.ndarray, out: dict) -> None:
    """[B, H, W, C] -> mean over positions, the corner and centre positions, projections."""
    h, w = maps.shape[1:3]
    out[f"{prefix}_mean"] = maps.mean(axis=(1, 2))
    out[f"{prefix}_corner"] = maps[:, 0, 0]
    out[f"{prefix}_centre"] = maps[:, h // 2, w // 2]
    out[f"{prefix}_projections"] = projections(maps, N_PROJECTIONS, PROJECTION_SEED)


@torch.no_grad()
def inception(images: np.ndarray, out: dict) -> None:
    sd = random_state_dict("inception_v3_keys.txt", 1, INCEPTION_SEED)
    net = load(
        torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False), sd
    )
    x = torch.from_numpy(images).permute(0, 3, 1, 2)  # NCHW
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    x = net.Conv2d_2b_3x3(net.Conv2d_2a_3x3(net.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    x = net.Conv2d_4a_3x3(net.Conv2d_3b_1x1(x))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    for block in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c"):
        x = getattr(net, block)(x)
    region = net.Mixed_6e(net.Mixed_6d(x))
    global_map = net.Mixed_7c(net.Mixed_7b(net.Mixed_7a(region)))
    summaries("inception/mixed_6e", nhwc(region), out)
    summaries("inception/mixed_7c", nhwc(global_map), out)
    out["inception/code_input"] = F.avg_pool2d(global_map, kernel_size=8).flatten(1).numpy()
    for key in CHECK_KEYS["inception"]:
        out[f"check/inception/{key}"] = sd[key].ravel()[:8]


@torch.no_grad()
def resnet(images: np.ndarray, out: dict) -> None:
    sd = random_state_dict("resnet152_keys.txt", 1, RESNET_SEED)
    net = load(torchvision.models.resnet152(weights=None), sd)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    out["resnet/layer4"] = nhwc(x)  # [B, 2, 2, 2048] for a 64x64 input
    for key in CHECK_KEYS["resnet"]:
        out[f"check/resnet/{key}"] = sd[key].ravel()[:8]


if __name__ == "__main__":
    torch.set_num_threads(2)
    images = np.random.RandomState(INPUT_SEED).uniform(-1.0, 1.0, (2, 64, 64, 3))
    out = {"input/images": images.astype(np.float32)}
    inception(out["input/images"], out)
    resnet(out["input/images"], out)
    out["versions/torch"] = np.array(torch.__version__)
    out["versions/torchvision"] = np.array(torchvision.__version__)
    np.savez_compressed(os.path.join(HERE, "imagenet_trunks.npz"), **out)
    print({k: v.shape for k, v in out.items()})
