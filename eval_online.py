"""Online evaluation: roll a checkpoint's policy out in the dataset's environment.

    python eval_online.py --checkpoint PATH [--dataset ID] [--episodes N] [--seed S]
                          [--num-envs K] [--action-horizon H] [--num-candidates N]
                          [--env ENV_ID] [--video PATH]

Episode i is reset with seed + i and draws its policy noise from its own generator seeded the
same way, so the same arguments give the same numbers, whatever --num-envs is.
`python main.py test` runs the same `evaluate_checkpoint`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")   # headless MuJoCo rendering

from config import TEST_SEED, VALIDATION_SEED, UsageError, expand_user_in_environment  # noqa: E402
from dataset import add_batch_axis, first_line, load_dataset  # noqa: E402
from policy import MeanFlowPolicy, ZeroPolicy, load_checkpoint  # noqa: E402
from runs import online_result_path  # noqa: E402
from builders import pusher  # noqa: E402
import logs  # noqa: E402


def validation_seed(training_seed: int) -> int:
    """First episode seed of the online evaluations during a run with this training seed."""
    return VALIDATION_SEED + 1000 * training_seed


# --- environments ------------------------------------------------------------------------------

def environment_spec_or_none(dataset):
    """The dataset's evaluation env spec, else its collection env spec, else None (also when
    the stored spec could not be rebuilt, see `dataset.load_dataset`)."""
    import gymnasium as gym

    # Minari 0.5 keeps the evaluation env only as JSON in the metadata (spec has env_spec only).
    stored = dataset.storage.metadata.get("eval_env_spec")
    if stored:
        try:
            return gym.envs.registration.EnvSpec.from_json(stored)
        except Exception:  # noqa: BLE001 - an unrebuildable spec: fall back to the collection env
            pass
    return getattr(dataset.spec, "env_spec", None)


def environment_spec(dataset, env_id: str | None):
    """What to build: --env, else the dataset's evaluation env, else its collection env."""
    if env_id:
        return env_id
    env_spec = environment_spec_or_none(dataset)
    if env_spec is None:
        problem = getattr(dataset, "env_spec_problem", None)
        why = (f"its stored environment spec cannot be rebuilt by this Gymnasium ({problem})"
               if problem else "it records no environment")
        raise UsageError(f"Dataset {dataset.spec.dataset_id} cannot be rolled out in: {why}. "
                         "Pass the environment with --env ENV_ID (a Gymnasium id).")
    return env_spec


def env_name(env_spec) -> str:
    return str(getattr(env_spec, "id", env_spec))


def make_env_fn(env_spec, **kwargs):
    def make():
        import gymnasium as gym
        return gym.make(env_spec, **kwargs)
    return make


def make_env(env_spec, **kwargs):
    """gym.make, with any failure turned into one UsageError naming the env and the cause."""
    try:
        return make_env_fn(env_spec, **kwargs)()
    except Exception as err:  # noqa: BLE001 - every failure to make an env gets one message
        raise UsageError(env_failure(env_spec, err)) from None


def env_failure(env_spec, err: BaseException) -> str:
    import gymnasium as gym

    name = env_name(env_spec)
    if isinstance(err, ModuleNotFoundError) and err.name:
        package = err.name.split(".")[0]
        return (f"Environment {name} cannot be made: its code is in the Python package "
                f"`{package}`, which is not installed. Install it (`pip install "
                f"{package.replace('_', '-')}`), or pass another environment with --env.")
    fix = ("Pass an installed Gymnasium id with --env." if isinstance(err, gym.error.Error)
           else "Install what it needs, or pass another environment (for instance a newer "
                "version of it) with --env.")
    cause = first_line(err).rstrip(".")
    return f"Environment {name} cannot be made ({type(err).__name__}: {cause}). {fix}"


class OneEnv:
    """One environment behind the batched interface `run_episodes` uses.

    gymnasium.vector's per-step bookkeeping (info merging, autoreset) costs about as much as
    the policy's own; with a single environment none of it is needed.
    """

    num_envs = 1

    def __init__(self, env):
        self.env = env
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space

    def reset(self, seed):
        obs, info = self.env.reset(seed=seed[0])
        return add_batch_axis(obs), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions[0])
        if terminated or truncated:
            info = {key: np.array([value]) for key, value in info.items()}
        return (add_batch_axis(obs), np.array([reward]), np.array([terminated]),
                np.array([truncated]), info)

    def close(self):
        self.env.close()


