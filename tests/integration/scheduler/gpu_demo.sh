#!/usr/bin/env bash
# The demo on a real GPU (label gpu): sluiced with PyTorch RT and BE clients, without and with
# sluice. Exits 77 (skipped) where there is no NVIDIA GPU with PyTorch. Writes its figures to the
# build directory (scheduler_scenario_gpu.{json,md}) for committing under bench/results/.
#
#   gpu_demo.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 source=$2
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no NVIDIA GPU: skipped"
  exit 77
fi
if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  echo "no PyTorch with CUDA: skipped"
  exit 77
fi
exec python3 "$source/scripts/demo.d/scenario.py" --build "$build" --mode gpu --duration 5 \
  --out-json "$build/scheduler_scenario_gpu.json" --out-md "$build/scheduler_scenario_gpu.md"
