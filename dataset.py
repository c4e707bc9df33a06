"""Minari episodes -> normalised, windowed tensors -> batches by index gather.

Every step t of an episode starts one window. With obs_horizon = 3 and pred_horizon = 4:

    step:      t-2  t-1   t   t+1  t+2  t+3  t+4
    obs:       |o | |o | |o |                     the last one is "now"
    actions:             |a | |a | |a | |a |      the chunk starts at "now"
    next obs:                      |o | |o | |o | bootstrap window, ends at t + pred_horizon

At an episode's start the history repeats the first observation. Chunk steps past the episode's
end repeat its last action and are flagged invalid in `mask`; the bootstrap window is clipped to
the episode's final observation.

Terminations. Each episode carries a per-step boolean array `terminals`: True at a step whose
transition ends in a true termination (not a time-limit truncation). A Minari episode is split at
each termination: terminations at steps k1 < k2 < ... give the pieces [0..k1], [k1+1..k2], ...,
each ending in its termination, and a last piece that ends in a truncation unless its last step
is a termination (D4RL ant-maze data converted by splitting on timeouts holds such mid-episode
terminations). If a window's chunk [t, t + pred_horizon) holds a terminal step k, its reward sums
the discounted rewards of steps t..k only, `valid_steps` counts t..k and `terminal` is True (the
TD target does not bootstrap); `mask`, the behaviour-cloning weight, still marks every chunk step
inside the episode. This holds for a terminal step anywhere in an episode, not only at its end.

    terminals:  . . . . T . . .      one terminal step, k = 4
    chunk at t=2:   |a|a|a|a|        pred_horizon = 4: reward of steps 2..4, valid_steps 3,
    reward steps:   |r|r|r|          terminal; mask all True

OGBench's single-task datasets keep their whole 1001-step episodes and mark success states in
`infos["mask"]` (0 = no bootstrap after a step from that state, OGBench's `masks`): those steps
become terminal steps too, without splitting, so histories, the split and chunks follow the
real episodes.

Actions outside the dataset's declared action space are counted and reported when the data
loads, then clipped to the bounds for training and testing alike (the policy's actions are
clipped the same way); `--no-clip-dataset-actions` keeps them as recorded.
"""

from __future__ import annotations

import socket
from typing import Callable
from urllib.parse import urlparse

import gymnasium as gym
import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from config import DEFAULT_DATASET, TrainConfig, UsageError

# A dimension whose spread is below this is treated as constant: dividing by a std of ~3e-4 (as
# some Pusher features have) would turn float noise into large inputs.
MIN_STD = 1e-2
# Above this mean |reward| per step, loading suggests --reward-scale (see MinariDataModule._read).
LARGE_REWARD = 10.0


# --- finding a dataset: local copy, local build, download ------------------------------------

# Namespaces of the datasets this project builds itself (collect.py): local recipes, and
# OGBench's datasets regenerated with its own oracles (or converted from its download).
BUILT_HERE = ("local/", "ogbench/")


def load_dataset(dataset_id: str, build: Callable[[str], object] | None = None):
    """A MinariDataset: the local copy, else built here by `build(dataset_id)` for ids this
    project builds (`local/...`, `ogbench/...`; main.py passes `collect.build_for_training`), else
    Minari's download.

    Raises UsageError when the copy on disk is unreadable, when a dataset built here is missing
    and no builder is given, or when the download fails (within seconds without a network).
    """
    import minari

    folder = minari.storage.get_dataset_path(dataset_id)
    if (folder / "data").exists():
        try:
            return minari.load_dataset(dataset_id)
        except Exception as err:  # noqa: BLE001 - a present but unreadable dataset
            dataset = without_env_specs(folder / "data")
            if dataset is not None:
                print(f"Dataset {dataset_id}: its stored environment spec cannot be rebuilt by "
                      f"this Gymnasium ({dataset.env_spec_problem}); its data loads without it. "
                      f"Online evaluation then needs --env ENV_ID.", flush=True)
                return dataset
            raise UsageError(
                f"Dataset {dataset_id} is on disk at {folder} but cannot be read "
                f"({first_line(err)}): a data file is missing or corrupt. Move the folder away "
                f"and build it again (`python main.py collect --dataset {dataset_id} "
                f"--overwrite` for local ids) or download it again.") from None
    if dataset_id.startswith(BUILT_HERE):
        if build is None:
            raise UsageError(f"Dataset {dataset_id} is not on disk (under "
                             f"{minari.storage.get_dataset_path()}). Build it with `python main.py "
                             f"collect --dataset {dataset_id}`.")
        print(f"Dataset {dataset_id} is not on disk yet; building it now "
              f"(under {minari.storage.get_dataset_path()}).", flush=True)
        return build(dataset_id)
    stand_in = f" Its local stand-in is {DEFAULT_DATASET}." if "pusher" in dataset_id else ""
    by_hand = (f"To use it offline, copy the dataset's folder from a machine that has it "
               f"(~/.minari/datasets/{dataset_id}) to {folder}, or build a local dataset "
               f"(`python main.py collect --list` shows which).{stand_in}")
    if not hub_reachable():
        raise UsageError(f"Dataset {dataset_id} is not on disk and Minari's dataset server "
                         f"cannot be reached from this machine (no network). {by_hand}")
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception as err:  # noqa: BLE001
        raise UsageError(f"Dataset {dataset_id} is not on disk and could not be downloaded "
                         f"({first_line(err)}). Check the id with `minari list remote`. "
                         f"{by_hand}") from None


