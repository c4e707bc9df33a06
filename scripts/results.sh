#!/usr/bin/env bash
# Reproduce the results table: the sweep scripts/results.yaml (MeanFlow-QL and MeanFlow BC on
# the local datasets, two seeds, final checkpoints on 20 test episodes; `python main.py sweep`,
# docs/sweeps.md), the zero-action baseline on the same test seeds, then
# scripts/results_table.py, which adds the baseline and the data's own episodes. Writes
# OUT/results.md and OUT/results.json (OUT: results).
#
#   bash scripts/results.sh                                   # the full table, local Ray cluster
#   bash scripts/results.sh --address HOST:6379               # on a running Ray cluster
#   SEEDS="0" DATASETS="local/pusher/medium-v0" bash scripts/results.sh   # a subset
#   TAG=corner EXTRA="--corner-ratio 0.1" METHODS=meanflow_ql OUT=results/tuning \
#     VALIDATION_ONLY=1 bash scripts/results.sh              # a tuning run: validation seeds only
#
# The variables change the spec (scripts/results_spec.py writes it to OUT/specs/); arguments go
# to `python main.py sweep`. PARALLEL runs that many trials at a time on this machine (default:
# one per core, one torch thread each). Run the same command again after an interruption:
# finished trials are skipped and interrupted ones resume from their last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results}
spec=$(python scripts/results_spec.py "$OUT")
cpus=1
[ -n "${PARALLEL:-}" ] && cpus=$(( $(nproc) / PARALLEL > 0 ? $(nproc) / PARALLEL : 1 ))
status=0
python main.py sweep "$spec" --output-dir "$OUT" --cpus-per-trial "$cpus" "$@" || status=$?
mkdir -p "$OUT/baselines"
read -r episodes datasets < <(python -c "import sys, yaml; s = yaml.safe_load(open(sys.argv[1]))
print(s['evaluate']['episodes'], ' '.join(s['datasets']))" "$spec")
for dataset in $datasets; do          # on the same test seeds, once per dataset
  slug=${dataset//\//-}
  [ -f "$OUT/baselines/${slug}_zero.json" ] || OMP_NUM_THREADS=1 python eval_online.py \
    --baseline zero --dataset "$dataset" --episodes "$episodes" \
    --out "$OUT/baselines/${slug}_zero.json"
done
[ -n "${VALIDATION_ONLY:-}" ] || python scripts/results_table.py "$OUT"
exit $status
