#!/usr/bin/env bash
# The GPU checks this repository still owes (issues 25 and 27), in one command on a lent GPU
# machine, after benchmarks/device_setup.sh and export PYTHONPATH=/tmp/site:$PWD:
#   bash benchmarks/gpu_open_checks.sh OUT_DIR
# 1. the GPU tests of the fused LSTM, GPU mixing and the step graph;
# 2. whether the model learns with each LSTM kernel and dtype (bf16 + fused kernels did not,
#    2026-12-04: README, "Training speed");
# 3. the chunked enhance of an hour on the GPU (peak memory, equality with the whole forward).
set -u
OUT=${1:?usage: bash benchmarks/gpu_open_checks.sh OUT_DIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
timeout 300 python3 -m pytest -q -p no:cacheprovider -m "gpu or not slow" \
    tests/test_fused_lstm.py tests/test_batch_mixing.py tests/test_train_loop.py \
    -k "cuda or gpu or graph" > "$OUT/gpu_tests.txt" 2>&1
tail -3 "$OUT/gpu_tests.txt"
timeout 300 python3 benchmarks/gpu_lstm.py --learn 2>&1 | tee "$OUT/learn.txt"
timeout 150 python3 benchmarks/gpu_chunked_check.py 2>&1 | tee "$OUT/chunked.txt"
