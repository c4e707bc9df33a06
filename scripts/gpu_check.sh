#!/usr/bin/env bash
# The GPU check (issue #31, docs/gpu.md): does the trainer run, and how fast, on one GPU?
#
#   scripts/gpu_check.sh --prepare   here, with the project's venv and a network: the wheels the
#                                    GPU machine lacks and a small Pusher dataset, into .gpu_check/
#   scripts/gpu_check.sh             on the GPU machine (about 8 minutes at most), from the
#                                    repository root with .gpu_check/ beside it
#   scripts/gpu_check.sh --dry-run   the same steps on this machine's CPU at tiny budgets, to
#                                    test the script without a GPU
#
# It prints one table (also written to $OUT/gpu_check.md, or $GPU_CHECK_OUT/gpu_check.md):
#   1. the seed's command line, `main.py train --batch-size 4096 --mixed-precision 16-mixed
#      --accelerator gpu`, for a short budget, then `main.py test` on its checkpoint
#   2. every precision the CLI accepts (config.PRECISIONS), 300 updates each: none may crash
#      or end on a non-finite loss
#   3. updates/s of `main.py train` at batch 256 and 4096, eager and compiled (--compile off/on)
#   4. `python benchmark.py --quick` on the GPU (its JAX row where JAX is installed)
# Steps 1 and 2 run side by side (the GPU has room, compiling is on the CPU cores); the timed
# steps 3 and 4 run alone. Each step has a time limit and the whole check gives no step time
# past GPU_CHECK_SECONDS (default 450, from the start): a step that ran out of time says so in
# the table, and a timed-out benchmark still shows the sections it printed.
set -u
cd "$(dirname "$0")/.."
CHECK=.gpu_check                     # carried to the GPU machine: wheels/ and minari/
PY=${PYTHON:-python3}
MODE=gpu
case "${1:-}" in
    --prepare) MODE=prepare ;;
    --dry-run) MODE=dry ;;
    "") ;;
    *) echo "usage: scripts/gpu_check.sh [--prepare | --dry-run]" >&2; exit 2 ;;
esac

# Pusher episodes of the check's dataset: 300 x 100 steps give 27,000 training windows, six
# batches of 4096 per epoch, so the batch-4096 speed is not that of one-batch epochs.
EPISODES=300
WHEELS="minari==0.5.4 gymnasium==1.4.0 mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0
        glfw==2.11.0 PyOpenGL==3.1.10 farama-notifications==0.0.6 websockets==17.4
        ogbench==1.2.2"

if [ "$MODE" = prepare ]; then
    set -e
    rm -rf "$CHECK/wheels"
    # The GPU machine's Python is 3.12 (x86-64, manylinux); --no-deps: it has the rest.
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 --platform any -d "$CHECK/wheels" $WHEELS
    MINARI_DATASETS_PATH="$PWD/$CHECK/minari" MEANFLOW_QL_REF_EPISODES=20 $PY main.py collect \
        --dataset local/pusher/expert-v0 --episodes $EPISODES --overwrite --no-progress
    du -sh "$CHECK"
    echo "Prepared $CHECK. On the GPU machine (the device tool): carry [\"$CHECK\"] and run"
    echo "    bash scripts/gpu_check.sh"
    exit 0
fi

START=$(date +%s)
OUT_DIR=${GPU_CHECK_OUT:-${OUT:-/tmp/gpu_check}}
LOGS=$(mktemp -d /tmp/gpu_check.XXXXXX)
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 MUJOCO_GL=egl
LIMIT=${GPU_CHECK_SECONDS:-450}

