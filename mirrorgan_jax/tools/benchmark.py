"""Speed and memory of the full MirrorGAN iteration, sampling and the input pipeline.

  python -m mirrorgan_jax.tools.benchmark --config=configs/cub.py --what=all --steps=5 \
      [--config.train.batch_size=12] [--config.mixed_precision=bfloat16]

Prints one JSON line per measurement, then a short table. Random weights and random data of
the configured shapes (it measures compute, not accuracy). A calibration line (a jitted
float32 2048x2048 matmul on the same devices) comes first, and every FLOP rate is also given
as a fraction of it, so figures from different machines can be compared. `flops_per_step`
is the whole step's count (all devices); with several devices its rate is compared with
devices x the one-device calibration (fake CPU devices share the same cores, so there the
fraction reads low).
`--what=breakdown` compiles and times every part of the iteration alone on one device.
`--conv_weight_grad=xla,matmul` measures the train step (and the breakdown) once per
convolution weight-gradient policy (models/conv.py) in the same run and prints their ratio;
peak RSS is the process's peak so far, so compare memory in separate runs.
The train record's `startup_s` is the wall time from the process start until the first (warm-up)
step starts: imports, calibration, initialisation, tracing and compiling. With
`--compilation_cache_dir=DIR` (or $JAX_COMPILATION_CACHE_DIR) compiled programs are kept in DIR,
so a second process reads `startup_s` with the cache warm.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mirrorgan_jax import (  # noqa: E402
    configuration,
    hyperparameters,
    networks,
    observability,
    parallel,
)
from mirrorgan_jax.data import input_pipeline, shapes, tokenizers  # noqa: E402
from mirrorgan_jax.models import conv  # noqa: E402
from mirrorgan_jax.networks import Networks  # noqa: E402
from mirrorgan_jax.train import gan  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
_WHAT = flags.DEFINE_enum(
    "what",
    "all",
    ["train", "sample", "input", "breakdown", "conv", "all"],
    "What to measure ('breakdown': each part of the iteration compiled and timed on its own; "
    "'conv': forward, input and weight gradient of one 3x3 convolution; neither is part of "
    "'all').",
)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps after one warm-up step.")
_N_WORDS = flags.DEFINE_integer("n_words", 0, "Vocabulary size (0: config.model.n_words or 5450).")
_SAMPLE_BATCH = flags.DEFINE_integer("sample_batch", 32, "Large batch for the sampling figure.")
_CONV_WEIGHT_GRAD = flags.DEFINE_list(
    "conv_weight_grad",
    ["auto"],
    f"Convolution weight-gradient policies to measure, in order (each of {conv.POLICIES}).",
)
_CACHE = flags.DEFINE_string(
    "compilation_cache_dir",
    None,
    "JAX's persistent compilation cache: a folder, or 'off' (default: $JAX_COMPILATION_CACHE_DIR "
    "when set, else off).",
)
flags.mark_flags_as_required(["config"])


def _progress(msg: str) -> None:
    """A timestamped line on stderr, so a run cut off by a time limit shows where it was."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def timing_turn():
    """Exclusive use of the accelerator for a timed section.

    With `MIRRORGAN_BENCH_TURNS=DIR:N` set, N benchmark processes started side by side (each
    its own variant) initialise and compile at the same time, wait until all N have compiled,
    then time their steps one after another under a file lock in DIR: the compiles overlap,
    the measurements do not. A process that died before compiling would leave the others
    waiting, so they go on after 10 minutes regardless. Unset: no waiting."""
    spec = os.environ.get("MIRRORGAN_BENCH_TURNS")
    if not spec:
        yield
        return
    folder, n = spec.rsplit(":", 1)
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, f"compiled.{os.getpid()}"), "w").close()
    deadline = time.time() + 600
    while len([f for f in os.listdir(folder) if f.startswith("compiled.")]) < int(n):
        if time.time() > deadline:
            _progress(f"not all {n} processes compiled in 10 minutes; timing anyway")
            break
        time.sleep(0.5)
    with open(os.path.join(folder, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _progress("timing turn taken")
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _emit(record: dict, rows: list) -> None:
    print(json.dumps(record), flush=True)
    rows.append(record)


def peak_memory() -> dict:
    """Peak host RSS and, where the backend reports it, peak device memory (GB)."""
    out = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["peak_device_gb"] = stats["peak_bytes_in_use"] / 1e9
    return out


def calibrate(n: int = 2048, reps: int = 20) -> float:
    """FLOP/s of a jitted float32 n x n matmul (median of `reps`)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def random_batch(nets: Networks, batch: int, n_words: int, seed: int = 0) -> dict:
    rs = np.random.RandomState(seed)
    t = nets.words_num
    lengths = np.sort(rs.randint(max(2, t // 2), t + 1, batch))[::-1].astype(np.int32)
    tokens = rs.randint(1, n_words, (batch, t)).astype(np.int32)
    tokens[np.arange(t)[None] >= lengths[:, None]] = 0
    return {
        "images": [
            rs.uniform(-1, 1, (batch, s, s, 3)).astype(np.float32) for s in nets.image_sizes
        ],
        "tokens": tokens,
        "lengths": lengths,
        "class_id": np.arange(batch, dtype=np.int32),
    }


def _timed(fn, args, steps: int):
    out = fn(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        out = fn(*args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t)
    return times


def initial_state(nets: Networks, hyper) -> tuple:
    """(fresh GAN state, frozen STEM/STREAM variables) from seed 0, on the default device.

    `bench_train` and `bench_breakdown` make their own unless given one; a caller running both
    (the tests) can initialise once, which compiles for seconds on XLA:CPU."""
    rng = jax.random.key(0)
    state = gan.init_gan_state(nets, hyper, rng)
    frozen = gan.Frozen(
        nets.init_text_encoder(rng), nets.init_caption_cnn(rng), nets.init_caption_rnn(rng)
    )
    return state, frozen


def bench_train(config, nets, n_words, steps, calib, rows, initial=None) -> float:
    """The full iteration: STEM, G forward, 3 D updates, G loss with STREAM, G update, EMA.

    `initial`: an `initial_state(...)` to start from (copied: the step donates its state)."""
    mesh = parallel.make_mesh()
    hyper = hyperparameters.gan(config)
    rng = jax.random.key(0)
    t0 = time.perf_counter()
    if initial is None:
        state, frozen = initial_state(nets, hyper)
    else:  # a copy: placement may reuse a buffer, and the step donates its state
        state, frozen = jax.tree.map(jnp.copy, initial[0]), initial[1]
    state, frozen = parallel.replicate(mesh, (state, frozen))
    init_s = time.perf_counter() - t0  # placement only when `initial` is given
    _progress(f"train: initialised in {init_s:.1f} s")
    b = config.train.batch_size
    batch = parallel.shard_batch(mesh, random_batch(nets, b, n_words))

    def step_fn(s, bt, r, f):
        return gan.train_step(s, bt, r, f, nets=nets, hyper=hyper)

    step = jax.jit(step_fn, donate_argnums=(0,))
    t0 = time.perf_counter()
    lowered = step.lower(state, batch, rng, frozen)
    _progress(f"train: traced and lowered in {time.perf_counter() - t0:.1f} s")
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    _progress(f"train: compiled in {compile_s:.1f} s (tracing included)")
    rss_before_steps = peak_memory()["peak_rss_gb"]  # init + compile, before any step ran
    mem = compiled.memory_analysis()  # XLA's own account of the step's buffers (None if absent)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), (state, batch))
    times = []
    # Before any wait for a timing turn, which is no part of the start-up.
    startup_s = time.time() - observability.process_start_time()
    _progress(f"train: ready to step {startup_s:.1f} s after the process started")
    with timing_turn():
        state, m = compiled(state, batch, rng, frozen)  # warm-up
        jax.block_until_ready(m)
        _progress("train: warm-up step done")
        for i in range(steps):
            t = time.perf_counter()
            state, m = compiled(state, batch, jax.random.fold_in(rng, i), frozen)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    # Counted after the steps: its tracing is no part of the start-up.
    flops = _reference_flops(step_fn, (*shapes, rng, frozen))
    rec = {
        "what": "train",
        "conv_weight_grad": conv.resolved_policy(),
        "batch": b,
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "dtype": config.mixed_precision,
        "image_sizes": list(nets.image_sizes),
        "median_s": med,
        "min_s": min(times),
        "images_per_s": b / med,
        "startup_s": startup_s,
        "compile_s": compile_s,
        "init_s": init_s,
        "flops_per_step": flops,
        "achieved_flops_per_s": flops / med if flops else None,
        "fraction_of_calibration": (flops / med / calib / jax.device_count()) if flops else None,
        "g_loss": float(m["g/loss"]),
        **peak_memory(),
        "peak_rss_before_steps_gb": rss_before_steps,
    }
    if mem is not None:
        rec["xla_temp_gb"] = mem.temp_size_in_bytes / 1e9
        rec["xla_arguments_gb"] = mem.argument_size_in_bytes / 1e9
        rec["xla_outputs_not_aliased_gb"] = (
            mem.output_size_in_bytes - mem.alias_size_in_bytes
        ) / 1e9
    _emit(rec, rows)
    return b / med


def _reference_flops(fn, args) -> float:
    """XLA's FLOP count of `fn(*args)` lowered for the CPU, with XLA's own convolution
    weight gradient, whatever device runs the benchmark.

    On GPU neither the lowered nor the compiled program counts the FLOPs of its cuDNN and
    cuBLAS calls (the CUB step read 0.02 TFLOP there, 1.85 on CPU), so the count is always
    the CPU lowering's. The matmul weight gradient (models/conv.py) loops over the kernel
    taps, and XLA's cost analysis does not always multiply a loop body by its trip count (the
    CUB step read 18% fewer FLOPs with it); the arithmetic is the same, so the count is taken
    without it. `fn` is a plain (un-jitted) function, traced afresh: a cached trace would keep
    its policy. Arguments enter as shapes only (no device placement)."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)
    with conv.weight_grad_policy("xla"):
        lowered = jax.jit(lambda *a: fn(*a)).trace(*shapes).lower(lowering_platforms=("cpu",))
        cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float((cost or {}).get("flops", 0.0))


def iteration_parts(nets: Networks, hyper, state, frozen, batch, rng) -> dict:
    """The parts of one training iteration, `{name: (fn, args)}`: the STEM forward, the G
    forward, G forward + backward (pullback of ones), per D the D update's loss + gradient and
    the G-adversarial loss + gradient w.r.t. the fake, and the STREAM cross-entropy with its
    gradient w.r.t. the image. `g_forward_backward` minus `g_forward` plus the rest cover the
    iteration's compute except the optimiser updates and the EMA."""
    tokens, lengths, reals = batch["tokens"], batch["lengths"], batch["images"]
    words, sent = gan.encode_text(nets, frozen, tokens, lengths)
    mask = tokens == 0
    z = jax.random.normal(rng, (tokens.shape[0], nets.z_dim), jnp.float32)

    def g_forward(g_params):
        out, _ = nets.generator.apply(
            {"params": g_params, "batch_stats": state.generator.batch_stats},
            z, sent, words, mask, train=True, rngs={"noise": rng}, mutable=["batch_stats"],
        )  # fmt: skip
        return tuple(x.astype(jnp.float32) for x in out.images)

    def g_backward(g_params):
        fakes, pullback = jax.vjp(g_forward, g_params)
        return pullback(jax.tree.map(jnp.ones_like, fakes))

    fakes = jax.jit(g_forward)(state.generator.params)
    parts = {
        "text_encoder": (
            lambda t, ln: gan.encode_text(nets, frozen, t, ln),
            (tokens, lengths),
        ),
        "g_forward": (g_forward, (state.generator.params,)),
        "g_forward_backward": (g_backward, (state.generator.params,)),
    }
    for i, (d, d_state) in enumerate(zip(nets.discriminators, state.discriminators, strict=True)):
        size = nets.image_sizes[i]

        def d_update(p, real, fake, d=d, d_state=d_state):
            return jax.value_and_grad(
                lambda q: gan.discriminator_loss_fn(d, q, d_state.batch_stats, real, fake, sent),
                has_aux=True,
            )(p)

        def g_adversarial(fake, d=d, d_state=d_state):
            return jax.value_and_grad(
                lambda f: gan.generator_adversarial(
                    d, d_state.params, d_state.batch_stats, f, sent
                ),
                has_aux=True,
            )(fake)

        parts[f"d{size}_update"] = (d_update, (d_state.params, reals[i], fakes[i]))
        parts[f"g_adversarial{size}"] = (g_adversarial, (fakes[i],))
    if frozen.caption_cnn is not None:
        parts["stream_loss_and_image_grad"] = (
            jax.value_and_grad(
                lambda img: gan.stream_cross_entropy(nets, frozen, img, tokens, lengths)
            ),
            (fakes[-1],),
        )
    return parts


def bench_breakdown(config, nets, n_words, steps, calib, rows, initial=None) -> None:
    """Where the iteration's time goes: every part compiled and timed alone (median of
    `steps`), with its XLA FLOPs, achieved FLOP/s and share of the parts' summed time.
    `initial`: an `initial_state(...)` to use instead of a fresh one."""
    hyper = hyperparameters.gan(config)
    rng = jax.random.key(0)
    state, frozen = initial_state(nets, hyper) if initial is None else initial
    batch = random_batch(nets, config.train.batch_size, n_words)
    records = []
    for name, (fn, args) in iteration_parts(nets, hyper, state, frozen, batch, rng).items():
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        compile_s = time.perf_counter() - t0
        flops = _reference_flops(fn, args)
        med = statistics.median(_timed(compiled, args, steps))
        records.append(
            {
                "what": "part",
                "part": name,
                "conv_weight_grad": conv.resolved_policy(),
                "batch": config.train.batch_size,
                "median_s": med,
                "compile_s": compile_s,
                "flops": flops,
                "achieved_flops_per_s": flops / med if flops else None,
                "fraction_of_calibration": (flops / med / calib) if flops else None,
            }
        )
    total = sum(r["median_s"] for r in records)
    for r in records:
        r["share_of_parts"] = r["median_s"] / total
        r["images_per_s"] = r["batch"] / r["median_s"]
        _emit(r, rows)


def bench_conv(steps, calib, rows, batch=16, size=64, channels=64) -> None:
    """One 3x3 'same' convolution (NHWC float32): forward, input gradient, and the weight
    gradient under each policy of models/conv.py, each compiled and timed alone."""
    rs = np.random.RandomState(0)
    x = jnp.asarray(rs.standard_normal((batch, size, size, channels)), jnp.float32)
    w = jnp.asarray(0.05 * rs.standard_normal((3, 3, channels, channels)), jnp.float32)
    dy = jnp.asarray(rs.standard_normal((batch, size, size, channels)), jnp.float32)

    def f(x, w):
        return conv.conv_general_dilated(
            x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    passes = {
        "forward": (lambda x, w, dy: f(x, w), "xla"),
        "input_grad": (lambda x, w, dy: jax.vjp(lambda x_: f(x_, w), x)[1](dy)[0], "xla"),
    }
    for policy in ("xla", "matmul"):
        passes[f"weight_grad_{policy}"] = (
            lambda x, w, dy: jax.vjp(lambda w_: f(x, w_), w)[1](dy)[0],
            policy,
        )
    flops = 2 * batch * size * size * 9 * channels * channels
    for name, (fn, policy) in passes.items():
        with conv.weight_grad_policy(policy):
            compiled = jax.jit(fn).lower(x, w, dy).compile()
        med = statistics.median(_timed(compiled, (x, w, dy), max(steps, 5)))
        _emit(
            {
                "what": "conv",
                "pass": name,
                "batch": batch,
                "shape": [batch, size, size, channels],
                "median_s": med,
                "images_per_s": batch / med,
                "flops": flops,
                "achieved_flops_per_s": flops / med,
                "fraction_of_calibration": flops / med / calib,
            },
            rows,
        )


def bench_sample(config, nets, n_words, steps, rows) -> None:
    """EMA generator (eval mode) + STEM: batch-1 latency and a large batch."""
    rng = jax.random.key(0)
    g = nets.init_generator(rng)
    te = nets.init_text_encoder(rng)
    frozen = gan.Frozen(text_encoder=te, caption_cnn=None, caption_rnn=None)
    gen = jax.jit(lambda t, ln, r: gan.generate(nets, g, frozen, t, ln, r).images[-1])
    for b in (1, _SAMPLE_BATCH.value):
        batch = random_batch(nets, b, n_words)
        times = _timed(gen, (batch["tokens"], batch["lengths"], rng), steps)
        med = statistics.median(times)
        _emit(
            {
                "what": "sample",
                "batch": b,
                "image_size": nets.image_sizes[-1],
                "median_s": med,
                "min_s": min(times),
                "images_per_s": b / med,
                "dtype": config.mixed_precision,
                **peak_memory(),
            },
            rows,
        )


def bench_input(config, steps, train_images_per_s, rows) -> None:
    """tf.data throughput at the config's image sizes, from a small generated shapes set."""
    sizes = networks.image_sizes(config)
    with tempfile.TemporaryDirectory() as tmp:
        builder = shapes.Shapes(
            data_dir=tmp, num_train=256, num_test=8, num_test_novel=8, image_size=max(sizes), seed=0
        )
        builder.download_and_prepare()
        tok = tokenizers.build_tokenizer(
            "sentencepiece", builder.captions["train"], builder.captions["train"]
        )
        b = config.train.batch_size
        source = input_pipeline.Source(tmp, "shapes", tok, sizes, config.data.words_num)
        it = input_pipeline.create_dataset(source, "train", b, seed=0, shuffle_buffer=256)
        next(it)
        n = max(steps * 10, 50)
        t = time.perf_counter()
        for _ in range(n):
            next(it)
        rate = n * b / (time.perf_counter() - t)
    rec = {"what": "input", "image_sizes": list(sizes), "batch": b, "images_per_s": rate}
    if train_images_per_s:
        rec["ratio_to_train_step"] = rate / train_images_per_s
    _emit(rec, rows)


def main(argv) -> None:
    del argv
    config = _CONFIG.value
    configuration.validate(config)
    cache = _CACHE.value or os.environ.get(parallel.ENV_COMPILATION_CACHE) or "off"
    parallel.enable_compilation_cache(None if cache == "off" else cache)
    _progress(
        f"imports done {time.time() - observability.process_start_time():.1f} s after the "
        f"process started; compilation cache: {cache}"
    )
    n_words = _N_WORDS.value or config.model.n_words or 5450
    nets = Networks.from_config(config, n_words=n_words)
    what = _WHAT.value
    steps = _STEPS.value
    rows: list = []
    calib = calibrate()
    _emit(
        {
            "what": "calibration",
            "matmul_2048_f32_flops_per_s": calib,
            "devices": jax.device_count(),
            "device_kind": jax.devices()[0].device_kind,
        },
        rows,
    )
    policies = _CONV_WEIGHT_GRAD.value
    for policy in policies:
        if policy not in conv.POLICIES:
            raise app.UsageError(f"--conv_weight_grad={policy!r}; expected {conv.POLICIES}")
    train_rate = None
    for policy in policies:
        with conv.weight_grad_policy(policy):
            if what in ("train", "all"):
                train_rate = bench_train(config, nets, n_words, steps, calib, rows)
            if what == "breakdown":
                bench_breakdown(config, nets, n_words, steps, calib, rows)
    if what == "conv":
        bench_conv(steps, calib, rows)
    trains = [r for r in rows if r["what"] == "train"]
    for r in trains[1:]:
        _emit(
            {
                "what": "ratio",
                "of": f"train median_s {trains[0]['conv_weight_grad']} / {r['conv_weight_grad']}",
                "ratio": trains[0]["median_s"] / r["median_s"],
            },
            rows,
        )
    if what in ("sample", "all"):
        bench_sample(config, nets, n_words, steps, rows)
    if what in ("input", "all"):
        bench_input(config, steps, train_rate, rows)
    print("\n| what | batch | median s | images/s | note |\n|---|---|---|---|---|")
    for r in rows[1:]:
        if r["what"] == "ratio":
            print(f"| ratio | | | | {r['of']} = {r['ratio']:.2f} |")
            continue
        parts = []
        if "conv_weight_grad" in r:
            parts.append(f"dW {r['conv_weight_grad']}")
        if r["what"] == "conv":
            parts.append(r["pass"])
        if r.get("share_of_parts"):
            parts.append(
                f"{r['part']}: {r['share_of_parts']:.0%} of the parts' time, "
                f"{r['flops'] / 1e9:.1f} GFLOP"
            )
        if r.get("fraction_of_calibration"):
            parts.append(f"{r['fraction_of_calibration']:.2f} of matmul FLOP/s")
        if r.get("ratio_to_train_step"):
            parts.append(f"{r['ratio_to_train_step']:.1f}x the train step's need")
        if "startup_s" in r:
            parts.append(f"start-up {r['startup_s']:.1f} s (compile {r['compile_s']:.1f} s)")
        if "peak_rss_gb" in r:
            parts.append(f"peak RSS {r['peak_rss_gb']:.2f} GB")
        note = "; ".join(parts)
        print(
            f"| {r['what']} | {r.get('batch', '')} | {r.get('median_s', float('nan')):.3f} | "
            f"{r['images_per_s']:.2f} | {note} |"
        )


if __name__ == "__main__":
    app.run(main)
