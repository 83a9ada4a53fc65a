#!/bin/bash
# The MiniLM study of issue 16, one run at a time per worker, one thread, niced. Worker a: the grid (and
# its one extension), the choice of each rule's step size, half the seed runs; worker b: the full
# fine-tuning cost runs, the references, then (once the step sizes are chosen) the other seed runs. Resumable: run it
# again and finished runs are skipped (zolab sweep --resume). CPU times of each sweep go to $RUNS/logs.
#   for w in a b; do nohup setsid nice -n 10 experiments/minilm/run.sh /work/main/runs \
#       /work/shared/data/glue-sst2 $w > /work/main/runs/logs/minilm_study_$w.log 2>&1 & done
set -u
RUNS=${1:-/work/main/runs}
DATA=${2:-../shared/data/glue-sst2}
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
mkdir -p "$RUNS/logs"
sweep() {  # one sweep, its CPU seconds (user + system, children included) appended to the log
    /usr/bin/time -a -o "$RUNS/logs/minilm_cpu.log" -f "$1: %U user %S sys %e wall s" \
        "$PY" -m zolab.lab.cli sweep "experiments/minilm/$1.yaml" --subprocess --resume --root "$RUNS" \
        "--data.init_args.data_dir=$DATA"
}
WORKER=${3:-a}   # two workers share the study: a runs the grid and half the seed runs, b the rest
wait_for_best() { until [ -f experiments/minilm/best/mezo_bcd.yaml ]; do sleep 60; done; }
if [ "$WORKER" = a ]; then
    sweep grid_sgd
    sweep grid
    # one extension beyond any best step size at an end of its grid (paper_figures/minilm_table.py's doc)
    "$PY" paper_figures/minilm_table.py grid --runs "$RUNS" --write-edges experiments/minilm/edges
    [ -f experiments/minilm/edges/grid_edges.yaml ] && sweep edges/grid_edges
    "$PY" paper_figures/minilm_table.py grid --runs "$RUNS" --write-best experiments/minilm/best --long-steps 200
    sweep seeds
else
    sweep cost
    sweep references
    sweep references_zo
    wait_for_best
    sweep seeds_b
    sweep seeds_zo_sgd_hessian
fi
"$PY" paper_figures/minilm_table.py table --runs "$RUNS"
