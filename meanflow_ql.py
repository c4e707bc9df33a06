"""MeanFlow actor + double-Q CQL critic, their losses, and the LightningModule that trains them.

Time convention (MeanFlow paper): z_t = (1 - t) x + t eps, data x at t = 0, noise eps at t = 1,
velocity v = eps - x. The actor predicts the average velocity u(z, r, t) over [r, t], so one step
from pure noise gives an action chunk: x = eps - u(eps, 0, 1).
"""

from __future__ import annotations

import copy
import math

import lightning as L
import torch
from torch import nn
from torch.func import jvp

from config import TrainConfig, UsageError
from dataset import Normalizer, keep_dtypes


# Steps of the multi-step sampler that one-step samples are compared with at validation.
MULTI_STEP_SAMPLING = 16


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; raised before the optimizer step, so weights stay finite."""


# --- networks ---------------------------------------------------------------------------------

def mlp(in_dim: int, hidden_dim: int, num_layers: int, out_dim: int,
        layer_norm: bool = False) -> nn.Sequential:
    layers, width = [], in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden_dim)]
        if layer_norm:
            layers += [nn.LayerNorm(hidden_dim)]
        layers += [nn.SiLU()]
        width = hidden_dim
    layers += [nn.Linear(width, out_dim)]
    return nn.Sequential(*layers)


class MeanFlowActor(nn.Module):
    """u(z, r, t | obs): the average velocity of the flow from noise to an action chunk."""

    def __init__(self, obs_dim: int, chunk_dim: int, hidden_dim: int, num_layers: int):
        super().__init__()
        self.chunk_dim = chunk_dim
        # The network sees (t, t - r), the MeanFlow paper's best time conditioning.
        self.net = mlp(chunk_dim + obs_dim + 2, hidden_dim, num_layers, chunk_dim)

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor,
                obs: torch.Tensor) -> torch.Tensor:
        # z (B, chunk_dim), r and t (B,), obs (B, obs_dim) -> (B, chunk_dim)
        return self.net(torch.cat([z, obs, t[:, None], (t - r)[:, None]], dim=-1))

    def forward_with_time_derivative(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor,
                                     obs: torch.Tensor, v: torch.Tensor, rows: int | None = None):
        """u(z, r, t) and its derivative along the flow, du/dt = v . d_z u + d_t u, the latter
        for the first `rows` rows only (all rows when None).

        The derivative is a Jacobian-vector product with tangents (v, 0, 1) for (z, r, t). For
        this MLP it is propagated by hand next to the forward pass (a tangent matmul per layer,
        under no_grad), which reuses the forward's activations: with every row about 1.5x a
        flow-matching step where `torch.func.jvp` plus a separate forward costs about 2x (1.1x
        with the loss's quarter of the rows). Other layer types fall back to `torch.func.jvp`.
        The derivative carries no gradient (it only enters the stop-gradient target); u does.
        """
        rows = len(z) if rows is None else rows
        layers = list(self.net)
        if not all(isinstance(layer, (nn.Linear, nn.SiLU)) for layer in layers):
            return self._generic_time_derivative(z, r, t, obs, v, rows)
        h = torch.cat([z, obs, t[:, None], (t - r)[:, None]], dim=-1)
        tangent = None
        for layer in layers:
            pre, h = h, layer(h)
            with torch.no_grad(), torch.autocast(h.device.type, enabled=False):
                if isinstance(layer, nn.Linear) and tangent is None:
                    # Input tangent is (v, 0 for obs, 1 for t, 1 for t - r): only the chunk
                    # columns and the two time columns of the first weight matter.
                    weight = layer.weight.float()
                    tangent = v[:rows].float() @ weight[:, :self.chunk_dim].T \
                        + (weight[:, -2] + weight[:, -1])
                elif isinstance(layer, nn.Linear):
                    tangent = tangent @ layer.weight.float().T
                else:
                    # The tangent through SiLU is SiLU'(pre) * tangent, exactly what SiLU's
                    # backward kernel computes for a gradient: one fused pass over the
                    # activations where the same formula in tensor ops takes four.
                    tangent = torch.ops.aten.silu_backward(tangent, pre[:rows].float())
        return h, tangent

    def _generic_time_derivative(self, z, r, t, obs, v, rows):
        u = self(z, r, t, obs)
        with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
            z, r, t, obs, v = (x[:rows].float() for x in (z, r, t, obs, v))
            _, dudt = jvp(lambda z_, r_, t_: self(z_, r_, t_, obs), (z, r, t),
                          (v, torch.zeros_like(r), torch.ones_like(t)))
        return u, dudt

    def sample(self, obs: torch.Tensor, noise: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """Integrate from noise (t = 1) to data (t = 0) in `steps` equal steps."""
        if steps == 1:                                 # MeanFlow's one step: eps - u(eps, 0, 1)
            ones = noise.new_ones(len(noise))
            return noise - self(noise, ones - 1, ones, obs)
        z = noise
        ones = torch.ones(len(z), device=z.device, dtype=z.dtype)
        for i in range(steps):
            t, r = 1.0 - i / steps, 1.0 - (i + 1) / steps
            z = z - (t - r) * self(z, ones * r, ones * t, obs)
        return z


class DoubleCritic(nn.Module):
    """Two Q networks over (observation window, action chunk), built in one place."""

    def __init__(self, obs_dim: int, chunk_dim: int, hidden_dim: int, num_layers: int,
                 layer_norm: bool):
        super().__init__()
        self.qs = nn.ModuleList(
            mlp(obs_dim + chunk_dim, hidden_dim, num_layers, 1, layer_norm) for _ in range(2))

    def forward(self, obs: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        # obs (B, obs_dim), chunk (B, chunk_dim) -> (2, B)
        x = torch.cat([obs, chunk], dim=-1)
        return torch.stack([q(x).squeeze(-1) for q in self.qs])


def adam(parameters, lr: float, fused: bool = True) -> torch.optim.Adam:
    """Adam with PyTorch's fused kernel where the parameters' device has one (about 3x faster
    than the default per-tensor loop for these small networks on a CPU); `fused=False` gives
    the per-tensor loop (see `MeanFlowQL.configure_optimizers` for when)."""
    parameters = list(parameters)
    fused = fused and all(p.device.type in ("cpu", "cuda") for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, fused=True if fused else None)


# --- losses: pure functions returning (loss, info) ---------------------------------------------

@torch.compiler.disable
def sample_times(batch_size: int, cfg: TrainConfig, device, generator=None):
    """(r, t, distinct): t >= r, both logit-normal, and r = t in all rows but the first
    `distinct`, a fraction ratio_r_neq_t of the batch (rounded at random, so exact on average).
    The first corner_ratio of the batch (rounded with the same draw, so never more rows than
    `distinct`) is set to (r, t) = (0, 1), where one-step sampling evaluates the network.

    Rows with r = t are plain flow matching: their target v - (t - r) du/dt needs no du/dt.
    Putting the others first lets the loss compute du/dt for a leading slice of the batch
    only; batches arrive shuffled, so which samples get r < t is still random.

    Always run eagerly, also inside a compiled update (`compiled_losses`): the rounding draw
    becomes a Python number, and a compiled graph around it would be specialised on each draw
    and recompiled at every update; the rest of the loss compiles around this call.
    """
    normal = torch.randn(2, batch_size, generator=generator)
    times = torch.sigmoid(cfg.time_mean + cfg.time_std * normal)
    r, t = times.min(0).values, times.max(0).values
    # .item(): the sum in Python's float64; in float32 a draw just under 1 can round up a row.
    rounding = torch.rand((), generator=generator).item()
    distinct = int(cfg.ratio_r_neq_t * batch_size + rounding)
    r[distinct:] = t[distinct:]
    corner = int(cfg.corner_ratio * batch_size + rounding)
    r[:corner], t[:corner] = 0.0, 1.0
    return r.to(device), t.to(device), distinct


def flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1)


def compute_meanflow_loss(actor: MeanFlowActor, obs: torch.Tensor, actions: torch.Tensor,
                          mask: torch.Tensor, cfg: TrainConfig, generator=None):
    """MeanFlow loss on normalised chunks; obs (B, obs_dim), actions (B, H, A), mask (B, H).
    The rows should come in random order: the leading ones get r < t (`sample_times`)."""
    x = flat(actions)
    noise = torch.randn(x.shape, generator=generator).to(x)
    r, t, distinct = sample_times(len(x), cfg, x.device, generator)
    r, t = r.to(x.dtype), t.to(x.dtype)
    z = (1 - t[:, None]) * x + t[:, None] * noise
    v = noise - x
    # MeanFlow identity: u_tgt = v - (t - r) du/dt, a stop-gradient target; du/dt only for the
    # leading rows where r < t (elsewhere the term is zero). du/dt is computed without autograd
    # and in float32; the loss's gradient comes from u's ordinary forward, which also keeps
    # DDP's gradient sync intact.
    u, dudt = actor.forward_with_time_derivative(z, r, t, obs, v, rows=distinct)
    v32 = v.float()
    target = torch.cat([v32[:distinct] - (t - r)[:distinct, None].float() * dudt,
                        v32[distinct:]]).detach()
    step_mask = mask.to(u.dtype).repeat_interleave(actions.shape[-1], dim=1)
    error = ((u.float() - target) ** 2 * step_mask).sum(1)            # (B,)
    # Adaptive weight of the MeanFlow paper, sg(1 / (err + c)^p) on the error summed over the
    # chunk; p = 0 is plain MSE. The loss is then per action element (divided by the chunk's
    # size), as FQL's behaviour term is, so that the actor's Q weight means the same for any
    # chunk length or action size.
    weight = (error.detach() + cfg.adaptive_weight_eps) ** -cfg.adaptive_weight_power
    loss = (weight * error).mean() / x.shape[1]
    return loss, {"actor/meanflow_loss": loss.detach(),
                  "actor/meanflow_error": error.detach().mean()}


def aggregate(q: torch.Tensor, how: str) -> torch.Tensor:
    return q.min(0).values if how == "min" else q.mean(0)


@torch.no_grad()
def behaviour_samples(teacher: MeanFlowActor, obs: torch.Tensor, k: int, like: torch.Tensor,
                      steps: int, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """k chunks of the behaviour flow (the teacher's `steps`-step samples from fresh noise) per
    state, clipped to [low, high] as executed chunks are: (B * k, chunk_dim), state i's chunks
    in rows i * k to i * k + k - 1. obs (B, obs_dim) flat observation windows; `like` gives the
    chunk width, device and dtype. No gradient."""
    noise = torch.randn(len(obs) * k, like.shape[1], device=like.device, dtype=like.dtype)
    return clip_chunk(teacher.sample(obs.repeat_interleave(k, dim=0), noise, steps), low, high)


def compute_critic_loss(critic: DoubleCritic, target_critic: DoubleCritic, actor: MeanFlowActor,
                        batch: dict, cfg: TrainConfig, chunk_low: torch.Tensor,
                        chunk_high: torch.Tensor, data_low: torch.Tensor,
                        data_high: torch.Tensor, teacher: MeanFlowActor | None = None,
                        cql_weight: torch.Tensor | None = None):
    """TD loss on action chunks plus the CQL penalty (Kumar et al. 2020): log-mean-exp of the Q of
    uniform chunks and of the actor's chunks minus the Q of the data's chunk; with
    cql_calibrated, each actor chunk's Q enters it as no lower than the data's Monte-Carlo
    return of the same window (Cal-QL, Nakamoto et al. 2023); with cql_behaviour_samples K,
    the raised chunk is each critic's best of the data's chunk and K of the teacher's
    (required then) multi-step chunks for the same state. Bounds are flat normalised chunks.
    cql_weight (a 0-d tensor on the loss's device, cast to the penalty's dtype) replaces
    cfg.cql_alpha when given: the dual variable of cql_calibration_target. Returns (loss, info
    of detached scalars)."""
    obs, next_obs, chunk = flat(batch["obs"]), flat(batch["next_obs"]), flat(batch["actions"])
    with torch.no_grad():
        # Best of target_candidates next chunks by the target critic (1 = the actor's sample).
        n_next = cfg.target_candidates
        next_rep = next_obs.repeat_interleave(n_next, dim=0) if n_next > 1 else next_obs
        next_chunk = actor.sample(next_rep, torch.randn(len(next_rep), chunk.shape[1],
                                                        device=chunk.device, dtype=chunk.dtype),
                                  cfg.inference_steps)
        next_chunk = clip_chunk(next_chunk, chunk_low, chunk_high)
        next_q = aggregate(target_critic(next_rep, next_chunk), cfg.target_aggregate)
        next_q = next_q.reshape(len(next_obs), n_next).max(1).values
        # Bootstrap after the chunk's valid steps, never after a true termination.
        discount = cfg.gamma ** batch["valid_steps"].to(next_q.dtype)
        discount = discount * (~batch["terminal"]).to(next_q.dtype)
        target = batch["chunk_reward"].to(next_q.dtype) + discount * next_q
    q = critic(obs, chunk)                                            # (2, B)
    td_loss = ((q - target) ** 2).mean(1).sum()
    # q_data beside the data's own discounted return of the same windows (mc_return): a critic
    # that learned tracks it, one that diverged leaves it, one that stalled sits at its start.
    info = {"critic/td_loss": td_loss.detach(), "critic/q_data": q.detach().mean(),
            "critic/mc_return": batch["mc_return"].mean(), "critic/target": target.mean()}
    loss = td_loss
    if cfg.cql_alpha > 0:
        n, (b, d) = cfg.cql_num_samples, chunk.shape
        obs_rep = obs.repeat_interleave(n, dim=0)                     # (B * n, obs_dim)
        # Uniform chunks inside the box the training actions occupy: the action-space bounds
        # can be ~100 normalised stds away for low-spread dimensions, far from anything useful.
        uniform = data_low + (data_high - data_low) * torch.rand(b * n, d, device=chunk.device,
                                                                  dtype=chunk.dtype)
        with torch.no_grad():
            policy = actor.sample(obs_rep, torch.randn_like(uniform), cfg.inference_steps)
            policy = clip_chunk(policy, chunk_low, chunk_high)
        q_uniform = critic(obs_rep, uniform).reshape(2, b, n)
        q_policy = critic(obs_rep, policy).reshape(2, b, n)
        pushed_policy = q_policy
        if cfg.cql_calibrated:
            # Cal-QL: no push below the data's own return from this state. In float32: a bf16
            # return of -189.3 would round to -189, an fp16 one overflow past 65504.
            floor = batch["mc_return"].float()[:, None]
            pushed_policy = torch.maximum(q_policy.float(), floor)
            # Where the floor binds, the penalty only raises the data chunk's Q: the share
            # tells how much of the penalty is conservatism and how much a pull to the data.
            info["critic/calibration_binds"] = (floor > q_policy.detach().float()).float().mean()
        # log-mean-exp, so the penalty is 0 when every sampled chunk is valued like the data's.
        sampled = torch.cat([q_uniform.to(pushed_policy.dtype), pushed_policy], dim=2)
        pushed_down = torch.logsumexp(sampled, dim=2) - math.log(2 * n)
        raised = q
        if cfg.cql_behaviour_samples > 0:
            k = cfg.cql_behaviour_samples
            behaviour = behaviour_samples(teacher, obs, k, chunk, cfg.consistency_steps,
                                          chunk_low, chunk_high)
            q_behaviour = critic(obs.repeat_interleave(k, dim=0), behaviour).reshape(2, b, k)
            # The max passes its gradient to the chosen chunk only: the best in-support chunk
            # is raised, the others are left to the TD loss and the push-down.
            candidates = torch.cat([q[:, :, None], q_behaviour.to(q.dtype)], dim=2)
            raised = candidates.max(2).values
            info["critic/raised_behaviour"] = (candidates.detach().argmax(2) > 0).float().mean()
        penalty = (pushed_down - raised).mean(1).sum()
        weight = cfg.cql_alpha if cql_weight is None else cql_weight.to(penalty.dtype)
        loss = loss + weight * penalty
        info.update({"critic/cql_penalty": penalty.detach(),
                     "critic/q_uniform": q_uniform.detach().mean(),
                     "critic/q_policy": q_policy.detach().mean()})
    return loss, info


def compute_support_distance(chunk: torch.Tensor, teacher_chunks: torch.Tensor):
    """How far one-step chunks lie from the behaviour flow's support, and the flow's own spread.

    chunk (B, D) flat normalised chunks (gradient flows through it); teacher_chunks (B, K, D),
    K >= 2, chunks sampled from the behaviour flow for the same states. Returns (distance (B,),
    spread scalar): distance is each chunk's mean squared distance per element to its nearest
    teacher chunk; spread, with no gradient, is the same distance from each teacher chunk to
    its nearest other teacher chunk, averaged over the batch: what a genuine behaviour sample
    scores against K - 1 others. A chunk on any mode of the flow has distance of the order of
    spread; one between or beyond its modes lies far above it."""
    distance = ((chunk[:, None] - teacher_chunks) ** 2).mean(-1).min(1).values
    with torch.no_grad():
        pairwise = ((teacher_chunks[:, :, None] - teacher_chunks[:, None]) ** 2).mean(-1)
        k = teacher_chunks.shape[1]
        pairwise = pairwise + torch.diag(torch.full((k,), float("inf"), device=chunk.device))
        spread = pairwise.min(2).values.mean()
    return distance, spread


# How far above cql_alpha the rule of cql_calibration_target may raise CQL's weight: MeanFlowQL
# bounds its adaptive BC weight to [0.1, 10] x its start (Wang et al. 2025, `use_dynamic_alpha`).
CQL_WEIGHT_RANGE = 10.0
# Updates before that rule moves the weight. A fresh critic values every chunk near 0, above
# every negative return, so the floor binds nowhere until it has learnt the returns' scale, and
# the rule read that as a call for more CQL: without the hold, the weight went to 10 x cql_alpha
# on medium Pusher (0.89 on mixed, 0.19 on expert) in the first 1,000 updates, and was back at
# cql_alpha by update 2,500 on all three.
CQL_DUAL_WARMUP_UPDATES = 2500


def dual_step(log_weight: torch.Tensor, measured: torch.Tensor, allowed: torch.Tensor,
              step_size: float) -> None:
    """One dual-ascent step on a constraint's log weight (a 0-d tensor, changed in place), the
    rule of Lagrangian constraints such as BEAR's and CQL-Lagrange's: up when the measured
    value (a tensor, its mean taken) exceeds `allowed` (a scalar tensor), down when below. The
    step is step_size x (measured / allowed - 1), the relative error clipped to +-1 so one odd
    batch cannot swing it; the weight stays in [1e-3, 1e4]."""
    ratio = measured.detach().mean() / allowed.detach().clamp_min(1e-8)
    step = step_size * (ratio - 1).clamp(-1.0, 1.0)
    log_weight.add_(step.to(log_weight.dtype)).clamp_(math.log(1e-3), math.log(1e4))


def compute_actor_loss(actor: MeanFlowActor, critic: DoubleCritic, batch: dict,
                       cfg: TrainConfig, chunk_low: torch.Tensor, chunk_high: torch.Tensor,
                       teacher: MeanFlowActor | None = None,
                       support_weight: torch.Tensor | None = None,
                       consistency_weight: torch.Tensor | None = None):
    """MeanFlow loss (stay near the data) plus the normalised Q of the actor's one-step chunk,
    clipped to the action bounds (flat normalised chunks) before the critic scores it, as it is
    clipped in the TD target, in CQL and when executed (FQL clips the same way); with
    consistency_weight, plus the one-step chunk's squared distance to the teacher's (a Polyak
    copy of the actor, required then) multi-step chunk from the same noise, clipped to the
    bounds (FQL's distillation term), weighted by the tensor consistency_weight (the dual
    variable) with consistency_target and by cfg.consistency_weight otherwise; with
    consistency_target, the flow's spread (two teacher chunks from independent noise, their
    mean squared distance per element) comes back in info as the tensor `tie/spread` beside
    `actor/consistency`; with support_samples, plus support_weight (the dual variable) times
    the one-step chunk's distance to the nearest of support_samples teacher chunks
    (`compute_support_distance`), whose mean and the flow's spread come back in info as tensors
    `support/distance` and `support/spread` for the dual step."""
    obs, actions, mask = flat(batch["obs"]), batch["actions"], batch["mask"]
    loss, info = compute_meanflow_loss(actor, obs, actions, mask, cfg)
    noise = torch.randn_like(flat(actions))
    with torch.set_grad_enabled(cfg.actor_q_weight > 0 or cfg.uses_teacher):
        chunk = actor.sample(obs, noise, cfg.inference_steps)
    if cfg.support_samples > 0:
        k = cfg.support_samples
        samples = behaviour_samples(teacher, obs, k, chunk, cfg.consistency_steps,
                                    chunk_low, chunk_high)
        # The clipped chunk, as it is executed: no pull on elements already past the bounds.
        distance, spread = compute_support_distance(clip_chunk(chunk, chunk_low, chunk_high),
                                                    samples.reshape(len(obs), k, -1))
        support = distance.mean()
        loss = loss + support_weight.to(support.dtype) * support
        info.update({"support/distance": support.detach(), "support/spread": spread,
                     "actor/support_weight": support_weight.detach().clone()})
    if cfg.consistency_weight > 0:
        with torch.no_grad():
            # Clipped like every executed chunk (FQL clips its BC flow's actions too), so the
            # target stays inside the bounds: unclipped, a teacher that strays out can pull the
            # actor after it, and in one cube-single run (chunks of 1, CQL 1) the tie grew from
            # 0.01 to 5e32 within 3,500 updates as the chunks left the bounds.
            target = clip_chunk(teacher.sample(obs, noise, cfg.consistency_steps),
                                chunk_low, chunk_high)
        consistency = ((chunk - target) ** 2).mean()
        weight = cfg.consistency_weight
        if cfg.consistency_target > 0:
            weight = consistency_weight.to(consistency.dtype)
            with torch.no_grad():
                other = clip_chunk(teacher.sample(obs, torch.randn_like(noise),
                                                  cfg.consistency_steps), chunk_low, chunk_high)
                spread = ((other - target) ** 2).mean()
            info.update({"tie/spread": spread, "actor/consistency_weight": weight.detach()})
        loss = loss + weight * consistency
        info["actor/consistency"] = consistency.detach()
    if cfg.actor_q_weight > 0:
        q = critic(obs, clip_chunk(chunk, chunk_low, chunk_high)).mean(0)
        # Dividing by mean |Q| (as FQL does) makes the weight independent of the reward scale.
        q_term = -q.mean() / q.detach().abs().mean().clamp_min(1e-6)
        loss = loss + cfg.actor_q_weight * q_term
        info.update({"actor/q_term": q_term.detach(), "actor/q": q.detach().mean()})
    info["actor/action_mse"] = masked_mse(chunk.detach(), actions, mask)
    return loss, info


def clip_chunk(chunk: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Chunks (B, chunk_dim) clipped elementwise to [low, high] (chunk_dim,); no gradient
    flows to elements outside the box."""
    return torch.maximum(torch.minimum(chunk, high), low)


def masked_mse(chunk: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per action dimension over the valid steps of each chunk."""
    error = (chunk.reshape(actions.shape).float() - actions.float()) ** 2
    step_mask = mask.float()[..., None]
    return (error * step_mask).sum() / (step_mask.sum() * actions.shape[-1]).clamp_min(1)


# --- the compiled update ---------------------------------------------------------------------

def uses_compile(setting: str, device: torch.device) -> bool:
    """Whether the `compile` setting (auto, on, off) compiles the update on this device: auto
    means on for CUDA only (see TrainConfig.compile for why not on a CPU)."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def compiled_losses(device_type: str) -> tuple:
    """(compute_critic_loss, compute_actor_loss) run through `torch.compile`, for a device type
    ("cuda", "cpu"); same arguments and results as the eager functions.

    The pure loss functions are compiled, not the LightningModule: Lightning's manual
    optimisation, gradient clipping, the optimizer steps and the Polyak updates stay eager
    around them, and the modules keep their own state-dict keys (a compiled module would save
    its weights under `_orig_mod.`), so checkpoints of compiled and eager runs interchange.
    Each loss's backward pass is compiled with it (AOTAutograd).

    - CUDA: CUDA graphs (`triton.cudagraphs`, what mode="reduce-overhead" sets): each compiled
      piece replays as one graph launch instead of hundreds of kernel launches.
    - CPU: Inductor's default C++ code generation (CUDA graphs do not apply).
    - `fallback_random`: the compiled code draws its random numbers with the eager
      operators, from the same generator in the same order, so a seeded compiled run trains
      like an eager one. Inductor's own generator would be faster on a GPU but would draw
      other numbers.
    - `dynamic=False`: batches have one shape (the last, smaller batch of an epoch is
      dropped), and the only integer the graphs depend on, `sample_times`'s count of r < t
      rows, takes at most two values; each gets its own graph.
    - `sample_times` runs eagerly between the pieces (see there).
    """
    options = {"fallback_random": True}
    if device_type == "cuda":
        options["triton.cudagraphs"] = True
    return tuple(torch.compile(fn, options=options, dynamic=False)
                 for fn in (compute_critic_loss, compute_actor_loss))


# --- checkpoint formats ------------------------------------------------------------------------

# What a checkpoint holds (MeanFlowQL's hyperparameters and buffers), as a number every checkpoint
# records under FORMAT_KEY. Format 1: checkpoints written before the format was recorded. Raise it
# when what a checkpoint holds changes, and teach `init_arguments` (for hyperparameters) and
# `MeanFlowQL.on_load_checkpoint` (for buffers) to fill in what the older formats lack. Format 3
# adds CQL's weight (the buffer cql_log_weight, the setting cql_calibration_target).
CHECKPOINT_FORMAT = 3
FORMAT_KEY = "meanflow_ql_format"


def init_arguments(checkpoint: dict, path) -> dict:
    """The keyword arguments of `MeanFlowQL.__init__` for a loaded checkpoint dict of this or an
    older format: its saved hyperparameters, with what an older format lacks filled in from
    the rest of the checkpoint (shapes and bounds from its buffers, a Box observation, the
    config's dataset), as `config.SAVED_BEFORE` does for settings.

    Raises UsageError, naming both formats, for a checkpoint of a newer or unknown format: one
    recording a format above CHECKPOINT_FORMAT, or holding hyperparameters this version does not
    take. `path` only names the file in messages."""
    import inspect

    found = checkpoint.get(FORMAT_KEY, 1)
    hparams = dict(checkpoint["hyper_parameters"])
    taken = [name for name in inspect.signature(MeanFlowQL.__init__).parameters if name != "self"]
    unknown = sorted(set(hparams) - set(taken))
    if not isinstance(found, int) or isinstance(found, bool) or not 1 <= found <= CHECKPOINT_FORMAT \
            or unknown:
        what = (f"records checkpoint format {found!r}" if found != 1 or FORMAT_KEY in checkpoint
                else "records no checkpoint format (format 1)")
        extra = f" and holds settings this version does not take ({', '.join(unknown)})" \
            if unknown else ""
        raise UsageError(
            f"Checkpoint {path} {what}{extra}; this version of meanflow-ql reads checkpoint "
            f"formats 1 to {CHECKPOINT_FORMAT}. It was written by a newer or another version: "
            f"evaluate or resume it with that version (update this copy: git pull), or use a "
            f"checkpoint written by this one.")
    state = checkpoint.get("state_dict", {})
    fill = {"obs_keys": lambda: [""],                # before dict observations: a flat Box
            "dataset_id": lambda: hparams["cfg"].get("dataset"),
            "obs_dim": lambda: len(state["obs_normalizer.mean"]),
            "action_dim": lambda: len(state["action_normalizer.mean"]),
            "action_low": lambda: state["action_low"].tolist(),
            "action_high": lambda: state["action_high"].tolist()}
    for name in taken:
        if name not in hparams and name in fill:
            try:
                hparams[name] = fill[name]()
            except (KeyError, TypeError, AttributeError):
                pass               # left missing: load_checkpoint reports an unusable file
    return hparams


# --- the LightningModule ---------------------------------------------------------------------

class MeanFlowQL(L.LightningModule):
    """Offline actor-critic: MeanFlow actor, double-Q CQL critic, Polyak target critic.

    Everything a checkpoint needs to act lives in it: the config and shapes as primitive
    hyperparameters, the normalisers as buffers.
    """

    def __init__(self, cfg: dict, obs_dim: int, action_dim: int, action_low: list,
                 action_high: list, obs_keys: list, dataset_id: str):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = c = TrainConfig.from_dict(cfg)
        self.automatic_optimization = False
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.obs_normalizer = Normalizer(obs_dim)
        self.action_normalizer = Normalizer(action_dim)
        obs_in, chunk_dim = obs_dim * c.obs_horizon, action_dim * c.pred_horizon
        self.actor = MeanFlowActor(obs_in, chunk_dim, c.actor_hidden_dim, c.actor_num_layers)
        self.critic = DoubleCritic(obs_in, chunk_dim, c.critic_hidden_dim, c.critic_num_layers,
                                   c.critic_layer_norm)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        # The one-step tie's teacher, moved only by Polyak averaging (consistency_weight).
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False) \
            if c.uses_teacher else None
        # Logs of the support constraint's and the tie's weights, dual variables moved by
        # `dual_step` (the tie's only with consistency_target; it starts at consistency_weight).
        self.register_buffer("support_log_weight", torch.zeros((), dtype=torch.float32))
        self.register_buffer("consistency_log_weight", self.initial_consistency_log_weight())
        # CQL's weight as a dual variable (cql_calibration_target), starting at cql_alpha.
        self.register_buffer("cql_log_weight", torch.tensor(
            math.log(c.cql_alpha) if c.cql_alpha > 0 else 0.0, dtype=torch.float32))
        self.register_buffer("action_low", torch.tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(action_high, dtype=torch.float32))
        # Pure behaviour cloning (no Q term, no CQL, one candidate) never reads the critic:
        # it is not trained then, which makes the baseline cheaper and changes nothing else.
        self.trains_critic = c.trains_critic
        # The factor the critic's rewards were multiplied by (config reward_scale, resolved).
        self.register_buffer("reward_scale", torch.ones((), dtype=torch.float64))
        # Lightning's global_step counts both optimizers' steps; this counts updates.
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        # The loss functions the update calls: these, or compiled ones (on_fit_start).
        self.losses = (compute_critic_loss, compute_actor_loss)
        self.compiled = False

    def initial_consistency_log_weight(self) -> torch.Tensor:
        """log(consistency_weight) as a float32 0-d tensor (0 when the tie is off)."""
        weight = self.cfg.consistency_weight
        return torch.tensor(math.log(weight) if weight > 0 else 0.0, dtype=torch.float32)

    @classmethod
    def from_data(cls, cfg: TrainConfig, data) -> "MeanFlowQL":
        """A fresh module for a MinariDataModule: its shapes, bounds and fitted normalisers."""
        model = cls(cfg.to_dict(), data.obs_dim, data.action_dim, data.action_low.tolist(),
                    data.action_high.tolist(), data.obs_keys, cfg.dataset)
        model.reward_scale.fill_(data.reward_scale)
        model.obs_normalizer.load_state_dict(data.obs_normalizer.state_dict())
        model.action_normalizer.load_state_dict(data.action_normalizer.state_dict())
        return model

    def _apply(self, fn, recurse: bool = True):
        # The bounds, the reward scale and the dual variables keep their
        # dtype and values under every precision (bf16-true, 16-true and 64-true cast the whole
        # module), as the normalisers do: a bf16 log weight could not take the dual's small steps.
        return keep_dtypes(self, ("action_low", "action_high", "reward_scale",
                                  "support_log_weight", "consistency_log_weight",
                                  "cql_log_weight"), super()._apply, fn, recurse)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[FORMAT_KEY] = CHECKPOINT_FORMAT
        # Lightning's global_step counts optimizer steps (a critic and an actor step per
        # update): the checkpoint also says how many updates, and which count is which.
        checkpoint["updates"] = int(self.num_updates)
        checkpoint["counts"] = {"updates": "updates done (one critic and one actor step each)",
                                "global_step": "Lightning's optimizer steps, two per update "
                                               "(one when the critic is not trained)"}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints written before rewards could be scaled trained on unscaled rewards.
        checkpoint["state_dict"].setdefault("reward_scale", torch.ones((), dtype=torch.float64))
        # Nor had they the support constraint's dual variable (its start value: weight 1).
        checkpoint["state_dict"].setdefault("support_log_weight",
                                            torch.zeros((), dtype=torch.float32))
        # Nor the tie's (their tie, if any, had the fixed weight this start value gives).
        checkpoint["state_dict"].setdefault("consistency_log_weight",
                                            self.initial_consistency_log_weight())
        # Nor CQL's (their weight was fixed at cql_alpha, which this start value gives).
        checkpoint["state_dict"].setdefault("cql_log_weight", self.cql_log_weight.clone())

    def chunk_bounds(self) -> tuple[torch.Tensor, ...]:
        """(action-space low, high, data low, high), each normalised and tiled to a flat chunk
        (pred_horizon * action_dim): the clipping box and the box CQL samples from."""
        n, repeats = self.action_normalizer, self.cfg.pred_horizon
        # In the weights' dtype, which the chunks they clip come in (bf16 under bf16-true).
        dtype = next(self.actor.parameters()).dtype
        return tuple(n.normalize(bound).repeat(repeats).to(dtype) for bound in
                     (self.action_low, self.action_high, n.low, n.high))

    def configure_optimizers(self):
        lr = self.cfg.learning_rate
        # Mixed precision gets the unfused Adam: a fused Adam unscales gradients in its own
        # step, so Lightning's `clip_gradients` refuses it; the unfused one lets the precision
        # plugin unscale first (`on_before_optimizer_step` then clips true gradients).
        precision = self._trainer.precision if self._trainer is not None else "32-true"
        fused = precision not in ("16-mixed", "bf16-mixed")
        return [adam(self.actor.parameters(), lr, fused),
                adam(self.critic.parameters(), self.cfg.critic_rate, fused)]

    def on_fit_start(self) -> None:
        self.compiled = uses_compile(self.cfg.compile, self.device)
        self.losses = compiled_losses(self.device.type) if self.compiled \
            else (compute_critic_loss, compute_actor_loss)
        if self.compiled and self.trainer.is_global_zero:
            print(f"Compiling the update with torch.compile (--compile {self.cfg.compile}, "
                  f"{self.device.type}): the first updates wait for it.", flush=True)

    def training_step(self, batch: dict, batch_idx: int):
        if self.compiled and self.device.type == "cuda":
            # A new step for the CUDA graphs: the last update's graph outputs may be reused.
            torch.compiler.cudagraph_mark_step_begin()
        critic_loss_fn, actor_loss_fn = self.losses
        # Read before the steps: on a GPU a read after the critic's step would wait for it.
        updates_done = int(self.num_updates)
        actor_opt, critic_opt = self.optimizers()
        bounds = self.chunk_bounds()
        learning_rate = self.learning_rate_now()
        critic_learning_rate = self.learning_rate_now("critic")
        for optimizer, rate in ((actor_opt, learning_rate), (critic_opt, critic_learning_rate)):
            for group in optimizer.optimizer.param_groups:
                group["lr"] = rate

        info = {}
        if self.trains_critic:
            adaptive_cql = self.cfg.adapts_cql_weight
            critic_loss, info = critic_loss_fn(self.critic, self.target_critic, self.actor,
                                               batch, self.cfg, *bounds, self.target_actor,
                                               self.cql_log_weight.exp() if adaptive_cql
                                               else None)
            self._step(critic_opt, critic_loss, "critic")
            if adaptive_cql and updates_done >= CQL_DUAL_WARMUP_UPDATES:
                # Up while fewer windows than the target bind, down while more do; averaged
                # over DDP's processes like the tie's step below. The target goes in as the
                # measured value and the share as the allowed one: the weight rises when the
                # share is below the target, the reverse of a constraint's usual direction.
                binds = self._mean_over_processes(info["critic/calibration_binds"])
                target = torch.full_like(binds, self.cfg.cql_calibration_target)
                dual_step(self.cql_log_weight, target, binds, self.cfg.dual_lr)
                # Between cql_alpha and CQL_WEIGHT_RANGE x it. The floor: the rule only adds
                # conservatism where the critic rates the policy above the data's return almost
                # everywhere; where episodes are cut by a time limit the floor binds often at
                # any weight (the cut return sits above the value), and the weight stays at
                # cql_alpha there. The ceiling: a fresh critic (Q near 0, above every negative
                # return) binds nowhere, and unbounded the weight rose to 1e4 within 2,500
                # updates on cube and wrecked the critic.
                self.cql_log_weight.clamp_(math.log(self.cfg.cql_alpha),
                                           math.log(CQL_WEIGHT_RANGE * self.cfg.cql_alpha))
            if adaptive_cql:
                info["critic/cql_weight"] = self.cql_log_weight.exp().detach()
            self._polyak_update(self.target_critic, self.critic)
            info["loss/critic"] = critic_loss.detach()

        # The critic is frozen for the actor's loss: its parameters get no gradient (they would
        # be zeroed before the critic's next step anyway), which saves a backward into the
        # critic's weights and, under DDP, their all-reduce.
        self.critic.requires_grad_(False)
        try:
            actor_loss, actor_info = actor_loss_fn(self.actor, self.critic, batch, self.cfg,
                                                   *bounds[:2], self.target_actor,
                                                   self.support_log_weight.exp(),
                                                   self.consistency_log_weight.exp())
            self._step(actor_opt, actor_loss, "actor")
            c = self.cfg
            def mean(key: str) -> torch.Tensor:
                return self._mean_over_processes(actor_info[key])

            if c.support_samples > 0:
                dual_step(self.support_log_weight, mean("support/distance"),
                          c.support_target * mean("support/spread"), c.dual_lr)
            if c.consistency_weight > 0 and c.consistency_target > 0:
                dual_step(self.consistency_log_weight, mean("actor/consistency"),
                          c.consistency_target * mean("tie/spread"), c.dual_lr)
            if self.target_actor is not None:
                self._polyak_update(self.target_actor, self.actor)
        finally:
            self.critic.requires_grad_(True)
        info.update(actor_info)

        info["loss/actor"] = actor_loss.detach()
        self.num_updates += 1
        updates = updates_done + 1
        # This update's figures, detached and read only when shown: progress lines and the bar
        # show them (logs.py), never an older update's.
        self.latest_figures = info
        # Reading the figures costs a noticeable share of a small update on a CPU: written every
        # log_every_n_steps updates (and the first), straight to the loggers at step = this
        # update. Lightning's own writing put update N at step N - 1 and, at the run's end,
        # wrote the last logged (older) figures again at the final step.
        if updates % self.trainer.log_every_n_steps == 0 or updates == 1:
            figures = {key: float(value) for key, value in info.items()}
            figures.update(updates=float(updates), learning_rate=learning_rate)
            if self.trains_critic:
                figures["critic_learning_rate"] = critic_learning_rate
            for logger in self.loggers:
                logger.log_metrics(figures, step=updates)
        if updates >= self.update_budget():
            self.trainer.should_stop = True

    def _mean_over_processes(self, value: torch.Tensor) -> torch.Tensor:
        """A logged figure (a 0-d tensor) as float32, averaged over DDP's processes (a no-op on
        one), so every process takes the same dual step and the weights stay equal."""
        return self.trainer.strategy.reduce(value.detach().float(), reduce_op="mean")

    def on_train_start(self) -> None:
        # A resumed run whose budget is spent (or lowered below the updates done, with
        # --max-updates or --epochs) ends without another update.
        if int(self.num_updates) >= self.update_budget():
            self.trainer.should_stop = True

    def scheduled_updates(self) -> int:
        """Updates the learning-rate schedule spans: num_updates, or num_epochs passes over the
        data when set. max_updates does not shorten it (it only stops the run early)."""
        if self.cfg.num_epochs > 0:
            return self.cfg.num_epochs * max(1, int(self.trainer.num_training_batches))
        return self.cfg.num_updates

    def update_budget(self) -> int:
        """Updates this run makes: the scheduled ones, capped by max_updates."""
        return self.cfg.capped(self.scheduled_updates())

    def learning_rate_now(self, network: str = "actor") -> float:
        """The scheduled learning rate of `network` ("actor" or "critic") for the next update.
        It follows the uncapped schedule, so a run stopped by --max-updates and resumed with a
        higher cap follows one schedule instead of decaying at each cap and jumping back up on
        resume."""
        schedule, rate = self.cfg.learning_rate_schedule, self.cfg.learning_rate
        if network == "critic":
            if self.cfg.critic_learning_rate_schedule != "same":
                schedule = self.cfg.critic_learning_rate_schedule
            rate = self.cfg.critic_rate
        if schedule == "constant":
            return rate
        progress = min(1.0, int(self.num_updates) / self.scheduled_updates())
        floor = self.cfg.learning_rate_floor
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return rate * (floor + (1 - floor) * cosine)

    def _step(self, optimizer, loss: torch.Tensor, name: str) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"The {name} loss became {loss.item()} at update {int(self.num_updates)}. "
                "Training stopped before this step, so the saved checkpoints hold finite weights. "
                "Under --mixed-precision 16-mixed try bf16-mixed or 32-true; otherwise lower "
                "--learning-rate or set --grad-clip.")
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()                          # clips in on_before_optimizer_step

    def on_before_optimizer_step(self, optimizer) -> None:
        # Called inside `optimizer.step()` after the precision plugin unscaled the gradients:
        # the one place where clipping sees true gradients under every precision (right after
        # `manual_backward`, 16-mixed's gradients are still scaled).
        if self.cfg.grad_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.cfg.grad_clip,
                                gradient_clip_algorithm="norm")

    @torch.no_grad()
    def _polyak_update(self, target_net: nn.Module, source_net: nn.Module) -> None:
        # One multi-tensor kernel on a GPU where a loop over the parameters launches one each.
        torch._foreach_lerp_(list(target_net.parameters()), list(source_net.parameters()),
                             self.cfg.tau)

    def on_validation_epoch_end(self) -> None:
        # The validation's figures go to the loggers at step = the updates made (Lightning takes
        # a logged "step" as the step; its own count there is one behind).
        self.log("step", float(self.num_updates), sync_dist=False)

    def validation_step(self, batch: dict, batch_idx: int):
        # Fixed noise per batch, so validation losses compare across epochs.
        generator = torch.Generator().manual_seed(self.cfg.seed * 100_003 + batch_idx)
        obs, actions, mask = flat(batch["obs"]), batch["actions"], batch["mask"]
        # Validation batches come in episode order and the loss gives its leading rows r < t:
        # a fixed random order spreads those rows over the episodes' steps.
        order = torch.randperm(len(obs), generator=generator).to(obs.device)
        loss, _ = compute_meanflow_loss(self.actor, obs[order], actions[order], mask[order],
                                        self.cfg, generator)
        noise = torch.randn(flat(actions).shape, generator=generator).to(actions)
        chunk = self.actor.sample(obs, noise, self.cfg.inference_steps)
        mse = masked_mse(chunk, actions, mask)
        # How far one-step sampling is from integrating the same noise in many small steps:
        # the point (0, 1) where the policy acts is also where the loss sees the fewest rows.
        many = self.actor.sample(obs, noise, MULTI_STEP_SAMPLING)
        size = len(obs)
        self.log("val/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        self.log("val/action_mse", mse, batch_size=size, sync_dist=True)
        self.log("val/one_vs_multi_step_gap", masked_mse(chunk, many.reshape(actions.shape), mask),
                 batch_size=size, sync_dist=True)
        if self.trains_critic:
            q = self.critic(obs, flat(actions)).mean(0)
            self.log("val/q_data", q.mean(), batch_size=size, sync_dist=True)
            self.log("val/mc_return", batch["mc_return"].mean(), batch_size=size,
                     sync_dist=True)
