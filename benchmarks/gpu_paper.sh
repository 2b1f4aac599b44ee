#!/usr/bin/env bash
# The paper protocol's remaining seeds (issue 4) on one GPU, resuming the committed cells.
#
#   benchmarks/gpu_paper.sh OUTDIR [JOBS] [LIMIT_S]
#
# Merges benchmarks/results into OUTDIR/results (cells already there are kept), runs the Cora and
# CiteSeer paper rows (the gated GNN in five gradient modes and the linear-PCA baseline, 10 seeds,
# 2000 SGD steps each) with JOBS cells at once on CUDA (default 8: the cells are small, so
# several processes share the GPU) for at most LIMIT_S seconds (default 480), and packs the cells
# this run finished into OUTDIR/paper_cells_<time>.tar.gz. Unpack that into
# benchmarks/results/cells and re-render the board with `pyg-rbp leaderboard ... --render-only`.
# A cell cut by the limit is simply not there; the next run trains it. Needs a CUDA build of
# torch and the Cora/CiteSeer raw files under $PYG_RBP_DATA (or ./datasets). PYTHON picks the
# interpreter; DEVICE=cpu only tries the script's plumbing. Exit status: 0 when the run finished
# or the limit cut it, the leaderboard's status otherwise.
set -uo pipefail

OUT=${1:?usage: benchmarks/gpu_paper.sh OUTDIR [JOBS] [LIMIT_S]}
JOBS=${2:-8}
LIMIT=${3:-480}
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT/results" || exit 1
OUT="$(cd "$OUT" && pwd)"
cd "$REPO" || exit 1
if [ "$OUT/results" -ef benchmarks/results ]; then
    echo "gpu_paper.sh: OUTDIR/results is benchmarks/results itself; pick another OUTDIR" >&2; exit 2
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DEVICE" = cuda ]; then
    "$PY" -c "import sys, torch; torch.cuda.is_available() or sys.exit('gpu_paper.sh: no CUDA')" || exit 1
fi

cp -rn benchmarks/results/. "$OUT/results/" || exit 1
STAMP="$OUT/.start_$$"
touch "$STAMP"
timeout -k 30 --signal=INT "$LIMIT" "$PY" -c 'import sys; from pyg_rbp.cli import main; sys.exit(main(sys.argv[1:]))' \
    leaderboard --datasets cora,citeseer --protocols paper --profile full --num-seeds 10 --device "$DEVICE" \
    --jobs "$JOBS" --threads 1 --no-progress --results "$OUT/results" --board "$OUT/LEADERBOARD.md"
rc=$?
echo "gpu_paper.sh: leaderboard exited with $rc (124: the time limit cut it; finished cells are kept)"
TAR="$OUT/paper_cells_$(date +%Y%m%dT%H%M%S).tar.gz"
(cd "$OUT/results/cells" && find . -name 'paper__*.json' -newer "$STAMP" | tar -czf "$TAR" -T -) || exit 1
rm -f "$STAMP"
echo "gpu_paper.sh: $(tar -tzf "$TAR" | wc -l) new cell(s) in $TAR"
[ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || exit "$rc"
