"""Official PyTorch state dicts of the STEM text encoder, G_NET and D_NET* -> Flax variables.

Each converter takes a flat `{official_key: np.ndarray}` dict (BatchNorm `num_batches_tracked`
entries and a DataParallel `module.` prefix are ignored), reads every key through a
`StateDictReader` (so a missing key is named), fails on any key it did not use, and returns
`{"params": ..., "batch_stats": ...}` laid out like the matching module's `init` (NHWC kernels).
Compare the result with `check_against(variables, jax.eval_shape(model.init, ...), ...)` to
check it fits a configured model.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from mirrorgan_jax.torch_import.common import StateDictReader, WeightMismatchError

_STAGE_SIZES = {64: 0, 128: 1, 256: 2}


def _strip_module_prefix(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def _count(sd: Mapping[str, np.ndarray], pattern: str) -> int:
    """Number of distinct integers captured by `pattern` (one group) over the keys."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.fullmatch(k))})


def _linear(r: StateDictReader, prefix: str) -> dict:
    return {"kernel": r.linear(f"{prefix}.weight"), "bias": r.get(f"{prefix}.bias")}


def _conv(r: StateDictReader, key: str) -> dict:
    return {"kernel": r.conv(key)}


def _conv_with_bias(r: StateDictReader, prefix: str) -> dict:
    return {"kernel": r.conv(f"{prefix}.weight"), "bias": r.get(f"{prefix}.bias")}


def _conv_bn(r: StateDictReader, conv_key: str, bn_prefix: str) -> tuple[dict, dict]:
    """(params, batch_stats) of a block with children `conv` and `bn`."""
    bn_p, bn_s = r.batch_norm(bn_prefix)
    return {"conv": _conv(r, conv_key), "bn": bn_p}, {"bn": bn_s}


def text_encoder_variables(sd: Mapping[str, np.ndarray]) -> dict:
    """RNN_ENCODER (`encoder.weight`, `rnn.*_l0[_reverse]`) -> `TextEncoder` variables."""
    r = StateDictReader(_strip_module_prefix(sd), "text encoder (RNN_ENCODER) state dict")
    params = {
        "embedding": {"embedding": r.get("encoder.weight")},
        "forward": r.lstm("rnn", "_l0"),
        "backward": r.lstm("rnn", "_l0_reverse"),
    }
    r.check_all_used()
    return {"params": params}


def _ca_params(r: StateDictReader, prefix: str) -> dict:
    return {"fc": _linear(r, f"{prefix}fc")}


def _attention_params(r: StateDictReader, prefix: str) -> dict:
    """GLAttentionGeneral; the sentence branch only if its keys are present (ablation)."""
    params = {"conv_context": _conv(r, f"{prefix}conv_context.weight")}
    if f"{prefix}linear.weight" in r.sd:
        params["conv_sentence_vis"] = _conv(r, f"{prefix}conv_sentence_vis.weight")
        params["linear"] = _linear(r, f"{prefix}linear")
    return params


def conditioning_augmentation_variables(sd: Mapping[str, np.ndarray]) -> dict:
    """CA_NET (`fc.weight`, `fc.bias`) -> `ConditioningAugmentation` variables."""
    r = StateDictReader(_strip_module_prefix(sd), "CA_NET state dict")
    params = _ca_params(r, "")
    r.check_all_used()
    return {"params": params}


def attention_variables(sd: Mapping[str, np.ndarray]) -> dict:
    """GLAttentionGeneral (conv_context, conv_sentence_vis, linear) -> GlobalLocalAttention."""
    r = StateDictReader(_strip_module_prefix(sd), "GLAttentionGeneral state dict")
    params = _attention_params(r, "")
    r.check_all_used()
    return {"params": params}


def _up_block(r: StateDictReader, prefix: str) -> tuple[dict, dict]:
    """upBlock = Sequential(Upsample, conv3x3 [.1], BN [.2], GLU)."""
    return _conv_bn(r, f"{prefix}.1.weight", f"{prefix}.2")


