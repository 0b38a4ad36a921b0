"""Parity of STREAM (CaptionCNN + CaptionRNN) and the DAMSM image-encoder heads against the
official PyTorch outputs in `stream.npz` / `damsm_image_encoder.npz`, plus conversion of the
full-size key lists (`resnet152_keys.txt`, `inception_v3_keys.txt`).

Models are built from the manifest config and the fixture's own parameter shapes (backbone
structure, embed/hidden sizes, n_words, nef), never from the numbers of one fixture set.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirrorgan_jax.losses import caption_cross_entropy
from mirrorgan_jax.models.captioner import CaptionCNN, CaptionRNN
from mirrorgan_jax.models.image_encoder import ImageEncoder
from mirrorgan_jax.models.inception import InceptionV3
from mirrorgan_jax.models.resnet import ResNet, resnet_spec
from mirrorgan_jax.torch_import import damsm, stream
from mirrorgan_jax.torch_import.common import WeightMismatchError
from tests.parity_utils import (
    assert_close,
    config_value,
    load_fixture,
    load_manifest,
    manifest_config,
    max_rel_err,
    nchw_to_nhwc,
    read_key_list,
)

TOL = 1e-5
# CAPTION_CNN's nn.Upsample target and CNN_ENCODER's, fixed in the official code.
STREAM_IMAGE_SIZE = 224
DAMSM_IMAGE_SIZE = 299


def pack_time_major(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[B, T, ...] -> [sum(lengths), ...] in pack_padded_sequence order (lengths descending):
    step 0 of every sequence, then step 1 of those still running, ..."""
    lengths = np.asarray(lengths)
    assert np.all(np.diff(lengths) <= 0), f"pack_padded_sequence needs sorted lengths: {lengths}"
    rows = [
        x[b, t] for t in range(int(lengths.max())) for b in range(len(lengths)) if lengths[b] > t
    ]
    return np.stack(rows)


# ----------------------------------------------------------------------------- STREAM


@pytest.fixture(scope="module")
def stream_run():
    """One jitted run of the converted STREAM nets on the fixture inputs, both resize modes."""
    fx = load_fixture("stream.npz")
    cnn_sd = fx.state_dict(prefix="caption_cnn")
    rnn_sd = fx.state_dict(prefix="caption_rnn")
    cnn_cfg = stream.caption_cnn_config(cnn_sd)
    rnn_cfg = stream.caption_rnn_config(rnn_sd)
    cnn_vars = stream.caption_cnn_variables(cnn_sd)
    rnn_vars = stream.caption_rnn_variables(rnn_sd)
    images = jnp.asarray(nchw_to_nhwc(fx.inputs["images"]))
    captions = jnp.asarray(fx.inputs["captions"], jnp.int32)
    cap_lens = jnp.asarray(fx.inputs["cap_lens"], jnp.int32)
    rnn = CaptionRNN(**rnn_cfg)
    cnns = {
        align: CaptionCNN(**cnn_cfg, image_size=STREAM_IMAGE_SIZE, align_corners=align)
        for align in (False, True)
    }

    def cnn_both(module: CaptionCNN, x):
        pooled = module.backbone_features(x, False)
        return pooled, module.bn(module.linear(pooled), False)

    @jax.jit
    def run(cnn_vars, rnn_vars, images, captions, cap_lens):
        out = {}
        for align, cnn in cnns.items():
            pooled, feats = cnn.apply(cnn_vars, images, method=cnn_both)
            logits = rnn.apply(rnn_vars, feats, captions, cap_lens)
            ce = caption_cross_entropy(logits, captions, cap_lens)
            out[align] = dict(resnet_feature=pooled, cnn_feature=feats, logits=logits, cap_ce=ce)
        return out

    out = jax.device_get(run(cnn_vars, rnn_vars, images, captions, cap_lens))
    return dict(fx=fx, out=out, cnn_cfg=cnn_cfg, rnn_cfg=rnn_cfg, cap_lens=np.asarray(cap_lens))


def test_stream_config_matches_manifest(stream_run):
    cfg = manifest_config()
    assert stream_run["cnn_cfg"]["embed_size"] == config_value(cfg, "CAP.embed_size")
    assert stream_run["rnn_cfg"]["embed_size"] == config_value(cfg, "CAP.embed_size")
    assert stream_run["rnn_cfg"]["hidden_size"] == 2 * config_value(cfg, "CAP.hidden_size")
    assert stream_run["rnn_cfg"]["n_words"] == config_value(cfg, "n_words")


@pytest.mark.parametrize("name", ["resnet_feature", "cnn_feature"])
def test_stream_cnn(stream_run, name):
    assert_close(stream_run["out"][False][name], stream_run["fx"].outputs[name], name, TOL)


def test_stream_logits_targets_loss(stream_run):
    fx, out, lens = stream_run["fx"], stream_run["out"][False], stream_run["cap_lens"]
    packed = pack_time_major(out["logits"], lens)
    assert_close(packed, fx.outputs["logits"], "logits (packed)", TOL)
    targets = pack_time_major(fx.inputs["captions"], lens)
    np.testing.assert_array_equal(targets, fx.outputs["targets"])
    assert_close(out["cap_ce"], fx.outputs["cap_ce"], "cap_ce", TOL)
    lambda1 = load_manifest()["files"]["stream.npz"].get(
        "lambda1", config_value(manifest_config(), "TRAIN.SMOOTH.LAMBDA1")
    )
    assert_close(out["cap_ce"] * lambda1, fx.outputs["cap_loss"], "cap_loss", TOL)