def without_env_specs(data_path):
    """The dataset at `data_path` read without its stored env specs, when those (and only those)
    cannot be parsed by this Gymnasium (an older one wrote fields such as `autoreset` and
    `apply_api_compatibility: true` that EnvSpec no longer has); else None. Training never needs
    the environment. The returned dataset's `env_spec_problem` says what failed."""
    import minari
    from gymnasium.envs.registration import EnvSpec
    from minari.dataset.minari_storage import MinariStorage

    try:
        metadata = MinariStorage.read_raw_metadata(data_path)
    except Exception:  # noqa: BLE001 - unreadable metadata: a corrupt dataset, not an old spec
        return None
    problem = None
    for key in ("env_spec", "eval_env_spec"):
        if isinstance(metadata.get(key), str):
            text = (metadata[key].replace('"order_enforce": true,', "")   # as Minari reads it
                    .replace('"apply_api_compatibility": false,', "")
                    .replace('"autoreset": false, ', ""))
            try:
                EnvSpec.from_json(text)
            except Exception as err:  # noqa: BLE001
                cause = err.__cause__ or err
                problem = problem or f"{key}: {type(cause).__name__}: {first_line(cause)}"
    if problem is None:
        return None
    try:
        storage = MinariStorage.read(data_path)
        parent = type(storage)

        class StorageWithoutEnvSpecs(parent):
            @property
            def metadata(self):
                values = parent.metadata.fget(self)
                values.pop("env_spec", None)
                values.pop("eval_env_spec", None)
                return values

        storage.__class__ = StorageWithoutEnvSpecs
        dataset = minari.MinariDataset(storage)
    except Exception:  # noqa: BLE001 - something else is broken too
        return None
    dataset.env_spec_problem = problem
    return dataset


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether Minari's download host answers within seconds (its client retries for ~25 s)."""
    try:
        from huggingface_hub import constants
        host = urlparse(constants.ENDPOINT).hostname
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


# --- observations of any supported space, as flat float vectors ---------------------------------

def observation_keys(space: gym.Space) -> list[str]:
    """Flattening order of an observation space: [""] for a Box, sorted (nested) keys for a Dict."""
    if isinstance(space, gym.spaces.Box) and not (len(space.shape) >= 2
                                                  and space.dtype == np.uint8):
        return [""]
    if isinstance(space, gym.spaces.Dict):
        keys = []
        for key in sorted(space.spaces):
            keys += [f"{key}/{sub}".rstrip("/") for sub in observation_keys(space.spaces[key])]
        return keys
    raise UsageError(
        f"Observation space {space} is not supported: meanflow-ql trains on vector observations "
        "(Box) and dictionaries of them (Dict). Image or text observations need an encoder that "
        "this trainer does not have; pick a dataset with state observations.")


def flatten_observations(observations, keys: list[str]) -> np.ndarray:
    """(T, obs_dim) float32 from an array or a (nested) dict of arrays, in the order `keys`."""
    parts = []
    for key in keys:
        value = observations
        for part in filter(None, key.split("/")):
            value = value[part]
        value = np.asarray(value, dtype=np.float32)
        parts.append(value.reshape(len(value), -1))
    return np.concatenate(parts, axis=1)


