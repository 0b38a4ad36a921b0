#!/usr/bin/env bash
# One prepared GPU benchmark run (CUB config, full iteration): float32 and bfloat16 at batch 12
# and at larger batches, then sampling. Writes JSON lines to $OUT (or ./gpu_bench) and a
# summary with MFU against the chip's dense bf16 peak.
#   PEAK_TFLOPS  dense bf16 peak of the card (H100/H200 SXM: 989)
# Needs jax with CUDA, flax, optax; ml-collections is installed from .gpu_wheels/ if missing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_bench}
mkdir -p "$OUT"
if ! python3 -c "import ml_collections" 2>/dev/null; then
  python3 -m pip install -q --no-deps --target /tmp/mg_deps .gpu_wheels/*.whl
  export PYTHONPATH=/tmp/mg_deps:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
run() {  # dtype batch what timeout
  timeout "$4" python3 -m mirrorgan_jax.benchmark --config=configs/cub.py --what="$3" --steps=10 \
    --config.mixed_precision="$1" --config.train.batch_size="$2" 2>"$OUT/err_$1_$2_$3.txt" \
    | grep '^{' | tee -a "$OUT/results.jsonl"
}
run bfloat16 12 train 140
run float32 12 train 140
run bfloat16 48 train 110
run float32 48 train 110
run bfloat16 12 sample 60
python3 - "$OUT/results.jsonl" "${PEAK_TFLOPS:-989}" <<'PY' | tee "$OUT/summary.md"
import json, sys
peak = float(sys.argv[2]) * 1e12
print("| what | dtype | batch | median s | images/s | TFLOP/step | MFU (vs bf16 dense peak) | peak GB |")
print("|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["what"] == "calibration":
        continue
    fl = r.get("flops_per_step") or 0
    mfu = f"{fl / r['median_s'] / peak:.1%}" if fl else ""
    print(f"| {r['what']} | {r.get('dtype','')} | {r['batch']} | {r['median_s']:.4f} | "
          f"{r['images_per_s']:.1f} | {fl/1e12:.2f} | {mfu} | {r.get('peak_device_gb', 0):.1f} |")
PY
