"""--mode=import_torch: official weights (.npz in official key names) -> Orbax checkpoints in
the workdir layout -> restored networks reproduce the parity fixture outputs; and every
ill-fitting file is refused before anything is written. Built from the fixture manifest."""

import functools
import os
import sys

import jax
import numpy as np
import pytest

from configs import common
from mirrorgan_jax import checkpoints, parallel
from mirrorgan_jax import workdir as wd
from mirrorgan_jax.networks import Networks
from mirrorgan_jax.torch_import import gan as gan_import
from mirrorgan_jax.torch_import import import_all as import_torch
from mirrorgan_jax.torch_import.common import WeightMismatchError
from mirrorgan_jax.torch_import.stream import caption_cnn_config
from mirrorgan_jax.train import damsm
from tests.parity_utils import (
    assert_close,
    config_value,
    listed_files,
    load_fixture,
    manifest_config,
    nchw_to_nhwc,
)

CFG = manifest_config()


def cfg(name):
    return config_value(CFG, name)


def fixture_config():
    """A config with the fixture set's dimensions (nothing depends on the shipped numbers)."""
    c = common.get_base_config()
    m = c.model
    m.n_words = cfg("n_words")
    m.word_embedding_dim = cfg("RNN_ENCODER.ninput")
    m.text_embedding_dim = cfg("TEXT.EMBEDDING_DIM")
    m.gf_dim, m.df_dim, m.z_dim = cfg("GAN.GF_DIM"), cfg("GAN.DF_DIM"), cfg("GAN.Z_DIM")
    m.condition_dim, m.r_num = cfg("GAN.CONDITION_DIM"), cfg("GAN.R_NUM")
    m.branch_num, m.base_size = cfg("TREE.BRANCH_NUM"), cfg("TREE.BASE_SIZE")
    stream = load_fixture("stream.npz").state_dict(prefix="caption_cnn")
    m.stream_backbone = caption_cnn_config(stream)["backbone"]
    m.stream_embed_size, m.stream_hidden_size = cfg("CAP.embed_size"), cfg("CAP.hidden_size")
    m.damsm_backbone = "tiny"  # the fixtures hold only the DAMSM heads
    c.data.words_num = cfg("TEXT.WORDS_NUM")
    return c


def write_npz(path, state_dict):
    np.savez(path, **state_dict)
    return str(path)


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    stream = load_fixture("stream.npz")
    files = {
        "text_encoder": write_npz(
            d / "text_encoder.npz", load_fixture("text_encoder.npz").state_dict()
        ),
        "generator": write_npz(d / "netG.npz", load_fixture("generator.npz").state_dict()),
        "caption_cnn": write_npz(d / "cnn.npz", stream.state_dict(prefix="caption_cnn")),
        "caption_rnn": write_npz(d / "rnn.npz", stream.state_dict(prefix="caption_rnn")),
    }
    ds = [
        write_npz(d / f"netD{i}.npz", load_fixture(f).state_dict())
        for i, f in enumerate(sorted(listed_files(r"d\d+\.npz"), key=lambda f: int(f[1:-4])))
    ]
    files["discriminators"] = ",".join(ds)
    return files


def configured(files, **overrides):
    c = fixture_config()
    for k, v in {**files, **overrides}.items():
        c.weights[k] = v
    return c


@pytest.fixture(scope="module")
def imported(weight_files, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("imported"))
    config = configured(weight_files)
    written = import_torch.import_all(config, workdir)
    assert set(written) == {"damsm", "stream", "gan"}
    return config, workdir


def test_restored_networks_reproduce_the_fixtures(imported):
    config, workdir = imported
    mesh = parallel.make_mesh()
    nets = Networks.from_config(config)
    gan_state, step = wd.restore_gan(config, workdir, nets, mesh)
    assert step == 0
    text_vars = damsm.text_encoder_variables(wd.restore_damsm(config, workdir, nets, mesh))

    te = load_fixture("text_encoder.npz")
    _, sent = jax.jit(nets.text_encoder.apply)(
        text_vars, te.inputs["captions"], te.inputs["cap_lens"]
    )
    assert_close(sent, te.outputs["sent_emb"], "imported text encoder", 1e-5)

    g = load_fixture("generator.npz")
    i = g.inputs
    out = jax.jit(functools.partial(nets.generator.apply, train=False))(
        gan_state.generator.ema_variables(),
        i["z"],
        i["sent_emb"],
        np.transpose(i["words_emb"], (0, 2, 1)),
        i["mask"],
        eps=i["eps"],
    )
    for s, image in enumerate(out.images):
        expected = nchw_to_nhwc(g.group("output_eval")[f"fake_imgs/{s}"])
        assert_close(image, expected, f"imported generator stage {s}", 1e-5)

    frozen = wd.restore_frozen(config, workdir, nets, mesh)
    st = load_fixture("stream.npz")
    feats = jax.jit(nets.caption_cnn.apply)(frozen.caption_cnn, nchw_to_nhwc(st.inputs["images"]))
    assert_close(feats, st.outputs["cnn_feature"], "imported caption CNN", 1e-5)


