#!/usr/bin/env bash
# Reproduce the results table: MeanFlow-QL (defaults) and MeanFlow behaviour cloning on local
# datasets, several training seeds, each run's final checkpoint evaluated once on the test seeds
# (3,000,000 + i), beside the zero-action baseline on the same seeds and the data's own episodes.
# Writes results/results.md, results/results.json.
#
#   bash scripts/results.sh                                   # the full table
#   SEEDS="0" DATASETS="local/pusher/medium-v0" bash scripts/results.sh   # a subset
#   TAG=corner EXTRA="--corner-ratio 0.1" METHODS=meanflow_ql OUT=results/tuning \
#     VALIDATION_ONLY=1 bash scripts/results.sh              # a tuning run: validation seeds only
#
# Two runs share the machine at a time, one thread each (PARALLEL=2).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1"}
DATASETS=${DATASETS:-"local/invertedpendulum/noisy-v0 local/pusher/medium-v0 local/pusher/mixed-v0 local/pusher/expert-v0"}
METHODS=${METHODS:-"meanflow_ql meanflow_bc"}
EPISODES=${EPISODES:-20}
PARALLEL=${PARALLEL:-2}
EXTRA=${EXTRA:-}
VALIDATION_ONLY=${VALIDATION_ONLY:-}
TAG=${TAG:-}
OUT=${OUT:-results}
mkdir -p "$OUT/logs" "$OUT/baselines"

for dataset in $DATASETS; do          # build each dataset once, before runs share it
  python main.py collect --dataset "$dataset" --no-progress 2>/dev/null || true   # on disk
  slug=${dataset//\//-}
  [ -f "$OUT/baselines/${slug}_zero.json" ] || OMP_NUM_THREADS=1 python eval_online.py \
    --baseline zero --dataset "$dataset" --episodes "$EPISODES" --out "$OUT/baselines/${slug}_zero.json"
done

jobs_file=$(mktemp)
for seed in $SEEDS; do               # every dataset's first seed before any second seed
  for dataset in $DATASETS; do
    for method in $METHODS; do
      flags=""
      # BC without early stopping: both methods spend the same update budget, and the table
      # compares their final checkpoints.
      [ "$method" = meanflow_bc ] && flags="--actor-q-weight 0 --cql-alpha 0 --patience 0"
      # No trailing blank: xargs -L would join the next line to this one.
      echo "$dataset $seed $method${TAG:+-$TAG}${flags:+ $flags}${EXTRA:+ $EXTRA}" >> "$jobs_file"
    done
  done
done

run_one() {
  dataset=$1; seed=$2; method=$3; shift 3
  log="$OUT/logs/${dataset//\//-}_${method}_seed${seed}.log"
  [ -f "$log" ] && grep -q "^wall_seconds" "$log" && return 0     # done in an earlier call
  start=$(date +%s)
  OMP_NUM_THREADS=1 python main.py train --dataset "$dataset" --seed "$seed" --skip-online-eval \
    --output-dir "$OUT/runs/$method" "$@" > "$log" 2>&1 || { echo "failed: $log" >&2; return 0; }
  echo "wall_seconds $(( $(date +%s) - start ))" >> "$log"
  run_dir=$(grep -m1 "^Run directory:" "$log" | sed 's/^Run directory: //; s/ (resumed.*//')
  # Validation seeds first (what tuning reads; kept as last.validation.json), then the test
  # seeds once (last.online.json, what the table reports).
  OMP_NUM_THREADS=1 python eval_online.py --checkpoint "$run_dir/checkpoints/last.ckpt" \
    --episodes "$EPISODES" --seed 2000000 >> "$log" 2>&1
  mv "$run_dir/checkpoints/last.online.json" "$run_dir/checkpoints/last.validation.json"
  [ -n "${VALIDATION_ONLY:-}" ] && return 0
  OMP_NUM_THREADS=1 python eval_online.py --checkpoint "$run_dir/checkpoints/last.ckpt" \
    --episodes "$EPISODES" >> "$log" 2>&1
}
export -f run_one
export OUT EPISODES VALIDATION_ONLY
xargs -P "$PARALLEL" -L 1 bash -c 'run_one "$@"' _ < "$jobs_file"
rm -f "$jobs_file"
[ -n "$VALIDATION_ONLY" ] || python scripts/results_table.py "$OUT"
