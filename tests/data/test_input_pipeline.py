"""tf.data pipeline over a tiny prepared shapes set, and the prepare entry point."""

import json
import logging
import os

import numpy as np
import pytest

from configs import shapes as shapes_config
from mirrorgan_jax.data import input_pipeline as ip
from mirrorgan_jax.data import prepare, schema, shapes, tokenizers

SIZES = (32, 64)
BATCH = 8  # 24 train examples: 3 steps per epoch


def _config(**shapes_overrides):
    config = shapes_config.get_config("test")
    config.data.shapes.update(
        {**dict(num_train=24, num_test=6, num_test_novel=4), **shapes_overrides}
    )
    return config


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    config = _config()
    workdir = tmp_path_factory.mktemp("pipeline")
    report = prepare.prepare(config, workdir)
    data_dir, tokenizer = prepare.load_prepared(config, workdir)
    return dict(config=config, workdir=workdir, report=report, data_dir=data_dir, tok=tokenizer)


def _source(p, words_num=12, **kw):
    return ip.Source(p["data_dir"], "shapes", p["tok"], SIZES, words_num, **kw)


def _train(p, batch_size=BATCH, source_kw=None, **kw):
    return ip.create_dataset(_source(p, **(source_kw or {})), "train", batch_size, seed=0, **kw)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if k == "images":
            for x, y in zip(a[k], b[k], strict=True):
                np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_array_equal(a[k], b[k])


def _rows(batch):
    """key -> (images..., tokens) of every row."""
    return {
        k: (*(im[i] for im in batch["images"]), batch["tokens"][i])
        for i, k in enumerate(batch["key"])
    }


def test_prepare_report(prepared):
    r = prepared["report"]
    assert r["status"] == "prepared" and r["splits"] == dict(train=24, test=6, test_novel=4)
    assert r["vocab_size"] == prepared["tok"].vocab_size and r["num_unknown_words"] == 0
    assert (prepared["data_dir"] / "tokenizer" / "spm.model").is_file()


def test_batch_schema(prepared):
    seed = prepared["config"].data.shapes.seed
    batch = next(_train(prepared))
    assert set(batch) == {"images", "tokens", "lengths", "class_id", "attributes", "key"}
    assert set(schema.DEVICE_KEYS) < set(batch)
    assert [im.shape for im in batch["images"]] == [(BATCH, s, s, 3) for s in SIZES]
    for im in batch["images"]:
        assert im.dtype == np.float32 and im.min() >= -1.0 and im.max() <= 1.0
    assert batch["tokens"].shape == (BATCH, 12) and batch["tokens"].dtype == np.int32
    lengths = batch["lengths"]
    assert lengths.dtype == np.int32 and (lengths >= 1).all() and (lengths <= 12).all()
    assert (np.diff(lengths) <= 0).all()  # sorted by length, descending
    for row, n in zip(batch["tokens"], lengths, strict=True):
        assert (row[:n] > 0).all() and (row[n:] == 0).all()
    assert batch["attributes"].shape == (BATCH, schema.NUM_ATTRIBUTES)
    assert batch["class_id"].dtype == np.int32 and batch["attributes"].dtype == np.int32
    for i, key in enumerate(batch["key"]):
        ex = shapes.render_example(int(key.split(b"_")[-1]), "train", seed, 64)
        np.testing.assert_array_equal(batch["attributes"][i], ex["attributes"])
        assert batch["class_id"][i] == ex["class_id"]


def test_epoch_covers_every_example_once(prepared):
    keys = [k for b in _take(_train(prepared), 3) for k in b["key"]]
    assert sorted(keys) == [f"train_{i:06d}".encode() for i in range(24)]


def test_deterministic_and_seeded(prepared):
    a, b = _take(_train(prepared), 3), _take(_train(prepared), 3)
    for x, y in zip(a, b, strict=True):
        _assert_batches_equal(x, y)
    c = next(ip.create_dataset(_source(prepared), "train", BATCH, seed=1))
    assert not np.array_equal(a[0]["images"][-1], c["images"][-1])


def test_resume_at_step_sees_the_same_batches(prepared):
    full = _take(_train(prepared), 6)
    resumed = _take(_train(prepared, start_step=4), 2)  # inside the second epoch
    for x, y in zip(full[4:], resumed, strict=True):
        _assert_batches_equal(x, y)


def test_hosts_split_each_global_batch(prepared):
    single = _take(_train(prepared), 3)
    hosts = [_take(_train(prepared, host=(i, 2)), 3) for i in range(2)]
    for step in range(3):
        h0, h1 = hosts[0][step], hosts[1][step]
        assert len(h0["key"]) == len(h1["key"]) == BATCH // 2
        assert not set(h0["key"]) & set(h1["key"])
        rows = {**_rows(h0), **_rows(h1)}
        expected = _rows(single[step])
        assert rows.keys() == expected.keys()
        for key, values in expected.items():  # per-example randomness ignores the host count
            for x, y in zip(rows[key], values, strict=True):
                np.testing.assert_array_equal(x, y)


