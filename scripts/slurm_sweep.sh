#!/usr/bin/env bash
# A sweep on a SLURM allocation: a Ray cluster across the job's nodes (the head on the first,
# a worker on each other, one `srun` task per node, as Ray's guide "Deploying on Slurm" does it),
# then `python main.py sweep SPEC --address HEAD` on it, then the cluster is stopped.
#
#   sbatch --nodes=4 --ntasks-per-node=1 --cpus-per-task=16 --gpus-per-task=1 \
#     scripts/slurm_sweep.sh sweeps/cube.yaml --output-dir /shared/sweeps --gpus-per-trial 0.25
#
# The repository, its Python environment, MINARI_DATASETS_PATH and --output-dir must be on a
# file system every node shares (the sweep refuses a folder a node cannot see). Submit the
# same command again after a time limit or a failure: finished trials are skipped and
# interrupted ones resume from their last checkpoint (docs/sweeps.md).
#
# Settings: RAY_PORT (default 6379); SRUN and SCONTROL name the SLURM commands (the tests run
# the script without SLURM through stand-ins).
#SBATCH --job-name=meanflow-sweep
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: sbatch scripts/slurm_sweep.sh SPEC.yaml [sweep options]" >&2; exit 2; }
: "${SLURM_JOB_NODELIST:?run this inside a SLURM allocation (sbatch or salloc)}"
SRUN=${SRUN:-srun}
SCONTROL=${SCONTROL:-scontrol}
RAY_PORT=${RAY_PORT:-6379}
CPUS=${SLURM_CPUS_PER_TASK:-1}
GPUS=${SLURM_GPUS_PER_TASK:-0}
RAY=${RAY:-ray}

# Token authentication, on every node alike (srun passes the environment on): Ray 2.60 turns it
# on for a cluster whose nodes are all local and expects RAY_AUTH_MODE=token of its clients,
# and a cluster with a token refuses strangers on the network. The token lives in
# ~/.ray/auth_token, which the nodes share through the home directory (or set RAY_AUTH_TOKEN).
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}${RAY_AUTH_TOKEN_PATH:-}" ]; then
  $RAY get-auth-token --generate > /dev/null
fi

mapfile -t nodes < <($SCONTROL show hostnames "$SLURM_JOB_NODELIST")
head_node=${nodes[0]}
head_ip=$($SRUN --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{print $1}')
address="$head_ip:$RAY_PORT"

# The cluster's processes run in the background (`--block`: each lives as long as its srun
# task); stopping those tasks at the end, or the job's end, stops the cluster.
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
echo "Ray head on $head_node ($address), $CPUS CPUs and $GPUS GPUs per node"
$SRUN --nodes=1 --ntasks=1 -w "$head_node" $RAY start --head --node-ip-address="$head_ip" \
  --port="$RAY_PORT" --num-cpus="$CPUS" --num-gpus="$GPUS" --include-dashboard=false \
  --disable-usage-stats --block &
for _ in $(seq 120); do                 # the head answers within seconds
  $RAY status --address "$address" > /dev/null 2>&1 && break
  sleep 1
done
$RAY status --address "$address" > /dev/null 2>&1 || { echo "the Ray head did not start" >&2; exit 1; }
for node in "${nodes[@]:1}"; do          # workers join as they start; trials wait for them
  $SRUN --nodes=1 --ntasks=1 -w "$node" $RAY start --address "$address" --num-cpus="$CPUS" \
    --num-gpus="$GPUS" --disable-usage-stats --block &
done
status=0
python main.py sweep "$@" --address "$address" || status=$?
exit $status
