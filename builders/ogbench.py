"""OGBench manipulation datasets: regenerate the "play" data, relabel it for one task, write Minari.

OGBench (Park et al., "OGBench: Benchmarking Offline Goal-Conditioned RL", ICLR 2025; package
`ogbench` 1.2.2, repo github.com/seohongpark/ogbench) ships its manipulation environments and
scripted oracles in the wheel; its datasets are files downloaded from Berkeley's server. This
machine has no such network, so `generate_play_dataset` regenerates a "play" dataset here by
OGBench's documented procedure (repo data_gen_scripts/generate_manipspace.py and commands.sh, read
for their facts; the driver below is our own) and writes it in OGBench's own npz layout, so
`ogbench.load_dataset` and `make_env_and_datasets(..., dataset_path=...)` read it like the official
file. `load_singletask` relabels such a file (regenerated or official) for one task with OGBench's
own `relabel_dataset`, and `singletask_episodes` turns the result into Minari episodes.

OGBench's npz layout, one row per environment step, episodes back to back (1001 rows each):

    row:           s0  s1  ...  s999  s1000 | s0  s1 ...      observations, qpos, qvel,
    actions:       a0  a1  ...  a999  a1000 | a0  a1 ...      button_states: the state s_t
    terminals:      0   0  ...     0      1 |  0   0 ...      *before* action a_t

`ogbench.load_dataset` turns an episode of 1001 rows into 1000 transitions (s_t, a_t, s_t+1):
the last row's action has no next state and is dropped, the last row's observation is kept as
the final next_observation. A single-task episode therefore has T = 1000 transitions and
T + 1 = 1001 observations, all of them in the file.

Names: `cube-single-play-v0` is a dataset (file `cube-single-play-v0.npz`, validation split
`cube-single-play-v0-val.npz`); `cube-single-v0` its goal-conditioned environment;
`ogbench/cube-single-play-singletask-task2-v0` our Minari id for the dataset relabelled for task
2, whose evaluation environment is the gym id without the dataset word,
`cube-single-singletask-task2-v0` (registered by `import ogbench`).
"""

from __future__ import annotations

import importlib.metadata
import multiprocessing
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import ogbench
from minari.data_collector import EpisodeBuffer
from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle
from ogbench.relabel_utils import relabel_dataset
from ogbench.utils import DEFAULT_DATASET_DIR
from tqdm import tqdm

# --------------------------------------------------------------------------------------------
# Constants (facts of OGBench 1.2.2; the tests check the ones the package can answer)
# --------------------------------------------------------------------------------------------

PLAY_DATASETS = {  # dataset -> the goal-conditioned environment it was collected in
    "cube-single-play-v0": "cube-single-v0",
    "scene-play-v0": "scene-v0",
    "puzzle-3x3-play-v0": "puzzle-3x3-v0",
}
OFFICIAL_EPISODES = {"train": 1000, "val": 100}  # commands.sh: --num_episodes=1000; val = 1000 // 10
OFFICIAL_EPISODE_LENGTH = 1001  # commands.sh: --max_episode_steps=1001
PLAN_NOISE = 0.1            # generate_manipspace.py defaults for play data: --noise=0.1,
PLAN_NOISE_SMOOTHING = 0.5  # --noise_smoothing=0.5, --p_random_action=0 (no random actions)
P_STACK = {"cube-single-v0": 0.0, "scene-v0": 0.5, "puzzle-3x3-v0": 0.5}  # puzzle ignores it
NUM_TASKS = 5
DEFAULT_PLAY = "cube-single-play-v0"
DEFAULT_TASK = {"cube-single-play-v0": 2, "scene-play-v0": 2, "puzzle-3x3-play-v0": 4}
"""Task of the bare `...-singletask-v0` id: `reward_task_id=0` is mapped to these in
ogbench/manipspace/envs/{cube,scene,puzzle}_env.py `set_tasks`."""
SPLIT_STREAM = {"train": 0, "val": 1}  # keeps validation episodes' seeds apart from training's
NAMESPACE = "ogbench"
AUTHOR = "meanflow-ql (builders/ogbench.py)"
REGENERATED_DIR_ENV = "MEANFLOW_QL_OGBENCH_DIR"