def make_vector_env(env_spec, num_envs: int):
    """`num_envs` environments stepped together; several run in processes."""
    import gymnasium as gym

    first = make_env(env_spec)
    if num_envs == 1:
        return OneEnv(first)
    first.close()
    return gym.vector.AsyncVectorEnv([make_env_fn(env_spec) for _ in range(num_envs)])


def trained_spaces(model) -> tuple[str, object]:
    """(a description of the observations, the action space) a checkpoint's policy was trained
    on: its observation keys and flat size, and Box(action_low, action_high)."""
    import gymnasium as gym

    keys, obs_dim = model.hparams["obs_keys"], model.obs_dim
    observations = (f"Box of {obs_dim} values" if keys == [""]
                    else f"Dict with keys {', '.join(keys)} ({obs_dim} values in all)")
    low, high = (model.action_low.cpu().numpy(), model.action_high.cpu().numpy())
    return observations, gym.spaces.Box(low, high, dtype=np.float32)


def space_mismatch(model, observation_space, action_space) -> str | None:
    """What differs between the spaces a checkpoint's policy was trained on and an environment's,
    compared by kind, shape and (for actions) bounds; None when they fit."""
    import gymnasium as gym

    from dataset import observation_keys

    keys = model.hparams["obs_keys"]
    try:
        env_keys = observation_keys(observation_space)
    except UsageError:                          # images, text, discrete observations
        env_keys = None
    if env_keys is None or (keys == [""]) != (env_keys == [""]):
        return f"observations of another kind ({type(observation_space).__name__})"
    if env_keys != keys:
        return "observation keys differ"
    if gym.spaces.flatdim(observation_space) != model.obs_dim:
        return (f"{gym.spaces.flatdim(observation_space)} observation values, not "
                f"{model.obs_dim}")
    if not isinstance(action_space, gym.spaces.Box):
        return f"actions of another kind ({type(action_space).__name__}, not Box)"
    if int(np.prod(action_space.shape)) != model.action_dim:
        return f"actions of shape {action_space.shape}, not ({model.action_dim},)"
    low = np.broadcast_to(action_space.low, action_space.shape).reshape(-1)
    high = np.broadcast_to(action_space.high, action_space.shape).reshape(-1)
    _, trained = trained_spaces(model)
    if not (np.allclose(low, trained.low, rtol=1e-6) and np.allclose(high, trained.high,
                                                                     rtol=1e-6)):
        return "other action bounds"
    return None


def check_spaces(model, envs, env_spec) -> None:
    """Raise UsageError, naming both sides' spaces, when the environment's observation or action
    space does not fit the checkpoint's policy (`space_mismatch`), before the first step."""
    problem = space_mismatch(model, envs.single_observation_space, envs.single_action_space)
    if problem:
        observations, actions = trained_spaces(model)
        raise UsageError(
            f"Environment {env_name(env_spec)} does not fit the checkpoint's policy ({problem}): "
            f"the policy was trained on {model.hparams['dataset_id']} with observations "
            f"{observations} and action space {actions}, but the environment has observation "
            f"space {envs.single_observation_space} and action space "
            f"{envs.single_action_space}. Evaluate it in its own dataset's environment, or "
            f"pass one with the same spaces with --env.")


# --- the evaluation loop ---------------------------------------------------------------------

def run_episodes(policy, envs, num_episodes: int, seed: int, progress: bool = True,
                 success_at_end=None) -> dict:
    """Per-episode returns, lengths and success flags: the env's info["success"] (or
    "is_success"), else `success_at_end(final observation)` when given, else None."""
    from tqdm import tqdm

    k = envs.num_envs
    returns = np.zeros(num_episodes)
    lengths = np.zeros(num_episodes, dtype=np.int64)
    successes: list = [None] * num_episodes
    bar = tqdm(total=num_episodes, desc="episodes", disable=not progress, leave=False)
    # Episodes run in rounds of k, each environment reset with its episode's seed.
    for start in range(0, num_episodes, k):
        episodes = range(start, min(start + k, num_episodes))
        seeds = [seed + start + j for j in range(k)]
        obs, _ = envs.reset(seed=seeds)
        policy.reset()
        for j in range(k):
            policy.reset(j, seed=seeds[j])
        round_returns = np.zeros(k)
        running = set(range(len(episodes)))      # environments whose episode has not ended
        steps = 0
        while running:
            obs, reward, terminated, truncated, info = envs.step(policy.act(obs, batched=True))
            round_returns += reward
            steps += 1
            # Environments that finished keep stepping (autoreset) until the round ends; their
            # figures were taken when they finished, so what follows is never counted.
            ended = terminated | truncated
            if ended.any():
                for j in map(int, np.flatnonzero(ended)):
                    if j in running:
                        running.discard(j)
                        returns[start + j], lengths[start + j] = round_returns[j], steps
                        successes[start + j] = success_flag(info, j)
                        if successes[start + j] is None and success_at_end is not None:
                            successes[start + j] = success_at_end(obs[j])
                        bar.update(1)
    bar.close()
    return {"returns": returns, "lengths": lengths, "successes": successes}


