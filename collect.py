"""Build real Minari datasets on this machine: run a recipe's behaviour policy in its real
environment and write the episodes with Minari's own writer. The recipes and their scripted
controllers live in `builders/`.

Minari's server holds `mujoco/pusher/*` datasets, but this machine has no internet, so
`local/...` datasets are generated here from real Gymnasium environments and written with
Minari's own writer (`minari.create_dataset_from_buffers`), so that plain
`minari.load_dataset(id)`, `minari list local` and `minari.get_normalized_score` all work.

    python collect.py --list
    python collect.py --dataset local/pusher/expert-v0 [--episodes N] [--seed S] [--overwrite]

Datasets go where Minari keeps them: `$MINARI_DATASETS_PATH`, or `~/.minari/datasets` when unset.
A build is written into a hidden staging folder next to them and renamed into place only when
complete, so an interrupted build never leaves a dataset that loads as if it were whole.

Environment variables:
    MEANFLOW_QL_COLLECT_EPISODES  overrides every recipe's default episode count (tests use it so
                                  `main.py train` with no arguments builds a tiny dataset).
    MEANFLOW_QL_REF_EPISODES      episodes averaged for `ref_min_score`/`ref_max_score`
                                  (default 100); lower it in tests only.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import gymnasium as gym
import minari
import mujoco
import numpy as np
from minari.data_collector import EpisodeBuffer
from minari.dataset.minari_dataset import parse_dataset_id
from minari.namespace import create_namespace, list_local_namespaces
from minari.storage.datasets_root_dir import get_dataset_path
from tqdm import tqdm

from builders import LOCAL_DATASETS, ogbench, pusher
from builders.recipe import Recipe
from config import UsageError, expand_user_in_environment

EPISODES_ENV = "MEANFLOW_QL_COLLECT_EPISODES"
REF_EPISODES_ENV = "MEANFLOW_QL_REF_EPISODES"
DEFAULT_REF_EPISODES = 100
REF_SEED_OFFSET = 1_000_000  # reference-score episodes use seeds far from the data's seeds
AUTHOR = "meanflow-ql (collect.py)"


# --------------------------------------------------------------------------------------------
# Episodes
# --------------------------------------------------------------------------------------------


def make_env(dataset_id: str) -> gym.Env:
    """The environment a local dataset is collected in (with its time limit)."""
    return gym.make(_recipe(dataset_id).env_spec())


def _act(behaviour: str, controller, obs, env: gym.Env, rng: np.random.Generator, noise_std: float):
    space = env.action_space
    if behaviour == "random":
        return rng.uniform(space.low, space.high).astype(space.dtype)
    action = controller(obs)  # always called, so a controller with state stays in step
    if behaviour == "medium":
        action = controller.degrade(action, rng, space, noise_std)
    return np.clip(action, space.low, space.high).astype(space.dtype)


def run_episode(env: gym.Env, controller, behaviour: str, seed: int) -> EpisodeBuffer:
    """One episode from `env.reset(seed=seed)`; the behaviour's noise comes from a Generator
    seeded with the same seed, so an episode is a pure function of (behaviour, seed)."""
    rng = np.random.default_rng(seed)
    noise_std = rng.uniform(0.0, 3.0)
    controller.reset()
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    while True:
        action = _act(behaviour, controller, obs, env, rng, noise_std)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        if terminated or truncated:
            break
    return EpisodeBuffer(seed=seed, observations=np.asarray(observations),
                         actions=np.asarray(actions), rewards=rewards,
                         terminations=terminations, truncations=truncations)


def _ref_episodes() -> int:
    value = os.environ.get(REF_EPISODES_ENV)
    return DEFAULT_REF_EPISODES if value is None else _positive_int(value, REF_EPISODES_ENV)


@functools.cache
def reference_scores(recipe: Recipe, seed: int, num_episodes: int) -> tuple[float, float]:
    """(ref_min_score, ref_max_score): mean returns of the uniform-random policy and of the
    scripted expert over `num_episodes` seeded episodes. Cached within the process."""
    env = gym.make(recipe.env_spec())
    controller = recipe.controller(env)
    returns = {"random": [], "expert": []}
    for behaviour, values in returns.items():
        for i in range(num_episodes):
            values.append(sum(run_episode(env, controller, behaviour, REF_SEED_OFFSET + seed + i).rewards))
    env.close()
    return float(np.mean(returns["random"])), float(np.mean(returns["expert"]))


def success_fraction(dataset: minari.MinariDataset) -> float:
    """Pusher: fraction of episodes whose object ends within 0.1 of the goal in x-y."""
    return pusher.success_fraction(np.array([ep.observations[-1]
                                             for ep in dataset.iterate_episodes()]))


# --------------------------------------------------------------------------------------------
# Building and listing
# --------------------------------------------------------------------------------------------


def is_local(dataset_id: str) -> bool:
    return dataset_id.startswith("local/")


def is_buildable(dataset_id: str) -> bool:
    return is_local(dataset_id) or dataset_id.startswith(f"{ogbench.NAMESPACE}/")


def _buildable() -> str:
    play = [f"{ogbench.NAMESPACE}/{name}" for name in ogbench.PLAY_DATASETS]
    return ", ".join([*LOCAL_DATASETS, *play]) + (f" and their single-task ids ("
                                                  f"{ogbench.singletask_ids(ogbench.DEFAULT_PLAY)[1]}...)")


def _recipe(dataset_id: str) -> Recipe:
    if dataset_id not in LOCAL_DATASETS:
        raise UsageError(f"unknown local dataset {dataset_id!r}; the datasets this machine can "
                         f"build are: {_buildable()}.")
    return LOCAL_DATASETS[dataset_id]


def _positive_int(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{name} must be a positive integer, got {text!r}.")
    return value


def _on_disk(dataset_id: str) -> bool:
    return (get_dataset_path(dataset_id) / "data").exists()


@contextlib.contextmanager
def datasets_root(path: Path):
    """Point Minari (which reads MINARI_DATASETS_PATH at call time) at `path` for a while."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _describe(dataset_id: str, recipe: Recipe, num_episodes: int, seed: int, ref_episodes: int) -> str:
    controller = recipe.controller
    doc = " ".join(line.strip() for line in (controller.__doc__ or "").split("\n\n")[0].split())
    parts = [f"{recipe.description}. Built by meanflow-ql's collect.py on this machine: "
             f"{num_episodes} episodes, episode i reset with seed {seed}+i and its behaviour noise "
             f"drawn from numpy.random.default_rng({seed}+i).",
             f"Episode i is generated by {list(recipe.behaviours)}[i % {len(recipe.behaviours)}].",
             f"Scripted controller ({controller.__name__}): {doc}"]
    if "medium" in recipe.behaviours:
        parts.append(f"medium: the controller with {recipe.degrade}.")
    if "random" in recipe.behaviours:
        parts.append("random: uniform-random actions.")
    parts.append(f"ref_min_score / ref_max_score: mean returns of the uniform-random policy and of "
                 f"the undegraded controller over {ref_episodes} episodes (seeds "
                 f"{REF_SEED_OFFSET}+{seed}+i).")
    return " ".join(parts)