_SINGLETASK_RE = re.compile(
    rf"(?:{NAMESPACE}/)?(?P<stem>[a-z0-9-]+?)-play-singletask(?:-task(?P<task>\d+))?"
    rf"(?P<sparse>-sparse)?-v0")


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SingleTask:
    """One single-task dataset, parsed from its id."""

    dataset_id: str    # ogbench/cube-single-play-singletask-task2-v0 (Minari id, as given or bare)
    dataset_name: str  # cube-single-play-v0 (the npz file's name)
    task: int          # 1..5; the default task when the id is bare
    env_id: str        # cube-single-singletask-task2-v0 (evaluation env; bare id when bare)
    ogbench_name: str  # cube-single-play-singletask-task2-v0 (make_env_and_datasets' name)
    sparse: bool = False  # `-sparse-v0`: Q-chunking's sparse reward (`sparse_rewards`)


def _play_name(name: str) -> tuple[str, str]:
    """('cube-single-play-v0', 'train') from 'cube-single-play-v0'; split 'val' for '...-v0-val'."""
    base, split = (name[:-4], "val") if name.endswith("-val") else (name, "train")
    if base not in PLAY_DATASETS:
        raise ValueError(f"unknown OGBench play dataset {name!r}; supported: "
                         f"{', '.join(PLAY_DATASETS)} (append -val for the validation split).")
    return base, split


def parse_singletask_id(dataset_id: str) -> SingleTask:
    """Parse `ogbench/<stem>-play-singletask[-task<k>]-v0` (the `ogbench/` prefix is optional).

    The evaluation env id drops the dataset word "play", as `ogbench.make_env_and_datasets`
    does (ogbench/utils.py). A bare id (no `-task<k>`) means the package's default task
    (`DEFAULT_TASK`): its evaluation env is the bare gym id, which the package registers with
    `reward_task_id=0` (ogbench/manipspace/__init__.py).

    Raises:
        ValueError: malformed id, unsupported dataset, or task outside 1..5.
    """
    match = _SINGLETASK_RE.fullmatch(dataset_id)
    if match is None:
        raise ValueError(f"malformed OGBench single-task id {dataset_id!r}; expected e.g. "
                         f"{NAMESPACE}/cube-single-play-singletask-task2-v0.")
    stem, task_text, sparse = match.group("stem", "task", "sparse")
    dataset_name = f"{stem}-play-v0"
    _play_name(dataset_name)
    suffix = "" if task_text is None else f"-task{task_text}"
    task = DEFAULT_TASK[dataset_name] if task_text is None else int(task_text)
    if not 1 <= task <= NUM_TASKS:
        raise ValueError(f"task must be in 1..{NUM_TASKS}, got {task} in {dataset_id!r}.")
    return SingleTask(dataset_id, dataset_name, task, f"{stem}-singletask{suffix}-v0",
                      f"{stem}-play-singletask{suffix}-v0", sparse=bool(sparse))


def sparse_rewards(rewards: np.ndarray) -> np.ndarray:
    """OGBench's dense single-task rewards (satisfied components minus all components, so 0
    exactly at success) made sparse as Q-chunking does with `--sparse=True` (Li, Zhou, Levine
    2025, repo ColinQiyangLi/qc, main.py): -1 at every step not in the success state, 0 in it.
    OGBench's masks (0 at success) stay as they are. Same shape and dtype as `rewards`."""
    return np.where(rewards != 0, -1.0, 0.0).astype(rewards.dtype)


def singletask_ids(name: str) -> list[str]:
    """The five Minari ids `ogbench/<stem>-play-singletask-task{1..5}-v0` of play dataset `name`
    (each also has a `...-task<k>-sparse-v0` twin with Q-chunking's sparse reward).

    Raises:
        ValueError: `name` is not one of `PLAY_DATASETS`.
    """
    stem = _play_name(name)[0].removesuffix("-play-v0")
    return [f"{NAMESPACE}/{stem}-play-singletask-task{k}-v0" for k in range(1, NUM_TASKS + 1)]