def success_criterion(env_spec):
    """A success test on an episode's final observation for environments whose info has none
    (Pusher: the object within 0.1 of the goal, as the datasets' summaries measure)."""
    env_id = env_name(env_spec)
    return pusher.succeeded if env_id.startswith("Pusher-") else None


def success_flag(info: dict, j: int):
    for key in ("success", "is_success"):
        if key in info and info.get(f"_{key}", np.ones(j + 1, bool))[j]:
            return bool(info[key][j])
    return None


def summarize(results: dict, dataset) -> dict:
    import minari

    returns = results["returns"]
    summary = {
        "episodes": len(returns),
        "return_mean": float(returns.mean()), "return_std": float(returns.std()),
        "return_min": float(returns.min()), "return_max": float(returns.max()),
        "length_mean": float(results["lengths"].mean()),
        "returns": [float(r) for r in returns],
    }
    if dataset is not None and dataset.storage.metadata.get("ref_min_score") is not None:
        scores = minari.get_normalized_score(dataset, returns) * 100
        summary.update(normalized_score_mean=float(scores.mean()),
                       normalized_score_std=float(scores.std()))
    flags = [s for s in results["successes"] if s is not None]
    if flags:
        summary["success_rate"] = float(np.mean(flags))
    return summary


def render_episode(policy, env_spec, seed: int) -> tuple[list[np.ndarray], float]:
    """Render one seeded episode offscreen: its frames and frames per second."""
    try:
        env = make_env_fn(env_spec, render_mode="rgb_array")()
        obs, _ = env.reset(seed=seed)
        frames = [env.render()]
    except Exception as err:  # noqa: BLE001 - any renderer failure gets the same advice
        raise UsageError(
            f"Cannot render the environment offscreen ({err}). MuJoCo renders headless through "
            "EGL: install Mesa's EGL (`apt-get install libegl1 libgl1`) and run with "
            "MUJOCO_GL=egl (the default here), or osmesa with `libosmesa6` and MUJOCO_GL=osmesa.")\
            from None
    policy.reset()
    policy.reset(0, seed=seed)
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(policy.act(obs))
        frames.append(env.render())
        done = terminated or truncated
    env.close()
    return frames, env.metadata.get("render_fps", 20)


