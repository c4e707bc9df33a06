"""Acting from a checkpoint: load it safely, and a policy that steps one or many environments.

`MeanFlowPolicy.act` keeps, per environment, the history of its last `obs_horizon` observations
and a queue of the actions left in its current chunk:

    queue:    |a0|a1|a2|      action_horizon actions of the last sampled chunk
    cursor:         ^         index of the next action; == action_horizon: empty, replan

Environments whose queue is empty are replanned together (one network call), then every
environment takes the action at its position. An environment reset mid-round (`reset(i)`)
empties its queue and restarts its history at its next observation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from config import UsageError
from dataset import add_batch_axis, flatten_observations
from meanflow_ql import MeanFlowQL, clip_chunk, flat, init_arguments


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> MeanFlowQL:
    """A MeanFlowQL in eval mode from a checkpoint file, loaded with weights_only=True (no code
    runs). Raises UsageError for a missing, damaged or foreign file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"Checkpoint {path} does not exist. Pass the path of a .ckpt file "
                         "written by `python main.py train` (runs/<run>/checkpoints/last.ckpt).")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure here means an unusable file
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"Checkpoint {path} cannot be loaded safely: {first_line}. It is truncated, corrupt, "
            "or holds objects other than tensors and plain values (loading those could run "
            "code, so it is refused). Use a checkpoint written by `python main.py train`.") \
            from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "state_dict" not in checkpoint or "cfg" not in hparams:
        raise UsageError(f"{path} is not a meanflow-ql checkpoint (no config or weights inside). "
                         "Use a checkpoint written by `python main.py train`.")
    try:
        model = MeanFlowQL(**init_arguments(checkpoint, path))
    except TypeError as err:                     # a hyperparameter no default could fill in
        raise UsageError(f"Checkpoint {path} lacks what its model is built from ({err}); the "
                         "file is damaged or not from meanflow-ql.") from None
    model.on_load_checkpoint(checkpoint)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise UsageError(f"Checkpoint {path} does not match its own configuration ({err}); "
                         "the file is damaged or from an incompatible version.") from None
    return model.eval()


@torch.no_grad()
def sample_chunk(model: MeanFlowQL, obs: torch.Tensor, noise: torch.Tensor,
                 num_candidates: int = 1) -> torch.Tensor:
    """Normalised flat chunks (N, chunk_dim) for normalised flat observation windows
    (N, obs_horizon * obs_dim); noise (N * num_candidates, chunk_dim). With several candidates
    per state, the critic picks the chunk it values most, scored clipped as it is executed."""
    if num_candidates > 1:
        obs = obs.repeat_interleave(num_candidates, dim=0)
    chunk = model.actor.sample(obs, noise, model.cfg.inference_steps)
    if num_candidates > 1:
        low, high = model.chunk_bounds()[:2]
        q = model.critic(obs, clip_chunk(chunk, low, high)).mean(0).reshape(-1, num_candidates)
        chunk = chunk[q.argmax(1) + torch.arange(len(q), device=q.device) * num_candidates]
    return chunk


@torch.no_grad()
def predict_action(model: MeanFlowQL, obs_window: torch.Tensor, noise: torch.Tensor,
                   num_candidates: int = 1) -> torch.Tensor:
    """Action chunks (N, pred_horizon, action_dim) in raw units, clipped to the action bounds,
    for raw observation windows (N, obs_horizon, obs_dim); noise as `sample_chunk`."""
    chunk = sample_chunk(model, flat(model.obs_normalizer.normalize(obs_window)), noise,
                         num_candidates)
    chunk = chunk.reshape(len(chunk), model.cfg.pred_horizon, model.action_dim)
    actions = model.action_normalizer.unnormalize(chunk)
    return torch.maximum(torch.minimum(actions, model.action_high), model.action_low)