@pytest.mark.parametrize("name", ["resnet_feature", "cnn_feature", "cap_ce"])
def test_stream_align_corners_true(stream_run, name):
    expected = stream_run["fx"].group("output_alt_align_corners_true")[name]
    assert_close(stream_run["out"][True][name], expected, f"align_corners=True {name}", TOL)


def test_resize_modes_differ(stream_run):
    """The fixture's two resize modes differ by far more than the tolerance, so matching each
    one checks the resize itself."""
    fx = stream_run["fx"]
    alt = fx.group("output_alt_align_corners_true")
    for name in ("resnet_feature", "cnn_feature"):
        assert max_rel_err(alt[name], fx.outputs[name]) > 10 * TOL


# ----------------------------------------------------------------------------- DAMSM heads


def test_damsm_heads():
    fx = load_fixture("damsm_image_encoder.npz")
    sd = fx.state_dict()
    variables = damsm.image_encoder_heads_variables(sd)
    nef = int(sd["emb_features.weight"].shape[0])
    assert nef == config_value(manifest_config(), "TEXT.EMBEDDING_DIM")
    model = ImageEncoder(backbone="inception_v3", nef=nef, image_size=DAMSM_IMAGE_SIZE)
    region, code = jax.jit(lambda v, a, b: model.apply(v, a, b, method=ImageEncoder.heads))(
        variables,
        jnp.asarray(nchw_to_nhwc(fx.inputs["mixed_6e"])),
        jnp.asarray(nchw_to_nhwc(fx.inputs["mixed_7c"])),
    )
    assert_close(region, nchw_to_nhwc(fx.outputs["region_features"]), "region_features", TOL)
    assert_close(code, fx.outputs["cnn_code"], "cnn_code", TOL)


# ----------------------------------------------------------------------------- key lists


def fake_state_dict(rows, column: int) -> dict[str, np.ndarray]:
    """Zero arrays (broadcast views, no memory) under the keys of one column."""
    zero = np.zeros((), np.float32)
    return {r[column]: np.broadcast_to(zero, r[2]) for r in rows if r[column] != "-"}


def assert_same_tree(converted, expected):
    conv = {
        jax.tree_util.keystr(k): np.shape(v)
        for k, v in jax.tree_util.tree_leaves_with_path(converted)
    }
    exp = {
        jax.tree_util.keystr(k): tuple(v.shape)
        for k, v in jax.tree_util.tree_leaves_with_path(expected)
    }
    assert conv == exp


def test_resnet152_key_list_official():
    rows = read_key_list("resnet152_keys.txt")
    sd = fake_state_dict(rows, 0)
    cfg = stream.caption_cnn_config(sd)
    assert resnet_spec(cfg["backbone"]) == resnet_spec("resnet152")
    embed = cfg["embed_size"]
    variables = stream.caption_cnn_variables(sd, backbone="resnet152", embed_size=embed)
    model = CaptionCNN("resnet152", embed_size=embed, image_size=64)
    expected = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), False)
    )
    assert_same_tree(variables, expected)
    # The wrong configured embed size is reported with the key and both shapes.
    with pytest.raises(WeightMismatchError, match="stream_embed_size"):
        stream.caption_cnn_variables(sd, backbone="resnet152", embed_size=embed + 1)


def test_resnet152_key_list_torchvision():
    rows = read_key_list("resnet152_keys.txt")
    variables = stream.resnet_backbone_variables(fake_state_dict(rows, 1))
    expected = jax.eval_shape(
        lambda: ResNet.from_spec(resnet_spec("resnet152")).init(
            jax.random.key(0), jnp.zeros((1, 64, 64, 3)), False
        )
    )
    assert_same_tree(variables, expected)


def test_inception_v3_key_list_official():
    rows = read_key_list("inception_v3_keys.txt")
    sd = fake_state_dict(rows, 0)
    nef = damsm.image_encoder_config(sd)["nef"]
    variables = damsm.image_encoder_variables(sd)
    model = ImageEncoder("inception_v3", nef=nef)
    expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 3))))
    assert_same_tree(variables, expected)
    with pytest.raises(WeightMismatchError, match="text_embedding_dim"):
        damsm.image_encoder_variables(sd, nef=nef + 1)


def test_inception_v3_key_list_torchvision():
    rows = read_key_list("inception_v3_keys.txt")
    variables = damsm.inception_v3_trunk_variables(fake_state_dict(rows, 1))
    expected = jax.eval_shape(
        lambda: InceptionV3().init(jax.random.key(0), jnp.zeros((1, 299, 299, 3)), False)
    )
    assert_same_tree(variables, expected)


def test_missing_and_unexpected_keys_are_named():
    rows = read_key_list("inception_v3_keys.txt")
    sd = fake_state_dict(rows, 0)
    broken = {k: v for k, v in sd.items() if k != "Mixed_6b.branch7x7_2.conv.weight"}
    with pytest.raises(WeightMismatchError, match="Mixed_6b.branch7x7_2.conv.weight"):
        damsm.image_encoder_variables(broken)
    extra = dict(sd, **{"Mixed_8a.conv.weight": np.zeros((1,), np.float32)})
    with pytest.raises(WeightMismatchError, match="Mixed_8a"):
        damsm.image_encoder_variables(extra)
