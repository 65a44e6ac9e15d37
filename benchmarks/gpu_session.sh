#!/usr/bin/env bash
# Everything phiscale checks on a lent GPU, in one go (see README "GPU checks"). Run from the repo
# root on the GPU machine, with the wheels DeepSpeed needs in .whl/ (pure-Python deepspeed built
# here with DS_BUILD_OPS=0, plus hjson and pydantic). Results go to $OUT (or ./gpu-results).
set -uo pipefail
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PHISCALE_CACHE=/tmp/phiscale-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, lightning, deepspeed; print('torch', torch.__version__, 'lightning', lightning.__version__, 'deepspeed', deepspeed.__version__)" | tee -a "$OUT/gpu.txt"
echo "== pytest -m gpu"
timeout 120 python3 -m pytest -q -p no:cacheprovider --tb=short -W ignore -m gpu tests/gpu 2>&1 | tail -40 | tee "$OUT/pytest_gpu.txt"
echo "== DeepSpeed ZeRO-2 vs DDP, efficientnet_b0 @ 224"
timeout 200 python3 benchmarks/gpu_check.py 2>&1 | tail -25 | tee "$OUT/gpu_check.txt"
echo "== training-loop overhead on GPU"
timeout 120 python3 benchmarks/overhead.py --device cuda --precision bf16-mixed --model efficientnet_b0 \
  --resolution 224 --batch-size 128 --steps 50 --warmup 15 --repeats 2 --no-mlflow 2>&1 | tail -6 | tee "$OUT/overhead_gpu.txt"
