#!/usr/bin/env bash
# Every GPU figure in one go, each part under its own time limit (about 6 minutes on an H200):
#   pricing  one-pass pricing on an 8B-shaped random Llama, nf4 and bf16, rank-32 adapter (bench/gpu_pricing.py)
#   eval     evaluation throughput against the course's loop on the same card (bench/eval_throughput.py --device cuda)
#   load     POST /predict under load, the client on the other half of the cores (bench/predict_load.py --device cuda)
# Each part's whole output is kept in $LOGS (default /tmp/pricer-gpu). Run from anywhere:
#     bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${LOGS:-/tmp/pricer-gpu}
source bench/gpu_parts.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$py" -c "import torch, transformers, peft, bitsandbytes, fastapi, pricer.evaluator.scoring
print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__,
      'bitsandbytes', bitsandbytes.__version__, 'cuda', torch.cuda.is_available())" || exit 1

half=$(( $(nproc) / 2 ))
part pricing "${PRICING_S:-270}" "$py" -m bench.gpu_pricing
part eval "${EVAL_S:-130}" "$py" -m bench.eval_throughput --device cuda --items 300 --fetch-delay 0
part load "${LOAD_S:-100}" "$py" -m bench.predict_load --device cuda --seconds 4 --client-cores "$half-$(( half * 2 - 1 ))"
