"""Trials as Ray tasks: the driver (`run_sweep`) and the task (`run_trial`).

Ray is the engine: it places each task where `--cpus-per-trial` and `--gpus-per-trial` fit,
and retries a task whose worker died (a killed process, a lost node) up to `--max-retries`
times (`max_retries`), as it retries a task whose trial process was killed by a signal
(`retry_exceptions=[TrialProcessLost]`). A trial that ends with a usage error, a non-finite loss
or a crash is `failed` with its message and not retried.

Each attempt runs the trial in a child process (`sweep.child`), in its own session (a Ctrl-C
on the terminal reaches the driver only) and told by the kernel to take SIGTERM when the worker
dies (Linux's PR_SET_PDEATHSIG), so a killed worker's trial saves last.ckpt and stops. The
child holds a lock on the trial's folder (flock, inherited), so a retry waits for it to end
before it resumes the run.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from config import UsageError
from runs import read_validations
from sweep.trials import read_trial, write_trial

ROOT = Path(__file__).resolve().parent.parent
# Environment variables a worker's trial needs from the driver's environment (a worker started
# by `ray start` on another node has its own): the data store, rendering, test-size hooks, W&B.
FORWARDED_PREFIXES = ("MINARI_", "MUJOCO_", "MEANFLOW_QL_", "WANDB_")
# Exit codes of `main.py train` that mean the trial was stopped, not finished or failed.
STOPPED = {130: "SIGINT", 143: "SIGTERM"}


class TrialProcessLost(Exception):
    """The trial's process was killed by a signal (out of memory, a node's OOM killer): Ray
    retries the task, which resumes the run from its last checkpoint."""


def _die_with_parent() -> None:
    """In the child, before exec: take SIGTERM when the worker that started it dies (Linux)."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)                   # PR_SET_PDEATHSIG
    except OSError:
        pass                                            # not Linux: no such guard


def _message(log: Path, start: int) -> str:
    """What an attempt printed last about its failure: from its last `error:` line on, else
    the last lines of its output (a traceback)."""
    with open(log, "rb") as file:
        file.seek(start)
        text = file.read().decode("utf-8", "replace")
    at = text.rfind("error: ")
    if at >= 0:
        return text[at + len("error: "):].strip()
    return "\n".join(text.strip().splitlines()[-15:])


STOP = ".stop"


def run_trial(folder: str, cpus: float) -> dict:
    """One attempt at the trial in `folder` (its trial.json and config.json written by the
    driver): returns its record. Runs in a Ray worker.

    The driver stops a sweep by writing the sweep folder's `.stop` file, which every node sees
    (a task does not rely on ray.cancel reaching it): a running attempt then sends its trial
    process SIGTERM (it saves last.ckpt and exits) and a queued one does not start."""
    import ray

    folder = Path(folder)
    if not (folder / "trial.json").is_file():
        raise FileNotFoundError(
            f"{folder}/trial.json is not visible on node {ray.util.get_node_ip_address()}: a "
            f"sweep on a cluster needs its output directory on a file system every node shares.")
    stop = folder.parent.parent / STOP
    lock = open(folder / ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)                    # an earlier attempt's process may live on
    record = read_trial(folder)
    if record["status"] == "done" or stop.exists():     # done before its worker was lost; stopped
        return record
    lost = [e for e in record["history"] if e["ended"] is None]
    if lost:
        # Its worker died (Ray retried the task): what its trial process wrote says the rest,
        # once that process (told by the kernel to stop) has saved and exited on this node.
        if lost[-1].get("node") == ray.util.get_node_ip_address():
            wait_for_exit(lost[-1].get("trial_pid"))
        outcome = read_outcome(folder)
        lost[-1].update(ended=time.time(), worker_lost=True,
                        exit_code=outcome.get("exit_code", "lost"),
                        resumed_from_updates=outcome.get("resumed_from_updates"),
                        updates=outcome.get("updates"))
        lost[-1]["wall_seconds"] = lost[-1]["ended"] - lost[-1]["started"]
        record["exit_codes"].append(lost[-1]["exit_code"])
        if outcome.get("updates") is not None:
            record["updates"] = outcome["updates"]
    log = folder / "attempts.log"
    start = log.stat().st_size if log.is_file() else 0
    entry = {"attempt": record["attempts"] + 1, "node": ray.util.get_node_ip_address(),
             "worker_pid": os.getpid(), "trial_pid": None, "started": time.time(),
             "ended": None, "exit_code": None, "resumed_from_updates": None, "updates": None,
             "wall_seconds": None}
    record.update(status="running", attempts=record["attempts"] + 1, message=None)
    record["history"].append(entry)
    threads = str(max(1, int(cpus)))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "ab") as out:
        out.write(f"--- attempt {entry['attempt']} on {entry['node']} ---\n".encode())
        out.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "sweep.child", str(folder)], cwd=ROOT, env=env,
            stdout=out, stderr=out, start_new_session=True, pass_fds=(lock.fileno(),),
            preexec_fn=_die_with_parent)
    entry["trial_pid"] = process.pid
    write_trial(folder, record)
    began = time.monotonic()
    try:
        # Polled, so that ray.cancel's KeyboardInterrupt lands between two waits.
        while process.poll() is None:
            if stop.exists():
                process.send_signal(signal.SIGTERM)
                process.wait()
                break
            time.sleep(0.5)
    except KeyboardInterrupt:                           # ray.cancel or a Ctrl-C on the worker
        process.send_signal(signal.SIGTERM)
        process.wait()
        finish(folder, record, entry, process.returncode, began, log, start)
        raise
    finish(folder, record, entry, process.returncode, began, log, start)
    if process.returncode < 0:
        raise TrialProcessLost(f"trial process killed by signal {-process.returncode}")
    return record


