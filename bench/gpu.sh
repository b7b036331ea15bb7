#!/usr/bin/env bash
# Everything a lent H100/H200 must show. The steps are bench/gpu/NN_*.py, run in order; each declares its budget
# (a `# budget: S` line), stops starting new work when it is spent, and writes $OUT/steps/NN_*.json;
# bench/gpu/report.py merges them into $OUT/gpu_results.json and $OUT/gpu_results.md. Add a step by adding a file
# (see bench/gpu/common.py).
#
# All steps take about eleven and a half minutes (one device call may last 10; a task gets 15 minutes of device
# time in all, start-up included). Run them in calls on the warm machine, most important first:
#   GPU_STEPS=10,20,30,40,50 bash bench/gpu.sh      (kernels and the public API, about six minutes)
#   GPU_STEPS=10,60 bash bench/gpu.sh               (the training loop, about four and a half)
#   GPU_STEPS=10,70 bash bench/gpu.sh               (cells packed per GPU, about two and a half, if time is left)
# A run with GPU_STEPS keeps the other steps' records in OUT (a run of all steps clears them): the second call's
# report holds both.
#
#   usage: bash bench/gpu.sh [--dry-run]     OUT=results folder (default /tmp/fastforget-gpu), PYTHON=interpreter,
#                                            GPU_BUDGET_S=total seconds (default 540), GPU_STEPS=NN,NN,... (the
#                                            steps to run, by number; default all)
#   --dry-run (or no CUDA): every step on the CPU, tiny shapes, Triton interpreted: proves the script, not the GPU.
#
# Liger-Kernel 0.8.5 (step 40) is installed from ./.whl when present (no network there): fetch it beforehand with
#   pip download liger-kernel==0.8.5 --no-deps -d .whl      and name .whl in the device tool's carry.
# Step 60 trains the fast recipe on real CIFAR-10 only: copy /work/shared/data/cifar10-jpeg.zip (62 MB) into an
# ignored folder of the checkout (e.g. .data/), carry it, and set FASTFORGET_DATA=.data.
set -uo pipefail

cd "$(dirname "$0")/.."
DRY=""
[ "${1:-}" = "--dry-run" ] && DRY="--dry-run"
PYTHON=${PYTHON:-python3}
export OUT=${OUT:-/tmp/fastforget-gpu}
BUDGET=${GPU_BUDGET_S:-540}
STEPS=${GPU_STEPS:-}
SLACK=30                      # seconds a step may overrun its budget before it is killed
if [ -n "$DRY" ]; then        # a CPU walk-through: slow, and nothing to save device time for
    BUDGET=${GPU_BUDGET_S:-3600}
    SLACK=600
fi
mkdir -p "$OUT/steps"
[ -z "$STEPS" ] && rm -f "$OUT"/steps/*.json   # a run of every step starts clean; GPU_STEPS keeps the others'
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 FASTFORGET_PROGRESS=${FASTFORGET_PROGRESS:-0}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PWD/.cache/inductor}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/.cache/triton}  # step 20's AOT compiles land where tests look

if ls .whl/liger_kernel-*.whl >/dev/null 2>&1; then
    LIGER=/tmp/fastforget-liger
    "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$LIGER" .whl/liger_kernel-*.whl \
        && export PYTHONPATH="$PYTHONPATH:$LIGER" && echo "Liger-Kernel installed from $(ls .whl/liger_kernel-*.whl)"
else
    echo "Liger-Kernel wheel ABSENT (.whl/liger_kernel-*.whl): step 40 will say so; see the comment above"
fi

start=$(date +%s)
status=0
for step in bench/gpu/[0-9][0-9]_*.py; do
    name=$(basename "$step" .py)
    if [ -n "$STEPS" ] && [[ ",$STEPS," != *",${name%%_*},"* ]]; then
        continue
    fi
    rm -f "$OUT/steps/$name.json"
    planned=$(sed -n 's/^# budget: *\([0-9]*\).*/\1/p' "$step" | head -1)
    left=$((BUDGET - ($(date +%s) - start)))
    if [ "$left" -lt 15 ]; then
        echo "== $name: SKIPPED, the ${BUDGET} s budget is spent"
        status=1
        continue
    fi
    budget=$(( ${planned:-60} < left ? ${planned:-60} : left ))
    echo "== $name (budget ${budget} s, ${left} s left in all)"
    timeout --kill-after=10 $((budget + SLACK)) "$PYTHON" "$step" --out "$OUT" --budget-s "$budget" $DRY 2>&1 \
        | tee "$OUT/steps/$name.log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "== $name exited with status $rc"
        status=1
    fi
done
"$PYTHON" bench/gpu/report.py --out "$OUT" >/dev/null && echo "== results: $OUT/gpu_results.md, $OUT/gpu_results.json"
echo "== done in $(( $(date +%s) - start )) s, exit $status"
exit $status
