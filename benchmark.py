"""Speed and memory figures against this machine's own limit; prints a table, saves JSON.

    python benchmark.py [--dataset ID] [--out benchmark.json] [--quick] [--device auto|cpu|cuda]

Sections 1-3 and 6 run on --device (auto: a CUDA GPU where there is one); acting and evaluation
(5, 8) on the CPU, where the policy acts.

1. matmul limit     float32 GFLOP/s of a large matmul, before and after (2), the higher kept
2. training         updates/s and samples/s of the full update (critic + actor) at batch
                    256 / 1024 / 4096, achieved GFLOP/s as a fraction of (1); at 256, the
                    update with the critic frozen during the actor's loss against without;
                    at 256 and 4096, the compiled update (--compile on) against the eager one
3. JVP cost         the actor's MeanFlow step / a flow-matching step on the same network
4. data             batches/s the DataModule delivers at batch 4096 / batches/s training uses
5. acting           act() latency at batch 1 / one raw forward; chunks/s at batch 256
6. Lightning        updates/s inside the Trainer / the same update functions in a bare loop
7. JAX (optional)   the same network's flow-matching and MeanFlow steps under jax.jit (jvp over
                    the whole batch, and over the r < t rows only as here), timed with (3)
8. evaluation       the online evaluation loop's own share of an episode's time (num_envs 1)
9. memory           peak resident memory of `python main.py train` at batch 4096
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from config import DEFAULT_DATASET, TrainConfig

TARGETS = {
    "train_fraction_of_limit_4096": (">=", 0.5),
    "jvp_ratio": ("<=", 1.6),
    "pytorch_over_jax_meanflow": ("<=", 1.0),
    "data_over_training_4096": (">=", 20.0),
    "act_over_forward": ("<=", 1.3),
    "lightning_overhead": ("<=", 0.10),
    "peak_rss_gib": ("<=", 4.0),
    # 25%: issue #13 traded a few points for a policy whose bookkeeping reads at a glance.
    "eval_overhead": ("<=", 0.25),
}


# Where sections 1-3 and 6 run (--device).
DEVICE = torch.device("cpu")


def sync() -> None:
    """Wait for the device's queued work (a GPU runs asynchronously), so a clock reads it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def on_device(batch: dict) -> dict:
    return {key: value.to(DEVICE) for key, value in batch.items()}