def write_video(frames: list[np.ndarray], fps: float, path: Path) -> None:
    """Write frames as .mp4 or .gif."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(path, frames, fps=fps, macro_block_size=1)


# --- during training ---------------------------------------------------------------------------

def make_online_eval_callback(dataset, env_spec, every: int, episodes: int, seed: int):
    """A Lightning callback: every `every` validations, a short online evaluation, logged as
    eval/return and eval/normalized_score (what the best checkpoint is chosen by then), and
    eval/success_rate where the environment reports success (OGBench, Pusher)."""
    import lightning as L

    class OnlineEvaluation(L.Callback):
        def __init__(self):
            self.rounds = 0
            self.last: dict | None = None
            self.rolled_out = 0                # the update self.last was rolled out at

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            updates = int(pl_module.num_updates)
            if self.rounds % every == 0 or self.last is None:
                policy = MeanFlowPolicy(pl_module, seed=seed, device=str(pl_module.device))
                envs = make_vector_env(env_spec, 1)
                try:
                    results = run_episodes(policy, envs, episodes, seed, progress=False,
                                           success_at_end=success_criterion(env_spec))
                finally:
                    envs.close()
                    pl_module.train()
                self.last = summarize(results, dataset)
                self.rolled_out = updates
            self.rounds += 1
            figures = {"eval/return": self.last["return_mean"]}
            if "normalized_score_mean" in self.last:
                figures["eval/normalized_score"] = self.last["normalized_score_mean"]
            if "success_rate" in self.last:
                figures["eval/success_rate"] = self.last["success_rate"]
            # Handed to Lightning at every validation (the latest figures), so checkpointing
            # and early stopping always find them, but not to its loggers: the logs get them
            # only at the update they were rolled out at, and the console line says when that
            # was (eval/update).
            for key, value in figures.items():
                pl_module.log(key, value, prog_bar=key == "eval/return", logger=False)
            pl_module.log("eval/update", float(self.rolled_out), logger=False)
            if self.rolled_out == updates:
                for logger in pl_module.loggers:
                    logger.log_metrics(figures, step=updates)

    return OnlineEvaluation()


# --- from a checkpoint -------------------------------------------------------------------------

def evaluate_checkpoint(checkpoint: str | Path, dataset_id: str | None = None,
                        episodes: int = 10, seed: int = TEST_SEED, num_envs: int = 1,
                        action_horizon: int | None = None, num_candidates: int | None = None,
                        env_id: str | None = None, video: str | None = None,
                        log_to_tensorboard: bool = False, progress: bool = True,
                        missing_env_ok: bool = False, log_video: bool = False) -> dict | None:
    """Evaluate a checkpoint online, print the figures and save them beside the checkpoint,
    named by their seeds (`runs.online_result_path`: last.online-test.json for test seeds,
    last.online-validation.json for validation seeds); returns the summary.

    log_to_tensorboard: the figures go to the run's logs (`log_summary`). A rendered episode
    goes there too with `video` (which also writes it to that file) or `log_video`."""
    if episodes < 1:
        raise UsageError(f"--episodes must be at least 1 (got {episodes}).")
    if num_envs < 1:
        raise UsageError(f"--num-envs must be at least 1 (got {num_envs}).")
    checkpoint = Path(checkpoint).expanduser()
    model = load_checkpoint(checkpoint)
    policy = MeanFlowPolicy(model, action_horizon=action_horizon,
                            num_candidates=num_candidates, seed=seed)
    dataset_id = dataset_id or model.hparams["dataset_id"]
    dataset = load_dataset(dataset_id)
    if missing_env_ok and not env_id and environment_spec_or_none(dataset) is None:
        problem = getattr(dataset, "env_spec_problem", None)
        print(f"Dataset {dataset_id} " + (
            f"has an environment spec this Gymnasium cannot rebuild ({problem}): no online "
            f"evaluation. Evaluate with `python eval_online.py --checkpoint {checkpoint} --env "
            f"ENV_ID`." if problem else "records no environment: no online evaluation."))
        return None
    env_spec = environment_spec(dataset, env_id)

    def checked_policy(envs):
        check_spaces(model, envs, env_spec)
        return policy

    summary = evaluate_policy(
        checked_policy, dataset, dataset_id, env_spec, episodes, seed, num_envs,
        progress and logs.interactive(), str(checkpoint),
        online_result_path(checkpoint, seed),
        action_horizon=policy.action_horizon, num_candidates=policy.num_candidates)
    if video or log_video:
        frames, fps = render_episode(policy, env_spec, seed)
        if video:
            write_video(frames, fps, Path(video).expanduser())
            print(f"Wrote {video} ({len(frames)} frames)")
        logs.log_video(checkpoint.resolve().parent.parent, frames, fps,
                       int(model.num_updates), "test/episode")
    if log_to_tensorboard:
        log_summary(checkpoint, summary, int(model.num_updates))
    return summary


def evaluate_baseline(name: str, dataset_id: str, episodes: int = 10, seed: int = TEST_SEED,
                      num_envs: int = 1, env_id: str | None = None,
                      out: str | None = None) -> dict:
    """Evaluate a policy that needs no training ("zero": every action 0) on a dataset's
    environment, with the same seeds, summary and scores as a checkpoint; saved to `out`."""
    if name != "zero":
        raise UsageError(f"Unknown baseline {name!r}; the baselines are: zero.")
    dataset = load_dataset(dataset_id)
    env_spec = environment_spec(dataset, env_id)
    def zero_policy(envs):
        import gymnasium as gym

        space = envs.single_action_space
        if not isinstance(space, gym.spaces.Box):
            raise UsageError(
                f"The zero baseline acts with 0 in every dimension of a continuous (Box) action "
                f"space, but environment {env_name(env_spec)} (for {dataset_id}, whose action "
                f"space is {dataset.action_space}) has action space {space}. Evaluate the "
                f"baseline on a dataset with continuous actions.")
        # Scores are the dataset's: its environment's spaces, by kind and shape.
        theirs = (envs.single_observation_space, space)
        ours = (dataset.observation_space, dataset.action_space)
        if any(type(a) is not type(b) or a.shape != b.shape for a, b in zip(ours, theirs)):
            raise UsageError(
                f"Environment {env_name(env_spec)} does not fit dataset {dataset_id}: the dataset "
                f"has observation space {ours[0]} and action space {ours[1]}, the environment "
                f"{theirs[0]} and {theirs[1]}. Pass the dataset's own environment with --env, "
                f"or leave --env out.")
        return ZeroPolicy(space)

    return evaluate_policy(zero_policy, dataset,
                           dataset_id, env_spec, episodes, seed, num_envs, False,
                           f"baseline:{name}", Path(out).expanduser() if out else None)


def evaluate_policy(make_policy, dataset, dataset_id: str, env_spec, episodes: int, seed: int,
                    num_envs: int, progress: bool, label: str, out: Path | None,
                    **extra) -> dict:
    """Run `make_policy(envs)` for `episodes` episodes from `seed` on, in up to `num_envs`
    parallel copies of `env_spec`; summarise (with `extra` fields), print, save to `out`."""
    envs = make_vector_env(env_spec, min(num_envs, episodes))
    try:
        results = run_episodes(make_policy(envs), envs, episodes, seed, progress,
                               success_criterion(env_spec))
    finally:
        envs.close()
    summary = summarize(results, dataset)
    summary.update(checkpoint=label, dataset=dataset_id, seed=seed, env=env_name(env_spec),
                   **extra)
    print(format_summary(summary))
    if out:
        out.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"Saved {out}")
    return summary


def format_summary(s: dict) -> str:
    lines = [f"Online evaluation of {s['checkpoint']} in {s['env']} over {s['episodes']} episodes "
             f"(seeds {s['seed']}..{s['seed'] + s['episodes'] - 1}):",
             f"  return: {s['return_mean']:.3f} +- {s['return_std']:.3f} "
             f"(min {s['return_min']:.3f}, max {s['return_max']:.3f}), "
             f"length {s['length_mean']:.1f}"]
    if "normalized_score_mean" in s:
        lines.append(f"  normalised score: {s['normalized_score_mean']:.2f} "
                     f"+- {s['normalized_score_std']:.2f}")
    if "success_rate" in s:
        lines.append(f"  success rate: {s['success_rate']:.3f}")
    return "\n".join(lines)


def log_summary(checkpoint: Path, summary: dict, step: int) -> None:
    """Write the figures into the run's logs (runs/<run>/tensorboard, csv/metrics.csv, W&B)."""
    keys = ("return_mean", "return_std", "normalized_score_mean", "success_rate", "length_mean")
    logs.log_figures(checkpoint.resolve().parent.parent,
                     {f"test/{key}": summary[key] for key in keys if key in summary}, step)


