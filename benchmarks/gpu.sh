#!/usr/bin/env bash
# GPU checks, JSON to OUTDIR: issue 7 (the scaling benchmark and one Cora training run on CUDA)
# and issue 17 (full-graph training on an ogbn-products-sized graph: Neumann at T=100, BPTT's
# largest T before out-of-memory; one 2-process NCCL training run when two GPUs are present).
#
#   benchmarks/gpu.sh OUTDIR
#
# Budget: every step is bounded by `timeout`, and the whole script by BUDGET_S seconds (default
# 540): a step gets at most what is left, and a step with under 20 s left is skipped with a
# message. GPU_STEPS=name,name runs only those steps (names below, e.g.
# GPU_STEPS=graph_size_products_cuda,train_ddp_nccl), so a later call can finish what an
# earlier one skipped. Needs a CUDA build of torch and the bench extra (torchdeq) for the
# torchdeq rows; without torchdeq the scaling run uses --peers pyg_gatedgraphconv. Set PYTHON
# to pick the interpreter.
set -euo pipefail

OUT=${1:?usage: benchmarks/gpu.sh OUTDIR}
PY=${PYTHON:-python}
BUDGET_S=${BUDGET_S:-540}
GPU_STEPS=${GPU_STEPS:-all}
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("benchmarks/gpu.sh: torch.cuda.is_available() is False (torch %s)" % torch.__version__)
print("CUDA device:", torch.cuda.get_device_name(0), "| devices:", torch.cuda.device_count(),
      "| torch", torch.__version__)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.csv" 2>/dev/null || true

# `pyg-rbp` without relying on the console script being installed.
PYG_RBP=("$PY" -c 'import sys; from pyg_rbp.cli import main; sys.exit(main(sys.argv[1:]))')
status=0
start=$(date +%s)
wanted() { [[ "$GPU_STEPS" == all || ",$GPU_STEPS," == *",$1,"* ]]; }
step() {  # step NAME SECONDS ARGS...: run one bounded command, log it, keep going on failure
    local name=$1 limit=$2; shift 2
    wanted "$name" || { echo "== $name: not in GPU_STEPS, skipped"; return 0; }
    local left=$(( BUDGET_S - ($(date +%s) - start) ))
    if (( left < 20 )); then
        echo "!! $name skipped: ${left}s of the ${BUDGET_S}s budget left (rerun with GPU_STEPS=$name)"
        status=1; return 0
    fi
    (( limit > left )) && limit=$left
    echo "== $name (limit ${limit}s)"
    if ! timeout "$limit" "${PYG_RBP[@]}" "$@" > "$OUT/$name.log" 2>&1; then
        echo "!! $name failed or timed out (see $OUT/$name.log)"; status=1
    fi
    tail -n 15 "$OUT/$name.log"
}

PEERS=all
"$PY" -c "import torchdeq" 2>/dev/null || { echo "torchdeq not installed: peers = pyg_gatedgraphconv"; PEERS=pyg_gatedgraphconv; }

# 1) The issue's full grid on Cora (every mode, both peers, target pass, float64 accuracy study).
step scaling_cora_cuda 240 bench scaling --dataset cora --device cuda --threads 0 \
    --max-iter 10,25,50,100,200 --backward-iter 5,10,20,50 --grad all --peers "$PEERS" \
    --repeats 10 --warmup 2 --rounds 3 --no-progress --json "$OUT/scaling_cora_cuda.json"

# 2) A 100k-node / 1M-edge random graph (fewer T, one K, no accuracy study).
step scaling_random100k_cuda 90 bench scaling --dataset random --nodes 100000 --edges 1000000 --device cuda \
    --threads 0 --max-iter 10,50,100 --backward-iter 20 --grad all --peers "$PEERS" --repeats 5 \
    --rounds 1 --no-accuracy --no-progress --json "$OUT/scaling_random100k_cuda.json"

# 3) One Cora training run on CUDA.
step train_cora_cuda 120 train --dataset cora --protocol public --model ppr --grad neumann \
    --epochs 200 --seeds 0 --device cuda --no-progress --json "$OUT/train_cora_cuda.json"

# 4) Issue 17, section 2 on an ogbn-products-sized power-law graph (2,449,029 nodes, 61,859,140
#    edges, drawn on the GPU): Neumann full-graph at T=100, K=20; BPTT at T=100 (expected to run
#    out of device memory: caught, with the step where it failed), then the largest T at which
#    BPTT trains, by bisection below that step, each try in its own subprocess. Peak memory is
#    torch.cuda.max_memory_allocated after reset_peak_memory_stats.
step graph_size_products_cuda 240 bench graph-size --device cuda --threads 0 \
    --graphs powerlaw:2449029:61859140 --grad neumann,bptt --max-iter 100 --backward-iter 20 \
    --largest-steps bptt --repeats 3 --step-budget-s 20 --timeout-s 120 --no-progress \
    --json "$OUT/graph_size_products_cuda.json"

# 5) Issue 17, section 4: one 2-process data-parallel training run over NCCL, when the machine
#    has two GPUs and `pyg-rbp train` has --world-size (skipped with a message otherwise).
if wanted train_ddp_nccl; then
    ngpu=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
    if (( ngpu < 2 )); then
        echo "== train_ddp_nccl skipped: $ngpu CUDA device(s), the NCCL run needs 2"
    elif ! "${PYG_RBP[@]}" train --help 2>/dev/null | grep -q -- "--world-size"; then
        echo "== train_ddp_nccl skipped: this pyg-rbp train has no --world-size option"
    else
        step train_ddp_nccl 120 train --dataset cora --protocol public --model ppr --grad neumann \
            --epochs 100 --seeds 0 --device cuda --world-size 2 --no-progress \
            --json "$OUT/train_ddp_nccl.json"
    fi
fi
echo "benchmarks/gpu.sh: done in $(( $(date +%s) - start )) s; results in $OUT"
exit $status