def timed(fn, repeats: int, warmup: int = 2) -> float:
    """Median seconds per call over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def flops_of(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_limit(size: int = 2048) -> float:
    a, b = torch.randn(size, size, device=DEVICE), torch.randn(size, size, device=DEVICE)
    seconds = min(timed(lambda: a @ b, 5) for _ in range(3))
    return 2 * size**3 / seconds / 1e9


# --- the update functions, outside Lightning ---------------------------------------------------

class BareUpdate:
    """The module's critic and actor steps without the Trainer (same loss functions; with
    `compiled`, the ones `--compile on` runs)."""

    def __init__(self, model, cfg: TrainConfig, freeze_critic: bool = True,
                 compiled: bool = False):
        from meanflow_ql import compiled_losses, compute_actor_loss, compute_critic_loss
        self.model, self.cfg, self.freeze_critic = model, cfg, freeze_critic
        self.actor_opt, self.critic_opt = model.configure_optimizers()
        self.bounds = model.chunk_bounds()
        self.critic_loss, self.actor_loss = compiled_losses(DEVICE.type) if compiled \
            else (compute_critic_loss, compute_actor_loss)
        self.cuda_graphs = compiled and DEVICE.type == "cuda"

    def __call__(self, batch: dict) -> None:
        m, cfg = self.model, self.cfg
        if self.cuda_graphs:                                  # as MeanFlowQL.training_step
            torch.compiler.cudagraph_mark_step_begin()
        loss, _ = self.critic_loss(m.critic, m.target_critic, m.actor, batch, cfg, *self.bounds)
        self._step(self.critic_opt, loss, m.critic)
        m._polyak_update(m.target_critic, m.critic)
        m.critic.requires_grad_(not self.freeze_critic)      # as MeanFlowQL.training_step
        loss, _ = self.actor_loss(m.actor, m.critic, batch, cfg, *self.bounds[:2])
        self._step(self.actor_opt, loss, m.actor)
        m.critic.requires_grad_(True)

    def _step(self, optimizer, loss, network) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(network.parameters(), self.cfg.grad_clip)
        optimizer.step()


def build(cfg: TrainConfig, dataset):
    from dataset import MinariDataModule
    from meanflow_ql import MeanFlowQL

    data = MinariDataModule(cfg, dataset)
    return data, MeanFlowQL.from_data(cfg, data).to(DEVICE)


def bench_training(dataset, batch_sizes, repeats) -> dict:
    rows = {}
    for batch_size in batch_sizes:
        cfg = TrainConfig(batch_size=batch_size)
        data, model = build(cfg, dataset)
        update = BareUpdate(model, cfg)
        batch = on_device(next(iter(data.train_dataloader())))
        seconds = timed(lambda: update(batch), repeats)
        gflop = flops_of(lambda: update(batch)) / 1e9
        rows[batch_size] = {"updates_per_s": 1 / seconds, "samples_per_s": batch_size / seconds,
                            "gflop_per_update": gflop, "gflops": gflop / seconds}
    return rows


def bench_frozen_critic(dataset, batch_size: int, repeats: int) -> dict:
    """The full update with the critic frozen during the actor's loss (the trainer's way)
    against the same update back-propagating into the critic, timed in turns."""
    cfg = TrainConfig(batch_size=batch_size)
    data, model = build(cfg, dataset)
    batch = on_device(next(iter(data.train_dataloader())))
    frozen, unfrozen = BareUpdate(model, cfg, True), BareUpdate(model, cfg, False)
    ms = interleaved_ms({"frozen": lambda: frozen(batch), "unfrozen": lambda: unfrozen(batch)},
                        repeats)
    return {"update_ms_frozen_critic": ms["frozen"], "update_ms_unfrozen_critic": ms["unfrozen"],
            "frozen_critic_saving": 1 - ms["frozen"] / ms["unfrozen"]}


def bench_compiled(dataset, batch_sizes, repeats: int) -> dict:
    """The full update with its losses compiled (`--compile on`: `compiled_losses`) against the
    eager update, timed in turns on two copies of the same model; and the seconds the first
    compiled update took, which is mostly compiling."""
    rows = {}
    for batch_size in batch_sizes:
        cfg = TrainConfig(batch_size=batch_size)
        data, model = build(cfg, dataset)
        _, twin = build(cfg, dataset)
        batch = on_device(next(iter(data.train_dataloader())))
        eager, compiled = BareUpdate(model, cfg), BareUpdate(twin, cfg, compiled=True)
        start = time.perf_counter()
        compiled(batch)
        sync()
        first_s = time.perf_counter() - start
        ms = interleaved_ms({"eager": lambda: eager(batch), "compiled": lambda: compiled(batch)},
                            repeats)
        rows[batch_size] = {"eager_updates_per_s": 1e3 / ms["eager"],
                            "compiled_updates_per_s": 1e3 / ms["compiled"],
                            "speedup": ms["eager"] / ms["compiled"],
                            "first_compiled_update_s": first_s}
    return rows


def interleaved_ms(steps: dict, repeats: int) -> dict:
    """Median ms per call of each step, timed in turns so that drift of the machine's speed
    hits all of them alike."""
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(timed(step, 3, warmup=1))
    return {name: 1e3 * float(np.median(seconds)) for name, seconds in times.items()}


def bench_jvp(dataset, batch_size, repeats) -> dict:
    """MeanFlow loss step versus a flow-matching loss step on the same actor network, timed in
    turns with the same network's JAX steps (section 7) where jax is installed."""
    from meanflow_ql import adam, compute_meanflow_loss, flat

    cfg = TrainConfig(batch_size=batch_size)
    data, model = build(cfg, dataset)
    actor = model.actor
    optimizer = adam(actor.parameters(), cfg.learning_rate)          # as the trainer's
    batch = on_device(next(iter(data.train_dataloader())))
    obs, actions, mask = flat(batch["obs"]), batch["actions"], batch["mask"]

    def meanflow_step():
        loss, _ = compute_meanflow_loss(actor, obs, actions, mask, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def flow_matching_step():
        x = flat(actions)
        noise = torch.randn_like(x)
        t = torch.rand(len(x), device=x.device)
        z = (1 - t[:, None]) * x + t[:, None] * noise
        loss = ((actor(z, t, t, obs) - (noise - x)) ** 2).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    jax = jax_steps(batch_size, obs.shape[1], actor.chunk_dim, cfg) or {}
    results = interleaved_ms({"meanflow_step_ms": meanflow_step,
                              "flow_matching_step_ms": flow_matching_step, **jax}, repeats)
    results["jvp_ratio"] = results["meanflow_step_ms"] / results["flow_matching_step_ms"]
    return results


def bench_data(dataset, batch_size, batches) -> float:
    cfg = TrainConfig(batch_size=batch_size)
    data, _ = build(cfg, dataset)
    loader = data.train_dataloader()
    start, count = time.perf_counter(), 0
    while count < batches:
        for _ in loader:
            count += 1
            if count >= batches:
                break
    return count / (time.perf_counter() - start)


def bench_acting(dataset, repeats) -> dict:
    """act() per environment step at batch 1 (default action_horizon, and replanning every
    step), against one raw forward of the actor; chunks/s at batch 256."""
    from meanflow_ql import flat
    from policy import MeanFlowPolicy, predict_action

    results = {}
    for name, overrides in (("default", {}), ("replan_every_step", {"action_horizon": 1})):
        cfg = TrainConfig(**overrides)
        data, model = build(cfg, dataset)
        model.eval()
        policy = MeanFlowPolicy(model, seed=0)
        obs = data.obs_normalizer.unnormalize(data.train_set.obs[:1]).numpy()[0]
        obs_in = flat(data.train_set.obs[:1].repeat(1, cfg.obs_horizon, 1))
        noise = torch.randn(1, model.actor.chunk_dim)
        ones = torch.ones(1)

        def raw_forward():
            with torch.no_grad():
                model.actor(noise, 0 * ones, ones, obs_in)

        # Interleaved, so both see the same state of the machine. act() is timed over blocks
        # of 50 steps: most steps only pop a queued action, every action_horizon-th replans.
        act_s, forward_s = [], []
        for _ in range(repeats):
            act_s.append(timed(lambda: [policy.act(obs) for _ in range(50)], 20) / 50)
            forward_s.append(timed(raw_forward, 200, warmup=20))
        results[f"act_ms_{name}"] = 1e3 * float(np.median(act_s))
        results[f"forward_ms_{name}"] = 1e3 * float(np.median(forward_s))
        results[f"act_over_forward_{name}"] = float(np.median(act_s) / np.median(forward_s))
    results["forward_ms"] = results["forward_ms_default"]
    results["act_over_forward"] = results["act_over_forward_default"]
    many = data.obs_normalizer.unnormalize(data.train_set.obs[:256])[:, None].repeat(
        1, cfg.obs_horizon, 1)
    big_noise = torch.randn(256, model.actor.chunk_dim)
    results["chunks_per_s_256"] = 256 / timed(lambda: predict_action(model, many, big_noise),
                                              repeats)
    return results


def bench_lightning(dataset, updates: int, rounds: int = 2) -> dict:
    """The same updates inside the Trainer and in a bare loop, alternated; best of each."""
    import lightning as L

    cfg = TrainConfig(max_updates=updates, patience=0)
    data, _ = build(cfg, dataset)
    inside, bare = [], []
    for _ in range(rounds):
        _, model = build(cfg, dataset)
        trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, devices=1,
                            accelerator="gpu" if DEVICE.type == "cuda" else "cpu")
        start = time.perf_counter()
        trainer.fit(model, datamodule=data)
        inside.append(int(model.num_updates) / (time.perf_counter() - start))

        _, bare_model = build(cfg, dataset)
        update = BareUpdate(bare_model, cfg)
        loader = iter(data.train_dataloader())
        start = time.perf_counter()
        for _ in range(updates):
            try:
                batch = next(loader)
            except StopIteration:
                loader = iter(data.train_dataloader())
                batch = next(loader)
            update(on_device(batch))
        sync()
        bare.append(updates / (time.perf_counter() - start))
    return {"lightning_updates_per_s": max(inside), "bare_updates_per_s": max(bare),
            "lightning_overhead": 1 - max(inside) / max(bare)}