def test_existing_checkpoints_are_not_overwritten(imported, weight_files):
    config, workdir = imported
    before = os.listdir(os.path.join(workdir, "gan", "checkpoints"))
    with pytest.raises(wd.WorkdirError, match="refusing to overwrite"):
        import_torch.import_all(configured(weight_files), workdir)
    assert os.listdir(os.path.join(workdir, "gan", "checkpoints")) == before


def _nothing_written(workdir):
    return not any(os.path.isdir(os.path.join(workdir, s)) for s in ("damsm", "stream", "gan"))


def test_wrong_vocabulary_size_names_the_config_value(weight_files, tmp_path):
    config = configured(weight_files)
    config.model.n_words = cfg("n_words") + 1
    with pytest.raises(WeightMismatchError, match="model.n_words") as err:
        import_torch.import_all(config, str(tmp_path))
    assert str(cfg("n_words")) in str(err.value) and str(cfg("n_words") + 1) in str(err.value)
    assert _nothing_written(str(tmp_path))


def test_missing_and_unexpected_keys_and_shapes(weight_files, tmp_path):
    # Generator and discriminators only: the other networks' conversions are tested above, and
    # leaving them out spares three DAMSM/STREAM initialisations.
    gan_files = {
        "generator": weight_files["generator"],
        "discriminators": weight_files["discriminators"],
    }
    sd = dict(np.load(weight_files["generator"]))
    missing = dict(sd)
    missing.pop("ca_net.fc.weight")
    path = write_npz(tmp_path / "missing.npz", missing)
    with pytest.raises(WeightMismatchError, match="ca_net.fc.weight"):
        import_torch.import_all(configured(gan_files, generator=path), str(tmp_path / "w1"))
    extra = {**sd, "h_net9.extra.weight": np.zeros(3, np.float32)}
    path = write_npz(tmp_path / "extra.npz", extra)
    with pytest.raises(WeightMismatchError, match="h_net9.extra.weight"):
        import_torch.import_all(configured(gan_files, generator=path), str(tmp_path / "w2"))
    config = configured(gan_files)
    config.model.gf_dim = cfg("GAN.GF_DIM") * 2
    with pytest.raises(WeightMismatchError, match="model.gf_dim"):
        import_torch.import_all(config, str(tmp_path / "w3"))
    for w in ("w1", "w2", "w3"):
        assert _nothing_written(str(tmp_path / w))


def test_no_weights_given_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no file given"):
        import_torch.import_all(fixture_config(), str(tmp_path))


def test_import_needs_no_torch(imported):
    assert "torch" not in sys.modules  # .npz and the restricted .pth reader need no torch


def test_networks_without_a_file_get_fresh_weights(weight_files, tmp_path):
    """Text encoder and caption RNN given, DAMSM image encoder and caption CNN not: those get
    random weights of the checkpoint's shapes, every optimiser state starts at zero, and the
    given weights are stored as converted. (Random discriminators take the same path; left
    out here for the suite's time: three D initialisations compile for long.)"""
    files = {
        "text_encoder": weight_files["text_encoder"],
        "caption_rnn": weight_files["caption_rnn"],
    }
    config = configured(files)
    assert set(import_torch.import_all(config, str(tmp_path))) == {"damsm", "stream"}
    nets = Networks.from_config(config)
    mesh = parallel.make_mesh()
    targets = {
        "damsm": wd.abstract_damsm(config, nets, mesh),
        "stream": wd.abstract_stream(config, nets, mesh),
    }
    restored = {}
    for name, target in targets.items():
        ckpt = checkpoints.Checkpointer(tmp_path / name / "checkpoints", async_save=False)
        state, _ = ckpt.restore(0, target)
        for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(target), strict=True):
            assert got.shape == want.shape and got.dtype == want.dtype
        assert checkpoints.first_non_finite(state) is None
        assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(state.opt_state))
        restored[name] = state
    for random_part in (restored["damsm"].params["image"], restored["stream"].params["cnn"]):
        assert any(np.any(np.asarray(x)) for x in jax.tree.leaves(random_part))  # not zeros
    text = gan_import.text_encoder_variables(dict(np.load(files["text_encoder"])))
    for got, want in zip(
        jax.tree.leaves(restored["damsm"].params["text"]),
        jax.tree.leaves(text["params"]),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