def official_npz_path(name: str, dataset_dir: str | os.PathLike = DEFAULT_DATASET_DIR) -> Path:
    """Where `ogbench.download_datasets` puts dataset `name` (e.g. `cube-single-play-v0` or
    `cube-single-play-v0-val`): `<dataset_dir>/<name>.npz`, `dataset_dir` defaulting to
    `~/.ogbench/data` (ogbench/utils.py `DEFAULT_DATASET_DIR`; OGBench reads no environment
    variable, only this argument). `~` is expanded; the file need not exist."""
    return Path(os.path.expanduser(dataset_dir)) / f"{name}.npz"


# --------------------------------------------------------------------------------------------
# Regenerating play data
# --------------------------------------------------------------------------------------------

def _make_collection_env(env_id: str, episode_length: int) -> gym.Env:
    return gym.make(env_id, terminate_at_goal=False, mode="data_collection",
                    max_episode_steps=episode_length)


def _plan_oracles(env: gym.Env, env_id: str) -> dict:
    """Plan oracles by `info['privileged/target_task']`, with the play data's noise settings."""
    noise = dict(noise=PLAN_NOISE, noise_smoothing=PLAN_NOISE_SMOOTHING)
    if env_id.startswith("cube"):
        return {"cube": CubePlanOracle(env=env, **noise)}
    if env_id.startswith("puzzle"):
        return {"button": ButtonPlanOracle(env=env, gripper_always_closed=True, **noise)}
    return {"cube": CubePlanOracle(env=env, **noise), "button": ButtonPlanOracle(env=env, **noise),
            "drawer": DrawerPlanOracle(env=env, **noise), "window": WindowPlanOracle(env=env, **noise)}


def _scene_healthy(qpos: np.ndarray) -> bool:
    """OGBench's scene check: the cube never goes right of y = 0.29, nor left of y = -0.3 unless
    it is at drawer height (0.06 <= z <= 0.08). qpos[:, 14:17] is the cube's position."""
    y, z = qpos[:, 15], qpos[:, 16]
    return not ((y >= 0.29).any() or ((y <= -0.3) & ((z < 0.06) | (z > 0.08))).any())


def _rollout(env: gym.Env, oracles: dict, p_stack: float, ob, info) -> dict[str, np.ndarray]:
    """One episode from a reset state until the time limit; rows hold the state before each step."""
    oracle = oracles[info["privileged/target_task"]]
    oracle.reset(ob, info)
    rows = {"observations": [], "actions": [], "terminals": [], "qpos": [], "qvel": [],
            "button_states": []}
    done = False
    while not done:
        action = np.clip(np.asarray(oracle.select_action(ob, info)), -1.0, 1.0)
        next_ob, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        if oracle.done:  # the subtask's plan has run out: new random target, matching oracle
            new_ob, new_info = env.unwrapped.set_new_target(p_stack=p_stack)
            oracle = oracles[new_info["privileged/target_task"]]
            oracle.reset(new_ob, new_info)
        rows["observations"].append(ob)
        rows["actions"].append(action)
        rows["terminals"].append(done)
        rows["qpos"].append(info["prev_qpos"])
        rows["qvel"].append(info["prev_qvel"])
        if "prev_button_states" in info:
            rows["button_states"].append(info["prev_button_states"])
        ob = next_ob
    return {k: np.asarray(v) for k, v in rows.items() if v}


def _episode(env: gym.Env, oracles: dict, env_id: str, seed: np.random.SeedSequence) -> dict:
    """One play episode as a pure function of `seed`: the env's generator (initial scene,
    targets) is reset from it and so is numpy's global generator, which the plan oracles draw
    their keyframes and noise from. An unhealthy scene episode is redone from where the
    generators are, as OGBench does."""
    env_seed, oracle_seed = seed.generate_state(2)
    np.random.seed(oracle_seed)
    ob, info = env.reset(seed=int(env_seed))
    while True:
        rows = _rollout(env, oracles, P_STACK[env_id], ob, info)
        if not env_id.startswith("scene") or _scene_healthy(rows["qpos"]):
            return rows
        ob, info = env.reset()