def wait_for_exit(pid: int | None, timeout: float = 300.0) -> None:
    """Wait until process `pid` of this node has exited (at most `timeout` seconds): a lost
    worker's trial process is still saving its checkpoint and outcome when Ray retries the
    task, and reading them earlier found neither its exit code nor its final updates."""
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:          # a pid reused by another user's process
            return
        time.sleep(0.2)


def read_outcome(folder: Path) -> dict:
    """What the last attempt's trial process wrote (sweep.child), removed once read."""
    import json

    path = folder / "outcome.json"
    try:
        outcome = json.loads(path.read_text())
    except (OSError, ValueError):
        outcome = {}
    path.unlink(missing_ok=True)
    return outcome


def finish(folder: Path, record: dict, entry: dict, code: int, began: float, log: Path,
           start: int) -> None:
    """Write what an attempt ended with into trial.json."""
    outcome = read_outcome(folder)
    entry.update(ended=time.time(), exit_code=code, wall_seconds=time.monotonic() - began,
                 resumed_from_updates=outcome.get("resumed_from_updates"),
                 updates=outcome.get("updates"))
    record["exit_codes"].append(code)
    record["wall_seconds"] = sum(e["wall_seconds"] or 0 for e in record["history"])
    if outcome.get("updates") is not None:
        record["updates"] = outcome["updates"]
    record["validations"] = read_validations(folder / "run")
    if code == 0:
        record.update(status="done", evaluation=outcome.get("evaluation"), message=None)
    elif code in STOPPED or code < 0:
        why = STOPPED.get(code) or f"signal {-code}"
        record.update(status="pending", message=f"stopped by {why} after {record['updates']} "
                                                f"updates; a rerun resumes it")
    else:
        record.update(status="failed", message=_message(log, start))
    write_trial(folder, record)


def probe(folder: str) -> tuple[str, str | None]:
    """(node address, None) when this node sees and can write the sweep's folder, else a reason."""
    import ray

    node = ray.util.get_node_ip_address()
    folder = Path(folder)
    if not (folder / "spec.yaml").is_file():
        return node, f"{folder}/spec.yaml is not visible there"
    try:
        test = folder / f".write-test-{node}-{os.getpid()}"
        test.write_text("ok")
        test.unlink()
    except OSError as err:
        return node, f"{folder} is not writable there ({err})"
    return node, None


# --- the driver ---------------------------------------------------------------------------------

