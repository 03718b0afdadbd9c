#!/usr/bin/env bash
# Profiles behind bench/gpu.sh's figures, each part under its own time limit (about 4 minutes on an H200):
#   pricing  kernel time by kind for the 8B shape's merged forward passes, and torch.compile beside eager (bench/gpu_profile.py)
#   eval     a cProfile of `Evaluator.evaluate` on the GPU (bench/eval_throughput.py --profile)
#   predict  py-spy samples of the unbatched server at 8 clients and the batched one at 32 (bench/predict_load.py);
#            py-spy from $PY_SPY or the PATH, skipped when there is none
# Logs and samples in $LOGS (default /tmp/pricer-gpu-profile).
#     bash bench/gpu_profile.sh
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${LOGS:-/tmp/pricer-gpu-profile}
source bench/gpu_parts.sh
spy=${PY_SPY:-$(command -v py-spy || true)}

sample() {  # sample LOG LINE SERVER_INDEX OUT: once LINE is in LOG, 3 s of py-spy samples of the nth server started
    local log=$1 line=$2 index=$3 out=$4
    until grep -q -- "$line" "$log" 2>/dev/null; do sleep 0.2; done
    local pid
    pid=$(pgrep -f "cli.main -v serve" | sort -n | sed -n "${index}p")
    "$spy" record --pid "$pid" --duration 3 --rate 200 --threads --nonblocking --format raw --output "$out" > /dev/null 2>&1 \
        || echo "py-spy could not sample $pid"
}

predict() {
    if [ -n "$spy" ]; then
        sample "$logs/predict.out" "batching off,  1 clients" 1 "$logs/predict-off-8.txt" &
        sample "$logs/predict.out" "batching  on,  8 clients" 2 "$logs/predict-on-32.txt" &
    fi
    half=$(( $(nproc) / 2 ))
    "$py" -m bench.predict_load --device "${DEVICE:-cuda}" --seconds 4 --client-cores "$half-$(( half * 2 - 1 ))" | tee "$logs/predict.out"
    wait
}

part pricing "${PRICING_S:-200}" "$py" -m bench.gpu_profile
TAIL=45 part eval "${EVAL_S:-50}" "$py" -m bench.eval_throughput --device "${DEVICE:-cuda}" --items 300 --fetch-delay 0 --skip-baseline --profile
export -f predict sample
export logs py spy
part predict "${PREDICT_S:-80}" bash -c predict
for f in "$logs"/predict-*.txt; do  # the hottest frames of each sample: leaf functions by share of samples
    [ -f "$f" ] || continue
    echo "== $f: $(awk '{s += $NF} END {print s}' "$f") samples; top leaf frames"
    awk '{n = $NF; $NF = ""; k = split($0, fr, ";"); leaf = fr[k]; gsub(/^ +| +$/, "", leaf); c[leaf] += n; t += n}
         END {for (l in c) printf "%5.1f%%  %s\n", 100 * c[l] / t, l}' "$f" | sort -rn | head -12
done