_WORKER: dict = {}


def _init_worker(env_id: str, episode_length: int, seed: int, stream: int) -> None:
    env = _make_collection_env(env_id, episode_length)
    _WORKER.update(env=env, oracles=_plan_oracles(env, env_id), env_id=env_id, seed=seed,
                   stream=stream)


def _worker_episode(index: int) -> dict:
    w = _WORKER
    return _episode(w["env"], w["oracles"], w["env_id"],
                    np.random.SeedSequence([w["seed"], w["stream"], index]))


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as file:  # a file object: numpy would append ".npz" to a name
            np.savez_compressed(file, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def generate_play_dataset(name: str, num_episodes: int | None, seed: int,
                          out_path: str | os.PathLike, workers: int = 2, progress: bool = True,
                          episode_length: int = OFFICIAL_EPISODE_LENGTH,
                          overwrite: bool = False) -> Path:
    """Regenerate an OGBench "play" dataset and write it in OGBench's npz layout.

    Recipe (OGBench repo data_gen_scripts/generate_manipspace.py, commands.sh): env
    `gym.make('<env>-v0', terminate_at_goal=False, mode='data_collection',
    max_episode_steps=1001)`; open-loop plan oracles (`ogbench.manipspace.oracles.plan`, noise
    0.1, smoothing 0.5; puzzle's button oracle with the gripper always closed), the one for
    `info['privileged/target_task']`; when it reports done, `env.unwrapped.set_new_target()`
    (stacking probability 0 for cube-single, 0.5 for scene) and the new target's oracle is
    reset; actions clipped to [-1, 1]; no random actions; episodes end only at the time limit;
    scene episodes failing OGBench's cube-visibility check are redone. OGBench's own driver does
    not seed its episodes, so its official files cannot be reproduced bit for bit; here episode
    i is a pure function of `np.random.SeedSequence([seed, split, i])` (split 0 = train,
    1 = validation), so the same seed gives the same arrays for any number of workers.

    Args:
        name: `cube-single-play-v0`, `scene-play-v0` or `puzzle-3x3-play-v0`, with `-val`
            appended for the validation split (its episodes use a different seed stream).
        num_episodes: episodes to generate; None = OGBench's count (1000, or 100 for -val).
        seed: base seed.
        out_path: the .npz to write (conventionally `<dataset_dir>/<name>.npz`).
        workers: processes collecting episodes in parallel (spawned; 1 = this process).
        progress: show a progress bar.
        episode_length: env steps per episode (OGBench: 1001 -> 1000 transitions).
        overwrite: replace an existing `out_path`.

    Returns:
        `out_path`. With E episodes of L = `episode_length` steps the file holds
        (np.savez_compressed): observations (E*L, D) float32 (D = 28 cube-single, 40 scene, 55
        puzzle-3x3); actions (E*L, 5) float32 in [-1, 1]; terminals (E*L,) bool, True only at
        each episode's last row; qpos (E*L, nq) float32 and qvel (E*L, nv) float32, the MuJoCo
        state before each step; button_states (E*L, buttons) int64 for scene and puzzle.
        Written to a temporary file and renamed into place.

    Raises:
        ValueError: unknown `name`, or a count below 1 (episodes, workers) or length below 2.
        FileExistsError: `out_path` exists and `overwrite` is False.
    """
    base, split = _play_name(name)
    env_id = PLAY_DATASETS[base]
    num_episodes = OFFICIAL_EPISODES[split] if num_episodes is None else num_episodes
    if num_episodes < 1 or workers < 1 or episode_length < 2:
        raise ValueError(f"need num_episodes >= 1, workers >= 1 and episode_length >= 2; got "
                         f"{num_episodes}, {workers}, {episode_length}.")
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass overwrite=True to replace it.")

    init_args = (env_id, episode_length, seed, SPLIT_STREAM[split])
    bar = dict(total=num_episodes, desc=f"generate {name}", unit="episode", disable=not progress)
    if workers == 1:
        _init_worker(*init_args)
        try:
            episodes = [_worker_episode(i) for i in tqdm(range(num_episodes), **bar)]
        finally:
            _WORKER.pop("env").close()
    else:
        # spawn, not fork: the parent may hold threads (torch, tqdm) that fork would copy
        # mid-state; each worker builds its own env and oracles once.
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(workers, num_episodes), _init_worker, init_args) as pool:
            episodes = list(tqdm(pool.imap(_worker_episode, range(num_episodes)), **bar))

    dtypes = {"observations": np.float32, "actions": np.float32, "terminals": bool,
              "qpos": np.float32, "qvel": np.float32, "button_states": np.int64}
    arrays = {k: np.concatenate([ep[k] for ep in episodes]).astype(dtype)
              for k, dtype in dtypes.items() if k in episodes[0]}
    _save_npz_atomic(out_path, arrays)
    return out_path


