"""Numeric parity with the official PyTorch STEM / CA_NET / GLAttention / G_NET / D_NET*.

Fixtures come from $MIRRORGAN_PARITY_DIR (default tests/testdata/parity); every model is built
from that directory's manifest 'config' and the cases come from the files its manifest lists.
Errors are norm-relative (max|a - e| / max|e|) and must be <= 1e-5, except where noted.
"""

import re

import jax
import numpy as np
import pytest

from mirrorgan_jax.losses import kl_loss
from mirrorgan_jax.models.attention import GlobalLocalAttention, word_mask_rows
from mirrorgan_jax.models.discriminators import Discriminator, init_discriminator
from mirrorgan_jax.models.generator import ConditioningAugmentation, Generator
from mirrorgan_jax.models.text_encoder import TextEncoder
from mirrorgan_jax.torch_import import gan
from mirrorgan_jax.torch_import.common import WeightMismatchError, check_against
from tests.parity_utils import (
    assert_close,
    config_value,
    listed_files,
    load_fixture,
    manifest_config,
    nchw_to_nhwc,
)

TOL = 1e-5
# Train-mode generator images: BatchNorm over a batch of B=3 at every layer of every stage makes
# the later stages ill-conditioned. A float64 run of this port differs from the (float32) PyTorch
# fixture by 1.7e-5 at the 256 px stage of the shipped set, i.e. the fixture's own rounding is
# above 1e-5 there; the float32 port measures 2.2e-5. Eval-mode images meet 1e-5.
TOL_TRAIN_IMAGES = 5e-5

CFG = manifest_config()
D_FILES = listed_files(r"d\d+\.npz")


def cfg(name: str):
    return config_value(CFG, name)


def words_nhwc(words_emb: np.ndarray) -> np.ndarray:
    """Official words_emb [B, nef, T] -> [B, T, nef]."""
    return np.transpose(words_emb, (0, 2, 1))


def batch_stats_errors(actual: dict, expected: dict) -> float:
    check_against(actual, expected, "batch_stats after the train-mode call")
    return max(jax.tree.leaves(jax.tree.map(_rel, actual, expected)))


def _rel(a, e) -> float:
    a = np.asarray(a, np.float64)
    e = np.asarray(e, np.float64)
    return float(np.max(np.abs(a - e)) / (np.max(np.abs(e)) + 1e-12))


# ---------------------------------------------------------------------------------- STEM / CA
def test_text_encoder():
    fx = load_fixture("text_encoder.npz")
    nef = cfg("TEXT.EMBEDDING_DIM")
    assert cfg("RNN_ENCODER LSTM hidden per direction") * 2 == nef
    model = TextEncoder(cfg("n_words"), cfg("RNN_ENCODER.ninput"), nef)
    tokens, lengths = fx.inputs["captions"], fx.inputs["cap_lens"]
    variables = gan.text_encoder_variables(fx.params)
    check_against(
        variables, jax.eval_shape(model.init, jax.random.key(0), tokens, lengths), "text_encoder"
    )
    words, sent = model.apply(variables, tokens, lengths, train=False)
    expected_words = words_nhwc(fx.outputs["words_emb"])  # T = max(cap_lens)
    t = expected_words.shape[1]
    assert t == int(lengths.max())
    words = np.asarray(words)
    assert np.all(words[:, t:] == 0.0)
    pad = np.arange(t)[None, :] >= lengths[:, None]
    assert np.all(words[:, :t][pad] == 0.0)
    assert_close(words[:, :t], expected_words, "text_encoder/words_emb", TOL)
    assert_close(sent, fx.outputs["sent_emb"], "text_encoder/sent_emb", TOL)