def forwarded_environment() -> dict:
    """The driver's variables a trial needs (FORWARDED_PREFIXES), paths made absolute, plus a
    PYTHONPATH holding this project, so that a worker on any node imports it."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
    if "MINARI_DATASETS_PATH" in env:
        env["MINARI_DATASETS_PATH"] = str(Path(env["MINARI_DATASETS_PATH"]).expanduser().resolve())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def connect(address: str | None) -> str:
    """ray.init on the cluster at `address` (else RAY_ADDRESS), or on a local cluster started
    now and stopped by `ray.shutdown()`; returns a description for the user."""
    import ray

    options = dict(runtime_env={"env_vars": forwarded_environment()}, include_dashboard=False,
                   log_to_driver=False, logging_level="WARNING", configure_logging=True)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UsageError(f"Cannot connect to the Ray cluster at {address} ({err}). Start it "
                             f"with `ray start --head` (docs/sweeps.md); a cluster with token "
                             f"authentication needs RAY_AUTH_MODE=token here too (and its "
                             f"token); or leave out --address and RAY_ADDRESS to run on a "
                             f"local cluster.") from None
        where = f"the Ray cluster at {address}"
    else:
        ray.init(address="local", **options)
        where = "a local Ray cluster"
    cpus = ray.cluster_resources().get("CPU", 0)
    gpus = ray.cluster_resources().get("GPU", 0)
    return f"{where} ({cpus:g} CPUs, {gpus:g} GPUs)"


def check_nodes(folder: Path) -> None:
    """Refuse a sweep folder some node cannot see or write (no shared file system)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    task = ray.remote(probe)
    refs = [task.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(str(folder)) for n in nodes]
    problems = [f"{node}: {why}" for node, why in ray.get(refs, timeout=300) if why]
    if problems:
        raise UsageError(f"The sweep's folder {folder} must be one every node of the cluster "
                         f"sees and writes (a shared file system), and it is not: "
                         f"{'; '.join(problems)}. Pass an --output-dir on the shared file "
                         f"system.")


def run_sweep(folders: list[Path], cpus_per_trial: float, gpus_per_trial: float,
              max_retries: int, report) -> dict:
    """Run one Ray task per trial folder and wait for them; on SIGINT or SIGTERM stop them
    (the sweep folder's `.stop` file, and ray.cancel for queued ones): each running trial saves
    its last.ckpt and stops. Returns {"stopped": None or the signal's name, trial id: "done" |
    "failed" | "pending"}. `report(record)` is called as each trial ends."""
    import ray

    stop = folders[0].parent.parent / STOP
    stop.unlink(missing_ok=True)
    task = ray.remote(run_trial).options(
        num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=max_retries,
        retry_exceptions=[TrialProcessLost])
    refs = {task.remote(str(folder), cpus_per_trial): folder for folder in folders}
    stopped = {"signal": None}

    def on_signal(signum, frame):
        stopped["signal"] = signal.Signals(signum).name

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    outcome = {"stopped": None}
    try:
        waiting, cancelled = list(refs), False
        while waiting:
            if stopped["signal"] and not cancelled:
                print(f"Stopping on {stopped['signal']}: each running trial saves its "
                      f"last.ckpt and stops.", flush=True)
                stop.write_text(stopped["signal"])
                for ref in waiting:
                    ray.cancel(ref)
                cancelled = True
            done, waiting = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in done:
                folder = refs[ref]
                record = settle(ref, folder, max_retries)
                outcome[folder.name] = record["status"]
                report(record)
        outcome["stopped"] = stopped["signal"]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop.unlink(missing_ok=True)
    return outcome


def settle(ref, folder: Path, max_retries: int) -> dict:
    """The trial's record once its task ended, written as failed when Ray gave up on it."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return read_trial(folder)
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
            ray.exceptions.RayTaskError, ray.exceptions.RaySystemError) as err:
        record = read_trial(folder)
        cause = getattr(err, "cause", None)
        if isinstance(cause, KeyboardInterrupt):      # cancelled while running
            return record
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(err).strip()
        record.update(status="failed", message=f"{why} (after {record['attempts']} attempts; "
                                               f"--max-retries {max_retries})")
        write_trial(folder, record)
        return record
