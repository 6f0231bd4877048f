#!/usr/bin/env bash
# Issue 23's GPU check (train/gpu_check.py), run from the repository root on the GPU machine with
# .gpu/ (python -m train.gpu_check --prepare) beside it. JSON lines on stdout and in $OUT.
set -uo pipefail
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu_check_site .gpu/wheels/*.whl || exit 1
export PYTHONPATH="/tmp/gpu_check_site:$PWD" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
python3 -m train.gpu_check --out="$out/gpu_check.jsonl" "$@" 2>"$out/gpu_check_stderr.txt"