class MeanFlowPolicy:
    """Acts in one or several environments from a trained model (see the module docstring).

    Each environment draws its noise from its own seeded numpy generator, so an episode's
    actions do not depend on how many environments run beside it. Bookkeeping is plain numpy
    on the CPU; the network runs on `device`.
    """

    def __init__(self, model: MeanFlowQL, action_horizon: int | None = None,
                 num_candidates: int | None = None, seed: int = 0, device: str = "cpu"):
        self.model = model.to(device).eval()
        cfg = model.cfg
        self.action_horizon = action_horizon or cfg.action_horizon
        self.num_candidates = num_candidates or cfg.num_candidates
        if not 1 <= self.action_horizon <= cfg.pred_horizon:
            raise UsageError(f"action_horizon {self.action_horizon} must lie between 1 and the "
                             f"checkpoint's pred_horizon ({cfg.pred_horizon}).")
        if self.num_candidates < 1:
            raise UsageError(f"num_candidates must be at least 1 (got {self.num_candidates}).")
        if self.num_candidates > 1 and not model.trains_critic:
            raise UsageError("This checkpoint was trained as pure behaviour cloning (actor Q "
                             "weight 0, cql_alpha 0): its critic is untrained and cannot rank "
                             "candidate chunks. Use --num-candidates 1.")
        self.obs_keys = model.hparams["obs_keys"]
        self.device = device
        self.seed = seed
        self.obs_horizon, self.obs_dim = cfg.obs_horizon, model.obs_dim
        self.action_shape = (cfg.pred_horizon, model.action_dim)
        self.chunk_dim = model.action_dim * cfg.pred_horizon
        numpy = lambda t: t.detach().cpu().float().numpy()
        self.obs_mean, self.obs_std = (numpy(model.obs_normalizer.mean),
                                       numpy(model.obs_normalizer.std))
        self.action_mean, self.action_std = (numpy(model.action_normalizer.mean),
                                             numpy(model.action_normalizer.std))
        self.action_low, self.action_high = numpy(model.action_low), numpy(model.action_high)
        self.generators: dict[int, np.random.Generator] = {}   # environment -> its noise
        self.history = None    # (N, obs_horizon, obs_dim) raw observations
        self.queue = None      # (N, action_horizon, action_dim) raw actions of each chunk
        self.cursor = None   # (N,) next action's index in each queue
        self.restart = None    # (N,) environments whose history restarts at the next step
        self.rows = None       # (N,) 0..N-1, to pick each environment's next action

    @classmethod
    def from_checkpoint(cls, path, **kwargs) -> "MeanFlowPolicy":
        return cls(load_checkpoint(path), **kwargs)

    def reset(self, env_index: int | None = None, seed: int | None = None) -> None:
        """Start new episodes: in all environments, or in one (optionally reseeding its noise)."""
        if env_index is None:
            self.history = self.queue = self.cursor = self.restart = None
            self.generators = {}
            return
        if seed is not None:
            self.generators[env_index] = np.random.default_rng(seed)
        if self.history is not None:
            self.cursor[env_index] = self.action_horizon
            self.restart[env_index] = True

    def act(self, obs, batched: bool = False) -> np.ndarray:
        """The next action for each environment: (action_dim,), or (N, action_dim) if batched.

        obs: one observation (array or nested dict of arrays), or a batch of N of them."""
        flat = self._flatten(obs, batched)                         # (N, obs_dim)
        if self.history is None:
            n = len(flat)
            self.history = np.repeat(flat[:, None], self.obs_horizon, axis=1).astype(np.float32)
            self.queue = np.zeros((n, self.action_horizon, self.action_shape[1]), np.float32)
            self.cursor = np.full(n, self.action_horizon)
            self.restart = np.zeros(n, dtype=bool)
            self.rows = np.arange(n)
        else:
            self.history[:, :-1] = self.history[:, 1:]
            self.history[:, -1] = flat
            if self.restart.any():   # a new episode's history repeats its first observation
                self.history[self.restart] = flat[self.restart, None]
                self.restart[:] = False
        empty = self.cursor == self.action_horizon
        if empty.any():
            self._replan(np.flatnonzero(empty))
        actions = self.queue[self.rows, self.cursor]
        self.cursor += 1
        return actions if batched else actions[0]

    def _flatten(self, obs, batched: bool) -> np.ndarray:
        if batched and isinstance(obs, np.ndarray) and obs.ndim == 2:
            return obs             # (N, obs_dim): written into the float32 history as it is
        if isinstance(obs, dict):
            return flatten_observations(obs if batched else add_batch_axis(obs), self.obs_keys)
        return np.asarray(obs, dtype=np.float32).reshape(-1 if batched else 1, self.obs_dim)

    def _noise(self, env_index: int) -> np.ndarray:
        if env_index not in self.generators:
            self.generators[env_index] = np.random.default_rng(self.seed + env_index)
        return self.generators[env_index].standard_normal(
            (self.num_candidates, self.chunk_dim), dtype=np.float32)

    def _replan(self, envs: np.ndarray) -> None:
        """Sample new chunks for these environments and refill their queues."""
        history = self.history[envs]
        obs = torch.from_numpy(((history - self.obs_mean) / self.obs_std).reshape(len(envs), -1))
        noise = torch.from_numpy(np.concatenate([self._noise(int(i)) for i in envs]))
        chunk = sample_chunk(self.model, obs.to(self.device), noise.to(self.device),
                             self.num_candidates)
        chunk = chunk.cpu().numpy().reshape(len(envs), *self.action_shape)
        actions = chunk[:, :self.action_horizon] * self.action_std + self.action_mean
        # np.minimum/np.maximum: np.clip's dispatch costs more than the arithmetic at this size.
        self.queue[envs] = np.minimum(np.maximum(actions, self.action_low), self.action_high)
        self.cursor[envs] = 0


class ZeroPolicy:
    """The do-nothing baseline: every action is 0 (clipped into the action space), in any
    number of environments; the same `reset`/`act` interface as MeanFlowPolicy."""

    def __init__(self, action_space):
        zero = np.zeros(action_space.shape, dtype=action_space.dtype)
        self.action = np.clip(zero, action_space.low, action_space.high)

    def reset(self, env_index: int | None = None, seed: int | None = None) -> None:
        pass

    def act(self, obs, batched: bool = False) -> np.ndarray:
        if not batched:
            return self.action.copy()
        count = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
        return np.repeat(self.action[None], count, axis=0)