def jax_steps(batch_size, obs_dim, chunk_dim, cfg: TrainConfig) -> dict | None:
    """The same MLP's training steps under jax.jit, if jax is installed: name -> a function
    running one step to completion.

    Two MeanFlow steps: the one of MeanFlow's own code and the JAX peers', `jax.jvp` over the
    whole batch, and one that, like this project's loss, takes du/dt only for the rows with
    r < t (a ratio_r_neq_t share) and a plain forward for the rest: the framework
    comparison on the same arithmetic.
    """
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None

    sizes = [chunk_dim + obs_dim + 2] + [cfg.actor_hidden_dim] * cfg.actor_num_layers \
        + [chunk_dim]
    key = jax.random.PRNGKey(0)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (fan_in, fan_out)) / np.sqrt(fan_in),
                       jnp.zeros(fan_out)))
    distinct = int(cfg.ratio_r_neq_t * batch_size)

    def net(p, z, r, t, obs):
        h = jnp.concatenate([z, obs, t[:, None], (t - r)[:, None]], axis=-1)
        for i, (w, b) in enumerate(p):
            h = h @ w + b
            if i < len(p) - 1:
                h = jax.nn.silu(h)
        return h

    def flow(x, noise, t):
        return (1 - t[:, None]) * x + t[:, None] * noise, noise - x

    def fm_loss(p, x, obs, noise, r, t):
        z, v = flow(x, noise, t)
        return ((net(p, z, t, t, obs) - v) ** 2).sum(1).mean()

    def u_and_dudt(p, z, r, t, obs, v):
        return jax.jvp(lambda z_, r_, t_: net(p, z_, r_, t_, obs), (z, r, t),
                       (v, jnp.zeros_like(r), jnp.ones_like(t)))

    def mf_loss(p, x, obs, noise, r, t):
        z, v = flow(x, noise, t)
        u, dudt = u_and_dudt(p, z, r, t, obs, v)
        target = jax.lax.stop_gradient(v - (t - r)[:, None] * dudt)
        return ((u - target) ** 2).sum(1).mean()

    def mf_leading_rows_loss(p, x, obs, noise, r, t):
        z, v = flow(x, noise, t)
        k = distinct
        u_k, dudt = u_and_dudt(p, z[:k], r[:k], t[:k], obs[:k], v[:k])
        u = jnp.concatenate([u_k, net(p, z[k:], r[k:], t[k:], obs[k:])])
        target = jax.lax.stop_gradient(
            jnp.concatenate([v[:k] - (t - r)[:k, None] * dudt, v[k:]]))
        return ((u - target) ** 2).sum(1).mean()

    def adam_step(loss):
        """One Adam update (PyTorch's defaults), as the PyTorch side takes: same work."""
        lr, beta1, beta2, eps = cfg.learning_rate, 0.9, 0.999, 1e-8
        tree_map = jax.tree_util.tree_map

        def step(params, first, second, count, *batch):
            grads = jax.grad(loss)(params, *batch)
            first = tree_map(lambda m, g: beta1 * m + (1 - beta1) * g, first, grads)
            second = tree_map(lambda s, g: beta2 * s + (1 - beta2) * g * g, second, grads)
            scale = lr * jnp.sqrt(1 - beta2 ** count) / (1 - beta1 ** count)
            params = tree_map(lambda p, m, s: p - scale * m / (jnp.sqrt(s) + eps),
                              params, first, second)
            return params, first, second
        step = jax.jit(step)
        return lambda: jax.block_until_ready(step(*state, *batch))

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = (params, zeros, zeros, 1.0)
    rng = np.random.default_rng(0)
    x, noise = (jnp.asarray(rng.standard_normal((batch_size, chunk_dim)), jnp.float32)
                for _ in range(2))
    obs = jnp.asarray(rng.standard_normal((batch_size, obs_dim)), jnp.float32)
    t = jnp.asarray(rng.uniform(size=batch_size), jnp.float32)
    r = t.at[:distinct].multiply(0.5)                      # r < t in the leading rows only
    batch = (x, obs, noise, r, t)
    return {"jax_flow_matching_step_ms": adam_step(fm_loss),
            "jax_meanflow_step_ms": adam_step(mf_loss),
            "jax_meanflow_leading_rows_step_ms": adam_step(mf_leading_rows_loss)}