def _caption0_ids(prepared, key: bytes) -> list[int]:
    seed = prepared["config"].data.shapes.seed
    ex = shapes.render_example(int(key.split(b"_")[-1]), "train", seed, 16)
    return prepared["tok"].encode(ex["captions"][0])


def _is_subsequence(sub, seq) -> bool:
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)


def test_truncate_and_subset(prepared):
    kw = dict(words_num=4, captions_per_image=1)
    trunc = next(_train(prepared, source_kw=dict(long_caption="truncate", **kw)))
    subset = next(_train(prepared, source_kw=dict(long_caption="subset", **kw)))
    differs = False
    for i, key in enumerate(trunc["key"]):
        ids = _caption0_ids(prepared, key)
        assert trunc["tokens"][i].tolist() == ids[:4]
        j = list(subset["key"]).index(key)
        assert subset["lengths"][j] == 4 and _is_subsequence(subset["tokens"][j].tolist(), ids)
        differs |= subset["tokens"][j].tolist() != ids[:4]
    assert differs


def test_without_random_crop_the_last_stage_is_the_stored_image(prepared):
    seed = prepared["config"].data.shapes.seed
    batch = next(_train(prepared, random_crop=False, shuffle_buffer=None))
    for i, key in enumerate(batch["key"]):
        image = shapes.render_example(int(key.split(b"_")[-1]), "train", seed, 64)["image"]
        np.testing.assert_allclose(batch["images"][-1][i], image / 127.5 - 1.0, atol=1e-6)
        half = image.reshape(32, 2, 32, 2, 3).mean((1, 3)) / 127.5 - 1.0
        assert np.abs(batch["images"][0][i] - half).mean() < 0.05
    cropped = next(_train(prepared, random_crop=True, shuffle_buffer=None))
    assert not np.array_equal(cropped["images"][-1], batch["images"][-1])


def test_eval_pass_pads_and_covers_everything(prepared):
    p = prepared
    one = ip.create_eval_dataset(_source(p), "test", 4)
    batches = list(one)
    assert len(batches) == len(one) == 2 and one.num_examples == 6
    valid = np.concatenate([b["valid"] for b in batches])
    keys = [k for b in batches for k, v in zip(b["key"], b["valid"], strict=True) if v]
    assert valid.sum() == 6 and sorted(keys) == [f"test_{i:06d}".encode() for i in range(6)]
    pad = batches[-1]
    assert (pad["class_id"][~pad["valid"]] == -1).all() and (pad["lengths"] >= 1).all()
    again = list(one)  # re-iterable, deterministic
    _assert_batches_equal(batches[0], again[0])

    per_host = [
        list(ip.create_eval_dataset(_source(p), "test", 4, host=(i, 2)))
        for i in range(2)
    ]  # fmt: skip
    assert len(per_host[0]) == len(per_host[1])
    host_keys = [[k for b in h for k, v in zip(b["key"], b["valid"], strict=True) if v]
                 for h in per_host]  # fmt: skip
    assert not set(host_keys[0]) & set(host_keys[1])
    assert sorted(host_keys[0] + host_keys[1]) == sorted(keys)


def test_eval_every_caption(prepared):
    p = prepared
    seed = p["config"].data.shapes.seed
    source = _source(p, words_num=30, captions_per_image=3, long_caption="truncate")
    ev = ip.create_eval_dataset(source, "test_novel", 4, captions="all")
    seen = {}
    for b in ev:
        for i in np.flatnonzero(b["valid"]):
            seen.setdefault(b["key"][i], []).append(int(b["caption_index"][i]))
            ex = shapes.render_example(int(b["key"][i].split(b"_")[-1]), "test_novel", seed, 16)
            ids = p["tok"].encode(ex["captions"][b["caption_index"][i]])
            assert b["tokens"][i][: b["lengths"][i]].tolist() == ids
    assert ev.num_examples == 12 and len(seen) == 4
    assert all(sorted(v) == [0, 1, 2] for v in seen.values())


def test_load_captions_in_eval_order(prepared):
    p = prepared
    captions = ip.load_captions(p["data_dir"], "shapes", "test")
    assert len(captions) == 6 and all(isinstance(c, str) for c in captions)
    assert len(ip.load_captions(p["data_dir"], "shapes", "test", per_image=None)) == 60


def test_pipeline_errors(prepared, tmp_path):
    p = prepared
    with pytest.raises(ValueError, match="divisible"):
        _train(p, batch_size=7, host=(0, 2))
    with pytest.raises(ValueError, match="no split 'valid'"):
        next(ip.create_dataset(_source(p), "valid", 4))
    unfinished = tmp_path / "shapes" / "incomplete.AB12_1.0.0"
    unfinished.mkdir(parents=True)
    (unfinished / "dataset_info.json").write_text("{}")
    with pytest.raises(ip.PreparedDataError, match="run --mode=prepare"):
        ip.find_builder_dir(tmp_path, "shapes")
    with pytest.raises(ValueError, match="increasing"):
        ip.create_dataset(ip.Source(p["data_dir"], "shapes", p["tok"], (64, 32), 12), "train", 4)


