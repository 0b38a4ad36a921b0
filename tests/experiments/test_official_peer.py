"""experiments/official_peer: the port's half run for real at the tiny config, the table, the
largest-batch search and the shared caption draw. The official half needs torch and a checkout of
qiaott/MirrorGAN, neither of which the suite has; its row here is skipped by the script's own
`--official=skip` (the table says so) or stands in as a fake record for the ratio arithmetic."""

import importlib
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest

_DIR = Path(__file__).resolve().parents[2] / "experiments" / "official_peer"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, _DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


side_by_side = _load("side_by_side")
official_iteration = _load("official_iteration")
# the port's benchmark module, as the script names it (one place to follow a move)
benchmark = importlib.import_module(side_by_side.PORT_BENCHMARK_MODULE)


def test_port_half_runs_at_the_tiny_config(tmp_path, capsys):
    out = tmp_path / "records.jsonl"
    table = side_by_side.main(
        [
            "--official=skip",
            "--config=configs/shapes.py:test",
            "--port_flag=--config.model.branch_num=1",  # one 32-px stage: a short compile
            "--n_words=30",
            "--batch=8",
            "--steps=2",
            "--port_dtypes=float32",
            f"--out={out}",
        ]
    )
    assert capsys.readouterr().out.strip() == table
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["side"] == "port" and record["what"] == "train"
    assert record["batch"] == 8 and record["dtype"] == "float32"
    assert record["image_sizes"] == [32] and record["device_kind"] == "cpu"
    assert not record["oom"] and "error" not in record
    assert 0 < record["min_s"] <= record["median_s"] < 60
    assert record["images_per_s"] == pytest.approx(8 / record["median_s"])
    assert 0 < record["peak_rss_gb"] < 24 and math.isfinite(record["g_loss"])
    assert record["wall_s"] > record["compile_s"] > 0
    assert (tmp_path / "records.log").read_text().count("mirrorgan_jax.tools.benchmark") == 1

    lines = table.splitlines()
    assert lines[0] == "Device: cpu"
    (official,) = [ln for ln in lines if ln.startswith("| official |")]
    assert "skipped (--official=skip)" in official
    (port,) = [ln for ln in lines if ln.startswith("| port |")]
    cells = [c.strip() for c in port.strip("|").split("|")]
    assert cells[:3] == ["port", "float32", "8"]
    assert float(cells[3]) == pytest.approx(record["median_s"] * 1e3, rel=5e-3)  # 3 digits
    assert float(cells[4]) == pytest.approx(record["images_per_s"], rel=5e-3)
    assert cells[5] == f"{record['peak_rss_gb']:.2f} (host RSS)"
    assert cells[7] == cells[8] == ""  # no official row to compare with
    assert any("not searched on the CPU" in ln for ln in lines)


def _body(table: str) -> list[list[str]]:
    """The cells of the table's rows (below the |---| line)."""
    lines = table.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|---")) + 1
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[start:]]


def _record(side, batch, median_s, device_gb, dtype="float32"):
    return {
        "side": side,
        "dtype": dtype,
        "batch": batch,
        "median_s": median_s,
        "images_per_s": batch / median_s,
        "peak_device_gb": device_gb,
        "peak_rss_gb": 3.0,
        "device_kind": "NVIDIA H100 80GB HBM3",
    }


def test_table_ratios_against_the_official_row_of_the_same_group():
    rows = [
        side_by_side._row("official", "float32", 12, "b12", _record("official", 12, 0.2, 6.0), ""),
        side_by_side._row("port", "float32", 12, "b12", _record("port", 12, 0.05, 3.0), ""),
        side_by_side._row("official", "float32", 96, "max", _record("official", 96, 1.2, 72.0), ""),
        side_by_side._row("port", "bfloat16", 192, "max", _record("port", 192, 1.0, 64.0), "n"),
        side_by_side._row("port", "float32", 0, "max", None, "out of memory"),
    ]
    table = side_by_side.format_table(rows, ["header"])
    assert table.splitlines()[0] == "header"
    body = _body(table)
    assert body[0][3:9] == ["200", "60.0", "6.00 (device)", "500", "", ""]
    # 240 vs 60 images/s; 250 vs 500 MB per image
    assert body[1][3:9] == ["50.0", "240", "3.00 (device)", "250", "4.00x", "0.50x"]
    # against the official largest batch: 192 vs 80 images/s, 333 vs 750 MB per image
    assert body[3][2:10] == [
        "192",
        "1000",
        "192",
        "64.00 (device)",
        "333",
        "2.40x",
        "0.44x",
        "n",
    ]
    assert body[4][:3] == ["port", "float32", ""] and body[4][9] == "out of memory"


