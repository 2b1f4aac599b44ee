#!/usr/bin/env bash
# The paper protocol's remaining seeds (issue 4) on one GPU, resuming the committed cells.
#
#   benchmarks/gpu_paper.sh OUTDIR [JOBS] [LIMIT_S]
#
# Copies benchmarks/results into OUTDIR/results, runs the Cora and CiteSeer paper rows (five
# modes x 10 seeds, 2000 SGD steps each) with JOBS cells at once on CUDA (default 8; the cells are
# small, so several processes share the GPU) for at most LIMIT_S seconds (default 480), and packs
# the cells it finished into OUTDIR/paper_cells.tar.gz. Unpack that into benchmarks/results/cells
# and re-render the board with `pyg-rbp leaderboard ... --render-only`. A cell cut by the limit is
# simply not there; the next run trains it. Needs a CUDA build of torch and the Cora/CiteSeer raw
# files under $PYG_RBP_DATA (or ./datasets). Set PYTHON to pick the interpreter.
set -uo pipefail

OUT=${1:?usage: benchmarks/gpu_paper.sh OUTDIR [JOBS] [LIMIT_S]}
JOBS=${2:-8}
LIMIT=${3:-480}
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu only to try the script's plumbing
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DEVICE" = cuda ]; then
    "$PY" -c "import sys, torch; torch.cuda.is_available() or sys.exit('gpu_paper.sh: no CUDA')" || exit 1
fi

rm -rf "$OUT/results" && cp -r benchmarks/results "$OUT/results"
touch "$OUT/.start"
timeout --signal=INT "$LIMIT" "$PY" -c 'import sys; from pyg_rbp.cli import main; sys.exit(main(sys.argv[1:]))' \
    leaderboard --datasets cora,citeseer --protocols paper --profile full --seeds 10 --device "$DEVICE" \
    --jobs "$JOBS" --threads 1 --no-progress --results "$OUT/results" --board "$OUT/LEADERBOARD.md"
echo "gpu_paper.sh: leaderboard exited with $? (124/130: the time limit cut it; finished cells are kept)"
cd "$OUT/results/cells"
find . -name 'paper__*.json' -newer "$OUT/.start" | tar -czf "$OUT/paper_cells.tar.gz" -T -
echo "gpu_paper.sh: $(tar -tzf "$OUT/paper_cells.tar.gz" | wc -l) new cell(s) in $OUT/paper_cells.tar.gz"