# --------------------------------------------------------------------------------------------
# Single-task relabelling
# --------------------------------------------------------------------------------------------

def _relabelled(npz_path: str | os.PathLike, task: SingleTask) -> dict[str, np.ndarray]:
    """All rows of the file with OGBench's rewards and masks (computed on every row's state,
    the final one included) and `starts`, the first row of each episode plus the row count."""
    path = Path(npz_path)
    if not path.is_file():
        raise FileNotFoundError(f"no OGBench dataset file at {path}")
    # compact_dataset keeps every row (no next_observations copy) and marks each episode's
    # last row with valids = 0; add_info reads qpos/qvel/button_states, which relabelling needs.
    data = ogbench.load_dataset(str(path), compact_dataset=True, add_info=True)
    needed = {"qpos"} | ({"button_states"} if not task.dataset_name.startswith("cube") else set())
    if missing := needed - data.keys():
        raise ValueError(f"{path} lacks {sorted(missing)}, needed to relabel {task.dataset_id}.")
    env = ogbench.make_env_and_datasets(task.ogbench_name, env_only=True)
    try:
        relabel_dataset(task.env_id, env, data)  # OGBench's own: rewards and masks per row
    finally:
        env.close()
    ends = np.flatnonzero(data["valids"] == 0)
    if len(ends) == 0 or ends[-1] != len(data["valids"]) - 1 or np.any(np.diff(np.r_[-1, ends]) < 2):
        raise ValueError(f"{path}: terminals must end every episode, the last row included, and "
                         f"episodes need at least 2 rows.")
    data["starts"] = np.r_[0, ends + 1]
    if task.sparse:
        data["rewards"] = sparse_rewards(np.asarray(data["rewards"]))
    return data


def reaches_success(infos: dict | None) -> bool | None:
    """Whether a single-task episode reaches the task's success state: a step before its last
    observation carries mask 0 in `infos["mask"]` (per observation, as `load_singletask` stores
    it). None for episodes without a mask (not an OGBench single-task dataset)."""
    if not infos or "mask" not in infos:
        return None
    return bool(np.any(np.asarray(infos["mask"])[:-1] == 0))


