#!/usr/bin/env bash
# A learning curve on the test seeds: one training run on a schedule of BUDGET updates, made in
# legs of STEP updates (--max-updates stops each leg; the learning-rate schedule spans the
# whole budget), each leg's last.ckpt evaluated once on EPISODES test episodes. Run it again
# to continue: finished legs are skipped and the run resumes where it stopped, so a curve
# longer than a session is built across sessions. UNTIL stops this call after that many updates
# (default: the whole budget); a later call without it goes on from there. RUN=<run directory>
# (a path from the repository's root, like OUT) continues a run trained elsewhere on the same
# dataset, seed and budget: the legs up to the update count of its last.ckpt are not trained
# again, and a leg ending exactly there is evaluated as it stands. The curve trains that run
# further, so give it a copy of a run you want to keep as it is (a results.sh trial's run/).
#
#   DATASET=ogbench/cube-single-play-singletask-task2-v0 SEED=0 TAG=tie1cql1 \
#     EXTRA="--consistency-weight 1 --cql-alpha 1" bash scripts/learning_curve.sh
#
# Writes $OUT/<dataset>_<tag>_seed<S>/: runs/ (the run), test_<updates>.json (each
# evaluation), legs.tsv (updates, success rate, mean return, leg wall-clock seconds), train.log.
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${DATASET:-ogbench/cube-single-play-singletask-task2-v0}
SEED=${SEED:-0}
BUDGET=${BUDGET:-100000}
STEP=${STEP:-10000}
EPISODES=${EPISODES:-50}
UNTIL=${UNTIL:-$BUDGET}
TAG=${TAG:-defaults}
EXTRA=${EXTRA:-}
OUT=${OUT:-results/curves}
dir="$OUT/${DATASET//\//-}_${TAG}_seed${SEED}"
mkdir -p "$dir"
log="$dir/train.log"
fail() { echo "learning_curve.sh: $*" >&2; exit 2; }
curve_run=""                                        # the run this curve follows, once it has one
[ -f "$dir/run_dir" ] && curve_run=$(cat "$dir/run_dir")
if [ -n "${RUN:-}" ]; then
  [ -f "$RUN/checkpoints/last.ckpt" ] || fail "RUN=$RUN holds no checkpoints/last.ckpt: pass \
a run directory (runs/<run>) that has one."
  run=$(realpath -e "$RUN")
  [ -z "$curve_run" ] || [ "$curve_run" = "$run" ] || fail "$dir already follows the run \
$curve_run, not RUN=$run: drop RUN to go on with it, or give this curve another TAG or OUT."
  curve_run=$run
fi
saved=0
if [ -n "$curve_run" ]; then
  saved=$(python -c "import sys; from pathlib import Path; from sweep.child import saved_updates
print(saved_updates(Path(sys.argv[1]) / 'checkpoints' / 'last.ckpt') or 0)" "$curve_run")
  [[ $saved =~ ^[0-9]+$ ]] || fail "could not read the update count of $curve_run."
  [ -z "${RUN:-}" ] || [ "$saved" -gt 0 ] || fail "RUN=$RUN: its last.ckpt cannot be read."
  echo "$curve_run" > "$dir/run_dir"
fi

for ((updates = STEP; updates <= UNTIL && updates <= BUDGET; updates += STEP)); do
  [ -f "$dir/test_${updates}.json" ] && continue
  [ "$updates" -lt "$saved" ] && continue           # trained past this leg before the curve began
  start=$(date +%s)
  if [ "$updates" -eq "$saved" ]; then
    :                                               # the run ends this leg already: evaluate it
  elif [ -f "$dir/run_dir" ]; then
    # No EXTRA here: a resumed run keeps the settings it was started with.
    OMP_NUM_THREADS=1 python main.py train --resume "$(cat "$dir/run_dir")" \
      --max-updates "$updates" --skip-online-eval >> "$log" 2>&1
  else
    # shellcheck disable=SC2086  # EXTRA holds several flags
    OMP_NUM_THREADS=1 python main.py train --dataset "$DATASET" --seed "$SEED" \
      --num-updates "$BUDGET" --max-updates "$updates" --skip-online-eval \
      --output-dir "$dir/runs" $EXTRA >> "$log" 2>&1
    # The newest "Run directory:" line: an earlier, interrupted first leg logged its own.
    grep "^Run directory:" "$log" | tail -n 1 | sed 's/^Run directory: //' > "$dir/run_dir"
  fi
  run_dir=$(cat "$dir/run_dir")
  OMP_NUM_THREADS=1 python eval_online.py --checkpoint "$run_dir/checkpoints/last.ckpt" \
    --episodes "$EPISODES" >> "$log" 2>&1
  mv "$run_dir/checkpoints/last.online-test.json" "$dir/test_${updates}.json"
  python - "$dir/test_${updates}.json" "$updates" "$(( $(date +%s) - start ))" \
    >> "$dir/legs.tsv" <<'EOF'
import json, sys
summary = json.load(open(sys.argv[1]))
print(sys.argv[2], summary.get("success_rate"), summary.get("return_mean"), sys.argv[3],
      sep="\t")
EOF
  tail -n 1 "$dir/legs.tsv"
done
