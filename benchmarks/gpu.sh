#!/usr/bin/env bash
# GPU check of issue 7: the scaling benchmark and one Cora training run on CUDA, JSON to OUTDIR.
#
#   benchmarks/gpu.sh OUTDIR
#
# Budget: under 8 minutes on one H100 (each step is bounded by `timeout`). Needs a CUDA build of
# torch and the bench extra (torchdeq) for the torchdeq rows; without torchdeq the scaling run
# is repeated with --peers pyg_gatedgraphconv. Set PYTHON to pick the interpreter.
set -euo pipefail

OUT=${1:?usage: benchmarks/gpu.sh OUTDIR}
PY=${PYTHON:-python}
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("benchmarks/gpu.sh: torch.cuda.is_available() is False (torch %s)" % torch.__version__)
print("CUDA device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.csv" 2>/dev/null || true

# `pyg-rbp` without relying on the console script being installed.
PYG_RBP=("$PY" -c 'import sys; from pyg_rbp.cli import main; sys.exit(main(sys.argv[1:]))')
status=0
step() {  # step NAME SECONDS ARGS...: run one bounded command, log it, keep going on failure
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s)"
    if ! timeout "$limit" "${PYG_RBP[@]}" "$@" > "$OUT/$name.log" 2>&1; then
        echo "!! $name failed or timed out (see $OUT/$name.log)"; status=1
    fi
    tail -n 15 "$OUT/$name.log"
}

PEERS=all
"$PY" -c "import torchdeq" 2>/dev/null || { echo "torchdeq not installed: peers = pyg_gatedgraphconv"; PEERS=pyg_gatedgraphconv; }

start=$(date +%s)
# 1) The issue's full grid on Cora (every mode, both peers, target pass, float64 accuracy study).
step scaling_cora_cuda 240 bench scaling --dataset cora --device cuda --threads 0 \
    --steps 10,25,50,100,200 --backward-iter 5,10,20,50 --grads all --peers "$PEERS" \
    --repeats 10 --warmup 2 --rounds 3 --quiet --json "$OUT/scaling_cora_cuda.json"

# 2) A 100k-node / 1M-edge random graph (fewer T, one K, no accuracy study).
step scaling_random100k_cuda 90 bench scaling --dataset random --nodes 100000 --edges 1000000 --device cuda \
    --threads 0 --steps 10,50,100 --backward-iter 20 --grads all --peers "$PEERS" --repeats 5 \
    --rounds 1 --no-accuracy --quiet --json "$OUT/scaling_random100k_cuda.json"

# 3) One Cora training run on CUDA.
step train_cora_cuda 120 train --dataset cora --protocol public --model ppr --grad neumann \
    --epochs 200 --seeds 0 --device cuda --no-progress --json "$OUT/train_cora_cuda.json"
echo "benchmarks/gpu.sh: done in $(( $(date +%s) - start )) s; results in $OUT"
exit $status
