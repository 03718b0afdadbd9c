#!/usr/bin/env bash
# QLoRA with the course preset on an 8B-shaped random Llama: steps/s and peak GPU memory.
# Run from the repository root on a CUDA machine with pricer installed (pip install -e ".[gpu]").
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python bench/train_gpu.py --shape 8b --steps "${STEPS:-10}" "$@"
