"""Official STREAM weights (CAPTION_CNN / CAPTION_RNN state dicts) -> Flax variables.

Key layouts accepted for the ResNet backbone:
  - official CAPTION_CNN (`nn.Sequential(resnet.children()[:-1])` as `resnet`):
    resnet.0.weight (conv1), resnet.1.* (bn1), resnet.{4..7}.<j>.{conv,bn}<k>.*,
    resnet.{4..7}.<j>.downsample.{0,1}.*; then linear.weight/bias and bn.* (the head);
  - torchvision's own ResNet (ImageNet checkpoints): conv1.weight, bn1.*, layer{1..4}.<j>.*,
    fc.* (fc is dropped: CAPTION_CNN removes it). Use `resnet_backbone_variables` for these.
The ResNet structure (block type, blocks per stage, width) and the sizes are read from the
keys and shapes, so any torchvision ResNet converts; `num_batches_tracked` entries are ignored.

CaptionCNN variables: params {resnet, linear, bn}, batch_stats {resnet, bn}.
CaptionRNN params: {embed: {embedding}, lstm: {ih_kernel, ih_bias, hh_kernel, hh_bias},
linear: {kernel, bias}} from embed.weight, lstm.{weight,bias}_{ih,hh}_l0, linear.*.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mirrorgan_jax.models.captioner import CaptionCNN, CaptionRNN
from mirrorgan_jax.models.resnet import ResNet, ResNetSpec
from mirrorgan_jax.torch_import.common import StateDictReader, WeightMismatchError, check_against

StateDict = Mapping[str, np.ndarray]


class _Layout:
    """Where the ResNet pieces live in a state dict."""

    def __init__(self, stem_conv: str, stem_bn: str, stage: Callable[[int], str], extra: tuple):
        self.stem_conv = stem_conv
        self.stem_bn = stem_bn
        self.stage = stage
        self.extra = extra  # prefixes of keys that belong to the layout but are not converted


OFFICIAL_LAYOUT = _Layout("resnet.0.weight", "resnet.1", lambda i: f"resnet.{4 + i}", ())
TORCHVISION_LAYOUT = _Layout("conv1.weight", "bn1", lambda i: f"layer{i + 1}", ("fc.",))


def _layout(sd: StateDict, source: str) -> _Layout:
    if OFFICIAL_LAYOUT.stem_conv in sd:
        return OFFICIAL_LAYOUT
    if TORCHVISION_LAYOUT.stem_conv in sd:
        return TORCHVISION_LAYOUT
    raise WeightMismatchError(
        f"{source}: no ResNet stem conv found (expected key 'resnet.0.weight' (official "
        f"CAPTION_CNN) or 'conv1.weight' (torchvision resnet)); keys start {sorted(sd)[:5]}"
    )


def infer_resnet_spec(sd: StateDict, source: str = "checkpoint") -> ResNetSpec:
    """The ResNetSpec (block type, blocks per stage, width) of a ResNet state dict."""
    layout = _layout(sd, source)
    width = int(np.shape(sd[layout.stem_conv])[0])
    sizes = []
    while True:
        pattern = re.compile(re.escape(layout.stage(len(sizes))) + r"\.(\d+)\.")
        blocks = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
        if not blocks:
            break
        if blocks != set(range(len(blocks))):
            raise WeightMismatchError(
                f"{source}: blocks of {layout.stage(len(sizes))} are {sorted(blocks)}; expected "
                "0..n-1 without gaps"
            )
        sizes.append(len(blocks))
    if not sizes:
        raise WeightMismatchError(f"{source}: no ResNet stage keys under {layout.stage(0)}.<j>.*")
    block = "bottleneck" if f"{layout.stage(0)}.0.conv3.weight" in sd else "basic"
    return ResNetSpec(block, tuple(sizes), width)


def _resnet(reader: StateDictReader, spec: ResNetSpec, layout: _Layout) -> tuple[dict, dict]:
    """(params, batch_stats) of models.resnet.ResNet from `reader`."""
    params: dict = {"conv1": {"kernel": reader.conv(layout.stem_conv)}}
    stats: dict = {}
    params["bn1"], stats["bn1"] = reader.batch_norm(layout.stem_bn)
    n_convs = 3 if spec.block == "bottleneck" else 2
    for i, n_blocks in enumerate(spec.stage_sizes):
        for j in range(n_blocks):
            tp = f"{layout.stage(i)}.{j}"
            bp: dict = {}
            bs: dict = {}
            for k in range(1, n_convs + 1):
                bp[f"conv{k}"] = {"kernel": reader.conv(f"{tp}.conv{k}.weight")}
                bp[f"bn{k}"], bs[f"bn{k}"] = reader.batch_norm(f"{tp}.bn{k}")
            if f"{tp}.downsample.0.weight" in reader.sd:
                bp["downsample_conv"] = {"kernel": reader.conv(f"{tp}.downsample.0.weight")}
                bp["downsample_bn"], bs["downsample_bn"] = reader.batch_norm(f"{tp}.downsample.1")
            params[f"layer{i + 1}_{j}"] = bp
            stats[f"layer{i + 1}_{j}"] = bs
    return params, stats


@functools.lru_cache(maxsize=8)
def _abstract_image_model(model: nn.Module) -> dict:
    """jax.eval_shape of `model.init` for a model called as model(images [1,64,64,3], False)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), False))


