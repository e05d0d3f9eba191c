#!/usr/bin/env bash
# GPU check in one short script (a few minutes): the CUDA-marked tests, then predict/sample timed on the GPU
# (fpn-resnet50, T = 20, 512x512) next to the bare forward loop, with CPU/GPU agreement.
# On a machine without a CUDA device it prints a skip message and exits 0.
#
#   benchmarks/gpu.sh                 # uses $PYTHON or python3
#   CASES=32 benchmarks/gpu.sh        # fewer cases
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu.sh: SKIP - no CUDA device visible to torch ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo 'torch not importable')); nothing to run"
    exit 0
fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "== CUDA tests =="
"$PY" -m pytest -q -m cuda tests
echo "== predict / sample on the GPU (fpn-resnet50, T=20, 512x512) =="
"$PY" benchmarks/bench_gpu.py --cases "${CASES:-64}" --work "${WORK:-/tmp/uqseg-gpu}"