def load_singletask(npz_path: str | os.PathLike, task_id: str) -> list[dict[str, np.ndarray]]:
    """Read a file in OGBench's layout and relabel it for one task with OGBench's own
    `ogbench.relabel_utils.relabel_dataset` (as `make_env_and_datasets` does for its
    `-singletask` names): reward = (satisfied task components) - (components), computed on the
    transition's first state s_t (OGBench >= 1.2.0); mask = 0 exactly where every component is
    satisfied (a success state: no bootstrap from s_t+1), else 1. Components: the cube within
    0.04 m of its goal (cube); cubes, buttons, drawer and window (scene); each button's colour
    (puzzle). Episodes are OGBench's whole trajectories, not cut at success.

    The (T+1)-th observation: the file stores every state an episode visits, one row per step
    (see the module docstring); OGBench drops only the last row's *action*, which has no next
    state. So an episode of R rows gives T = R - 1 transitions and all R rows are observations.

    Args:
        npz_path: a regenerated or an official OGBench file (e.g. `official_npz_path(name)`).
        task_id: single-task id, e.g. `ogbench/cube-single-play-singletask-task2-v0` (prefix
            optional; bare `...-singletask-v0` = the default task).

    Returns:
        One dict per episode (views into shared arrays): obs (T+1, D) float32, actions (T, 5)
        float32, rewards (T,) float64 (integers in [-components, 0]), masks (T,) float32 (0.0
        or 1.0). T = 1000 for OGBench's files.

    Raises:
        ValueError: malformed/unsupported `task_id`, or a file lacking the fields or terminals
            the relabelling needs. FileNotFoundError: no file at `npz_path`.
    """
    data = _relabelled(npz_path, parse_singletask_id(task_id))
    rewards = data["rewards"].astype(np.float64)
    episodes = []
    for start, stop in zip(data["starts"][:-1], data["starts"][1:]):
        last = stop - 1  # the final state: an observation, but no transition starts there
        episodes.append({"obs": data["observations"][start:stop],
                         "actions": data["actions"][start:last],
                         "rewards": rewards[start:last],
                         "masks": data["masks"][start:last]})
    return episodes


# --------------------------------------------------------------------------------------------
# Minari
# --------------------------------------------------------------------------------------------

def _describe(task: SingleTask, npz_path: Path, source: str, num_episodes: int, steps: int) -> str:
    reward = ("Q-chunking's sparse reward: -1 at every step before success, 0 in the success "
              "state (OGBench's dense reward != 0 -> -1)" if task.sparse else
              "OGBench's dense reward: satisfied task components minus all components, on the "
              "transition's first state")
    origin = {"regenerated": f"regenerated on this machine by builders/ogbench.py "
                             f"generate_play_dataset (OGBench's play recipe, our seeds), file {npz_path}",
              "official": f"the official OGBench file {npz_path} (ogbench.download_datasets)"}[source]
    return (f"OGBench {task.dataset_name} relabelled for task {task.task} of {task.env_id} "
            f"(evaluation env, registered by `import ogbench`). Source: {origin}. {num_episodes} "
            f"episodes, {steps} transitions: OGBench's whole trajectories, not cut at success. "
            f"Rewards relabelled by ogbench.relabel_utils.relabel_dataset; {reward}. "
            f"infos['mask'] (float32, one per observation): OGBench's mask of that state, 0 where every component is satisfied "
            f"(no bootstrap after a step from it), else 1. Terminations are all False; each "
            f"episode is truncated at its last step.")


