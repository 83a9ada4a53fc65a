#!/bin/bash
# The MiniLM study of issue 16, in order, one run at a time, one thread, niced: the grid (and its one
# extension), the choice of each rule's step size, the full fine-tuning cost runs, the references, then
# the long runs. Resumable: run it
# again and finished runs are skipped (zolab sweep --resume). CPU times of each sweep go to $RUNS/logs.
#   nohup setsid nice -n 10 experiments/minilm/run.sh /work/main/runs /work/shared/data/glue-sst2 \
#       > /work/main/runs/logs/minilm_study.log 2>&1 &
set -u
RUNS=${1:-/work/main/runs}
DATA=${2:-../shared/data/glue-sst2}
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
mkdir -p "$RUNS/logs"
sweep() {  # one sweep, its CPU seconds (user + system, children included) appended to the log
    /usr/bin/time -a -o "$RUNS/logs/minilm_cpu.log" -f "$1: %U user %S sys %e wall s" \
        "$PY" -m zolab.cli sweep "experiments/minilm/$1.yaml" --subprocess --resume --root "$RUNS" \
        "--data.init_args.data_dir=$DATA"
}
sweep grid_sgd
sweep grid
# one extension beyond any best step size at an end of its grid (paper_figures/minilm_table.py's doc)
"$PY" paper_figures/minilm_table.py grid --runs "$RUNS" --write-edges experiments/minilm/edges
[ -f experiments/minilm/edges/grid_edges.yaml ] && sweep edges/grid_edges
"$PY" paper_figures/minilm_table.py grid --runs "$RUNS" --write-best experiments/minilm/best --long-steps 1500
sweep cost
sweep references
sweep references_zo
sweep seeds_zo_sgd_hessian
sweep seeds_zo_sgd
sweep seeds
"$PY" paper_figures/minilm_table.py table --runs "$RUNS"
