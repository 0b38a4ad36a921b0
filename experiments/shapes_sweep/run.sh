#!/usr/bin/env bash
# Device run: shapes GAN variants side by side on one GPU, each for LIMIT seconds.
#   VARIANTS  "name[:arg,arg...] ..." (args: --crop, --dcgan[=W], --preset=P or key=value
#             config overrides; see sweep.py)
#   PACK      pack directory (default sweep_pack; carry it), LIMIT seconds per variant,
#   FRAC      GPU memory fraction per variant. Output in $OUT (default /tmp/sweep_out).
# Installs ml-collections/Pillow from .gpu_wheels/ when the machine lacks them.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/sweep_out}; LIMIT=${LIMIT:-430}; FRAC=${FRAC:-0.12}; PACK=${PACK:-sweep_pack}
VARIANTS=${VARIANTS:-"crop:--crop plain df32:model.df_dim=32"}
mkdir -p "$OUT"
source launch/gpu_wheels.sh "ml_collections, PIL"
# No PYTHONPATH: `python -m` from the repository root finds the package and configs/.
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
[ -f "$PACK/images.npy" ] || JAX_PLATFORMS=cpu python3 -m experiments.shapes_sweep.render_images "$PACK" || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for v in $VARIANTS; do
  name=${v%%:*}; args=()
  [ "$name" != "$v" ] && IFS=, read -r -a args <<<"${v#*:}"
  XLA_PYTHON_CLIENT_MEM_FRACTION=$FRAC timeout $((LIMIT + 60)) python3 -m experiments.shapes_sweep.sweep \
    "$PACK" "$OUT" "$name" "$LIMIT" "${args[@]}" >"$OUT/$name.log" 2>&1 &
done
wait
for f in "$OUT"/*.jsonl; do grep -h '"eval"' "$f" | tail -3 | cut -c1-300; done
grep -h Traceback -A3 "$OUT"/*.log | head -40
