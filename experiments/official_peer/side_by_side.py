"""The official PyTorch MirrorGAN iteration and this port's, timed on the same device in one call.

    python experiments/official_peer/side_by_side.py --official_dir=.official \
        [--official_python=python3] [--config=configs/cub.py] [--batch=12] [--steps=5] \
        [--largest=auto|off|N] [--overlap] [--budget_s=0] [--out=FILE.jsonl]

Runs, one process at a time (each gets the whole device and its own peak-memory figure; with
--overlap the port's runs at one batch start together and only their timed steps take turns):
  1. the official iteration at --batch, float32 (official_iteration.py, under --official_python);
  2. this port's benchmark (`python -m mirrorgan_jax.tools.benchmark --what=train`, under
     --port_python) at --batch, float32 and then bfloat16;
  3. with --largest=auto on an accelerator: for the official float32 and each port dtype, the
     largest batch that fits, searched from the measured peak memory (below), and its timing.
     --largest=N times batch N for all three instead; on the CPU, `auto` skips the search (host
     memory has no device limit to fill).
Then prints one table: ms per iteration, images/s, peak memory (device: the official
`torch.cuda.max_memory_allocated`, the port's JAX `peak_bytes_in_use`; on the CPU the peak RSS of
each process), memory per image, and the port/official ratios (images/s, memory per image)
against the official float32 row of the same batch group. Every record also goes to --out as one
JSON line.

Largest batch (`largest_batch`): from the measured batch, each try is where a straight line
through the measured peak memories reaches the memory available (the card's, times JAX's memory
fraction for the port); a batch that does not fit bounds the search and the next try bisects.
It stops after --largest_tries tries per variant or when fit and failure are within 5%, and
reports the largest batch that fitted (the note gives the bound).

Both halves see the same inputs: the official captions are drawn exactly as the port's
`benchmark.random_batch` draws them (the same lengths); images U(-1, 1) at 64/128/256 px.
Patches to the official code are listed in official_iteration.py's docstring.

Prepared GPU command (repo root; the device has python3 with torch, torchvision, jax[cuda] and
flax but no ml-collections and no internet: carry `.official` and `.gpu_wheels`, whose
preparation README.md here gives):
    source launch/gpu_wheels.sh "ml_collections" && \
    python3 experiments/official_peer/side_by_side.py --official_dir=.official --steps=10 \
        --overlap --budget_s=540 --out="$OUT/side_by_side.jsonl" 2>"$OUT/progress.txt"
On this CPU (the port's venv; torch in a separate one):
    .venv/bin/python experiments/official_peer/side_by_side.py --official_dir=.official \
        --official_python=/work/peer-venv/bin/python --steps=2 --warmup=1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_WORKER = Path(__file__).resolve().with_name("official_iteration.py")

# The one place that names the port's benchmark: its command line is the interface used here.
PORT_BENCHMARK_MODULE = "mirrorgan_jax.tools.benchmark"

# Fractions of the device memory the largest-batch guesses aim at: the first from one point
# (cautious), the later ones from a line through two (allocator overhead takes the rest).
FIRST_TARGET, TARGET = 0.92, 0.98
# Device memory JAX may take for the port's runs unless XLA_PYTHON_CLIENT_MEM_FRACTION is set
# (JAX's default 0.75 would cap the port's largest batch below what PyTorch may use).
PORT_MEM_FRACTION = "0.95"
_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OutOfMemoryError")


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def port_command(
    python: str, config: str, batch: int, dtype: str, steps: int, n_words: int, flags: list[str]
) -> list[str]:
    """The port's benchmark command line for one `train` measurement."""
    return [
        python, "-m", PORT_BENCHMARK_MODULE, f"--config={config}", "--what=train",
        f"--steps={steps}", f"--n_words={n_words}", f"--config.train.batch_size={batch}",
        f"--config.mixed_precision={dtype}", *flags,
    ]  # fmt: skip


def official_command(
    python: str, official_dir: str, batch: int, steps: int, warmup: int, n_words: int
) -> list[str]:
    return [
        python, str(OFFICIAL_WORKER), f"--official_dir={official_dir}", f"--batch={batch}",
        f"--steps={steps}", f"--warmup={warmup}", f"--n_words={n_words}",
    ]  # fmt: skip