def build_local_dataset(dataset_id: str, num_episodes: int | None = None, seed: int = 0,
                        overwrite: bool = False, progress: bool = True) -> minari.MinariDataset:
    """Generate `dataset_id` in Minari's datasets folder and return it, loaded back."""
    recipe = _recipe(dataset_id)
    if num_episodes is None:
        env_value = os.environ.get(EPISODES_ENV)
        num_episodes = recipe.num_episodes if env_value is None else _positive_int(env_value, EPISODES_ENV)
    if num_episodes < 1:
        raise UsageError(f"--episodes must be a positive integer, got {num_episodes}.")
    if get_dataset_path(dataset_id).exists() and not overwrite:     # fail before collecting
        raise UsageError(f"dataset {dataset_id} already exists at {get_dataset_path(dataset_id)}; "
                         f"pass --overwrite to replace it.")

    spec = recipe.env_spec()
    env = gym.make(spec)
    controller = recipe.controller(env)
    buffers = []
    for i in tqdm(range(num_episodes), desc=f"collect {dataset_id}", unit="episode", disable=not progress):
        behaviour = recipe.behaviours[i % len(recipe.behaviours)]
        buffers.append(run_episode(env, controller, behaviour, seed + i))
    ref_episodes = _ref_episodes()
    ref_min, ref_max = reference_scores(recipe, seed, ref_episodes)

    env.close()
    return write_dataset(
        dataset_id, buffers, overwrite, env=spec, eval_env=spec,
        algorithm_name=f"scripted {controller.__class__.__name__} ({'/'.join(recipe.behaviours)})",
        author=AUTHOR, author_email="none", code_permalink="collect.py in meanflow-ql",
        ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=ref_episodes,
        description=_describe(dataset_id, recipe, num_episodes, seed, ref_episodes),
        requirements=[f"gymnasium=={gym.__version__}", f"mujoco=={mujoco.__version__}"])