def add_batch_axis(observation):
    """One observation (an array or a nested dict of arrays) as a batch of one."""
    if isinstance(observation, dict):
        return {key: add_batch_axis(value) for key, value in observation.items()}
    return np.asarray(observation)[None]


# --- normalisation --------------------------------------------------------------------------

def keep_dtypes(module: nn.Module, names: tuple[str, ...], apply, fn, recurse: bool):
    """`module._apply(fn)` through `apply` (the parent class's `_apply`), except that the
    buffers `names` keep their dtype and exact values: they follow device moves only. Under
    `--mixed-precision bf16-true` Lightning casts the whole module, and bfloat16 statistics
    moved observation means by up to 0.08 of a standard deviation."""
    kept = {name: module._buffers[name] for name in names}
    result = apply(fn, recurse)
    for name, value in kept.items():
        moved = module._buffers[name]
        module._buffers[name] = value.to(moved.device)
    return result


class Normalizer(nn.Module):
    """Per-dimension z-scoring; the statistics are buffers, so they travel in the checkpoint.

    They stay float32 under every precision (`keep_dtypes`); `normalize` and `unnormalize`
    return the input's dtype."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        # The data's per-dimension range, in raw units (the CQL penalty samples inside it).
        self.register_buffer("low", -torch.ones(dim))
        self.register_buffer("high", torch.ones(dim))

    def fit(self, data: torch.Tensor) -> "Normalizer":
        data = data.double()
        self.mean.copy_(data.mean(0))
        self.std.copy_(data.std(0, correction=0).clamp_min(MIN_STD))
        self.low.copy_(data.min(0).values)
        self.high.copy_(data.max(0).values)
        return self

    def _apply(self, fn, recurse: bool = True):
        return keep_dtypes(self, ("mean", "std", "low", "high"), super()._apply, fn, recurse)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).to(x.dtype)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std + self.mean).to(x.dtype)


# --- episodes ---------------------------------------------------------------------------------

def read_episodes(dataset, keys: list[str]) -> list[dict]:
    """Every episode, split at its terminations (module docstring), as numpy arrays:
    obs (T+1, D), actions (T, A), rewards (T,), terminals (T,) bool."""
    try:
        return _read_episodes(dataset, keys)
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise UsageError(
            f"Dataset {dataset.spec.dataset_id} cannot be read ({err}): a data file is missing "
            "or corrupt. Build or download it again.") from None


def _read_episodes(dataset, keys: list[str]) -> list[dict]:
    episodes = []
    for episode in dataset.iterate_episodes():
        if len(episode.actions) == 0:
            continue
        # Checked as stored, before the float32 cast: a finite float64 beyond float32's range
        # would turn infinite there, and the message must say which it is.
        for name, values in (("observations", leaves(episode.observations)),
                             ("actions", [episode.actions]), ("rewards", [episode.rewards])):
            check_values(values, name, episode.id, dataset.spec.dataset_id,
                         float32=name != "rewards")
        obs = flatten_observations(episode.observations, keys)
        actions = np.asarray(episode.actions, dtype=np.float32).reshape(len(episode), -1)
        rewards = np.asarray(episode.rewards, dtype=np.float64)
        terminals = np.asarray(episode.terminations, dtype=bool).reshape(-1)
        pieces = split_at_terminations({"obs": obs, "actions": actions, "rewards": rewards,
                                        "terminals": terminals,
                                        "stops": bootstrap_stops(episode, len(actions))})
        for piece in pieces:
            piece["terminals"] = piece["terminals"] | piece.pop("stops")
        episodes += pieces
    if not episodes:
        raise UsageError(f"Dataset {dataset.spec.dataset_id} holds no episode with any step.")
    return episodes


def leaves(observations) -> list:
    """The arrays of an observation array or (nested) dict of arrays."""
    if isinstance(observations, dict):
        return [leaf for value in observations.values() for leaf in leaves(value)]
    return [observations]


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_values(arrays: list, name: str, episode_id, dataset_id: str, float32: bool) -> None:
    """Raise UsageError when an episode's `name` (arrays as stored) hold NaN or infinite values,
    or, when they are trained on as float32, finite values beyond float32's range (about
    3.4e38), which the cast would turn infinite."""
    fix = "Clean the dataset (minari.MinariDataset.filter_episodes can drop such episodes)"
    for array in arrays:
        array = np.asarray(array)
        if not np.issubdtype(array.dtype, np.floating):
            continue                       # integers and booleans are finite and fit float32
        if not np.all(np.isfinite(array)):
            raise UsageError(
                f"Episode {episode_id} of dataset {dataset_id} holds NaN or infinite {name}; "
                f"the trainer refuses non-finite data. {fix}.")
        largest = float(np.abs(array).max(initial=0.0))
        if float32 and largest > FLOAT32_MAX:
            raise UsageError(
                f"Episode {episode_id} of dataset {dataset_id} holds {name} whose values exceed "
                f"float32's range (largest magnitude {largest:.3g}; float32 holds up to "
                f"{FLOAT32_MAX:.3g}), which the trainer computes in. {fix}, or rescale these "
                f"{name} (for instance to other units) when building the dataset.")


def bootstrap_stops(episode, length: int) -> np.ndarray:
    """(T,) steps after which the TD target must not bootstrap though the episode goes on:
    OGBench's single-task `mask` (0 at a success state, where the task's value is its reward),
    stored per observation in `infos["mask"]`; all False for other datasets."""
    infos = episode.infos or {}
    if "mask" not in infos:
        return np.zeros(length, dtype=bool)
    return np.asarray(infos["mask"]).reshape(-1)[:length] == 0


def split_at_terminations(episode: dict) -> list[dict]:
    """One episode as pieces that each end at a termination, the last one possibly truncated."""
    ends = list(np.flatnonzero(episode["terminals"]) + 1)
    if not ends or ends[-1] != len(episode["actions"]):
        ends.append(len(episode["actions"]))
    pieces, start = [], 0
    for end in ends:
        pieces.append({key: value[start:end + 1] if key == "obs" else value[start:end]
                       for key, value in episode.items()})
        start = end
    return pieces


def out_of_bounds_actions(episodes: list[dict], low: np.ndarray, high: np.ndarray,
                          clip: bool) -> str | None:
    """Count (and, with `clip`, clip in place) action values outside [low, high]; a sentence
    saying how many and how far, or None when all lie inside."""
    count, total, worst = 0, 0, 0.0
    for episode in episodes:
        actions = episode["actions"]
        excess = np.maximum(actions - high, low - actions)              # > 0 outside
        outside = excess > 0
        count += int(outside.sum())
        total += actions.size
        if outside.any():
            worst = max(worst, float(excess[outside].max()))
            if clip:
                np.clip(actions, low, high, out=actions)
    if count == 0:
        return None
    treated = ("clipped to the bounds for training and testing (--no-clip-dataset-actions keeps "
               "them)" if clip else "kept as recorded (--no-clip-dataset-actions); the policy's "
               "own actions are still clipped to the bounds")
    return (f"{count} of {total} action values ({100 * count / total:.1f}%) lie outside the "
            f"declared action space [{low.min():g}, {high.max():g}], by up to {worst:.3g}: "
            f"{treated}.")


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[list, list]:
    """Episode indices for training and validation, from a seeded permutation."""
    order = torch.randperm(num_episodes, generator=torch.Generator().manual_seed(seed)).tolist()
    num_val = int(round(num_episodes * val_fraction))
    if val_fraction > 0 and num_episodes >= 2:
        num_val = max(num_val, 1)
    num_val = min(num_val, num_episodes - 1)
    return sorted(order[num_val:]), sorted(order[:num_val])


class WindowedEpisodes(Dataset):
    """All windows of a set of episodes; `__getitems__` gathers a whole batch at once.

    Observations and actions of all episodes are stored once, concatenated and normalised; each
    window is a row of precomputed indices into them, so a batch is a few tensor gathers.
    """

    def __init__(self, episodes: list[dict], obs_normalizer: Normalizer,
                 action_normalizer: Normalizer, obs_horizon: int, pred_horizon: int,
                 gamma: float):
        obs_rows, action_rows, windows = [], [], []
        obs_offset = action_offset = 0
        for episode in episodes:
            windows.append(episode_windows(episode, obs_offset, action_offset, obs_horizon,
                                           pred_horizon, gamma))
            obs_rows.append(episode["obs"])
            action_rows.append(episode["actions"])
            obs_offset += len(episode["obs"])
            action_offset += len(episode["actions"])
        with torch.no_grad():
            self.obs = obs_normalizer.normalize(torch.from_numpy(np.concatenate(obs_rows)))
            self.actions = action_normalizer.normalize(
                torch.from_numpy(np.concatenate(action_rows)))
        self.index = {key: torch.from_numpy(np.concatenate([w[key] for w in windows]))
                      for key in windows[0]}

    def __len__(self) -> int:
        return len(self.index["valid_steps"])

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])

    def __getitems__(self, indices) -> dict:
        rows = torch.as_tensor(indices, dtype=torch.long)
        ix = {key: value[rows] for key, value in self.index.items()}
        return {
            "obs": self.obs[ix["obs"]],                    # (B, obs_horizon, obs_dim)
            "actions": self.actions[ix["actions"]],        # (B, pred_horizon, action_dim)
            "mask": ix["mask"],                            # (B, pred_horizon) valid steps
            "chunk_reward": ix["chunk_reward"],            # (B,) discounted, valid steps only
            "next_obs": self.obs[ix["next_obs"]],          # (B, obs_horizon, obs_dim)
            "valid_steps": ix["valid_steps"],              # (B,)
            "terminal": ix["terminal"],                    # (B,) termination inside the chunk
            "mc_return": ix["mc_return"],                  # (B,) the data's discounted return
        }


def episode_windows(episode: dict, obs_offset: int, action_offset: int, obs_horizon: int,
                    pred_horizon: int, gamma: float) -> dict[str, np.ndarray]:
    """Index rows of every window of one episode (see the module docstring)."""
    length = len(episode["actions"])                 # T actions, T + 1 observations
    t = np.arange(length)[:, None]
    history = np.arange(-obs_horizon + 1, 1)[None, :]
    chunk = np.arange(pred_horizon)[None, :]
    obs_index = np.clip(t + history, 0, length) + obs_offset
    steps = t + chunk
    mask = steps < length
    action_index = np.minimum(steps, length - 1) + action_offset
    # The first terminal step at or after each t (length where none): rewards stop after it.
    terminal_steps = np.where(np.asarray(episode["terminals"], bool), np.arange(length), length)
    next_terminal = np.minimum.accumulate(terminal_steps[::-1])[::-1][:, None]
    terminal = (next_terminal[:, 0] < length) & (next_terminal[:, 0] < t[:, 0] + pred_horizon)
    rewarded = steps <= np.minimum(next_terminal, length - 1)        # (T, pred_horizon)
    next_t = np.minimum(t + pred_horizon, np.minimum(next_terminal + 1, length))
    next_obs_index = np.clip(next_t + history, 0, length) + obs_offset
    rewards = np.concatenate([episode["rewards"], np.zeros(pred_horizon)])
    discounts = gamma ** np.arange(pred_horizon)
    chunk_reward = (rewards[steps] * discounts * rewarded).sum(1)
    return {
        "obs": obs_index.astype(np.int64),
        "actions": action_index.astype(np.int64),
        "mask": mask,
        "chunk_reward": chunk_reward.astype(np.float32),
        "next_obs": next_obs_index.astype(np.int64),
        "valid_steps": rewarded.sum(1).astype(np.int64),
        "terminal": terminal,
        "mc_return": discounted_returns(episode["rewards"], gamma,
                                        episode["terminals"]).astype(np.float32),
    }


def discounted_returns(rewards: np.ndarray, gamma: float,
                       terminals: np.ndarray | None = None) -> np.ndarray:
    """(T,) Monte-Carlo return of each step to the episode's end: G_t = r_t + gamma G_{t+1},
    restarting after a terminal step. For an episode cut by a time limit it stops at the cut,
    so it is the return the data actually collected, not the value of the state."""
    returns = np.zeros(len(rewards))
    following = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        if terminals is not None and terminals[i]:
            following = 0.0
        following = returns[i] = rewards[i] + gamma * following
    return returns


def keep_batch(batch: dict) -> dict:
    """The DataLoader's collate function: `__getitems__` already returns a whole batch."""
    return batch


