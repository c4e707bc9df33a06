#!/usr/bin/env bash
# Reproduce the results table: the sweep scripts/results.yaml (MeanFlow-QL and MeanFlow BC on
# the local datasets, two seeds, final checkpoints on 20 test episodes), the zero-action
# baseline on the same test seeds, then scripts/results_table.py, which adds the baseline and
# the data's own episodes. Writes OUT/results.md, OUT/results.json (OUT: results).
#
#   bash scripts/results.sh                          # the full table, on a local Ray cluster
#   bash scripts/results.sh --address HOST:6379      # on a running Ray cluster (docs/sweeps.md)
#
# Arguments go to `python main.py sweep`. Run it again after an interruption: finished trials
# are skipped and interrupted ones resume from their last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results}
SPEC=${SPEC:-scripts/results.yaml}
status=0
python main.py sweep "$SPEC" --output-dir "$OUT" "$@" || status=$?     # builds the datasets too
mkdir -p "$OUT/baselines"
read -r episodes datasets < <(python -c "import sys, yaml; s = yaml.safe_load(open(sys.argv[1]))
print(s['evaluate']['episodes'], ' '.join(s['datasets']))" "$SPEC")
for dataset in $datasets; do
  slug=${dataset//\//-}
  [ -f "$OUT/baselines/${slug}_zero.json" ] || OMP_NUM_THREADS=1 python eval_online.py \
    --baseline zero --dataset "$dataset" --episodes "$episodes" \
    --out "$OUT/baselines/${slug}_zero.json"
done
python scripts/results_table.py "$OUT"
exit $status
