#!/usr/bin/env bash
# The GPU checks in one go (under 10 minutes on one H100): the training benchmark, the CUDA tests, two epochs
# of the paper's PGD-AT run through the real training loop, and the benchmark with the attack's BatchNorm not
# folded into the convolutions (what folding adds on the GPU; for eager steps, add --no-graphs --tag eager),
# and bf16 vs fp32 evaluation of a quick-tier run's weights where they are present (carry the run folder).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default OUT_DIR: benchmarks/results
#
# Each part has its own time limit, so one that hangs or fails does not cost the others.
set -u
out=${1:-benchmarks/results}
py=${PYTHON:-python}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

echo "== benchmark (memlib with CUDA graph replay)"
timeout 200 $py benchmarks/bench_train.py --width 1 --reps 5 --batches 60 --out "$out"

echo "== CUDA tests"
CUBLAS_WORKSPACE_CONFIG=:4096:8 timeout 150 $py -m pytest -q tests/test_cuda.py

echo "== the paper's PGD-AT run, 2 epochs (lr decay after epoch 1 only to satisfy the schedule's check)"
runs=$(mktemp -d)
timeout 110 $py -m memlib train params/runs/paper-pgd_at.yaml epochs=2 "lr_milestones=[1]" out_dir="$runs" \
    progress=false
cp "$runs"/*/metrics.jsonl "$out/paper-pgd_at-2-epochs.metrics.jsonl" 2>/dev/null

echo "== benchmark, memlib with the attack's BatchNorm not folded (fold_bn: false)"
timeout 120 $py benchmarks/bench_train.py --width 1 --reps 5 --batches 60 --no-fold --tag nofold --aa-n 20 \
    --out "$out"

run=outputs/quick/runs/cifar10-resnet18-pgd_at-7e5bbcbfc9
if [ -f "$run/final.pt" ]; then
    echo "== bf16 vs fp32 evaluation on the GPU (amp_check.py)"
    timeout 120 $py benchmarks/amp_check.py "$run" --n 1000 --out "$out"
fi
