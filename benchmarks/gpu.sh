#!/usr/bin/env bash
# The GPU benchmark in one call (a few minutes on an H100): speed tables for the small and base sizes,
# agreement with the CPU, a whole `moirai forecast` process. Runs from a plain checkout: the package is
# taken from this repository, so only torch, numpy, pandas, pyarrow, typer, rich, safetensors and
# huggingface_hub must be installed. Extra arguments go to benchmarks/gpu_benchmark.py (--profile, --budget).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
report="${OUT:-benchmarks/work}/gpu_benchmark.md"  # $OUT: the folder a lent device machine hands back
mkdir -p benchmarks/work "$(dirname "$report")"
python benchmarks/gpu_benchmark.py "$@" 2>&1 | tee "$report"
