#!/usr/bin/env bash
# The Ray executor on a GPU: one actor against a worker thread in one process, on the same card, checkpoints and
# items (bench/workers.py --executor ray). Its output is kept in $LOGS (default /tmp/pricer-gpu). From anywhere:
#     bash bench/gpu_ray.sh
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${LOGS:-/tmp/pricer-gpu}
source bench/gpu_parts.sh
export RAY_AUTH_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$py" -c "import ray, torch, sqlalchemy, alembic, pricer.evaluator.service.ray_executor
print('ray', ray.__version__, 'torch', torch.__version__, 'sqlalchemy', sqlalchemy.__version__, 'cuda', torch.cuda.is_available())" || exit 1
part ray "${RAY_S:-300}" "$py" -m bench.workers --executor ray --device cuda --workers 1 --checkpoints "${CHECKPOINTS:-8}" --items "${ITEMS:-2000}"
