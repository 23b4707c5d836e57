#!/usr/bin/env bash
# The GPU check of this package, for a one-GPU machine without network (e.g. an H200 lent for a
# few minutes). Run in the repository root, after benchmarks/gpu_prepare.sh made local/gpu/:
#
#     benchmarks/gpu_check.sh [GPU_DIR] [STEPS]
#
# GPU_DIR (default local/gpu): wheels/ and shared/{data,vendor}. STEPS (default all, in this
# order): setup,env,tests,smoke,nccl,mnist,miniboone,torchrun,torchprune. Each step has its own
# timeout, cut further so the whole run stays within GPU_CHECK_BUDGET_S (default 480 s); a
# failing step does not stop the others. Writes into $OUT (default ./gpu_out):
#   summary.txt     one PASS / FAIL / TIMEOUT / SKIP line per step, with its wall time
#   results.jsonl   the helpers' JSON lines (timings, NFE, losses)
#   gpu_check.log   everything every step printed
#   torchprune.log  torchprune's own output (last 3,000 lines)
# Data, for timing only: MNIST's real test split (the only one at hand) is also written as the
# training split, and MINIBOONE's 1,523 real rows are tiled to the 36,488 rows of the real file.
set -u
gpu_dir=$(cd "${1:-local/gpu}" && pwd) || { echo "error: ${1:-local/gpu} not found; run benchmarks/gpu_prepare.sh" >&2; exit 2; }
steps=",${2:-setup,env,tests,smoke,nccl,mnist,miniboone,torchrun,torchprune},"
out=${OUT:-$PWD/gpu_out}
work=/tmp/gpu_check
budget=${GPU_CHECK_BUDGET_S:-480}
device=${GPU_CHECK_DEVICE:-cuda}  # cpu: a dry run of the script's plumbing on a machine without a GPU
mkdir -p "$out"
rm -rf "$work"
mkdir -p "$work"
log=$out/gpu_check.log
summary=$out/summary.txt
results=$out/results.jsonl
: >"$log"; : >"$summary"; : >"$results"
start=$(date +%s)
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TQDM_MININTERVAL=30
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}

# step NAME CAP_SECONDS COMMAND...: run COMMAND (a bash string) with a timeout, log it, summarise
step() {
    local name=$1 cap=$2 cmd=$3
    [[ $steps == *",$name,"* ]] || return 0
    local left=$((budget - ($(date +%s) - start)))
    local limit=$((cap < left ? cap : left))
    if ((limit < 15)); then
        printf 'SKIP     %-11s   (the %ss budget is spent)\n' "$name" "$budget" | tee -a "$summary"
        return 0
    fi
    printf '\n===== %s (timeout %ss): %s\n' "$name" "$limit" "$cmd" >>"$log"
    local t0 rc t1 status
    t0=$(date +%s%N)
    timeout -k 5 "$limit" bash -c "$cmd" >"$work/step.out" 2>&1
    rc=$?
    t1=$(date +%s%N)
    cat "$work/step.out" >>"$log"
    grep -E '^\{' "$work/step.out" >>"$results"
    grep -E '^CHECK ' "$work/step.out" | sed 's/^CHECK /         /' >>"$work/checks"
    if ((rc == 0)); then status=PASS; elif ((rc == 124 || rc == 137)); then status=TIMEOUT; else status=FAIL; fi
    printf '%-8s %-11s %6ss  rc=%s\n' "$status" "$name" "$(((t1 - t0) / 1000000000))" "$rc" | tee -a "$summary"
    [ -s "$work/checks" ] && tee -a "$summary" <"$work/checks" && rm "$work/checks"
    return 0
}

# -- setup: the missing wheels, then this package (no dependencies, offline) ------------------
if [[ $steps == *",setup,"* ]]; then
    step setup 90 "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site $gpu_dir/wheels/*.whl && \
        python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . ; \
        python3 -c 'import torchdyn.numerics, torchprune_flows; print(\"imports ok\", torchprune_flows.__file__)' && \
        (command -v torchprune-flows || echo 'no torchprune-flows script: the launcher runs as python -m torchprune_flows.runner')"
fi

