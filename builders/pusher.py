"""Pusher-v5: a scripted expert that pushes the object to the goal, and the Pusher recipes.

The expert reads the observation and the arm's kinematics (MuJoCo's model through
`env.unwrapped`, on a private `MjData` copy, so the simulation is never touched). Datasets built
from it: `local/pusher/expert-v0`, `medium-v0` (each action replaced by a uniform-random one with
probability 0.5) and `mixed-v0` (expert, medium and uniform-random episodes, a third each).
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np

from builders.recipe import Recipe

SUCCESS_RADIUS = 0.1  # object within this x-y distance of the goal at the end = success


def _min_jerk(x: float) -> tuple[float, float, float]:
    """Position, velocity and acceleration of the minimum-jerk profile 0 -> 1 at x in [0, 1]."""
    return (x**3 * (10 - 15 * x + 6 * x * x), 30 * x * x * (1 - x) ** 2,
            60 * x * (1 - x) * (1 - 2 * x))


def _end_velocity_profile(x: float) -> tuple[float, float, float]:
    """Quintic h with h = h' = h'' = 0 at 0, h(1) = h''(1) = 0 and h'(1) = 1: added as
    T * h(t/T) * v1 to a minimum-jerk move, it makes the move end with velocity v1."""
    return (x**3 * (-4 + 7 * x - 3 * x * x), x * x * (-12 + 28 * x - 15 * x * x),
            x * (-24 + 84 * x - 60 * x * x))


class PusherExpert:
    """Pushes Pusher-v5's object to the goal with the wrist's scoop.

    `tips_arm` is the centre of the scoop's bar (its y axis); two prongs point along its x axis.
    At an episode's start the controller solves inverse kinematics once for a pre-push pose: bar
    `standoff` behind the object on the far side from the goal, perpendicular to the object->goal
    direction, level and at the object's mid-height, prongs pointing away from the arm's base (the
    other way when that pose is out of reach and the other is closer). It moves there along a
    minimum-jerk joint trajectory that ends with the tip already moving toward the goal, with
    inverse-dynamics feedforward torques; the approach's duration is chosen per episode by
    trading its estimated torque cost against pushing time lost. Then it pushes: Cartesian
    velocity control of the tip by damped least squares, the bar's orientation held in the
    position task's null space, the tip aimed `lead` into the object along the object->goal
    direction with a lateral correction keeping the object on the push line, and no further
    than where the object comes to rest at the goal. The object's contact is soft: its speed is
    proportional to how deep the bar presses into it, so the bar is driven in fast and then
    held near the deepest press that does not pass through (~0.05 m/s at mid-height).

    Torques are the mass matrix times a joint-velocity error plus the joints' damping: a uniform
    gain makes the light wrist joints flip between the torque bounds every step.
    """

    standoff = 0.075     # bar centre behind the object's centre (object radius 0.05, bar 0.02)
    push_height = -0.275 # tip z while pushing: the object's mid-height (it spans [-0.325, -0.225])
    approach_speed = 0.05  # m/s of the tip along the push direction when the approach ends
    approach_min, approach_max = 1.0, 2.5  # s, bounds of the per-episode approach time
    coriolis = True      # approach feedforward includes velocity-product torques
    approach_samples = 8  # points at which the approach's torque cost is estimated
    time_value = 5.0     # return lost per second of pushing time lost (sets the approach time)
    lead = 0.07          # while pushing, aim this far past the touching pose into the object
    push_speed = 0.15    # m/s cap on the commanded tip speed while pushing
    contact = 0.07       # object radius + bar radius: centre distance where contact ends
    overshoot = 0.0      # the push stops where the object would rest this far past the goal
    freeze_radius = 0.05 # closer than this to the goal the push direction is kept fixed
    push_gain = 20.0     # push: tip speed = gain * distance to the aim point (1/s)
    lateral_gain = 2.0   # push: sideways tip speed per metre off the push line (1/s)
    height_gain = 10.0
    push_joint_speed = 0.5  # rad/s cap while pushing (near singularities DLS asks for more)
    rotation_gain = 2.0  # bar's angular velocity per radian of orientation error (1/s)
    velocity_gain = 12.0 # push: torque = M * velocity_gain * velocity error + damping * velocity
    approach_kp, approach_kv = 25.0, 10.0  # approach: tracking gains of the joint trajectory
    position_lambda, rotation_lambda = 0.05, 0.1  # damped-least-squares damping
    ik_iterations = 25
    ik_tolerance = 0.01      # IK error (m + weight * rad) above which the other prong side is tried
    ik_rotation_weight = 0.05
    q_nominal = np.array([0.5, 0.6, 0.0, -1.5, 0.0, -0.5, 0.0])  # where the IK starts
    base_xy = np.array([0.0, -0.6])  # the shoulder's position in the horizontal plane
    dt = 0.05            # env step (frame_skip 5 x timestep 0.01)

    def __init__(self, env: gym.Env):
        self.model = env.unwrapped.model
        self.data = mujoco.MjData(self.model)  # private copy: the env's data is never written
        self.tip = self.model.body("tips_arm").id
        self.lo, self.hi = self.model.jnt_range[:7].T.copy()
        self.damping = self.model.dof_damping[:7].copy()
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self._mass = np.zeros((self.model.nv, self.model.nv))
        self._rne = np.zeros(self.model.nv)
        self._damp_p = self.position_lambda**2 * np.eye(3)
        self._damp_r = self.rotation_lambda**2 * np.eye(3)
        self.reset()

    def reset(self) -> None:
        self.step = 0
        self.sign = 0.0
        self.direction: np.ndarray | None = None
        self.plan: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None

    def _kinematics(self, q: np.ndarray) -> np.ndarray:
        """Tip rotation matrix at joint angles q; fills the tip Jacobians."""
        d = self.data
        d.qpos[:7] = q
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_comPos(self.model, d)
        mujoco.mj_jacBody(self.model, d, self._jacp, self._jacr, self.tip)
        return d.xmat[self.tip].reshape(3, 3)

    def _mass_matrix(self) -> np.ndarray:
        """Joint-space inertia (armature included) at the last `_kinematics` call's q."""
        mujoco.mj_crb(self.model, self.data)
        mujoco.mj_fullM(self.model, self.data, self._mass)
        return self._mass[:7, :7]

    def _inverse_dynamics(self, q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> np.ndarray:
        """Joint torques M(q) qdd (armature included) + Coriolis/centrifugal(q, qd) (gravity is off in Pusher)."""
        d = self.data
        d.qpos[:7], d.qvel[:7], d.qacc[:7] = q, qd, qdd
        d.qvel[7:] = d.qacc[7:] = 0.0
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_comPos(self.model, d)
        mujoco.mj_comVel(self.model, d)
        mujoco.mj_rne(self.model, d, 1, self._rne)
        return self._rne[:7] + self.model.dof_armature[:7] * qdd  # rne leaves armature out

    def _rotation_error(self, R: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Rotation vector (small-angle) from R to the level frame with x along sign*direction:
        half the sum of R's columns crossed with the target's, from the skew part of D R^T."""
        x, y = self.sign * direction
        S = np.array([[x, -y, 0.0], [y, x, 0.0], [0.0, 0.0, 1.0]]) @ R.T
        return 0.5 * np.array([S[2, 1] - S[1, 2], S[0, 2] - S[2, 0], S[1, 0] - S[0, 1]])

    def _joint_velocity(self, q: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Damped least squares: tip velocity v first, angular velocity w in its null space;
        joints at a limit that the solution pushes further out are locked and it is re-solved."""
        jacp, jacr = self._jacp[:, :7], self._jacr[:, :7]
        free = np.ones(7)
        for _ in range(3):
            j1, j2 = jacp * free, jacr * free
            pinv = j1.T @ np.linalg.inv(j1 @ j1.T + self._damp_p)
            qdot = pinv @ v
            null = np.diag(free) - pinv @ j1
            j2n = j2 @ null
            qdot += null @ (j2n.T @ np.linalg.solve(j2n @ j2n.T + self._damp_r, w - j2 @ qdot))
            bad = (free > 0) & (((q > self.hi - 0.02) & (qdot > 0)) | ((q < self.lo + 0.02) & (qdot < 0)))
            if not bad.any():
                break
            free[bad] = 0.0
        return qdot * free

    def _ik(self, target: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, float]:
        """Joint angles for the tip at target in the pushing orientation, and the remaining
        error (position in metres plus `ik_rotation_weight` times rotation in radians)."""
        q = self.q_nominal.copy()
        for _ in range(self.ik_iterations):
            R = self._kinematics(q)
            step = self._joint_velocity(q, 0.8 * (target - self.data.xpos[self.tip]),
                                        0.8 * self._rotation_error(R, direction))
            q = np.clip(q + step, self.lo, self.hi)
        R = self._kinematics(q)
        error = (np.linalg.norm(target - self.data.xpos[self.tip])
                 + self.ik_rotation_weight * np.linalg.norm(self._rotation_error(R, direction)))
        return q, float(error)

    def _plan_pose(self, target: np.ndarray, direction: np.ndarray, obj: np.ndarray) -> np.ndarray:
        """Pre-push pose. Prongs pointing away from the base first (the wrist reaches that way);
        if that pose is not reachable well, the prongs the other way when that is better."""
        self.sign = 1.0 if direction @ (obj - self.base_xy) >= 0 else -1.0
        q, error = self._ik(target, direction)
        if error > self.ik_tolerance:
            self.sign = -self.sign
            q_other, error_other = self._ik(target, direction)
            if error_other < error:
                return q_other
            self.sign = -self.sign
        return q

    def _approach_cost(self, q0: np.ndarray, q1: np.ndarray, qd1: np.ndarray,
                       durations: np.ndarray) -> np.ndarray:
        """Control cost (0.1 sum over steps of squared torques) of the approach's feedforward
        torques for each duration T, from `approach_samples` points along it: the torque at a
        point is A/T^2 + B/T + C (inertial, damping and end-velocity parts)."""
        cost = np.zeros(len(durations))
        for x in (np.arange(self.approach_samples) + 0.5) / self.approach_samples:
            p, dp, ddp = _min_jerk(x)
            h, dh, ddh = _end_velocity_profile(x)
            self._kinematics(q0 + p * (q1 - q0))
            M = self._mass_matrix()
            A = M @ (ddp * (q1 - q0))
            B = M @ (ddh * qd1) + self.damping * dp * (q1 - q0)
            C = self.damping * dh * qd1
            tau = A / durations[:, None] ** 2 + B / durations[:, None] + C
            cost += np.sum(tau**2, axis=1)
        return 0.1 * cost / self.approach_samples * durations / self.dt

    def _plan(self, q: np.ndarray, touching: np.ndarray, direction: np.ndarray, obj: np.ndarray):
        """Pre-push pose, the joint velocity it is reached with (tip moving `approach_speed`
        along the push direction) and the approach time T that minimises the approach's
        estimated control cost plus `time_value` * T (each second of approach is a second less
        of pushing)."""
        q1 = self._plan_pose(np.r_[touching, self.push_height], direction, obj)
        self._kinematics(q1)
        qd1 = self._joint_velocity(q1, np.r_[self.approach_speed * direction, 0.0], np.zeros(3))
        durations = np.linspace(self.approach_min, self.approach_max, 31)
        total = self._approach_cost(q, q1, qd1, durations) + self.time_value * durations
        return q.copy(), q1, qd1, float(durations[np.argmin(total)])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        q, qd, tip, obj, goal = obs[:7], obs[7:14], obs[14:17], obs[17:19], obs[20:22]
        to_goal = goal - obj
        distance = float(np.linalg.norm(to_goal))
        if self.direction is None or distance > self.freeze_radius:
            self.direction = to_goal / max(distance, 1e-9)
        direction = self.direction
        normal = np.array([-direction[1], direction[0]])
        touching = obj - self.standoff * direction  # bar centre just touching the object
        if self.plan is None:
            self.plan = self._plan(q, touching, direction, obj)
        q0, q1, qd1, T = self.plan
        t = self.step * self.dt
        self.step += 1
        if t < T:
            x = t / T
            s, ds, dds = _min_jerk(x)
            h, dh, ddh = _end_velocity_profile(x)
            q_ref = q0 + s * (q1 - q0) + T * h * qd1
            qd_ref = ds / T * (q1 - q0) + dh * qd1
            qdd_ref = dds / T**2 * (q1 - q0) + ddh / T * qd1
            feedback = self.approach_kv * (qd_ref - qd) + self.approach_kp * (q_ref - q)
            if self.coriolis:
                tau = self._inverse_dynamics(q, qd, qdd_ref + feedback)
            else:
                self._kinematics(q)
                tau = self._mass_matrix() @ (qdd_ref + feedback)
            return np.clip(tau + self.damping * qd_ref, -2.0, 2.0)
        rel = tip[:2] - touching
        along, lateral = rel @ direction, rel @ normal
        # aim `lead` into the object, but no further than the bar's position that leaves the
        # object resting `overshoot` past the goal (contact ends at centre distance `contact`)
        stop = (goal - tip[:2]) @ direction - self.contact + self.overshoot
        speed = min(self.push_speed, max(0.0, self.push_gain * min(self.lead - along, stop)))
        v = np.r_[speed * direction - self.lateral_gain * lateral * normal,
                  self.height_gain * (self.push_height - tip[2])]
        R = self._kinematics(q)
        qdot = self._joint_velocity(q, v, self.rotation_gain * self._rotation_error(R, direction))
        qdot = np.clip(qdot, -self.push_joint_speed, self.push_joint_speed)
        tau = self._mass_matrix() @ (self.velocity_gain * (qdot - qd)) + self.damping * qdot
        return np.clip(tau, -2.0, 2.0)

    @staticmethod
    def degrade(action: np.ndarray, rng: np.random.Generator, space: gym.spaces.Box,
                noise_std: float) -> np.ndarray:
        """The "medium" behaviour: each action replaced by a uniform-random one with
        probability 0.5 (`noise_std` is unused here)."""
        if rng.random() < 0.5:
            return rng.uniform(space.low, space.high)
        return action



def succeeded(final_observation: np.ndarray, radius: float = SUCCESS_RADIUS) -> bool:
    """Whether one episode's last Pusher-v5 observation (23,) has the object within `radius`
    of the goal in the x-y plane."""
    return bool(success_fraction(np.asarray(final_observation)[None], radius))


def success_fraction(final_observations: np.ndarray, radius: float = SUCCESS_RADIUS) -> float:
    """Fraction of episodes whose object ends within `radius` of the goal in the x-y plane.

    final_observations (N, 23): each episode's last Pusher-v5 observation (object at 17:19,
    goal at 20:22; the goal sits 0.048 below the object, so height is left out)."""
    final = np.asarray(final_observations)
    return float(np.mean(np.linalg.norm(final[:, 17:19] - final[:, 20:22], axis=1) < radius))


_DEGRADE = "each step's action replaced by a uniform-random one with probability 0.5"

RECIPES: dict[str, Recipe] = {
    "local/pusher/expert-v0": Recipe(
        "Pusher-v5", "Pusher-v5, scripted expert that pushes the object toward the goal",
        1000, ("expert",), _DEGRADE, PusherExpert),
    "local/pusher/medium-v0": Recipe(
        "Pusher-v5", "Pusher-v5, scripted expert degraded by random actions",
        1000, ("medium",), _DEGRADE, PusherExpert),
    "local/pusher/mixed-v0": Recipe(
        "Pusher-v5", "Pusher-v5, expert, degraded and uniform-random episodes, a third each",
        1200, ("expert", "medium", "random"), _DEGRADE, PusherExpert),
}