def singletask_episodes(dataset_id: str, npz_path: str | os.PathLike,
                        source: str) -> tuple[list[EpisodeBuffer], dict]:
    """An OGBench play file relabelled for one task, as whole-episode EpisodeBuffers and the
    metadata for `minari.create_dataset_from_buffers` (collect.write_dataset writes them).

    Per episode of T transitions: observations (T+1, D) float32, actions (T, 5) float32,
    rewards (T,) float64 as `load_singletask`; terminations all False, truncations True only at
    the last step; infos["mask"] (T+1,) float32, aligned with observations as Minari's infos are
    (DataCollector records the reset info first): entry t is OGBench's mask of state s_t, so
    entries 0..T-1 are the transitions' masks and entry T is the final state's. The env spec is
    the collection env (data_collection mode, time limit = episode rows); the eval_env spec is
    the single-task env `SingleTask.env_id`, which Minari serialises (its kwargs are plain
    values) and `recover_environment(eval_env=True)` makes.

    Args:
        dataset_id: `ogbench/<stem>-play-singletask[-task<k>]-v0` (the prefix is required here).
        npz_path: file in OGBench's layout.
        source: "regenerated" (by `generate_play_dataset`) or "official" (OGBench's download);
            recorded in the description with the file's path.

    Raises:
        ValueError: bad id or `source`, or a file `load_singletask` rejects.
    """
    task = parse_singletask_id(dataset_id)
    if not dataset_id.startswith(f"{NAMESPACE}/"):
        raise ValueError(f"Minari id must start with {NAMESPACE}/, got {dataset_id!r}.")
    if source not in ("regenerated", "official"):
        raise ValueError(f"source must be 'regenerated' or 'official', got {source!r}.")
    data = _relabelled(npz_path, task)
    starts = data["starts"]
    rewards, masks = data["rewards"].astype(np.float64), data["masks"].astype(np.float32)
    buffers = []
    for start, stop in zip(starts[:-1], starts[1:]):
        steps = stop - start - 1
        truncations = np.zeros(steps, dtype=bool)
        truncations[-1] = True
        buffers.append(EpisodeBuffer(
            observations=data["observations"][start:stop], actions=data["actions"][start:stop - 1],
            rewards=rewards[start:stop - 1], terminations=np.zeros(steps, dtype=bool),
            truncations=truncations, infos={"mask": masks[start:stop]}))
    collection_env = gym.spec(PLAY_DATASETS[task.dataset_name])
    collection_spec = gym.envs.registration.EnvSpec(
        id=collection_env.id, entry_point=collection_env.entry_point,
        max_episode_steps=int(np.diff(starts).max()),
        kwargs={**collection_env.kwargs, "terminate_at_goal": False, "mode": "data_collection"})
    dim = data["observations"].shape[1]
    metadata = dict(
        env=collection_spec, eval_env=gym.spec(task.env_id),
        observation_space=gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (5,), np.float32),
        algorithm_name="OGBench plan oracles (play data)", author=AUTHOR,
        author_email="none", code_permalink="builders/ogbench.py in meanflow-ql",
        description=_describe(task, Path(npz_path), source, len(buffers),
                              int(np.sum(np.diff(starts) - 1))),
        requirements=[f"ogbench=={importlib.metadata.version('ogbench')}",
                      f"gymnasium=={gym.__version__}", f"mujoco=={mujoco.__version__}"])
    return buffers, metadata


def regenerated_npz_path(name: str) -> Path:
    """Where play files regenerated here are kept, in OGBench's layout:
    `$MEANFLOW_QL_OGBENCH_DIR/<name>.npz` (default `~/.ogbench/regenerated`, beside OGBench's
    own `~/.ogbench/data`, so an official download is never mistaken for a regenerated file)."""
    folder = os.environ.get(REGENERATED_DIR_ENV) or "~/.ogbench/regenerated"
    return Path(os.path.expanduser(folder)) / f"{name}.npz"


def play_file(name: str) -> tuple[Path, str] | None:
    """(path, "official") when OGBench's download of play file `name` is on disk, else
    (path, "regenerated") when it was regenerated here, else None."""
    if official_npz_path(name).is_file():
        return official_npz_path(name), "official"
    if regenerated_npz_path(name).is_file():
        return regenerated_npz_path(name), "regenerated"
    return None


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

def run_eval_episode(env_id: str, policy: str = "zero", seed: int = 0) -> dict:
    """One episode of a single-task evaluation env (e.g. `cube-single-singletask-task2-v0`:
    200-step limit, ends at success, `info['success']` after every step) with a zero or
    uniform-random action.

    Returns:
        {"steps", "return", "success" (the last step's info['success']), "terminated",
        "truncated"}.

    Raises:
        ValueError: `policy` is not "zero" or "random".
        KeyError: the env reports no `success` in its step info.
    """
    if policy not in ("zero", "random"):
        raise ValueError(f"policy must be 'zero' or 'random', got {policy!r}.")
    rng = np.random.default_rng(seed)
    env = gym.make(env_id)
    try:
        env.reset(seed=seed)
        total, steps, terminated, truncated = 0.0, 0, False, False
        while not (terminated or truncated):
            action = (np.zeros(5, np.float32) if policy == "zero"
                      else rng.uniform(-1.0, 1.0, 5).astype(np.float32))
            _, reward, terminated, truncated, info = env.step(action)
            total, steps = total + float(reward), steps + 1
        return {"steps": steps, "return": total, "success": bool(info["success"]),
                "terminated": bool(terminated), "truncated": bool(truncated)}
    finally:
        env.close()