def generator_variables(sd: Mapping[str, np.ndarray], branch_num: int) -> dict:
    """G_NET (`ca_net.*`, `h_net{i}.*`, `img_net{i}.*`) -> `Generator` variables.

    The number of first-stage up-blocks and of ResBlocks per stage are read from the keys
    (they must match the configured `base_size` and `r_num`; `check_against` says so).
    """
    sd = _strip_module_prefix(sd)
    r = StateDictReader(sd, "generator (G_NET) state dict")
    stages = _count(sd, r"img_net(\d+)\.img\.0\.weight")
    if stages != branch_num:
        raise WeightMismatchError(
            f"generator state dict has {stages} stages (img_net1..img_net{stages}) but the model "
            f"has branch_num={branch_num}; set model.branch_num={stages}"
        )
    params: dict = {"ca": _ca_params(r, "ca_net.")}
    stats: dict = {}

    num_up = _count(sd, r"h_net1\.upsample(\d+)\.1\.weight")
    p1: dict = {"fc": {"kernel": r.linear("h_net1.fc.0.weight")}}
    bn_p, bn_s = r.batch_norm("h_net1.fc.1")
    p1["fc_bn"], s1 = bn_p, {"fc_bn": bn_s}
    for k in range(1, num_up + 1):
        p1[f"upsample{k}"], s1[f"upsample{k}"] = _up_block(r, f"h_net1.upsample{k}")
    params["h_net1"], stats["h_net1"] = p1, s1

    for i in range(1, branch_num + 1):
        params[f"img_net{i}"] = {"conv": _conv(r, f"img_net{i}.img.0.weight")}
        if i == 1:
            continue
        pre = f"h_net{i}"
        p: dict = {
            "att": _attention_params(r, f"{pre}.att."),
            "conv": _conv(r, f"{pre}.conv.weight"),
        }
        s: dict = {}
        for j in range(_count(sd, rf"{pre}\.residual\.(\d+)\.block\.0\.weight")):
            blk = f"{pre}.residual.{j}.block"
            bn1_p, bn1_s = r.batch_norm(f"{blk}.1")
            bn2_p, bn2_s = r.batch_norm(f"{blk}.4")
            p[f"residual_{j}"] = {
                "conv1": _conv(r, f"{blk}.0.weight"),
                "bn1": bn1_p,
                "conv2": _conv(r, f"{blk}.3.weight"),
                "bn2": bn2_p,
            }
            s[f"residual_{j}"] = {"bn1": bn1_s, "bn2": bn2_s}
        p["upsample"], s["upsample"] = _up_block(r, f"{pre}.upsample")
        params[pre], stats[pre] = p, s
    r.check_all_used()
    return {"params": params, "batch_stats": stats}


def discriminator_variables(sd: Mapping[str, np.ndarray], image_size: int) -> dict:
    """D_NET64 / D_NET128 / D_NET256 (with UNCOND_DNET and COND_DNET) -> `Discriminator`."""
    if image_size not in _STAGE_SIZES:
        raise WeightMismatchError(
            f"no official discriminator exists for image_size={image_size}; expected one of "
            f"{sorted(_STAGE_SIZES)} (the 32 px Discriminator is this port's extension)"
        )
    r = StateDictReader(_strip_module_prefix(sd), f"discriminator (D_NET{image_size}) state dict")
    params: dict = {}
    stats: dict = {}

    enc_p: dict = {"conv0": _conv(r, "img_code_s16.0.weight")}
    enc_s: dict = {}
    for i, (conv_idx, bn_idx) in enumerate(((2, 3), (5, 6), (8, 9)), start=1):
        enc_p[f"down{i}"], enc_s[f"down{i}"] = _conv_bn(
            r, f"img_code_s16.{conv_idx}.weight", f"img_code_s16.{bn_idx}"
        )
    params["img_code_s16"], stats["img_code_s16"] = enc_p, enc_s

    blocks = {
        64: (),
        128: ("img_code_s32", "img_code_s32_1"),
        256: ("img_code_s32", "img_code_s64", "img_code_s64_1", "img_code_s64_2"),
    }[image_size]
    for name in blocks:  # downBlock and Block3x3_leakRelu are both Sequential(conv, BN, LReLU)
        params[name], stats[name] = _conv_bn(r, f"{name}.0.weight", f"{name}.1")

    params["uncond"] = {"outlogits": _conv_with_bias(r, "UNCOND_DNET.outlogits.0")}
    joint_p, joint_s = _conv_bn(r, "COND_DNET.jointConv.0.weight", "COND_DNET.jointConv.1")
    params["cond"] = {
        "joint_conv": joint_p,
        "outlogits": _conv_with_bias(r, "COND_DNET.outlogits.0"),
    }
    stats["cond"] = {"joint_conv": joint_s}
    r.check_all_used()
    return {"params": params, "batch_stats": stats}