class _Run:
    """One measurement process started from the repo root, its output going to temporary files
    (several may run at once)."""

    def __init__(self, cmd: list[str], env: dict, log):
        self.cmd, self.log = cmd, log
        self.stdout = tempfile.TemporaryFile("w+")
        self.stderr = tempfile.TemporaryFile("w+")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=self.stdout, stderr=self.stderr, text=True
        )

    def wait(self, timeout: float | None) -> tuple[list[dict], str, str]:
        """(its JSON stdout lines, its stderr, why it failed or '')."""
        failure = ""
        try:
            self.proc.wait(timeout=None if timeout is None else max(timeout, 1))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            failure = f"timed out after {time.perf_counter() - self.started:.0f} s"
        self.stdout.seek(0)
        self.stderr.seek(0)
        out, err = self.stdout.read(), self.stderr.read()
        self.log.write(f"\n=== {' '.join(self.cmd)}\n{err}")
        self.log.flush()
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        if not failure and self.proc.returncode != 0:
            tail = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["?"]
            failure = f"exit {self.proc.returncode}: {tail[0][:200]}"
        return records, err, failure


def _row(side: str, dtype: str, batch: int, group: str, record: dict | None, note: str) -> dict:
    """One table row from a measurement record (None: not measured, `note` says why)."""
    row = {"side": side, "dtype": dtype, "batch": batch, "group": group, "note": note}
    if record:
        row.update(
            median_s=record["median_s"],
            images_per_s=record["images_per_s"],
            device_kind=record.get("device_kind", ""),
        )
        if record.get("peak_device_gb") is not None:
            row.update(memory_gb=record["peak_device_gb"], memory_kind="device")
        else:
            row.update(memory_gb=record["peak_rss_gb"], memory_kind="host RSS")
    return row


