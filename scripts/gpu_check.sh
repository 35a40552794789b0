#!/usr/bin/env bash
# One prepared GPU check, at most about 8 minutes on one GPU: the CUDA-marked tests, then the
# mge-bench GPU preset at reduced steps, and the frontier study at 128² on the GPU. Figures land in
# ${OUT:-results/gpu}/ (bench/ and study/), where BENCHMARKS.md takes them from.
#
#     bash scripts/gpu_check.sh            # on a machine with a CUDA device and this checkout installed
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-results/gpu}"
mkdir -p "$out"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print("device:", torch.cuda.get_device_name(0))
PY
# 1. Every CUDA-marked test (skipped on CPU machines), about a minute.
timeout 180 python -m pytest -q -m cuda -p no:cacheprovider | tee "$out/cuda_tests.txt"
# 2. The GPU preset of mge-bench at reduced steps, about three minutes.
timeout 240 mge-bench denoise --preset gpu --steps 400 --repeats 1 --device cuda --out "$out/bench" | tail -n 40
# 3. The convergence study at 128², 3 levels, on the GPU, about two minutes.
timeout 180 python scripts/fms_convergence.py --size 128 --levels 3 --threads 8 --out "$out/study" \
    --runs single:600,single:1200,single:2400,fms:2400,pr:2400,fms:4800
python scripts/fms_report.py "$out/study/results.jsonl" | tail -n 30