def test_a_damaged_record_file_is_named(prepared, tmp_path):
    """TensorFlow's DataLossError names no file; the error names the damaged one."""
    import shutil

    data_dir = shutil.copytree(prepared["data_dir"], tmp_path / "data")
    shard = next(ip.find_builder_dir(data_dir, "shapes").glob("*-train.tfrecord*"))
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size // 2)
    source = ip.Source(data_dir, "shapes", prepared["tok"], SIZES, 12)
    with pytest.raises(ip.PreparedDataError) as refused:
        _take(ip.create_dataset(source, "train", BATCH), 3)  # one epoch
    assert str(refused.value).startswith(
        f"a prepared data file is damaged ({shard}): truncated record at "
    )
    assert "' failed" not in str(refused.value) and "rebuild it: --mode=prepare" in str(
        refused.value
    )


def test_prepare_never_overwrites_silently(tmp_path):
    config = _config(num_train=4, num_test=2, num_test_novel=2, image_size=16)
    first = prepare.prepare(config, tmp_path)
    report_file = prepare.report_path(tmp_path / "data")
    stamp = report_file.stat().st_mtime_ns
    again = prepare.prepare(config, tmp_path)
    assert again["status"] == "already_prepared" and report_file.stat().st_mtime_ns == stamp

    config.data.shapes.num_train = 6
    with pytest.raises(ValueError, match=r"shapes.num_train: prepared 4, config 6.*overwrite"):
        prepare.prepare(config, tmp_path)
    config.data.overwrite = True
    rebuilt = prepare.prepare(config, tmp_path)
    assert rebuilt["status"] == "prepared" and rebuilt["splits"]["train"] == 6
    assert json.loads(report_file.read_text())["settings"]["shapes.num_train"] == 6
    assert first["builder_dir"] == rebuilt["builder_dir"]

    report_file.unlink()  # leftovers of an interrupted run
    config.data.overwrite = False
    with pytest.raises(ValueError, match="interrupted"):
        prepare.prepare(config, tmp_path)


def test_prepare_rejects_unknown_names(tmp_path):
    config = _config()
    config.data.name = "mnist"
    with pytest.raises(ValueError, match="'mnist' is unknown"):
        prepare.prepare(config, tmp_path)
    config.data.name = "shapes"
    with pytest.raises(ip.PreparedDataError, match="run --mode=prepare"):
        prepare.load_prepared(config, tmp_path)


def tok_words(caption):
    return tokenizers.attngan_words(caption)


def test_prepare_and_read_cub_through_the_builder_interface(tmp_path, caplog):
    from configs import cub as cub_config
    from tests.data import fake_layouts

    fake = fake_layouts.make_cub(str(tmp_path / "birds"))
    config = cub_config.get_config()
    config.data.manual_dir = fake.root
    config.data.words_num = 6
    key = fake.keys["test"][0]
    caption_file = os.path.join(fake.root, "text", key + ".txt")
    with open(caption_file, "rb") as f:
        lines = f.read().split(b"\n")
    lines[3] = lines[3] + b" \xff\xfe"  # not UTF-8
    with open(caption_file, "wb") as f:
        f.write(b"\n".join(lines))
    with caplog.at_level(logging.INFO):
        report = prepare.prepare(config, tmp_path / "work")
    assert report["splits"] == dict(train=3, test=2) and report["tokenizer"] == "attngan"
    # the file that is not UTF-8, in the report and on the console
    assert report["invalid_utf8"] == [{"file": caption_file, "line": 4, "replaced": 2}]
    messages = [r.getMessage() for r in caplog.records]
    assert f"{caption_file}: not valid UTF-8 from line 4 on; 2 byte sequence(s) read as U+FFFD" in (
        messages
    )
    # captions longer than data.words_num: counted, the longest listed with their token count
    long = report["long_captions"]
    every = [c for k in fake.keys["train"] + fake.keys["test"] for c in fake.captions[k]]
    assert long["words_num"] == 6 and long["count"] == sum(len(tok_words(c)) > 6 for c in every)
    assert long["longest"][0]["tokens"] == max(len(tok_words(c)) for c in every)
    assert any("have more than data.words_num=6 tokens" in m for m in messages)
    data_dir, tok = prepare.load_prepared(config, tmp_path / "work")
    official = fake_layouts.captions_pickle(
        *[[fake.captions[k] for k in fake.keys[s]] for s in ("train", "test")]
    )[3]
    assert tok.wordtoix == official  # the pickle's index, unchanged (not re-sorted)
    batch = next(ip.create_dataset(ip.Source(data_dir, "cub", tok, (64, 128, 256), 18), "train", 2))
    assert [im.shape[1] for im in batch["images"]] == [64, 128, 256]
    assert set(batch["key"]) <= {k.encode() for k in fake.keys["train"]}
    for i, key in enumerate(batch["key"]):
        caption = fake.captions[key.decode()]
        decoded = tok.decode(batch["tokens"][i][: batch["lengths"][i]])
        assert any(set(decoded.split()) <= set(tok.decode(tok.encode(c)).split()) for c in caption)
