#!/usr/bin/env bash
# One prepared GPU benchmark run (CUB config, full iteration): several (dtype, batch) variants
# started side by side, so that their initialisation and compilation overlap; they time their
# steps one after another (MIRRORGAN_BENCH_TURNS in mirrorgan_jax/tools/benchmark.py). Then sampling.
# Writes to $OUT (or ./gpu_bench): results.jsonl (the benchmark's JSON lines), summary.md (table
# with MFU against the chip's dense bf16 peak), gpu.txt (card, library versions), log.txt
# (every run's stderr, with timestamped progress lines).
#   VARIANTS     "dtype:batch:memory_fraction ..." (default below; the fractions share the card)
#   PEAK_TFLOPS  dense bf16 peak of the card (H100/H200 SXM: 989)
#   STEPS        timed steps per measurement (default 10)
#   CONFIG       config measured (default configs/cub.py)
#   LIMIT        seconds each process may run (default 360)
#   SAMPLE=0, SMOKE=0  skip the sampling measurement, the tiny first run
# Needs jax with CUDA, flax, optax; ml-collections is installed from .gpu_wheels/ if missing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_bench}
STEPS=${STEPS:-10}
CONFIG=${CONFIG:-configs/cub.py}
LIMIT=${LIMIT:-360}
VARIANTS=${VARIANTS:-"bfloat16:12:0.15 float32:12:0.2 bfloat16:64:0.6"}
mkdir -p "$OUT"
source launch/gpu_wheels.sh "ml_collections"
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__,
  'optax', optax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/gpu.txt"
LOG=$OUT/log.txt
bench() {  # config dtype batch what memory_fraction [extra flags]
  local cfg=$1 dtype=$2 batch=$3 what=$4 frac=$5
  shift 5
  echo "=== $(date +%T) start $cfg $dtype batch $batch $what" >>"$LOG"
  XLA_PYTHON_CLIENT_MEM_FRACTION=$frac timeout "$LIMIT" python3 -m mirrorgan_jax.tools.benchmark \
    --config="$cfg" --what="$what" --steps="$STEPS" --config.mixed_precision="$dtype" \
    --config.train.batch_size="$batch" "$@" 2>&1 | sed -u "s/^/[$dtype $batch] /" \
    | tee -a "$LOG" | grep --line-buffered '^\[[a-z0-9 ]*\] {' | sed -u 's/^\[[^]]*\] //' \
    >>"$OUT/results.jsonl"
  local rc=${PIPESTATUS[0]}
  echo "=== $(date +%T) end $cfg $dtype batch $batch $what rc $rc" >>"$LOG"
  return "$rc"
}
# A tiny run first: a library or driver problem shows here in seconds, not after a CUB compile.
if [ "${SMOKE:-1}" = 1 ]; then
  bench configs/shapes.py:test float32 8 train 0.5 || { echo "smoke run failed"; exit 1; }
fi
turns=$(mktemp -d)
n=0
for v in $VARIANTS; do n=$((n + 1)); done
for v in $VARIANTS; do
  IFS=: read -r dtype batch frac <<<"$v"
  MIRRORGAN_BENCH_TURNS=$turns:$n bench "$CONFIG" "$dtype" "$batch" train "$frac" &
done
wait
[ "${SAMPLE:-1}" = 1 ] && bench "$CONFIG" bfloat16 12 sample 0.5 --sample_batch=64
grep -v '^I1\|^W1' "$LOG" | tail -40
python3 - "$OUT/results.jsonl" "${PEAK_TFLOPS:-989}" <<'PY' | tee "$OUT/summary.md"
import json, sys
peak = float(sys.argv[2]) * 1e12
print("| what | config | dtype | batch | median s | min s | images/s | TFLOP/step | "
      "MFU (vs bf16 dense peak) | peak device GB | compile s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["what"] == "calibration":
        continue
    fl = r.get("flops_per_step") or 0
    mfu = f"{fl / r['median_s'] / peak:.1%}" if fl else ""
    size = r["image_sizes"][-1] if "image_sizes" in r else r.get("image_size", "")
    print(f"| {r['what']} | {size} px | {r.get('dtype', '')} | {r['batch']} | {r['median_s']:.4f} | "
          f"{r.get('min_s', 0):.4f} | {r['images_per_s']:.1f} | {fl / 1e12:.3f} | {mfu} | "
          f"{r.get('peak_device_gb', 0):.1f} | {r.get('compile_s', 0):.0f} |")
PY
