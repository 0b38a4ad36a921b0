#!/usr/bin/env bash
# One prepared GPU benchmark run (CUB config, full iteration): bfloat16 and float32 at batch 12
# and at the largest batch that fits, then sampling. Writes to $OUT (or ./gpu_bench):
# results.jsonl (the benchmark's JSON lines), summary.md (table with MFU against the chip's
# dense bf16 peak), gpu.txt (card and library versions), log.txt (every run's stderr).
#   PEAK_TFLOPS  dense bf16 peak of the card (H100/H200 SXM: 989)
#   STEPS        timed steps per measurement (default 10)
#   CONFIG       config measured (default configs/cub.py); MAX_BATCH caps the largest batch (512)
# The largest batch is estimated from the batch-12 run's XLA memory account (temporaries grow
# with the batch, arguments do not), aiming at 80% of the device memory, rounded down to a
# multiple of 8; on failure (out of memory) it retries at two thirds of that.
# Needs jax with CUDA, flax, optax; ml-collections is installed from .gpu_wheels/ if missing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_bench}
STEPS=${STEPS:-10}
CONFIG=${CONFIG:-configs/cub.py}
export MAX_BATCH=${MAX_BATCH:-512}
mkdir -p "$OUT"
if ! python3 -c "import ml_collections" 2>/dev/null; then
  python3 -m pip install -q --no-deps --target /tmp/mg_deps .gpu_wheels/*.whl
  export PYTHONPATH=/tmp/mg_deps:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__,
  'optax', optax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/gpu.txt"
LOG=$OUT/log.txt
bench() {  # config dtype batch what timeout [extra flags]
  local cfg=$1 dtype=$2 batch=$3 what=$4 limit=$5
  shift 5
  echo "=== $(date +%T) $cfg $dtype batch $batch $what" | tee -a "$LOG"
  timeout "$limit" python3 -m mirrorgan_jax.benchmark --config="$cfg" --what="$what" \
    --steps="$STEPS" --config.mixed_precision="$dtype" --config.train.batch_size="$batch" "$@" \
    2>>"$LOG" | grep '^{' | tee -a "$OUT/results.jsonl"
  local rc=${PIPESTATUS[0]}
  echo "=== rc $rc" | tee -a "$LOG"
  return "$rc"
}
largest_batch() {  # dtype -> batch estimated from that dtype's batch-12 train record
  python3 - "$OUT/results.jsonl" "$1" <<'PY'
import json, os, sys
import jax
recs = [json.loads(l) for l in open(sys.argv[1])]
r = [x for x in recs if x["what"] == "train" and x["batch"] == 12 and x["dtype"] == sys.argv[2]][-1]
limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit", 16e9) / 1e9  # CPU: no stats
per_image = r["xla_temp_gb"] / 12
b = int((0.8 * limit - 2 * r["xla_arguments_gb"]) / per_image) // 8 * 8
print(max(16, min(b, int(os.environ["MAX_BATCH"]))))
PY
}
# A tiny run first: a library or driver problem shows here in seconds, not after a CUB compile.
bench configs/shapes.py:test float32 8 train 120 || { echo "smoke run failed"; exit 1; }
bench "$CONFIG" bfloat16 12 train 150
bench "$CONFIG" float32 12 train 150
bench "$CONFIG" bfloat16 12 sample 90 --sample_batch=64
for dtype in bfloat16 float32; do
  b=$(largest_batch "$dtype") || continue
  bench "$CONFIG" "$dtype" "$b" train 150 || bench "$CONFIG" "$dtype" $((b * 2 / 3 / 8 * 8)) train 150
done
python3 - "$OUT/results.jsonl" "${PEAK_TFLOPS:-989}" <<'PY' | tee "$OUT/summary.md"
import json, sys
peak = float(sys.argv[2]) * 1e12
print("| what | config | dtype | batch | median s | images/s | TFLOP/step | MFU (vs bf16 dense peak) | "
      "peak device GB | compile s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["what"] == "calibration":
        print(f"| calibration | | float32 | | | | | {r['matmul_2048_f32_flops_per_s'] / 1e12:.1f} "
              f"TFLOP/s (2048 matmul) | | |")
        continue
    fl = r.get("flops_per_step") or 0
    mfu = f"{fl / r['median_s'] / peak:.1%}" if fl else ""
    cfg = f"{r['image_sizes'][-1]} px" if "image_sizes" in r else f"{r.get('image_size', '')} px"
    print(f"| {r['what']} | {cfg} | {r.get('dtype', '')} | {r['batch']} | {r['median_s']:.4f} | "
          f"{r['images_per_s']:.1f} | {fl / 1e12:.3f} | {mfu} | "
          f"{r.get('peak_device_gb', 0):.1f} | {r.get('compile_s', 0):.0f} |")
PY
