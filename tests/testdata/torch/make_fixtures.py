"""Regenerates the real PyTorch checkpoints in this folder (run by hand, never by the tests).

Needs torch (an optional extra) in a separate environment, e.g.
  python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
  /tmp/torchvenv/bin/python tests/testdata/torch/make_fixtures.py
The files are named `.pth.bin` because the repository does not accept `.pth`/`.pt` files.
`tests/test_safe_load.py` reads them without torch and checks the values written below.
"""

import collections
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def state_dict() -> collections.OrderedDict:
    """A real module state dict (with its `_metadata`) plus tensors of every awkward kind."""
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(4.0).reshape(2, 2, 1, 1) / 4)
        net[0].bias.copy_(torch.tensor([0.5, -0.5]))
        net[1].weight.copy_(torch.tensor([1.0, 2.0]))
        net[1].bias.copy_(torch.tensor([0.1, 0.2]))
        net[1].running_mean.copy_(torch.tensor([0.25, -0.25]))
        net[1].running_var.copy_(torch.tensor([1.5, 2.5]))
        net[1].num_batches_tracked.fill_(7)
    sd = net.state_dict()
    base = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    sd["extra.view_t"] = base.t()  # non-contiguous view
    sd["extra.view_row"] = base[1]  # offset view into the same storage
    sd["extra.half"] = torch.tensor([1.5, -2.0], dtype=torch.float16)
    sd["extra.bf16"] = torch.tensor([1.0, -3.0], dtype=torch.bfloat16)
    sd["extra.mask"] = torch.tensor([True, False, True])
    sd["extra.i32"] = torch.tensor([[1, -2]], dtype=torch.int32)
    sd["extra.u8"] = torch.tensor([255, 0], dtype=torch.uint8)
    return sd


if __name__ == "__main__":
    sd = state_dict()
    torch.save(sd, os.path.join(HERE, "state_dict_zip.pth.bin"))
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}
    torch.save(
        wrapped,
        os.path.join(HERE, "checkpoint_legacy.pth.bin"),
        _use_new_zipfile_serialization=False,
    )
    print(torch.__version__, sorted(os.listdir(HERE)))