class SideBySide:
    """The measurements of one call: each run is one subprocess, its record kept in `records`."""

    def __init__(self, args, log):
        self.args, self.log = args, log
        self.records: list[dict] = []
        self.deadline = time.time() + args.budget_s if args.budget_s else None

    def _timeout(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - time.time()

    def _keep(self, record: dict) -> dict:
        self.records.append(record)
        if self.args.out:
            with open(self.args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    def measure(self, side: str, dtype: str, batch: int) -> dict:
        """One run: the record, with `oom` True when it did not fit and `error` on a failure."""
        return self.measure_together([(side, dtype)], batch)[0]

    def measure_together(self, variants: list[tuple[str, str]], batch: int) -> list[dict]:
        """Runs of (side, dtype) at `batch`. With --overlap and several port variants, these start
        together, each with an equal share of the device memory, and take turns for their timed
        steps (MIRRORGAN_BENCH_TURNS in the port's benchmark): their start-ups overlap, their
        measurements do not."""
        a = self.args
        timeout = self._timeout()
        if timeout is not None and timeout < 30:
            return [
                self._keep({"side": s, "dtype": d, "batch": batch, "error": "budget spent"})
                for s, d in variants
            ]
        together = a.overlap and len(variants) > 1 and all(s == "port" for s, _ in variants)
        turns = tempfile.mkdtemp(prefix="side_by_side_turns_") if together else None
        runs = []
        for side, dtype in variants:
            env = dict(os.environ)
            if side == "official":
                cmd = official_command(
                    a.official_python, a.official_dir, batch, a.steps, a.warmup, a.n_words
                )
            else:
                cmd = port_command(
                    a.port_python, a.config, batch, dtype, a.steps, a.n_words, a.port_flag
                )
                env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", PORT_MEM_FRACTION)
                if turns:
                    share = float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) / len(variants)
                    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{share:.3f}"
                    env["MIRRORGAN_BENCH_TURNS"] = f"{turns}:{len(variants)}"
            _progress(f"{side} {dtype} batch {batch}: running")
            runs.append((side, dtype, _Run(cmd, env, self.log)))
        return [self._finish(side, dtype, batch, run) for side, dtype, run in runs]

    def _finish(self, side: str, dtype: str, batch: int, run: _Run) -> dict:
        records, stderr, failure = run.wait(self._timeout())
        found = [r for r in records if r.get("what") == "train" or r.get("side") == "official"]
        record = {"dtype": dtype, "batch": batch, **(found[-1] if found else {}), "side": side}
        record["wall_s"] = time.perf_counter() - run.started
        if not found or failure:
            record["oom"] = record.get("oom") or any(m in stderr for m in _OOM_MARKERS)
            if not record["oom"]:
                record["error"] = failure or "no measurement printed"
        record.setdefault("oom", False)
        state = (
            "out of memory"
            if record["oom"]
            else record.get("error") or f"{record['median_s'] * 1e3:.1f} ms/iteration"
        )
        _progress(f"{side} {dtype} batch {batch}: {state} ({record['wall_s']:.0f} s)")
        return self._keep(record)


def _ok(record: dict) -> bool:
    return not record.get("oom") and not record.get("error") and "median_s" in record


def _memory_gb(record: dict) -> float:
    return record.get("peak_device_gb") or record["peak_rss_gb"]


def largest_batch(
    measure: Callable[[int], dict],
    first: dict,
    capacity_gb: float | None,
    max_tries: int,
) -> tuple[dict | None, str]:
    """The largest batch that fits, from `first` (a fitting record) on: (its record, a note).

    First try: where memory proportional to the batch (a line through zero and `first`, which
    overstates the memory per image, so it errs low) reaches FIRST_TARGET of `capacity_gb`. Then
    where the line through the two largest fitting points reaches TARGET of it; a batch that did
    not fit bounds the search, and a guess at or past it bisects instead. With the capacity
    unknown, the batch doubles. Stops after `max_tries` tries, when the line points at no larger
    batch, or when fit and failure are within 5% of each other."""
    fits = {first["batch"]: first}
    fail: int | None = None
    tries = 0
    while tries < max_tries:
        lo = max(fits)
        if fail is not None and fail - lo <= max(1, math.ceil(0.05 * lo)):
            break
        points = sorted(fits.items())[-2:]
        if capacity_gb is None:
            guess = 2 * lo
        elif len(points) == 1:
            guess = int(lo * FIRST_TARGET * capacity_gb / _memory_gb(points[0][1]))
        else:
            (b1, r1), (b2, r2) = points
            slope = (_memory_gb(r2) - _memory_gb(r1)) / (b2 - b1)
            guess = (
                int(b2 + (TARGET * capacity_gb - _memory_gb(r2)) / slope) if slope > 0 else 2 * lo
            )
        if fail is not None and guess >= fail:
            guess = (lo + fail) // 2
        if guess <= lo:
            break
        tries += 1
        record = measure(guess)
        if _ok(record):
            fits[guess] = record
        elif record.get("oom"):
            fail = guess if fail is None else min(fail, guess)
        else:  # a failure other than memory (timeout, budget spent): nothing more to learn
            break
    best = max(fits)
    note = f"largest fit in {tries} {'try' if tries == 1 else 'tries'}"
    note += f"; batch {fail} did not fit" if fail else ""
    return (None if best == first["batch"] else fits[best]), note


def format_table(rows: list[dict], header: list[str]) -> str:
    """The markdown table; ratios are against the official float32 row of the same group."""
    official = {r["group"]: r for r in rows if r["side"] == "official" and "median_s" in r}
    lines = list(header) + [
        "",
        "| side | dtype | batch | ms / iteration | images/s | peak memory GB | MB / image | "
        "images/s port/official | memory per image port/official | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "median_s" not in r:
            lines.append(
                f"| {r['side']} | {r['dtype']} | {r['batch'] or ''} | | | | | | | {r['note']} |"
            )
            continue
        per_image = r["memory_gb"] / r["batch"]
        speed = memory = ""
        ref = official.get(r["group"])
        if r["side"] == "port" and ref:
            speed = f"{r['images_per_s'] / ref['images_per_s']:.2f}x"
            memory = f"{per_image / (ref['memory_gb'] / ref['batch']):.2f}x"
        lines.append(
            f"| {r['side']} | {r['dtype']} | {r['batch']} | {_digits3(r['median_s'] * 1e3)} | "
            f"{_digits3(r['images_per_s'])} | {r['memory_gb']:.2f} ({r['memory_kind']}) | "
            f"{per_image * 1e3:.0f} | {speed} | {memory} | {r['note']} |"
        )
    return "\n".join(lines)


def _digits3(x: float) -> str:
    """Three significant digits, no exponent (0.132, 60.0, 243, 91093)."""
    if x <= 0 or not math.isfinite(x):
        return f"{x}"
    return f"{x:.{max(0, 2 - math.floor(math.log10(x)))}f}"


def rows_from_records(records: list[dict], batch: int) -> list[dict]:
    """Table rows from recorded runs (--out of an earlier call, e.g. one a time limit cut off):
    each variant's run at `batch`, then its largest batch that fitted among the others."""
    order = [("official", "float32"), ("port", "float32"), ("port", "bfloat16")]
    variants = order + sorted({(r["side"], r["dtype"]) for r in records} - set(order))
    rows = []
    for side, dtype in variants:
        runs = [r for r in records if (r["side"], r["dtype"]) == (side, dtype)]
        rows += [_measured_row(r, f"batch {batch}") for r in runs if r["batch"] == batch]
    for side, dtype in variants:
        others = [
            r for r in records if (r["side"], r["dtype"]) == (side, dtype) and r["batch"] != batch
        ]
        if not others:
            continue
        fits = [r for r in others if _ok(r)]
        failed = sorted(r["batch"] for r in others if not _ok(r))
        note = "largest that fitted of batches " + ", ".join(
            str(r["batch"]) for r in sorted(others, key=lambda r: r["batch"])
        )
        note += f" (did not fit or failed: {', '.join(map(str, failed))})" if failed else ""
        if fits:
            best = max(fits, key=lambda r: r["batch"])
            rows.append(_row(side, dtype, best["batch"], "largest", best, note))
        else:
            rows.append(_row(side, dtype, 0, "largest", None, note))
    return rows


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--official_dir",
        default=str(REPO_ROOT / ".official"),
        help="checkout of github qiaott/MirrorGAN (commit deb220f)",
    )
    p.add_argument(
        "--official_python",
        default=sys.executable,
        help="interpreter with torch and torchvision for the official half",
    )
    p.add_argument(
        "--official",
        choices=["run", "skip"],
        default="run",
        help="'skip': only the port half (e.g. where torch is not installed)",
    )
    p.add_argument(
        "--port_python", default=sys.executable, help="interpreter with this port's dependencies"
    )
    p.add_argument("--config", default="configs/cub.py", help="the port's config")
    p.add_argument(
        "--port_flag",
        action="append",
        default=[],
        help="extra flag for the port's benchmark (repeatable)",
    )
    p.add_argument("--port_dtypes", default="float32,bfloat16")
    p.add_argument("--n_words", type=int, default=5450, help="vocabulary size of both")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--steps", type=int, default=5, help="timed iterations per run")
    p.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed official iterations first (the port's benchmark runs one)",
    )
    p.add_argument("--largest", default="auto", help="auto | off | a batch size for all")
    p.add_argument("--largest_tries", type=int, default=3, help="tries per variant for auto")
    p.add_argument(
        "--device_memory_gb",
        type=float,
        default=0.0,
        help="device memory for the search (0: the official run's reading)",
    )
    p.add_argument(
        "--budget_s",
        type=float,
        default=0.0,
        help="stop starting runs this many seconds after the start (0: no limit)",
    )
    p.add_argument(
        "--overlap",
        action="store_true",
        help="start the port's runs at one batch together, timing them in turns (an accelerator "
        "with memory to share; their start-up takes minutes each)",
    )
    p.add_argument("--out", default="", help="append every record here as a JSON line")
    p.add_argument(
        "--table_from",
        default="",
        help="run nothing: print the table of the records in this --out file of an earlier call",
    )
    p.add_argument("--log", default="", help="the runs' stderr (default: --out with .log)")
    args = p.parse_args(argv)
    if args.largest not in ("auto", "off") and not args.largest.isdigit():
        p.error(f"--largest={args.largest!r}; expected auto, off or a batch size")
    dtypes = [d for d in args.port_dtypes.split(",") if d]
    bad = [d for d in dtypes if d not in ("float32", "bfloat16")]
    if bad or not dtypes:
        p.error(f"--port_dtypes={args.port_dtypes!r}; expected float32 and/or bfloat16")
    args.port_dtypes = dtypes
    return args


def main(argv=None) -> str:
    """Run the measurements and print (and return) the table."""
    args = _parse(argv)
    if args.table_from:
        with open(args.table_from) as f:
            records = [json.loads(line) for line in f if line.strip()]
        header = _header(args, records)[:1] + [f"Records of an earlier call: {args.table_from}"]
        table = format_table(rows_from_records(records, args.batch), header)
        print(table, flush=True)
        return table
    log_path = args.log or (str(Path(args.out).with_suffix(".log")) if args.out else os.devnull)
    load_before = os.getloadavg()
    with open(log_path, "a") as log:
        sbs = SideBySide(args, log)
        rows = []
        group = f"batch {args.batch}"
        official = None
        if args.official == "run":
            official = sbs.measure("official", "float32", args.batch)
            rows.append(_measured_row(official, group))
        else:
            rows.append(
                _row("official", "float32", args.batch, group, None, "skipped (--official=skip)")
            )
        port_runs = sbs.measure_together([("port", d) for d in args.port_dtypes], args.batch)
        port = dict(zip(args.port_dtypes, port_runs, strict=True))
        rows += [_measured_row(r, group) for r in port_runs]
        rows += _largest_rows(args, sbs, official, port)
    header = _header(args, sbs.records)
    header.append(
        f"Load average (1/5/15 min) before: {_load(load_before)}, after: {_load(os.getloadavg())}"
    )
    table = format_table(rows, header)
    print(table, flush=True)
    return table


def _header(args, records: list[dict]) -> list[str]:
    kinds = sorted({r.get("device_kind", "?") for r in records if _ok(r)})
    warning = "  **NOT THE SAME DEVICE: the ratios compare different hardware**"
    return [
        f"Device: {', '.join(kinds) or '?'}" + (warning if len(kinds) > 1 else ""),
        f"Config: {args.config} {' '.join(args.port_flag)} (port); cfg/train_bird.yml (official)",
        f"Timed iterations per run: {args.steps} (median), after {args.warmup} official / 1 port "
        "warm-up",
    ]


def _load(avg) -> str:
    return "/".join(f"{x:.1f}" for x in avg)


def _measured_row(record: dict, group: str) -> dict:
    """The row of one `SideBySide.measure` record: its figures, or why there are none."""
    note = "out of memory" if record.get("oom") else record.get("error", "")
    return _row(
        record["side"],
        record["dtype"],
        record["batch"],
        group,
        record if _ok(record) else None,
        note,
    )


def _largest_rows(args, sbs: SideBySide, official: dict | None, port: dict) -> list[dict]:
    variants = [("port", d, port[d]) for d in args.port_dtypes]
    if official is not None:
        variants.insert(0, ("official", "float32", official))
    if args.largest == "off":
        return []
    group = "largest"
    rows = []
    if args.largest.isdigit():
        for side, dtype, _ in variants:
            rows.append(_measured_row(sbs.measure(side, dtype, int(args.largest)), group))
        return rows
    on_cpu = any(r.get("device_kind", "").lower() == "cpu" for _, _, r in variants if _ok(r))
    if on_cpu:
        return [
            {
                "side": "(largest batch)",
                "dtype": "",
                "batch": 0,
                "group": group,
                "note": "not searched on the CPU: host memory has no device limit to fill",
            }
        ]
    card_gb = args.device_memory_gb or (official or {}).get("device_total_gb")
    port_fraction = float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", PORT_MEM_FRACTION))
    for side, dtype, first in variants:
        if not _ok(first):
            rows.append(_row(side, dtype, 0, group, None, f"{side} {dtype} did not run"))
            continue
        capacity = card_gb and (card_gb if side == "official" else card_gb * port_fraction)
        best, note = largest_batch(
            lambda b, s=side, d=dtype: sbs.measure(s, d, b), first, capacity, args.largest_tries
        )
        if best is None:  # nothing larger fitted: the first batch is the largest known
            best, note = first, note + f"; batch {first['batch']} is the largest that fitted"
        rows.append(_row(side, dtype, best["batch"], group, best, note))
    return rows


if __name__ == "__main__":
    main()