def bench_eval_overhead(dataset, episodes: int) -> dict:
    """Share of an online evaluation's time spent outside env.step and the network's forward."""
    import eval_online
    import policy as policy_module
    from policy import MeanFlowPolicy

    cfg = TrainConfig()
    _, model = build(cfg, dataset)
    policy = MeanFlowPolicy(model, seed=0)
    envs = eval_online.make_vector_env(eval_online.environment_spec(dataset, None), 1)
    spent = {"env": 0.0, "network": 0.0}

    def clocked(fn, key):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            spent[key] += time.perf_counter() - start
            return result
        return wrapper

    envs.step = clocked(envs.step, "env")
    sample_chunk = policy_module.sample_chunk
    policy_module.sample_chunk = clocked(sample_chunk, "network")
    try:
        eval_online.run_episodes(policy, envs, 2, seed=100, progress=False)     # warm-up
        spent.update(env=0.0, network=0.0)
        start = time.perf_counter()
        results = eval_online.run_episodes(policy, envs, episodes, seed=0, progress=False)
        total = time.perf_counter() - start
    finally:
        policy_module.sample_chunk = sample_chunk
        envs.close()
    steps = int(results["lengths"].sum())
    return {"episode_s": total / episodes, "env_share": spent["env"] / total,
            "network_share": spent["network"] / total,
            "eval_overhead": 1 - (spent["env"] + spent["network"]) / total,
            "steps_per_s": steps / total}


