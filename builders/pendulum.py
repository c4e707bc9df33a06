"""InvertedPendulum-v5: a noisy linear balancer, for datasets with true terminations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from builders.recipe import Recipe


class PendulumBalancer:
    """Balances InvertedPendulum-v5: a linear state-feedback law on (x, theta, xdot, thetadot)."""

    gains = np.array([1.0, 12.0, 1.5, 2.0])

    def __init__(self, env: gym.Env):
        self.high = env.action_space.high

    def reset(self) -> None:
        pass

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.clip([self.gains @ obs], -self.high, self.high).astype(np.float32)

    @staticmethod
    def degrade(action: np.ndarray, rng: np.random.Generator, space: gym.spaces.Box,
                noise_std: float) -> np.ndarray:
        """The "medium" behaviour: Gaussian noise of the episode's std added to the action."""
        return action + rng.normal(0.0, noise_std, size=action.shape)


_DEGRADE = ("Gaussian noise added to the action, its std drawn per episode uniformly in "
            "[0, 3], so some episodes fall (terminated) and others reach the time limit")

RECIPES: dict[str, Recipe] = {
    "local/invertedpendulum/medium-v0": Recipe(
        "InvertedPendulum-v5", "InvertedPendulum-v5 (100-step limit), noisy balancing controller",
        200, ("medium",), _DEGRADE, PendulumBalancer, max_episode_steps=100),
    # Gymnasium's own 1000-step limit: the best episodes balance to the end, the noisiest fall
    # within steps, so a policy's return spans 0-1000 (the evidence of issue #14 used such data).
    "local/invertedpendulum/noisy-v0": Recipe(
        "InvertedPendulum-v5", "InvertedPendulum-v5 (1000-step limit), noisy balancing controller",
        150, ("medium",), _DEGRADE, PendulumBalancer),
}