def write_dataset(dataset_id: str, buffers: list[EpisodeBuffer], overwrite: bool,
                  **metadata) -> minari.MinariDataset:
    """Write whole episodes as Minari dataset `dataset_id` with Minari's own writer
    (`minari.create_dataset_from_buffers(dataset_id, buffers, **metadata)`) and return it loaded
    back. Staged: written under a hidden folder and renamed into place when complete, so an
    interrupted write leaves nothing that loads and an overwritten dataset survives until then.

    Raises UsageError when the dataset exists and `overwrite` is False."""
    final_path = get_dataset_path(dataset_id)
    if final_path.exists() and not overwrite:
        raise UsageError(f"dataset {dataset_id} already exists at {final_path}; pass --overwrite "
                         f"to replace it.")
    # minari.DataCollector would need jax (`minari[create]`, ~600 MB) to append steps; whole
    # episodes as EpisodeBuffers go through minari.create_dataset_from_buffers without it.
    # Written into a hidden staging root (Minari skips hidden folders when listing) under the
    # final id, so the metadata names the final id, then renamed into place.
    root = get_dataset_path()
    staging = root / f".building-{uuid.uuid4().hex}"
    try:
        with datasets_root(staging):
            minari.create_dataset_from_buffers(dataset_id=dataset_id, buffer=buffers, **metadata)
        namespace = parse_dataset_id(dataset_id)[0]
        if namespace is not None and namespace not in list_local_namespaces():
            create_namespace(namespace)
        final_path.parent.mkdir(parents=True, exist_ok=True)
        if final_path.exists():  # overwrite: move the old one aside, deleted with the staging root
            os.replace(final_path, staging / "replaced")
        os.replace(staging / dataset_id, final_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return minari.load_dataset(dataset_id)


def build_dataset(dataset_id: str, num_episodes: int | None = None, seed: int = 0,
                  overwrite: bool = False, progress: bool = True) -> minari.MinariDataset:
    """Build any dataset this machine can make: a `local/...` recipe, or an OGBench single-task
    dataset (`ogbench/<name>-play-singletask[-task<k>]-v0`) from its play file (`build_ogbench`)."""
    if is_local(dataset_id):
        return build_local_dataset(dataset_id, num_episodes, seed, overwrite, progress)
    return build_ogbench(dataset_id, num_episodes, seed, overwrite, progress)


def build_for_training(dataset_id: str, progress: bool = True) -> minari.MinariDataset:
    """`build_dataset` with the default size and seed, refusing (before any work) ids that build
    files rather than a dataset to train on: OGBench's goal-conditioned play data."""
    if dataset_id.removeprefix(f"{ogbench.NAMESPACE}/") in ogbench.PLAY_DATASETS:
        raise UsageError(f"{dataset_id} is OGBench's goal-conditioned play data, a source of "
                         f"single-task datasets, not one to train on: train on one of "
                         f"{', '.join(ogbench.singletask_ids(dataset_id.split('/')[-1]))}.")
    return build_dataset(dataset_id, progress=progress)


def build_ogbench(dataset_id: str, num_episodes: int | None = None, seed: int = 0,
                  overwrite: bool = False, progress: bool = True):
    """`ogbench/<name>-play-v0`: OGBench's play file in its own npz layout (and its `-val`
    split), regenerated here with OGBench's oracles unless OGBench's download is on disk; returns
    None. `ogbench/<name>-play-singletask[-task<k>]-v0`: that file relabelled for the task with
    OGBench's own relabelling, written as a Minari dataset (the play file first if missing).
    Says which source it used. Raises UsageError for an id it cannot build."""
    name = dataset_id.removeprefix(f"{ogbench.NAMESPACE}/")
    if name in ogbench.PLAY_DATASETS:
        for split in (name, f"{name}-val"):
            _play_file(split, num_episodes if split == name else None, seed, overwrite, progress)
        print(f"Single-task datasets of it: {', '.join(ogbench.singletask_ids(name))} "
              f"(Q-chunking's sparse reward: end the id in -sparse-v0)")
        return None
    try:
        task = ogbench.parse_singletask_id(dataset_id)
    except ValueError as err:
        raise UsageError(f"{err} Buildable OGBench ids: {', '.join(ogbench.PLAY_DATASETS)} "
                         f"with the {ogbench.NAMESPACE}/ prefix, and their single-task ids.") \
            from None
    path, source = _play_file(task.dataset_name, num_episodes, seed, False, progress)
    buffers, metadata = ogbench.singletask_episodes(dataset_id, path, source)
    return write_dataset(dataset_id, buffers, overwrite, **metadata)


def _play_file(name: str, num_episodes, seed: int, overwrite: bool, progress: bool):
    found = ogbench.play_file(name)
    if found and not (overwrite and found[1] == "regenerated"):
        print(f"Using the {found[1]} OGBench file {found[0]}.", flush=True)
        return found
    path = ogbench.regenerated_npz_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"OGBench's file {ogbench.official_npz_path(name)} is not on this machine: "
          f"regenerating {name} with OGBench's oracles into {path} (about 30 minutes for 1000 "
          f"episodes on two free cores).", flush=True)
    ogbench.generate_play_dataset(name, num_episodes, seed, path, workers=2, progress=progress,
                                  overwrite=overwrite)
    return path, "regenerated"


