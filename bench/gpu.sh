#!/usr/bin/env bash
# One-pass pricing on a GPU (8B-shaped random Llama, nf4 and bf16, rank-32 adapter): items/s, swap time,
# peak memory, share of the FLOP bound. Under 8 minutes on an H100-class card. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -m bench.gpu_pricing --items "${ITEMS:-512}" --batch-size "${BATCH:-64}" "$@"