def test_ca_net():
    fx = load_fixture("ca_net.npz")
    model = ConditioningAugmentation(cfg("GAN.CONDITION_DIM"))
    variables = gan.conditioning_augmentation_variables(fx.params)
    sent, eps = fx.inputs["sent_emb"], fx.inputs["eps"]
    check_against(variables, jax.eval_shape(model.init, jax.random.key(0), sent, eps), "ca_net")
    c, mu, logvar = model.apply(variables, sent, eps)
    assert_close(c, fx.outputs["c_code"], "ca_net/c_code", TOL)
    assert_close(mu, fx.outputs["mu"], "ca_net/mu", TOL)
    assert_close(logvar, fx.outputs["logvar"], "ca_net/logvar", TOL)
    assert_close(kl_loss(mu, logvar), fx.outputs["kl"], "ca_net/kl", TOL)


def test_glattention():
    fx = load_fixture("glattention.npz")
    model = GlobalLocalAttention(
        word_attention_mask="official", sentence_attention_softmax="channel"
    )
    i = fx.inputs
    args = (nchw_to_nhwc(i["h"]), i["c_code"], words_nhwc(i["words_emb"]), i["mask"])
    variables = gan.attention_variables(fx.params)
    check_against(variables, jax.eval_shape(model.init, jax.random.key(0), *args), "glattention")
    outs = model.apply(variables, *args)
    names = ("word_context", "sentence_context", "word_attn", "sentence_attn")
    for name, out in zip(names, outs, strict=True):
        assert_close(out, nchw_to_nhwc(fx.outputs[name]), f"glattention/{name}", TOL)
    # The mask row each pixel gets is the fixture's aux/mask_sample_index.
    index = fx.group("aux")["mask_sample_index"]  # [B, N]
    rows = np.asarray(word_mask_rows(i["mask"], index.shape[1], "official"))
    np.testing.assert_array_equal(rows, i["mask"][index])


# ---------------------------------------------------------------------------------- generator
@pytest.fixture(scope="module")
def generator_case():
    fx = load_fixture("generator.npz")
    branch_num = cfg("TREE.BRANCH_NUM")
    model = Generator(
        gf_dim=cfg("GAN.GF_DIM"),
        z_dim=cfg("GAN.Z_DIM"),
        condition_dim=cfg("GAN.CONDITION_DIM"),
        r_num=cfg("GAN.R_NUM"),
        branch_num=branch_num,
        base_size=cfg("TREE.BASE_SIZE"),
        word_attention_mask="official",
        sentence_attention_softmax="channel",
    )
    i = fx.inputs
    args = (i["z"], i["sent_emb"], words_nhwc(i["words_emb"]), i["mask"])
    variables = gan.generator_variables(fx.state_dict(), branch_num)
    expected = jax.eval_shape(
        lambda: model.init(jax.random.key(0), *args, train=False, eps=i["eps"])
    )
    check_against(variables, expected, "generator")

    def run(train: bool):
        return model.apply(
            variables,
            *args,
            train=train,
            eps=i["eps"],
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=lambda mdl, method: mdl.name == "h_net1",
        )

    return dict(fx=fx, model=model, variables=variables, branch_num=branch_num, run=run)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_generator(generator_case, mode):
    fx, branch_num = generator_case["fx"], generator_case["branch_num"]
    out, state = generator_case["run"](mode == "train")
    expected = fx.group(f"output_{mode}")
    assert len(out.images) == branch_num and len(out.attention) == branch_num - 1
    assert f"fake_imgs/{branch_num}" not in expected
    img_tol = TOL_TRAIN_IMAGES if mode == "train" else TOL
    for k in range(branch_num):
        assert_close(
            out.images[k],
            nchw_to_nhwc(expected[f"fake_imgs/{k}"]),
            f"G {mode}/fake_imgs/{k}",
            img_tol,
        )
    for k in range(branch_num - 1):
        assert_close(
            out.attention[k],
            nchw_to_nhwc(expected[f"att_maps/{k}"]),
            f"G {mode}/att_maps/{k}",
            TOL,
        )
    for name in ("mu", "logvar", "c_code"):
        assert_close(getattr(out, name), expected[name], f"G {mode}/{name}", TOL)
    (h_code1,) = state["intermediates"]["h_net1"]["__call__"]
    assert_close(h_code1, nchw_to_nhwc(expected["h_code1"]), f"G {mode}/h_code1", TOL)
    if mode == "train":
        after = gan.generator_variables(fx.state_dict("buffer_after_train"), branch_num)
        err = batch_stats_errors(state["batch_stats"], after["batch_stats"])
        print(f"parity G buffer_after_train: max rel err {err:.2e}")
        assert err <= TOL
    else:
        before = generator_case["variables"]["batch_stats"]
        assert batch_stats_errors(state["batch_stats"], before) == 0.0