# --- the DataModule ---------------------------------------------------------------------------

class MinariDataModule(L.LightningDataModule):
    """Loads a Minari dataset, splits it by episode and serves windowed batches."""

    def __init__(self, cfg: TrainConfig, dataset):
        super().__init__()
        self.cfg = cfg
        self.minari_dataset = dataset
        self.obs_keys = observation_keys(dataset.observation_space)
        action_space = dataset.action_space
        if not isinstance(action_space, gym.spaces.Box):
            raise UsageError(
                f"Action space {action_space} of {dataset.spec.dataset_id} is not supported: "
                "the MeanFlow actor generates continuous (Box) actions.")
        self.action_low = np.broadcast_to(action_space.low, action_space.shape).reshape(-1)
        self.action_high = np.broadcast_to(action_space.high, action_space.shape).reshape(-1)
        episodes, self.actions_note = self._read()
        if self.actions_note:
            print(f"Dataset {dataset.spec.dataset_id}: {self.actions_note}", flush=True)
        # Whether any episode ends in a true termination (gamma = 1 needs one, see main.py).
        self.any_terminal = any(e["terminals"].any() for e in episodes)
        self.train_ids, self.val_ids = split_episodes(len(episodes), cfg.val_fraction, cfg.seed)
        train = [episodes[i] for i in self.train_ids]
        self.obs_dim = train[0]["obs"].shape[1]
        self.action_dim = train[0]["actions"].shape[1]
        self.obs_normalizer = Normalizer(self.obs_dim).fit(
            torch.from_numpy(np.concatenate([e["obs"] for e in train])))
        self.action_normalizer = Normalizer(self.action_dim).fit(
            torch.from_numpy(np.concatenate([e["actions"] for e in train])))
        make = lambda eps: WindowedEpisodes(eps, self.obs_normalizer, self.action_normalizer,
                                            cfg.obs_horizon, cfg.pred_horizon, cfg.gamma)
        self.train_set = make(train)
        self.val_set = make([episodes[i] for i in self.val_ids]) if self.val_ids else None

    def _read(self) -> tuple[list[dict], str | None]:
        """The episodes, their actions clipped to the bounds unless the config keeps them, and
        what was outside the bounds (None when nothing was)."""
        episodes = read_episodes(self.minari_dataset, self.obs_keys)
        note = out_of_bounds_actions(episodes, self.action_low, self.action_high,
                                     clip=self.cfg.clip_dataset_actions)
        typical = float(np.mean(np.abs(np.concatenate([e["rewards"] for e in episodes]))))
        # reward_scale 0 = automatic: rewards of about 1 per step when they are large.
        self.reward_scale = self.cfg.reward_scale or (1 / typical if typical > LARGE_REWARD
                                                      else 1.0)
        for episode in episodes:          # the critic learns scaled rewards, its Q values too
            episode["rewards"] = episode["rewards"] * self.reward_scale
        if self.reward_scale != 1.0:
            scaled = (f"Rewards are multiplied by {self.reward_scale:.4g} for the critic (mean "
                      f"|reward| per step {typical:.4g}; --reward-scale sets the factor).")
            note = f"{note} {scaled}" if note else scaled
        return episodes, note

    def use_normalizers(self, obs_normalizer: Normalizer, action_normalizer: Normalizer) -> None:
        """Re-window with saved statistics (a checkpoint's), so test data matches training."""
        self.obs_normalizer, self.action_normalizer = obs_normalizer, action_normalizer
        episodes, _ = self._read()
        make = lambda ids: WindowedEpisodes([episodes[i] for i in ids], obs_normalizer,
                                            action_normalizer, self.cfg.obs_horizon,
                                            self.cfg.pred_horizon, self.cfg.gamma)
        self.train_set = make(self.train_ids)
        self.val_set = make(self.val_ids) if self.val_ids else None

    def _loader(self, data, shuffle: bool) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(data, batch_size=self.cfg.batch_size, shuffle=shuffle,
                          drop_last=shuffle and len(data) >= self.cfg.batch_size,
                          collate_fn=keep_batch, num_workers=workers,
                          persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    @property
    def held_out_windows(self) -> WindowedEpisodes:
        """The validation episodes' windows, or the training episodes' when there are none."""
        return self.val_set if self.val_set is not None else self.train_set

    def val_dataloader(self) -> DataLoader:
        """At most cfg.val_windows evenly spaced held-out windows, the same ones at every
        validation."""
        windows = self.held_out_windows
        if len(windows) > self.cfg.val_windows:
            spaced = np.linspace(0, len(windows) - 1, self.cfg.val_windows).round().astype(int)
            windows = Subset(windows, spaced.tolist())
        return self._loader(windows, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Every held-out window."""
        return self._loader(self.held_out_windows, shuffle=False)

    def describe(self) -> str:
        return (f"{len(self.train_ids)} training / {len(self.val_ids)} validation episodes, "
                f"{len(self.train_set)} training windows, obs_dim {self.obs_dim}, "
                f"action_dim {self.action_dim}")