def build_parser(prog: str = "eval_online.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint file to evaluate")
    parser.add_argument("--baseline", choices=["zero"],
                        help="evaluate a policy without training instead of a checkpoint "
                             "(zero: every action 0); needs --dataset")
    parser.add_argument("--out", help="with --baseline: write the summary JSON here")
    parser.add_argument("--dataset", help="dataset id (default: the checkpoint's)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes (default 10)")
    parser.add_argument("--seed", type=int, default=TEST_SEED,
                        help=f"seed of episode 0 (default {TEST_SEED}: the test seeds; "
                             f"training-time evaluation uses {VALIDATION_SEED} + 1000 x seed)")
    parser.add_argument("--num-envs", type=int, default=1,
                        help="environments stepped at once, in processes when > 1 (default 1)")
    parser.add_argument("--action-horizon", type=int,
                        help="actions executed per chunk (default: the checkpoint's)")
    parser.add_argument("--num-candidates", type=int,
                        help="chunks sampled per replan, best by the critic (default: "
                             "the checkpoint's)")
    parser.add_argument("--env", help="Gymnasium id overriding the dataset's environment")
    parser.add_argument("--video", help="write one rendered episode to this .mp4 or .gif "
                        "(and into the run's TensorBoard log)")
    return parser


def main(argv: list[str] | None = None) -> int:
    expand_user_in_environment()
    args = build_parser().parse_args(argv)
    logs.quiet_warnings()
    try:
        if args.baseline:
            if not args.dataset:
                raise UsageError("--baseline needs --dataset ID (the environment and scores "
                                 "come from the dataset).")
            evaluate_baseline(args.baseline, args.dataset, args.episodes, args.seed,
                              args.num_envs, args.env, args.out)
            return 0
        if not args.checkpoint:
            raise UsageError("Pass --checkpoint PATH (a .ckpt written by `python main.py "
                             "train`), or --baseline zero --dataset ID.")
        evaluate_checkpoint(args.checkpoint, args.dataset, args.episodes, args.seed,
                            args.num_envs, args.action_horizon, args.num_candidates, args.env,
                            args.video)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
