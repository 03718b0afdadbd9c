# What bench/gpu.sh and bench/gpu_profile.sh share (sourced, from the repository root): quiet output, the
# interpreter, and `part`, which runs one part under a time limit.
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
py=${PYTHON:-python3}  # the interpreter that holds torch
mkdir -p "$logs"

part() {  # part NAME SECONDS COMMAND...: one part under a time limit; the end of its output shown, all of it in $logs
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most $limit s)"
    SECONDS=0
    timeout "$limit" "$@" > "$logs/$name.log" 2>&1
    local rc=$?
    grep -v -e "it/s]" -e "^[[:space:]]*$" -e "GET /health" "$logs/$name.log" | tail -n "${TAIL:-25}"
    echo "== $name: exit $rc after $SECONDS s"
}
