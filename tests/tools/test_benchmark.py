"""The benchmark's figures: the full iteration, and a breakdown whose parts add up to it."""

import os
import subprocess
import sys

import pytest

from configs import shapes
from mirrorgan_jax import hyperparameters
from mirrorgan_jax.networks import Networks
from mirrorgan_jax.tools import benchmark

N_WORDS = 30


@pytest.fixture(scope="module")
def measured():
    config = shapes.get_config("test")
    config.model.branch_num = 1  # one 32-px stage (+ STREAM on it): a quarter of the compile
    nets = Networks.from_config(config, n_words=N_WORDS)
    rows: list = []
    initial = benchmark.initial_state(nets, hyperparameters.gan(config))  # once
    benchmark.bench_train(config, nets, N_WORDS, 2, 1e11, rows, initial)
    benchmark.bench_breakdown(config, nets, N_WORDS, 2, 1e11, rows, initial)
    return config, rows


def test_train_record(measured):
    config, rows = measured
    train = rows[0]
    assert train["what"] == "train" and train["batch"] == config.train.batch_size
    assert train["image_sizes"] == [32] and train["flops_per_step"] > 0
    assert 0 < train["min_s"] <= train["median_s"] and train["compile_s"] > 0
    # From the process start (here pytest's) to the first step: the compile is part of it.
    assert train["startup_s"] > train["compile_s"]
    assert train["images_per_s"] == pytest.approx(train["batch"] / train["median_s"])
    assert train["peak_rss_gb"] > 0
    assert 0 < train["peak_rss_before_steps_gb"] <= train["peak_rss_gb"]
    assert train["xla_temp_gb"] > 0 and train["xla_arguments_gb"] > 0
    assert train["xla_outputs_not_aliased_gb"] >= 0


def test_breakdown_parts_cover_the_iteration(measured):
    _, rows = measured
    # The whole step's FLOPs (8 fake devices) against the parts' (one device).
    full = rows[0]["flops_per_step"]
    assert rows[0]["devices"] == 8
    parts = {r["part"]: r for r in rows[1:]}
    assert set(parts) == {
        "text_encoder",
        "g_forward",
        "g_forward_backward",
        "d32_update",
        "g_adversarial32",
        "stream_loss_and_image_grad",
    }
    assert sum(r["share_of_parts"] for r in parts.values()) == pytest.approx(1.0)
    assert parts["g_forward_backward"]["flops"] > 2 * parts["g_forward"]["flops"] > 0
    # The step runs G forward once (vjp): the parts minus one G forward are the iteration's
    # compute but for the optimiser updates and the EMA.
    covered = sum(r["flops"] for r in parts.values()) - parts["g_forward"]["flops"]
    assert 0.9 * full <= covered <= 1.05 * full


def test_conv_passes_both_weight_grad_policies():
    rows: list = []
    benchmark.bench_conv(2, 1e11, rows, batch=2, size=8, channels=4)
    assert [r["pass"] for r in rows] == [
        "forward",
        "input_grad",
        "weight_grad_xla",
        "weight_grad_matmul",
    ]
    for r in rows:
        assert r["flops"] == 2 * 2 * 8 * 8 * 9 * 4 * 4 and r["median_s"] > 0
        assert r["fraction_of_calibration"] == pytest.approx(r["flops"] / r["median_s"] / 1e11)


_VARIANT = """
import sys, time
from mirrorgan_jax.tools import benchmark
time.sleep(float(sys.argv[1]))  # a slower compile
compiled = time.time()
with benchmark.timing_turn():
    t = time.time()
    time.sleep(0.3)
    print(compiled, t, time.time())
"""


def test_timing_turns_wait_for_all_and_never_overlap(tmp_path):
    """Variants started side by side as processes: none times before all have compiled, and
    their timed sections run one after another."""
    env = {**os.environ, "MIRRORGAN_BENCH_TURNS": f"{tmp_path}:3", "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _VARIANT, str(d)], env=env, stdout=subprocess.PIPE, text=True
        )
        for d in (0.0, 1.0, 2.0)
    ]
    rows = sorted(tuple(map(float, p.communicate(timeout=120)[0].split())) for p in procs)
    assert [p.returncode for p in procs] == [0, 0, 0] and len(rows) == 3
    spans = sorted((start, end) for _, start, end in rows)
    assert spans[0][0] >= max(compiled for compiled, _, _ in rows)  # after the last compile
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # no overlap