# -- (a) environment facts --------------------------------------------------------------------
step env 40 "nvidia-smi; nproc; free -g | head -2; python3 - <<'EOF'
import sys, torch
print('python', sys.version.split()[0])
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())
print('gpus', torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
print('nccl', torch.cuda.nccl.version())
EOF
python3 -m pip list 2>/dev/null | grep -iE '^(torch|torchvision|torchdiffeq|torchdyn|torchcde|torchsde|numpy|scipy|pyyaml|tqdm|matplotlib|pandas|h5py|pytest|ray|setuptools|torchprune-flows) '"

# -- (b) the device tests (CUDA ones run here; the CPU ones are 'meta'-device checks) and a smoke test
step tests 120 "python3 -m pytest tests/test_device_placement.py -q -p no:cacheprovider"
step smoke 90 "python3 benchmarks/gpu_smoke.py --repeats 2"

# -- (f, first part) our collectives over a real NCCL group (one rank, reported as two) -------
step nccl 90 "torchrun --standalone --nproc_per_node=1 benchmarks/gpu_collectives.py"

# -- (c) MNIST, the paper's batch 200: the first iterations, the epoch extrapolated -----------
mkdir -p "$work/data/MNIST/raw" "$work/data/miniboone"
for part in images-idx3 labels-idx1; do  # the test split, also as the training split (timing only)
    cp "$gpu_dir/shared/data/mnist/t10k-$part-ubyte.gz" "$work/data/MNIST/raw/t10k-$part-ubyte.gz"
    cp "$gpu_dir/shared/data/mnist/t10k-$part-ubyte.gz" "$work/data/MNIST/raw/train-$part-ubyte.gz"
done
step mnist 150 "echo 'data: the MNIST test split written as the training split too (9,000 training images, 45 iterations an epoch; the real split: 54,000, 270)'; \
    python3 benchmarks/gpu_epoch.py experiment_configs/ffjord/mnist.yaml --device $device \
    --set directories.training_data=$work/data --budget-s 60 --max-iterations 45 --eval-batches 2 --full-train-rows 54000"

# -- (d) MINIBOONE paper config: per-iteration timing, then its first epochs through the runner
python3 -c "
import numpy as np
rows = np.load('$gpu_dir/shared/data/miniboone/first_rows.npy')
np.save('$work/data/miniboone/data.npy', np.tile(rows, (-(-36488 // len(rows)), 1))[:36488])
" 2>>"$log"
step miniboone 120 "echo 'data: the 1,523 real MINIBOONE rows tiled to 36,488 rows (timing only; losses mean nothing)'; \
    python3 benchmarks/gpu_epoch.py experiment_configs/ffjord/miniboone.yaml --device $device \
        --set directories.training_data=$work/data --budget-s 15 --max-iterations 30 --eval-batches 2 && \
    python3 -m experiment experiment_configs/ffjord/miniboone.yaml --device $device --set training.numEpochs=2 \
        --set experiments.mode=train --set experiments.numNets=1 --set directories.training_data=$work/data \
        --out $work/miniboone && \
    python3 -c \"
import glob, json
for path in sorted(glob.glob('$work/miniboone/logs/*.jsonl')):
    for line in open(path):
        r = json.loads(line)
        print(json.dumps({'miniboone_cli_epoch': r.get('epoch'), 'seconds': round(r.get('seconds', 0), 2),
                          'batches': r.get('batches'), 'nfe_forward': r.get('nfe_forward'),
                          'nfe_backward': r.get('nfe_backward'), 'train_loss': r.get('train_loss')}))
\" && cat $work/miniboone/results.csv"

# -- (f) torchrun: the pipeline under torchrun (1 process), then 2 processes on the one GPU -----
step torchrun 200 "benchmarks/gpu_torchrun.sh $work $device"

# -- (e) torchprune's own runner through our launcher (it uses cuda:0 whenever a GPU exists) --
step torchprune 150 "python3 benchmarks/gpu_torchprune.py $gpu_dir/shared/data $work/torchprune --epochs 3 --timeout 130"
[ -f "$work/torchprune/torchprune_output.log" ] && tail -n 3000 "$work/torchprune/torchprune_output.log" >"$out/torchprune.log"

printf 'total %ss of a %ss budget\n' "$(($(date +%s) - start))" "$budget" | tee -a "$summary"