def peak_train_rss(dataset_id: str, batch_size: int, updates: int) -> float:
    """Peak resident memory (GiB) of `python main.py train` at this batch size."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "main.py", "train", "--dataset", dataset_id, "--batch-size",
                   str(batch_size), "--max-updates", str(updates), "--output-dir", out,
                   "--num-epochs", "1"]
        subprocess.run(command, check=True, capture_output=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


def check(name: str, value: float) -> str:
    op, bound = TARGETS[name]
    ok = value >= bound if op == ">=" else value <= bound
    return f"{'met' if ok else 'MISSED'} (target {op} {bound})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--out", default="benchmark.json")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (rougher figures)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where sections 1-3 and 6 run (auto: cuda where available)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    global DEVICE
    DEVICE = torch.device("cuda" if args.device == "cuda" or (
        args.device == "auto" and torch.cuda.is_available()) else "cpu")

    import collect
    from dataset import load_dataset
    dataset = load_dataset(args.dataset, build=collect.build_for_training)
    results = {"machine": {"cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                           "processor": platform.processor() or platform.machine(),
                           "torch": torch.__version__, "device": str(DEVICE),
                           "gpu": torch.cuda.get_device_name() if DEVICE.type == "cuda"
                           else None},
               "dataset": args.dataset}
    print(f"Device of sections 1-3 and 6: {DEVICE}"
          + (f" ({results['machine']['gpu']})" if DEVICE.type == "cuda" else ""), flush=True)
    # The limit is measured before and after the training rows and the higher figure kept:
    # a passing slowdown of the machine during one measurement would flatter the fractions.
    before = matmul_limit()
    training = bench_training(dataset, (256, 1024, 4096), repeats)
    after = matmul_limit()
    limit = max(before, after)
    for row in training.values():
        row["fraction_of_limit"] = row["gflops"] / limit
    results["matmul_gflops"] = limit
    results["matmul_gflops_before_after"] = [before, after]
    results["training"] = training
    print(f"1. matmul limit: {limit:.1f} GFLOP/s (float32, 2048x2048; the higher of "
          f"{before:.1f} before and {after:.1f} after the training rows)", flush=True)
    print("2. training (full update: critic + actor)")
    for batch_size, row in training.items():
        print(f"   batch {batch_size:5d}: {row['updates_per_s']:7.2f} updates/s "
              f"{row['samples_per_s']:9.0f} samples/s {row['gflops']:6.1f} GFLOP/s = "
              f"{100 * row['fraction_of_limit']:.0f}% of the limit", flush=True)
    results["train_fraction_of_limit_4096"] = training[4096]["fraction_of_limit"]
    print(f"   at 4096: {check('train_fraction_of_limit_4096', training[4096]['fraction_of_limit'])}")
    frozen = bench_frozen_critic(dataset, 256, repeats)
    results["frozen_critic"] = frozen
    print(f"   batch 256, critic frozen during the actor's loss (the trainer's way): "
          f"{frozen['update_ms_frozen_critic']:.1f} ms per update against "
          f"{frozen['update_ms_unfrozen_critic']:.1f} ms back-propagating into the critic "
          f"({100 * frozen['frozen_critic_saving']:.1f}% less time)", flush=True)

    compiled = bench_compiled(dataset, (256, 4096), repeats)
    results["compiled"] = compiled
    for batch_size, row in compiled.items():
        print(f"   batch {batch_size:5d}, compiled update (--compile on): "
              f"{row['compiled_updates_per_s']:.1f} updates/s against "
              f"{row['eager_updates_per_s']:.1f} eager, {row['speedup']:.2f}x; the first "
              f"compiled update took {row['first_compiled_update_s']:.0f} s (compiling)",
              flush=True)

    jvp_cost = bench_jvp(dataset, 4096, repeats)           # with the JAX steps of section 7
    results["jvp"] = jvp_cost
    print(f"3. JVP cost at batch 4096: MeanFlow step {jvp_cost['meanflow_step_ms']:.1f} ms, "
          f"flow-matching step {jvp_cost['flow_matching_step_ms']:.1f} ms, ratio "
          f"{jvp_cost['jvp_ratio']:.2f}: {check('jvp_ratio', jvp_cost['jvp_ratio'])}", flush=True)

    delivered = bench_data(dataset, 4096, 50 if args.quick else 200)
    consumed = training[4096]["updates_per_s"]
    results["data"] = {"batches_per_s_4096": delivered, "training_batches_per_s_4096": consumed,
                       "data_over_training_4096": delivered / consumed}
    print(f"4. data at batch 4096: {delivered:.0f} batches/s delivered, {consumed:.2f} consumed, "
          f"{delivered / consumed:.0f}x: {check('data_over_training_4096', delivered / consumed)}",
          flush=True)

    acting = bench_acting(dataset, repeats)
    results["acting"] = acting
    print(f"5. acting at batch 1: act() {acting['act_ms_default']:.3f} ms per step with the "
          f"default action_horizon, raw forward {acting['forward_ms']:.3f} ms, ratio "
          f"{acting['act_over_forward']:.2f}: {check('act_over_forward', acting['act_over_forward'])}"
          f"; replanning every step {acting['act_ms_replan_every_step']:.3f} ms "
          f"({acting['act_over_forward_replan_every_step']:.2f}x); "
          f"{acting['chunks_per_s_256']:.0f} chunks/s at batch 256", flush=True)

    lightning = bench_lightning(dataset, 60 if args.quick else 200)
    results["lightning"] = lightning
    print(f"6. Lightning: {lightning['lightning_updates_per_s']:.2f} updates/s in the Trainer, "
          f"{lightning['bare_updates_per_s']:.2f} in a bare loop, overhead "
          f"{100 * lightning['lightning_overhead']:.1f}%: "
          f"{check('lightning_overhead', lightning['lightning_overhead'])}", flush=True)

    if "jax_meanflow_step_ms" not in jvp_cost:
        results["jax"] = None
        print("7. JAX: not installed (optional: pip install jax), skipped")
    else:
        ours, fm, full, leading = (jvp_cost[name] for name in (
            "meanflow_step_ms", "jax_flow_matching_step_ms", "jax_meanflow_step_ms",
            "jax_meanflow_leading_rows_step_ms"))
        results["jax"] = {"flow_matching_step_ms": fm, "meanflow_step_ms": full,
                          "meanflow_leading_rows_step_ms": leading, "ratio": full / fm,
                          "pytorch_over_jax_meanflow": ours / full,
                          "pytorch_over_jax_same_arithmetic": ours / leading}
        results["pytorch_over_jax_meanflow"] = ours / full
        print(f"7. JAX at batch 4096 (timed in turns with 3.): flow-matching {fm:.1f} ms, "
              f"MeanFlow {full:.1f} ms (ratio {full / fm:.2f}), MeanFlow with du/dt for the "
              f"r < t rows only {leading:.1f} ms; PyTorch MeanFlow step {ours:.1f} ms = "
              f"{ours / full:.2f}x JAX's MeanFlow step: "
              f"{check('pytorch_over_jax_meanflow', ours / full)}; {ours / leading:.2f}x the "
              f"same arithmetic in JAX", flush=True)

    overhead = bench_eval_overhead(dataset, 5 if args.quick else 20)
    results["evaluation"] = overhead
    print(f"8. evaluation loop at --num-envs 1: {overhead['episode_s'] * 1e3:.0f} ms per "
          f"episode, env.step {100 * overhead['env_share']:.0f}%, network "
          f"{100 * overhead['network_share']:.0f}%, the loop's own overhead "
          f"{100 * overhead['eval_overhead']:.1f}%: "
          f"{check('eval_overhead', overhead['eval_overhead'])}", flush=True)

    rss = peak_train_rss(args.dataset, 4096, 10 if args.quick else 30)
    results["peak_rss_gib"] = rss
    print(f"9. memory: peak resident memory of main.py train at batch 4096: {rss:.2f} GiB: "
          f"{check('peak_rss_gib', rss)}")

    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"Saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