def list_local_datasets() -> list[tuple[str, bool, str]]:
    """(id, on disk, description) of every dataset this machine can build."""
    return [(i, _on_disk(i), r.description) for i, r in LOCAL_DATASETS.items()]


def format_dataset_list() -> str:
    lines = [f"Local datasets (built with `collect --dataset ID`; stored under {get_dataset_path()}):"]
    for dataset_id, on_disk, description in list_local_datasets():
        lines.append(f"  {dataset_id:<34} {'built    ' if on_disk else 'not built'}  {description}")
    return "\n".join(lines)


def summarize(dataset: minari.MinariDataset) -> str:
    """Size, mean return, mean normalised score (with reference scores), and success: Pusher's
    object within 0.1 of the goal at the end; OGBench's success state reached (mask 0)."""
    episodes = list(dataset.iterate_episodes())
    returns = np.array([ep.rewards.sum() for ep in episodes])
    metadata = dataset.storage.metadata
    lines = [f"{dataset.spec.dataset_id}: {dataset.total_episodes} episodes, {dataset.total_steps} steps",
             f"  mean return {returns.mean():.2f} +- {returns.std():.2f}"]
    if metadata.get("ref_min_score") is not None:
        score = 100 * minari.get_normalized_score(dataset, returns)
        lines[-1] += (f", mean normalised score {score.mean():.1f} (ref_min "
                      f"{metadata['ref_min_score']:.2f}, ref_max {metadata['ref_max_score']:.2f})")
    if dataset.spec.env_spec is not None and dataset.spec.env_spec.id == "Pusher-v5":
        lines.append(f"  object within {pusher.SUCCESS_RADIUS} of the goal (x-y) at the end: "
                     f"{100 * success_fraction(dataset):.0f}% of episodes")
    reached = [ogbench.reaches_success(ep.infos) for ep in episodes]
    if reached and None not in reached:
        lines.append(f"  episodes that reach the task's success state: {100 * np.mean(reached):.1f}%")
    return "\n".join(lines)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The `collect` command's flags (also parsed by tests/test_docs.py for the docs' lines)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Build a local Minari dataset from a scripted MuJoCo controller.")
    parser.add_argument("--dataset", help=f"dataset id, one of: {_buildable()}")
    parser.add_argument("--episodes", type=int, default=None,
                        help=f"number of episodes (default: the recipe's, or ${EPISODES_ENV})")
    parser.add_argument("--seed", type=int, default=0, help="episode i is reset with seed+i")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--list", action="store_true", help="list buildable datasets and exit")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    expand_user_in_environment()
    args = build_parser(prog).parse_args(argv)
    try:
        if args.list:
            print(format_dataset_list())
            return 0
        if args.dataset is None:
            raise UsageError(f"pass --dataset ID (one of: {_buildable()}) or --list.")
        if not is_buildable(args.dataset):
            raise UsageError(f"{args.dataset!r} is not a dataset this machine can build; those "
                             f"are: {_buildable()}.")
        start = time.perf_counter()
        dataset = build_dataset(args.dataset, args.episodes, args.seed, args.overwrite,
                                progress=not args.no_progress)
        print(f"built in {time.perf_counter() - start:.1f} s")
        if dataset is not None:
            print(f"at {get_dataset_path(args.dataset)}\n{summarize(dataset)}")
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Episodes are staged in memory and written in one rename at the end (write_dataset):
        # nothing half-built is left, and a dataset already on disk is untouched.
        kept = (f"; the dataset already at {get_dataset_path(args.dataset)} is intact"
                if args.dataset and _on_disk(args.dataset) else "")
        print(f"\nInterrupted by SIGINT while building {args.dataset}: nothing was written{kept}. "
              f"Build it again: python main.py collect --dataset {args.dataset}", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