# ---------------------------------------------------------------------------------- discriminators
@pytest.mark.parametrize("name", D_FILES)
def test_discriminator(name):
    fx = load_fixture(name)
    images = nchw_to_nhwc(fx.inputs["images"])
    size = images.shape[1]
    assert re.fullmatch(rf"d{size}\.npz", name) and size in cfg("image sizes")
    sent = fx.inputs["sent_emb"]
    model = Discriminator(size, cfg("GAN.DF_DIM"))
    variables = gan.discriminator_variables(fx.state_dict(), size)
    expected = jax.eval_shape(
        lambda: init_discriminator(model, jax.random.key(0), cfg("TEXT.EMBEDDING_DIM"))
    )
    check_against(variables, expected, name)

    # The official order: features = D(x); UNCOND_DNET(features); COND_DNET(features, sent).
    features, state = model.apply(variables, images, train=True, mutable=["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": state["batch_stats"]}
    uncond, state = model.apply(
        variables,
        features,
        train=True,
        method=Discriminator.uncond_logits,
        mutable=["batch_stats"],
    )
    variables["batch_stats"] = state["batch_stats"]
    cond, state = model.apply(
        variables,
        features,
        sent,
        train=True,
        method=Discriminator.cond_logits,
        mutable=["batch_stats"],
    )
    out = fx.outputs
    assert_close(features, nchw_to_nhwc(out["features"]), f"{name}/features", TOL)
    # The official heads end in a Sigmoid: the fixture holds probabilities.
    assert_close(jax.nn.sigmoid(uncond), out["uncond_logits"], f"{name}/uncond", TOL)
    assert_close(jax.nn.sigmoid(cond), out["cond_logits"], f"{name}/cond", TOL)
    after = gan.discriminator_variables(fx.state_dict("buffer_after_train"), size)
    err = batch_stats_errors(state["batch_stats"], after["batch_stats"])
    print(f"parity {name} buffer_after_train: max rel err {err:.2e}")
    assert err <= TOL


# ---------------------------------------------------------------------------------- converters
def test_converters_name_bad_keys():
    fx = load_fixture(D_FILES[0])
    size = nchw_to_nhwc(fx.inputs["images"]).shape[1]
    sd = fx.state_dict()
    with pytest.raises(WeightMismatchError, match="unexpected keys.*extra.weight"):
        gan.discriminator_variables({**sd, "extra.weight": np.zeros(1)}, size)
    missing = {k: v for k, v in sd.items() if k != "COND_DNET.jointConv.0.weight"}
    with pytest.raises(WeightMismatchError, match="COND_DNET.jointConv.0.weight"):
        gan.discriminator_variables(missing, size)
    with pytest.raises(WeightMismatchError, match="image_size=32"):
        gan.discriminator_variables(sd, 32)
    g_sd = load_fixture("generator.npz").state_dict()
    branch_num = cfg("TREE.BRANCH_NUM")
    with pytest.raises(WeightMismatchError, match=f"model.branch_num={branch_num}"):
        gan.generator_variables(g_sd, branch_num + 1)
    # A DataParallel 'module.' prefix and num_batches_tracked counters are accepted.
    wrapped = {f"module.{k}": v for k, v in sd.items()}
    wrapped["module.img_code_s16.3.num_batches_tracked"] = np.array(1)
    a = gan.discriminator_variables(wrapped, size)
    b = gan.discriminator_variables(sd, size)
    jax.tree.map(np.testing.assert_array_equal, a, b)
