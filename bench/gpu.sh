#!/usr/bin/env bash
# Kernel checks for a lent H100/H200, in one call of about 6 minutes at most:
#   1. the kernel tests on CUDA tensors (the Triton kernels compiled for the GPU, not interpreted),
#   2. timings of naive eager / compiled reference / fused kernel against the copy floor (bench/gpu_check.py).
# Results and logs go to $OUT (or /tmp/kernels-gpu). Without a GPU, step 2 runs as a CPU dry run and step 1
# is skipped with a message.
#   usage: bash bench/gpu.sh            (from anywhere; PYTHON=... picks the interpreter, default python3)
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${OUT:-/tmp/kernels-gpu}
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PWD/.cache/inductor}
status=0

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$RESULTS/gpu.txt"
"$PYTHON" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__,
"cuda", torch.cuda.is_available())' 2>&1 | tee -a "$RESULTS/gpu.txt"

echo "== 1. kernel tests on CUDA"
if "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    KERNELS_TEST_DEVICE=cuda TRITON_INTERPRET=0 timeout 200 "$PYTHON" -m pytest -q -p no:cacheprovider \
        tests/test_reweighted_cross_entropy.py tests/test_tv_distance.py 2>&1 | tee "$RESULTS/tests.log"
    test_status=${PIPESTATUS[0]}
    echo "kernel tests exit status: $test_status" | tee -a "$RESULTS/tests.log"
    [ "$test_status" -eq 0 ] || status=1
else
    echo "no CUDA device: skipping the CUDA kernel tests (run them here with TRITON_INTERPRET=1 instead)"
fi

echo "== 2. timings"
timeout 260 "$PYTHON" bench/gpu_check.py --out "$RESULTS" --budget-s 180 2>&1 | tee "$RESULTS/timings.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== done (exit $status); results in $RESULTS"
exit $status
