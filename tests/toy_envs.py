"""Small environments for tests, importable by entry point (`tests.toy_envs:NestedDictEnv`), so
subprocesses and vector-env workers can rebuild them from a dataset's stored env spec."""

import gymnasium as gym
import numpy as np


class NestedDictEnv(gym.Env):
    """A point on a plane, observed through a nested Dict like FrankaKitchen's:
    {"achieved_goal": {"kettle": (2,), "light": (1,)}, "observation": (2,)}.

    The action moves the point by 0.1 * action; the reward is minus its distance to the origin.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None):
        box = lambda n: gym.spaces.Box(-10.0, 10.0, (n,), np.float64)
        self.observation_space = gym.spaces.Dict({
            "achieved_goal": gym.spaces.Dict({"kettle": box(2), "light": box(1)}),
            "observation": box(2)})
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.render_mode = render_mode
        self.position = np.zeros(2)
        self.steps = 0

    def _obs(self):
        p = self.position
        return {"achieved_goal": {"kettle": p * 2.0, "light": np.array([p.sum()])},
                "observation": p.copy()}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-1.0, 1.0, 2)
        self.steps = 0
        return self._obs(), {}

    def step(self, action):
        self.steps += 1
        self.position = np.clip(self.position + 0.1 * np.asarray(action, np.float64), -5, 5)
        reward = -float(np.linalg.norm(self.position))
        return self._obs(), reward, False, False, {}

    def render(self):
        frame = np.zeros((32, 32, 3), np.uint8)
        x, y = np.clip(((self.position + 5) / 10 * 31).astype(int), 0, 31)
        frame[y, x] = 255
        frame[0, :self.steps + 1] = 80                      # a bar that counts the steps
        return frame


# Registered on import, so `gym.make("tests.toy_envs:NestedToy-v0")` works in any process.
gym.register("NestedToy-v0", entry_point="tests.toy_envs:NestedDictEnv", max_episode_steps=20)


class PointEnv(gym.Env):
    """A point on a plane observed as (position, velocity), a Box of 4 values, moved by a
    Box(-bound, bound, (2,)) action; the reward is minus its distance to the origin."""

    def __init__(self, bound: float = 1.0):
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (4,), np.float64)
        self.action_space = gym.spaces.Box(-bound, bound, (2,), np.float32)
        self.state = np.zeros(4)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.state = np.concatenate([self.np_random.uniform(-1.0, 1.0, 2), np.zeros(2)])
        return self.state.copy(), {}

    def step(self, action):
        velocity = 0.1 * np.asarray(action, np.float64)
        self.state = np.concatenate([np.clip(self.state[:2] + velocity, -5, 5), velocity])
        return self.state.copy(), -float(np.linalg.norm(self.state[:2])), False, False, {}


gym.register("PointToy-v0", entry_point="tests.toy_envs:PointEnv", max_episode_steps=20)
gym.register("PointToyWide-v0", entry_point="tests.toy_envs:PointEnv", max_episode_steps=20,
             kwargs={"bound": 2.0})
