"""pytorch-fid Inception weights (pt_inception-2015-12-05-6726825d.pth) -> FIDInceptionV3 variables.

The state dict is torchvision's `Inception3(num_classes=1008, aux_logits=False)` with pytorch-fid's
patched blocks, which keep torchvision's module names: every BasicConv2d `<path>` (e.g.
`Conv2d_1a_3x3`, `Mixed_5b.branch5x5_2`, `Mixed_7c.branch3x3dbl_3b`) has `<path>.conv.weight`
[O, I, kh, kw] and `<path>.bn.{weight,bias,running_mean,running_var}` (plus, in newer saves,
`num_batches_tracked`, which is ignored); the classifier is `fc.weight` [1008, 2048], `fc.bias`
[1008]. The Flax module (`models.inception.FIDInceptionV3`) uses the same names, so the
conversion walks the module's own variable tree and reads the key each BasicConv2d needs; a
missing, extra or mis-shaped key is reported by name.

The file is one the user supplies (`config.eval.inception_weights`): `.npz` holding those keys
(e.g. written by `np.savez(f, **{k: v.numpy() for k, v in torch.load(pth).items()})`), or the
`.pth` itself, read without torch's pickle by `mirrorgan_jax.safe_load.load_state_dict`.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mirrorgan_jax import safe_load
from mirrorgan_jax.models.inception import FID_NUM_CLASSES, FIDInceptionV3
from mirrorgan_jax.torch_import.common import (
    StateDictReader,
    check_against,
    read_basic_convs,
)

StateDict = Mapping[str, np.ndarray]


def expected_variables(num_classes: int = FID_NUM_CLASSES) -> dict:
    """Shapes (`jax.ShapeDtypeStruct`) of FIDInceptionV3's variables {params, batch_stats}."""
    model = FIDInceptionV3(num_classes=num_classes)
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 3), jnp.float32))
    )


def fid_inception_variables(sd: StateDict, source: str = "FID Inception checkpoint") -> dict:
    """pytorch-fid FID Inception state dict -> FIDInceptionV3 variables {params, batch_stats}.

    The number of classes is read from `fc.weight` (1008 for the TF weights). Raises
    WeightMismatchError (naming the key and shapes) on a missing, unexpected or mis-shaped key.
    """
    reader = StateDictReader(sd, source)
    num_classes = int(np.shape(reader.get("fc.weight"))[0])
    expected = expected_variables(num_classes)
    params, stats = read_basic_convs(reader, expected["params"])
    params["fc"] = {"kernel": reader.linear("fc.weight"), "bias": reader.get("fc.bias")}
    reader.check_all_used()
    variables = {"params": params, "batch_stats": stats}
    check_against(
        variables,
        expected,
        source,
        "the FID Inception-v3 is fixed-size (pytorch-fid's pt_inception-2015-12-05 weights)",
    )
    return variables


def load_fid_inception(path: str | os.PathLike) -> dict:
    """Reads the FID Inception weights file (`.npz` or `.pth`) -> FIDInceptionV3 variables."""
    name = os.fspath(path)
    if not name:
        raise ValueError(
            "FID/IS need the pytorch-fid Inception weights: set config.eval.inception_weights to "
            "pt_inception-2015-12-05-6726825d.pth (or an .npz with the same keys)"
        )
    if not os.path.isfile(name):
        raise FileNotFoundError(f"FID Inception weights not found: {name!r}")
    if name.endswith(".npz"):
        with np.load(name, allow_pickle=False) as f:
            sd = {k: f[k] for k in f.files}
    else:
        sd = safe_load.load_state_dict(name)
    return fid_inception_variables(sd, source=name)
