#!/usr/bin/env bash
# The GPU check, ready to run: the CUDA-only tests, CPU = GPU bitwise (draws and ZO-SGD steps), and step_cost
# for the SmolLM2 and OPT-1.3B (float16, 16 x 256) shapes beside the MeZO pattern; under 8 minutes on an H100.
#
#   bash benchmarks/gpu_check.sh                      # from a checkout; outputs under $OUT, else ./gpu_check_out
#   GPU_CHECK_INSTALL=1 bash benchmarks/gpu_check.sh  # first `make install TORCH=torch` (pip's default torch build)
#
# GPU_CHECK_STEPS (default 5): the ZO-SGD steps compared and step_cost's rounds.
# Python: $GPU_CHECK_PYTHON, else .venv/bin/python if present, else python3; the checkout is put on PYTHONPATH.
# Each part runs under its own time limit (seconds below; GPU_CHECK_TIMEOUT replaces them all) and logs to
# $OUT/<part>.log; step_cost and the bitwise check also write JSON there. Without CUDA the CUDA parts are
# skipped with the reason and the bitwise check's CPU side still runs. The summary table ends the output
# (and $OUT/summary.md); the exit status is 1 if a part failed or ran out of time.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ "${GPU_CHECK_INSTALL:-0}" = 1 ]; then
    echo "== install: make install TORCH=torch"
    make install TORCH=torch > "$OUT/install.log" 2>&1 || { tail -n 30 "$OUT/install.log"; exit 1; }
fi
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then PY=$GPU_CHECK_PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
STEPS=${GPU_CHECK_STEPS:-5}  # ZO-SGD steps compared, step_cost rounds
ROWS=()
FAILED=0

run_part() {  # name limit command...: runs it, its output to the screen and $OUT/name.log
    local name=$1 limit=${GPU_CHECK_TIMEOUT:-$2} start=$SECONDS status rc
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    case $rc in
        0) status=PASS ;;
        124 | 137) status=TIMEOUT; FAILED=1 ;;
        *) status="FAIL (exit $rc)"; FAILED=1 ;;
    esac
    ROWS+=("| $name | $status | $((SECONDS - start)) | ${NOTE:-} |")
    NOTE=
}

skip_part() {  # name reason
    echo "== $1: skipped: $2"
    ROWS+=("| $1 | SKIP | 0 | $2 |")
}

# 1. where we are: python, torch, CUDA, the card, triton, the commit
NOTE="$PY" run_part env 30 "$PY" benchmarks/gpu_check.py --env

CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$CUDA" = 1 ]; then
    REASON=
elif ! command -v nvidia-smi > /dev/null; then
    REASON="no CUDA device: nvidia-smi absent"
else
    REASON="torch sees no CUDA device (a CPU build of torch? GPU_CHECK_INSTALL=1 installs pip's default)"
fi

# 2. the CUDA-only tests: those of the test files that ask for CUDA whose names say cuda or gpu
if [ -n "$REASON" ]; then
    skip_part cuda-tests "$REASON"
else
    mapfile -t FILES < <(grep -rl --include='test_*.py' "cuda.is_available" tests | grep -v '^tests/benchmarks/' | sort)
    if [ "${#FILES[@]}" = 0 ]; then
        ROWS+=("| cuda-tests | FAIL | 0 | no test file asks torch.cuda.is_available() |"); FAILED=1
    else
        NOTE="${#FILES[@]} files, -k 'cuda or gpu'" run_part cuda-tests 75 \
            "$PY" -m pytest "${FILES[@]}" -k "cuda or gpu" -p no:cacheprovider -q -rs
    fi
fi

# 3. CPU = GPU bit for bit: draws of every law, ZO-SGD steps on a small MLP and Llama (float32)
NOTE=$([ -n "$REASON" ] && echo "CPU side only: $REASON") \
    run_part bitwise 90 "$PY" benchmarks/gpu_check.py --steps "$STEPS" --json "$OUT/bitwise.json"

# 4-5. step_cost on the GPU, the MeZO pattern beside every registered rule
if [ -n "$REASON" ]; then
    skip_part step-cost-smollm2 "$REASON"
    skip_part step-cost-opt-1.3b "$REASON"
else
    run_part step-cost-smollm2 120 "$PY" benchmarks/step_cost.py --device cuda --model smollm2-135m \
        --dtype float32 --batch 8 --seq 128 --steps "$STEPS" --memory-repeats 2 --json "$OUT/step_cost_smollm2.json"
    run_part step-cost-opt-1.3b 150 "$PY" benchmarks/step_cost.py --device cuda --model opt-1.3b \
        --dtype float16 --batch 16 --seq 256 --steps "$STEPS" --memory-repeats 2 --json "$OUT/step_cost_opt-1.3b.json"
fi

{
    echo
    echo "## GPU check summary ($OUT)"
    echo
    echo "| part | status | seconds | note |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/summary.md"
exit $FAILED
