#!/usr/bin/env bash
# The GPU benchmark of issue 15 as one command: benchmarks/speed.py on CUDA — the VGG at 64³ and 96³
# (naive loop, fast path, roofline against the GPU's measured float32 matmul rate, K outputs, one vs two
# masks, bf16 autocast, Captum methods, memory) and the poster's scale (Rebsamen-size AlexNet3D, one 256³
# input, all 165 outputs at the early and the default layer, nothing extrapolated).
#
#   bash benchmarks/gpu_run.sh                      # writes benchmarks/logs/speed_gpu/{speed.md,speed.json,speed.log}
#   POSTER_IBS=32 bash benchmarks/gpu_run.sh        # smaller internal batches if the GPU has less memory
#   bash benchmarks/gpu_run.sh --quick              # smoke test of this script (speed_quick.* in the same folder)
#
# Extra arguments go to speed.py. PYTHON (default python) and OUT (default benchmarks/logs/speed_gpu) may be
# set in the environment. Fails before running anything if torch sees no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-benchmarks/logs/speed_gpu}
POSTER_IBS=${POSTER_IBS:-165}
"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_run.sh: no CUDA device (torch.cuda.is_available() is False)")'
mkdir -p "$OUT"
"$PYTHON" benchmarks/speed.py --device cuda --sizes 64 96 --poster-scale --poster-outputs 165 \
    --poster-ibs "$POSTER_IBS" --out "$OUT" "$@" 2>&1 | tee "$OUT/speed.log"