def test_table_from_the_records_of_an_earlier_call(tmp_path, capsys):
    oom = {"oom": True, "dtype": "float32"}
    records = [
        _record("official", 12, 0.2, 6.0),
        _record("port", 12, 0.05, 3.0),
        _record("port", 12, 0.04, 2.0, dtype="bfloat16"),
        _record("official", 96, 1.2, 72.0),
        {**oom, "side": "official", "batch": 128},
        _record("port", 192, 1.0, 64.0, dtype="bfloat16"),
        {**oom, "side": "port", "batch": 256, "dtype": "bfloat16"},
        {"side": "port", "dtype": "float32", "batch": 64, "error": "budget spent"},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    table = side_by_side.main([f"--table_from={path}"])
    assert capsys.readouterr().out.strip() == table
    body = _body(table)
    assert [row[:3] for row in body] == [
        ["official", "float32", "12"],
        ["port", "float32", "12"],
        ["port", "bfloat16", "12"],
        ["official", "float32", "96"],
        ["port", "float32", ""],
        ["port", "bfloat16", "192"],
    ]
    assert body[2][7:9] == ["5.00x", "0.33x"]  # 300 vs 60 images/s; 167 vs 500 MB per image
    assert body[3][9] == "largest that fitted of batches 96, 128 (did not fit or failed: 128)"
    assert body[4][9] == "largest that fitted of batches 64 (did not fit or failed: 64)"
    assert body[5][7:9] == ["2.40x", "0.44x"]  # against the official batch 96


def _fake_device(limit_gb, fixed_gb=1.0, per_image_gb=0.25):
    """A measure(batch) whose peak memory is a line in the batch, out of memory past limit_gb."""
    tried = []

    def measure(batch):
        tried.append(batch)
        memory = fixed_gb + per_image_gb * batch
        if memory > limit_gb:
            return {"batch": batch, "oom": True}
        return _record("port", batch, 0.01 * batch, memory)

    return measure, tried


def test_largest_batch_reaches_the_limit_from_the_memory_line():
    measure, tried = _fake_device(limit_gb=39.0)  # fits up to batch 152
    best, note = side_by_side.largest_batch(measure, measure(12), 40.0, max_tries=3)
    # 12 -> 4 GB; 92% of 40 GB at 1/3 GB per image -> 110; the line through 12 and 110 reaches
    # 98% of 40 GB at 152.8
    assert tried == [12, 110, 152] and best["batch"] == 152
    assert note == "largest fit in 2 tries"


def test_largest_batch_bisects_below_a_batch_that_did_not_fit():
    measure, tried = _fake_device(limit_gb=38.0)  # fits up to batch 148
    best, note = side_by_side.largest_batch(measure, measure(12), 40.0, max_tries=3)
    assert tried == [12, 110, 152, 131] and best["batch"] == 131
    assert note == "largest fit in 3 tries; batch 152 did not fit"
    measure, tried = _fake_device(limit_gb=38.0)
    best, _ = side_by_side.largest_batch(measure, measure(12), 40.0, max_tries=8)
    assert 148 - best["batch"] <= 0.05 * 148 and best["batch"] <= 148


def test_largest_batch_doubles_without_a_known_capacity_and_stops_on_other_failures():
    measure, tried = _fake_device(limit_gb=30.0)  # fits up to batch 116
    best, _ = side_by_side.largest_batch(measure, measure(12), None, max_tries=4)
    assert tried[:4] == [12, 24, 48, 96] and best["batch"] >= 96

    def budget_spent(batch):
        return {"batch": batch, "oom": False, "error": "budget spent"}

    best, note = side_by_side.largest_batch(
        budget_spent, _record("port", 12, 0.1, 4.0), 40.0, max_tries=3
    )
    assert best is None and note == "largest fit in 1 try"


def test_official_captions_are_the_ports_benchmark_draw():
    nets = types.SimpleNamespace(words_num=18, image_sizes=(4,))
    port = benchmark.random_batch(nets, 12, 5450, seed=0)
    tokens, lengths = official_iteration.random_captions(12, 18, 5450, seed=0)
    np.testing.assert_array_equal(tokens, port["tokens"])
    np.testing.assert_array_equal(lengths, port["lengths"])
    assert lengths.max() <= 18 and (np.diff(lengths) <= 0).all()


def test_official_patches_and_stubs_need_no_torch():
    # Every source patch names a file of the checkout and replaces text with different text.
    for relpath, patches in official_iteration.SOURCE_PATCHES.items():
        assert relpath.endswith(".py") and patches
        for old, new, count in patches:
            assert old != new and count >= 1
    cfg = official_iteration._AttrDict({"TRAIN": {"BATCH_SIZE": 12}})
    cfg.CUDA = False
    assert cfg.TRAIN.BATCH_SIZE == 12 and cfg["CUDA"] is False
    assert isinstance(cfg.TRAIN, official_iteration._AttrDict)
    with pytest.raises(AttributeError):
        _ = cfg.MISSING


def test_source_patches_apply_to_the_text_and_refuse_another_checkout(tmp_path, monkeypatch):
    (tmp_path / "fake_trainer.py").write_text("def loss():\n    return [7.0].data[0]\n")
    monkeypatch.setitem(
        official_iteration.SOURCE_PATCHES, "fake_trainer.py", [(".data[0]", "[0]", 1)]
    )
    module = official_iteration._load_patched(
        str(tmp_path), "fake_official_trainer", "fake_trainer.py"
    )
    try:
        assert module.loss() == 7.0 and module.__file__ == str(tmp_path / "fake_trainer.py")
    finally:
        sys.modules.pop("fake_official_trainer")
    assert (tmp_path / "fake_trainer.py").read_text().count(".data[0]") == 1  # file untouched
    monkeypatch.setitem(
        official_iteration.SOURCE_PATCHES, "fake_trainer.py", [("errD.data[0]", "errD.item()", 1)]
    )
    with pytest.raises(RuntimeError, match=r"fake_trainer.py: expected 1 occurrence\(s\) of "):
        official_iteration._load_patched(str(tmp_path), "fake_official_trainer", "fake_trainer.py")