def _skip(reader: StateDictReader, prefixes: tuple[str, ...]) -> None:
    """Mark keys under `prefixes` as deliberately not converted."""
    for k in reader.sd:
        if k.startswith(prefixes):
            reader.used.add(k)


def resnet_backbone_variables(sd: StateDict, source: str = "resnet checkpoint") -> dict:
    """A ResNet state dict (torchvision names, fc dropped, or CAPTION_CNN names, head dropped)
    -> variables {params, batch_stats} of `ResNet.from_spec(infer_resnet_spec(sd))`.

    To start a CaptionCNN from ImageNet weights, put the result under `params['resnet']` /
    `batch_stats['resnet']` of a freshly initialised CaptionCNN with the same backbone.
    """
    spec = infer_resnet_spec(sd, source)
    layout = _layout(sd, source)
    reader = StateDictReader(sd, source)
    params, stats = _resnet(reader, spec, layout)
    _skip(reader, layout.extra + (("linear.", "bn.") if layout is OFFICIAL_LAYOUT else ()))
    reader.check_all_used()
    variables = {"params": params, "batch_stats": stats}
    expected = _abstract_image_model(ResNet.from_spec(spec))
    check_against(variables, expected, source, f"ResNet spec {spec}")
    return variables


def caption_cnn_config(sd: StateDict, source: str = "caption_cnn checkpoint") -> dict:
    """CaptionCNN fields read from an official CAPTION_CNN state dict: backbone, embed_size."""
    if "linear.weight" not in sd:
        raise WeightMismatchError(f"{source}: missing key 'linear.weight' (the CAPTION_CNN head)")
    spec = infer_resnet_spec(sd, source)
    return {"backbone": spec.name, "embed_size": int(np.shape(sd["linear.weight"])[0])}


def caption_cnn_variables(
    sd: StateDict,
    backbone: str | None = None,
    embed_size: int | None = None,
    source: str = "caption_cnn checkpoint",
) -> dict:
    """Official CAPTION_CNN state dict -> CaptionCNN variables {params, batch_stats}.

    backbone / embed_size: the configured model (model.stream_backbone /
    model.stream_embed_size); None = whatever the checkpoint holds (see `caption_cnn_config`).
    Raises WeightMismatchError naming the key and both shapes if they disagree.
    """
    config = caption_cnn_config(sd, source)
    spec = infer_resnet_spec(sd, source)
    reader = StateDictReader(sd, source)
    rp, rs = _resnet(reader, spec, _layout(sd, source))
    bn_p, bn_s = reader.batch_norm("bn")
    params = {
        "resnet": rp,
        "linear": {"kernel": reader.linear("linear.weight"), "bias": reader.get("linear.bias")},
        "bn": bn_p,
    }
    reader.check_all_used()
    variables = {"params": params, "batch_stats": {"resnet": rs, "bn": bn_s}}
    model = CaptionCNN(
        backbone=backbone or config["backbone"],
        embed_size=embed_size or config["embed_size"],
        image_size=64,  # the variables do not depend on it; small keeps the trace cheap
    )
    expected = _abstract_image_model(model)
    check_against(
        variables,
        expected,
        source,
        f"model.stream_backbone (checkpoint: {config['backbone']}) and model.stream_embed_size "
        f"(checkpoint: {config['embed_size']})",
    )
    return variables


def caption_rnn_config(sd: StateDict, source: str = "caption_rnn checkpoint") -> dict:
    """CaptionRNN fields read from an official CAPTION_RNN state dict."""
    for key in ("embed.weight", "lstm.weight_hh_l0"):
        if key not in sd:
            raise WeightMismatchError(f"{source}: missing key {key!r} (CAPTION_RNN)")
    n_words, embed_size = (int(n) for n in np.shape(sd["embed.weight"]))
    return {
        "n_words": n_words,
        "embed_size": embed_size,
        "hidden_size": int(np.shape(sd["lstm.weight_hh_l0"])[1]),
    }


def caption_rnn_variables(
    sd: StateDict,
    n_words: int | None = None,
    embed_size: int | None = None,
    hidden_size: int | None = None,
    source: str = "caption_rnn checkpoint",
) -> dict:
    """Official CAPTION_RNN state dict -> CaptionRNN variables {params}.

    n_words / embed_size / hidden_size: the configured model (hidden_size is the LSTM size, i.e.
    2 * CAP.hidden_size); None = read from the checkpoint. Multi-layer LSTMs are rejected.
    """
    config = caption_rnn_config(sd, source)
    reader = StateDictReader(sd, source)
    params = {
        "embed": {"embedding": reader.get("embed.weight")},
        "lstm": reader.lstm("lstm"),
        "linear": {"kernel": reader.linear("linear.weight"), "bias": reader.get("linear.bias")},
    }
    reader.check_all_used()
    model = CaptionRNN(
        n_words=n_words or config["n_words"],
        embed_size=embed_size or config["embed_size"],
        hidden_size=hidden_size or config["hidden_size"],
    )
    e = model.embed_size
    expected = jax.eval_shape(
        lambda: model.init(
            jax.random.key(0),
            jnp.zeros((1, e)),
            jnp.zeros((1, 2), jnp.int32),
            jnp.ones((1,), jnp.int32),
        )
    )
    variables = {"params": params}
    check_against(
        variables,
        expected,
        source,
        f"model.n_words (checkpoint: {config['n_words']}), model.stream_embed_size (checkpoint: "
        f"{config['embed_size']}), 2 * model.stream_hidden_size (checkpoint LSTM: "
        f"{config['hidden_size']})",
    )
    return variables
