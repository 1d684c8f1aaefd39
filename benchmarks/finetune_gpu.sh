#!/usr/bin/env bash
# Fine-tuning on a GPU in one call (a few minutes on an H100): steps per second and peak memory of each
# family's small size, float32 and bfloat16 autocast, then the held-out improvement on the Seattle
# temperatures. Runs from a plain checkout (the package is taken from this repository). Extra arguments
# go to every benchmarks/finetune_benchmark.py call (e.g. --batch-size 128 --context 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
report="${OUT:-benchmarks/work}/finetune_gpu.md"  # $OUT: the folder a lent device machine hands back
mkdir -p benchmarks/work "$(dirname "$report")"
{
  for dtype in float32 bfloat16; do
    echo "## speed, cuda, $dtype"
    python benchmarks/finetune_benchmark.py speed --device cuda --dtype "$dtype" --steps 20 "$@"
  done
  echo "## held-out improvement, cuda, bfloat16"
  python benchmarks/finetune_benchmark.py improvement --device cuda --dtype bfloat16 --modes full lora "$@"
} 2>&1 | tee "$report"