if [ "$MODE" = gpu ]; then
    ACCEL=gpu; SEED_UPDATES=300; PREC_UPDATES=300; SPEED_UPDATES=600; SPEED_EVERY=300
    SIZES="256 4096"; NET=(); BENCH=(--quick --device cuda)
    export MINARI_DATASETS_PATH="$PWD/$CHECK/minari"
    # Install only what is missing (the machine has torch, Lightning and JAX).
    if ! $PY -c "import minari, gymnasium, mujoco, ogbench" 2>/dev/null; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/gpu_check_site "$CHECK"/wheels/*.whl || exit 1
        export PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}
    fi
    $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
else
    # The same steps on the CPU: tiny budgets and networks, only the flow is checked.
    ACCEL=cpu; SEED_UPDATES=10; PREC_UPDATES=5; SPEED_UPDATES=20; SPEED_EVERY=10
    SIZES="64 128"; NET=(--actor-hidden-dim 64 --critic-hidden-dim 64); BENCH=()
    export MINARI_DATASETS_PATH=${MINARI_DATASETS_PATH:-$PWD/$CHECK/minari}
fi
[ -d "$MINARI_DATASETS_PATH/local/pusher/expert-v0" ] || {
    echo "No dataset at $MINARI_DATASETS_PATH: run scripts/gpu_check.sh --prepare first." >&2
    exit 1; }

# Seconds a step may take: its own limit, or what is left of the check's, the smaller.
budget() {
    local left=$((LIMIT - ($(date +%s) - START)))
    [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

# step NAME LIMIT_S COMMAND...: run it under a time limit, log to $LOGS/NAME.log, record
# "exit-code seconds" in $LOGS/NAME.status (124: out of time; "skipped": no time left).
step() {
    local name=$1 limit; limit=$(budget "$2"); shift 2
    if [ "$limit" -le 5 ]; then echo skipped > "$LOGS/$name.status"; return; fi
    local begin; begin=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    echo "$? $(($(date +%s) - begin))" > "$LOGS/$name.status"
    echo "[gpu_check] $name: exit $(cut -d' ' -f1 "$LOGS/$name.status"), $(($(date +%s) - begin)) s"
}

$PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning',
      lightning.__version__, 'cuda', torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
    > "$LOGS/versions.log" 2>&1
cat "$LOGS/versions.log"

# 1. The seed's command line, short, then `test` on the checkpoint it names.
seed_and_test() {
    step seed 150 $PY main.py train --batch-size 4096 --mixed-precision 16-mixed \
        --accelerator "$ACCEL" --max-updates "$SEED_UPDATES" --progress-every 100 \
        --output-dir "$LOGS/runs/seed" "${NET[@]}"
    local checkpoint
    checkpoint=$(sed -n 's/^Test it: .* --checkpoint //p' "$LOGS/seed.log" | tail -1)
    if [ -n "$checkpoint" ]; then
        step test 60 $PY main.py test --checkpoint "$checkpoint" --episodes 5
    else
        echo "no checkpoint" > "$LOGS/test.status"
    fi
}
seed_and_test &

# 2. Every precision the CLI accepts, at once (each compiles its own graphs on the CPU cores).
PRECISIONS=$($PY -c "from config import PRECISIONS; print(' '.join(PRECISIONS))")
for p in $PRECISIONS; do
    step "precision_$p" 150 $PY main.py train --mixed-precision "$p" --accelerator "$ACCEL" \
        --max-updates "$PREC_UPDATES" --progress-every 100 --skip-online-eval --patience 0 \
        --output-dir "$LOGS/runs/precision_$p" "${NET[@]}" &
done
wait

# 3. Updates/s of the trainer, eager and compiled, one run at a time; the rate of the last
# SPEED_EVERY updates, after compiling and warming up.
for b in $SIZES; do
    for c in off on; do
        step "speed_${b}_$c" 90 $PY main.py train --accelerator "$ACCEL" --batch-size "$b" \
            --compile "$c" --max-updates "$SPEED_UPDATES" --progress-every "$SPEED_EVERY" \
            --val-every-updates "$SPEED_UPDATES" --patience 0 --skip-online-eval \
            --output-dir "$LOGS/runs/speed_${b}_$c" "${NET[@]}"
    done
done

# 4. The benchmark, on the device (on the CPU in a dry run: its own figures, long; skipped).
if [ "$MODE" = gpu ]; then
    step benchmark 300 $PY benchmark.py "${BENCH[@]}" --out "$OUT_DIR/benchmark.json"
fi

$PY - "$LOGS" "$MODE" "$SEED_UPDATES" "$PREC_UPDATES" "$SIZES" "$PRECISIONS" \
    > "$OUT_DIR/gpu_check.md" <<'EOF'
"""The check's table, from its logs."""
import json
import math
import re
import sys
from pathlib import Path

logs, mode, seed_updates, prec_updates, sizes, precisions = sys.argv[1:]
logs = Path(logs)


def status(name):
    path = logs / f"{name}.status"
    text = path.read_text().split() if path.exists() else ["missing"]
    if text[0] == "skipped":
        return "skipped (out of time)", None
    if not text[0].isdigit():
        return " ".join(text), None
    code, seconds = int(text[0]), text[1]
    word = "ok" if code == 0 else "OUT OF TIME" if code in (124, 137) else f"FAILED (exit {code})"
    return f"{word}, {seconds} s", code


def log(name):
    path = logs / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def last_progress(text):
    """(updates, losses dict, updates/s) of the last progress line."""
    lines = re.findall(r"^update (\d+)/\d+(.*), ([\d.]+) updates/s$", text, re.M)
    if not lines:
        return None, {}, None
    updates, losses, rate = lines[-1]
    values = dict(re.findall(r"(loss/\w+) (\S+?)(?:,|$)", losses))
    return int(updates), {k: float(v) for k, v in values.items()}, float(rate)


def losses_text(losses):
    finite = all(math.isfinite(v) for v in losses.values())
    text = ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
    return (text or "no losses printed") + ("" if finite else " NON-FINITE")


rows = ["| step | result | figures |", "| --- | --- | --- |"]
versions = log("versions").strip().splitlines()
seed_text = log("seed")
word, _ = status("seed")
updates, losses, _ = last_progress(seed_text)
evaluation = re.search(r"return[^\n]*", seed_text.split("Online evaluation", 1)[-1]) \
    if "Online evaluation" in seed_text else None
rows.append(f"| seed command line, {seed_updates} updates | {word} | {updates} updates, "
            f"{losses_text(losses)}{'; ' + evaluation.group(0) if evaluation else ''} |")
word, code = status("test")
figures = ""
if code == 0:
    ckpt = re.search(r"Saved (\S+\.test\.json)", log("test"))
    if ckpt:
        offline = json.loads(Path(ckpt.group(1)).read_text())
        figures = (f"action MSE {offline['action_mse']:.4g} "
                   f"(normalised {offline['action_mse_normalized']:.4g})")
        online_path = Path(ckpt.group(1).replace(".test.json", ".online-test.json"))
        if online_path.exists():
            online = json.loads(online_path.read_text())
            figures += (f"; {online['episodes']} episodes, return {online['return_mean']:.2f}, "
                        f"normalised score {online.get('normalized_score_mean', float('nan')):.1f}")
rows.append(f"| main.py test on its checkpoint | {word} | {figures} |")
for p in precisions.split():
    word, code = status(f"precision_{p}")
    text = log(f"precision_{p}")
    updates, losses, _ = last_progress(text)
    error = re.search(r"^error: .*", text, re.M)
    finite = all(math.isfinite(v) for v in losses.values()) \
        and not (error and "loss became" in error.group(0))
    verdict = word if (code != 0 or finite) else word + ", NON-FINITE LOSS"
    rows.append(f"| precision {p}, {prec_updates} updates | {verdict} | {updates} updates, "
                f"{losses_text(losses)}{'; ' + error.group(0) if error else ''} |")
for b in sizes.split():
    rates = {}
    for c in ("off", "on"):
        word, code = status(f"speed_{b}_{c}")
        _, _, rate = last_progress(log(f"speed_{b}_{c}"))
        rates[c] = rate if code == 0 else None
        rows.append(f"| updates/s, batch {b}, --compile {c} | {word} | "
                    f"{f'{rate:.1f} updates/s' if rate and code == 0 else ''} |")
    if rates["off"] and rates["on"]:
        rows.append(f"| compiled / eager, batch {b} | | {rates['on'] / rates['off']:.2f}x |")
if mode == "gpu":
    word, _ = status("benchmark")
    rows.append(f"| python benchmark.py --quick | {word} | see below |")
print(f"GPU check ({'dry run on the CPU' if mode == 'dry' else 'GPU'}): {'; '.join(versions)}\n")
print("\n".join(rows))
if mode == "gpu":
    bench = [line for line in log("benchmark").splitlines()
             if re.match(r"^(\d\.|   |Device)", line)]
    print("\nbenchmark.py:\n" + "\n".join(bench))
EOF
cat "$OUT_DIR/gpu_check.md"
# The logs as one file: the device tool brings back at most 8 files from $OUT.
tar -czf "$OUT_DIR/gpu_check_logs.tar.gz" -C "$LOGS" --exclude=runs . 2>/dev/null
echo "[gpu_check] $(($(date +%s) - START)) s in all; logs in $LOGS and $OUT_DIR"
