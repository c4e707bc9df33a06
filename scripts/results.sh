#!/usr/bin/env bash
# Reproduce the results table: MeanFlow-QL (defaults) and MeanFlow behaviour cloning on each
# local Pusher dataset, several training seeds, each evaluated online on seeded episodes.
# Writes results/results.md, results/results.json and results/score_vs_updates.png.
#
#   bash scripts/results.sh                 # the full table (3 datasets x 2 methods x 3 seeds)
#   SEEDS="0" DATASETS="medium" bash scripts/results.sh   # a subset
#
# Two runs share the machine at a time, one thread each (PARALLEL=2).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
DATASETS=${DATASETS:-"expert medium mixed"}
EPISODES=${EPISODES:-20}
PARALLEL=${PARALLEL:-2}
EXTRA=${EXTRA:-}
OUT=${OUT:-results}
mkdir -p "$OUT/logs"
# The score plot needs matplotlib, which training does not.
python -c "import matplotlib" 2>/dev/null || pip install -q matplotlib==3.11.2

for quality in $DATASETS; do          # build each dataset once, before runs share it
  python main.py collect --dataset "local/pusher/$quality-v0" --no-progress 2>/dev/null \
    || true                           # already on disk
done

jobs_file=$(mktemp)
for quality in $DATASETS; do
  for seed in $SEEDS; do
    for method in meanflow_ql meanflow_bc; do
      flags="--eval-every 1 --eval-episodes 5"
      [ "$method" = meanflow_bc ] && flags="$flags --actor-q-weight 0 --cql-alpha 0"
      # No trailing blank: xargs -L would join the next line to this one.
      echo "$quality $seed $method $flags${EXTRA:+ $EXTRA}" >> "$jobs_file"
    done
  done
done

run_one() {
  quality=$1; seed=$2; method=$3; shift 3
  log="$OUT/logs/${quality}_${method}_seed${seed}.log"
  start=$(date +%s)
  OMP_NUM_THREADS=1 python main.py train --dataset "local/pusher/$quality-v0" --seed "$seed" \
    --output-dir "$OUT/runs/$method" "$@" > "$log" 2>&1 || { echo "failed: $log" >&2; return 0; }
  echo "wall_seconds $(( $(date +%s) - start ))" >> "$log"
  run_dir=$(grep -m1 "^Run directory:" "$log" | sed 's/^Run directory: //; s/ (resumed.*//')
  for which in best last; do
    OMP_NUM_THREADS=1 python eval_online.py --checkpoint "$run_dir/checkpoints/$which.ckpt" \
      --episodes "$EPISODES" --seed 1000 >> "$log" 2>&1
  done
}
export -f run_one
export OUT EPISODES
xargs -P "$PARALLEL" -L 1 bash -c 'run_one "$@"' _ < "$jobs_file"
rm -f "$jobs_file"
python scripts/results_table.py "$OUT"
