"""Official DAMSM image encoder weights (CNN_ENCODER state dict) -> Flax variables.

CNN_ENCODER keeps torchvision Inception-v3's modules under their torchvision names
(Conv2d_1a_3x3.conv.weight, Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var}, ...,
Mixed_7c.branch_pool.bn.running_var) and adds two heads: emb_features.weight (conv1x1 768->nef,
no bias) and emb_cnn_code.{weight,bias} (Linear 2048->nef). A torchvision `inception_v3`
ImageNet checkpoint has the same trunk keys plus AuxLogits.* and fc.*, which CNN_ENCODER does
not keep: `inception_v3_trunk_variables` accepts both and drops those (and the heads).

The Flax trunk (`models.inception.InceptionV3`) uses the same module names, so the conversion
walks the model's own variable tree: every BasicConv2d `<path>` reads `<path>.conv.weight` and
`<path>.bn.*`; a missing or extra key is reported by name.

ImageEncoder variables: params {trunk, emb_features: {kernel}, emb_cnn_code: {kernel, bias}},
batch_stats {trunk}.
"""

from __future__ import annotations

import functools
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mirrorgan_jax.models.image_encoder import ImageEncoder
from mirrorgan_jax.models.inception import InceptionV3
from mirrorgan_jax.torch_import.common import (
    StateDictReader,
    WeightMismatchError,
    check_against,
    read_basic_convs,
)

StateDict = Mapping[str, np.ndarray]

HEAD_KEYS = ("emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias")
TORCHVISION_ONLY_PREFIXES = ("AuxLogits.", "fc.")


@functools.lru_cache(maxsize=8)
def _abstract_model(model: nn.Module) -> dict:
    """jax.eval_shape of `model.init` for a model called as model(images [1,299,299,3], False)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 3)), False))


def _trunk(reader: StateDictReader) -> tuple[dict, dict]:
    """(params, batch_stats) of models.inception.InceptionV3 from `reader`."""
    expected = _abstract_model(InceptionV3())
    params, stats = read_basic_convs(reader, expected["params"])
    variables = {"params": params, "batch_stats": stats}
    check_against(variables, expected, reader.source, "the Inception-v3 trunk is fixed-size")
    return params, stats


def _skip(reader: StateDictReader, prefixes: tuple[str, ...]) -> None:
    """Mark keys under `prefixes` as deliberately not converted."""
    for k in reader.sd:
        if k.startswith(prefixes):
            reader.used.add(k)


def inception_v3_trunk_variables(sd: StateDict, source: str = "inception_v3 checkpoint") -> dict:
    """CNN_ENCODER or torchvision inception_v3 state dict -> InceptionV3 variables
    {params, batch_stats}; AuxLogits.*, fc.* and the CNN_ENCODER heads are dropped.

    To start an ImageEncoder from ImageNet weights, put the result under `params['trunk']` /
    `batch_stats['trunk']` of a freshly initialised ImageEncoder("inception_v3").
    """
    reader = StateDictReader(sd, source)
    params, stats = _trunk(reader)
    _skip(reader, TORCHVISION_ONLY_PREFIXES + tuple(k for k in HEAD_KEYS))
    reader.check_all_used()
    return {"params": params, "batch_stats": stats}


def image_encoder_config(sd: StateDict, source: str = "image_encoder checkpoint") -> dict:
    """ImageEncoder fields read from a CNN_ENCODER state dict: backbone, nef."""
    if "emb_features.weight" not in sd:
        raise WeightMismatchError(
            f"{source}: missing key 'emb_features.weight' (the CNN_ENCODER region head); is this "
            "a DAMSM image_encoder checkpoint?"
        )
    if "Conv2d_1a_3x3.conv.weight" not in sd:
        raise WeightMismatchError(
            f"{source}: missing key 'Conv2d_1a_3x3.conv.weight'; only the Inception-v3 "
            "CNN_ENCODER can be imported (backbone 'tiny' has no official weights)"
        )
    return {"backbone": "inception_v3", "nef": int(np.shape(sd["emb_features.weight"])[0])}


def _heads(reader: StateDictReader) -> dict:
    return {
        "emb_features": {"kernel": reader.conv("emb_features.weight")},
        "emb_cnn_code": {
            "kernel": reader.linear("emb_cnn_code.weight"),
            "bias": reader.get("emb_cnn_code.bias"),
        },
    }


def image_encoder_heads_variables(sd: StateDict, source: str = "image_encoder checkpoint") -> dict:
    """The two CNN_ENCODER heads only -> {'params': {emb_features, emb_cnn_code}}, to apply with
    `ImageEncoder.heads` (trunk keys, if present, are ignored)."""
    reader = StateDictReader(sd, source)
    return {"params": _heads(reader)}


def image_encoder_variables(
    sd: StateDict, nef: int | None = None, source: str = "image_encoder checkpoint"
) -> dict:
    """Official CNN_ENCODER state dict -> ImageEncoder('inception_v3') variables.

    nef: the configured model.text_embedding_dim; None = read from the checkpoint. Raises
    WeightMismatchError naming the key and both shapes if they disagree.
    """
    config = image_encoder_config(sd, source)
    reader = StateDictReader(sd, source)
    trunk_p, trunk_s = _trunk(reader)
    params = {"trunk": trunk_p, **_heads(reader)}
    reader.check_all_used()
    variables = {"params": params, "batch_stats": {"trunk": trunk_s}}
    model = ImageEncoder(backbone="inception_v3", nef=nef or config["nef"])
    expected = _abstract_model(model)
    check_against(
        variables, expected, source, f"model.text_embedding_dim (checkpoint: {config['nef']})"
    )
    return variables
