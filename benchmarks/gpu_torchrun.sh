#!/usr/bin/env bash
# Step (f) of benchmarks/gpu_check.sh: torchrun on a one-GPU machine.
#
#     benchmarks/gpu_torchrun.sh WORK_DIR [DEVICE]
#
# 1. The whole pipeline (train, prune WT and FT, retrain, evaluate) of a short quickstart on the
#    GPU under torchrun with one process (WORLD_SIZE 1: no process group; the exit status).
# 2. Two processes on the one GPU through our launcher: it must refuse with one 'error:' line
#    (NCCL needs a GPU per process).
# 3. NCCL itself with two ranks sharing the GPU (benchmarks/gpu_collectives.py --share-gpu):
#    NCCL normally refuses; what happened is reported, not required.
# Lines starting with 'CHECK ' are copied into gpu_check.sh's summary.
set -u
work=$1
device=${2:-cuda}
quick=(experiment_configs/quickstart.yaml --device "$device" --set training.numEpochs=3 --set retraining.startEpoch=2
       --set 'experiments.spacing=[{type: manual, values: [0.5]}]')

torchrun --standalone --nproc_per_node=1 -m torchprune_flows.runner "${quick[@]}" --out "$work/quick1" &&
    cat "$work/quick1/results.csv"
rc=$?
echo "CHECK $([ $rc -eq 0 ] && echo PASS || echo FAIL) quickstart under torchrun, 1 process: exit $rc"

timeout 60 torchrun --standalone --nproc_per_node=2 -m torchprune_flows.runner "${quick[@]}" --out "$work/quick2" \
    >"$work/two.out" 2>&1
two=$?
refusal=$(grep -m1 'error: torchrun started' "$work/two.out")
if [ $two -ne 0 ] && [ -n "$refusal" ]; then
    echo "CHECK PASS 2 processes, 1 GPU, our launcher refuses: $refusal"
else
    echo "CHECK FAIL 2 processes, 1 GPU, our launcher: exit $two, no refusal line"
    tail -5 "$work/two.out"
fi

NCCL_DEBUG=WARN timeout 60 torchrun --standalone --nproc_per_node=2 benchmarks/gpu_collectives.py --share-gpu \
    >"$work/share.out" 2>&1
share=$?
echo "CHECK INFO NCCL with 2 ranks sharing 1 GPU: exit $share (details in gpu_check.log)"
grep -E '^\{|NCCL WARN|Duplicate|ncclInvalidUsage' "$work/share.out" | head -8
exit $rc
