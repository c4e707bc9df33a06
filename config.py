"""One dataclass holds every setting; the command line is generated from it.

The attribute docstring under each field is its `--help` text. Values are checked in
`__post_init__`, so a bad value is rejected at parse time with the field's name in the message.
Settings can also come from a YAML or JSON file (`--config FILE`, for instance a run's own
`config.json`); flags typed beside it override it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path


class UsageError(Exception):
    """A mistake the user can fix (bad flag, missing file, unknown dataset).

    `main.py` prints its message and exits with code 2, without a traceback.
    """


DEFAULT_DATASET = "local/pusher/expert-v0"

# Evaluation seeds, far from the seeds of dataset episodes (`collect` resets episode i of a build
# with seed S with S + i, i < ~10^5) and of the reference-score episodes (1,000,000 + i):
# training-time evaluation and tuning use validation seeds, reported figures test seeds, once.
VALIDATION_SEED = 2_000_000
TEST_SEED = 3_000_000


@dataclass
class TrainConfig:
    # --- data -------------------------------------------------------------------------------
    dataset: str = DEFAULT_DATASET
    """Minari dataset id. `local/...` ids are built on this machine when missing; others load
    from MINARI_DATASETS_PATH or are downloaded by Minari."""
    obs_horizon: int = 2
    """Number of past observations the policy sees (the last one is the current step)."""
    pred_horizon: int = 3
    """Length of the action chunk the policy predicts and the critic scores."""
    action_horizon: int = 3
    """Actions of each predicted chunk executed before replanning (<= pred_horizon)."""
    val_fraction: float = 0.1
    """Fraction of episodes held out for validation and `main.py test`."""
    clip_dataset_actions: bool = True
    """Clip dataset actions that lie outside the declared action space to its bounds, in training
    and testing alike (how many there are is printed when the data loads); --no-clip-dataset-actions
    keeps them as recorded."""
    num_workers: int = 0
    """DataLoader worker processes. Batches are index gathers on in-memory tensors, so 0 is
    usually fastest."""

    # --- optimisation -----------------------------------------------------------------------
    num_updates: int = 10_000
    """Update budget of the run (one critic and one actor step each), as FQL, CORL and d3rlpy
    count it: the cosine learning-rate schedule spans it. Ignored when num_epochs is set."""
    num_epochs: int = 0
    """When > 0, the budget is this many passes over the training windows instead of
    num_updates (`--epochs`, the seed's flag)."""
    max_updates: int = 0
    """Stop after this many updates whatever the budget says; 0 = no cap. The learning-rate
    schedule still spans the whole budget, so a capped run resumed with a higher cap follows
    one schedule."""
    batch_size: int = 256
    """Windows per update. 256 keeps a 2-core CPU busy; the seed's 4096 suits a GPU."""
    learning_rate: float = 1e-3
    """Adam learning rate of the actor, and of the critic unless critic_learning_rate is set.
    1e-3, above FQL's 3e-4: on OGBench cube the actor at 3e-4 was still at 4-14% success after
    5k updates, where 1e-3 passed 20% on every seed (docs/experiments.md, c16)."""
    learning_rate_schedule: str = "cosine"
    """The actor's schedule (and the critic's, unless critic_learning_rate_schedule says
    otherwise). `cosine`: the learning rate falls along a half cosine to learning_rate_floor x
    learning_rate over the update budget (num_updates or num_epochs; max_updates does not
    shorten it), which steadies the final policy; `constant`: it stays fixed."""
    learning_rate_floor: float = 0.1
    """Where the cosine schedule ends, as a fraction of learning_rate (MeanFlowQL's actor ends
    at 0.1)."""
    critic_learning_rate: float = 3e-4
    """The critic's Adam learning rate; 0 = learning_rate. It follows the critic's schedule.
    3e-4 (FQL's): with the critic at 1e-3 too, medium Pusher fell from 92.6-93.2 to 89.4-90.0
    (validation episodes)."""
    critic_learning_rate_schedule: str = "constant"
    """The critic's schedule: `same` as the actor's, `cosine` or `constant` (FQL and
    MeanFlowQL keep the critic's rate constant)."""
    grad_clip: float = 10.0
    """Clip each network's gradient norm to this value; 0 turns clipping off."""
    seed: int = 0
    """Seed of the split, the initial weights and the sampled noise."""

    # --- actor: MeanFlow --------------------------------------------------------------------
    actor_hidden_dim: int = 256
    """Width of the actor MLP."""
    actor_num_layers: int = 3
    """Hidden layers of the actor MLP."""
    inference_steps: int = 1
    """Network evaluations per sampled chunk (1 = MeanFlow's one-step sampling)."""
    time_mean: float = -0.4
    """Mean of the logit-normal distribution of (r, t) (MeanFlow paper: -0.4)."""
    time_std: float = 1.0
    """Std of the logit-normal distribution of (r, t) (MeanFlow paper: 1.0)."""
    ratio_r_neq_t: float = 0.25
    """Fraction of each batch trained with r != t (MeanFlow paper: 25%; 0 fails at one step)."""
    adaptive_weight_power: float = 0.0
    """Power p of MeanFlow's adaptive loss weight 1/(||err||^2 + c)^p. The paper uses 1; on
    expert Pusher p=1 made the score fall during training while p=0 (plain MSE) rose steadily."""
    adaptive_weight_eps: float = 1e-3
    """The constant c of the adaptive loss weight."""
    actor_q_weight: float = 4.0
    """Weight of the Q term in the actor loss (the Q term is normalised by mean |Q|, so this does
    not depend on the reward scale). 0 with cql_alpha 0 = MeanFlow behaviour cloning."""
    consistency_weight: float = 1.0
    """Weight of the one-step tie: the mean squared distance (per action element) between the
    actor's one-step chunk and the multi-step chunk (consistency_steps) of a slowly moving copy
    of the actor (Polyak average, rate tau) from the same noise. It holds the point where the
    policy acts to the behaviour flow, as FQL's distillation term holds its one-step policy to
    its multi-step BC flow (Park et al. 2025). The copy is the teacher because the actor's own
    multi-step sample chases the one-step one: on cube-single that loop diverged within 200
    updates."""
    consistency_target: float = 0.25
    """When > 0, the one-step tie's weight is not fixed but a dual variable that starts at
    consistency_weight: it rises while the tie exceeds consistency_target x the behaviour
    flow's spread and falls while it lies below. The spread is measured on the same batch as
    the mean squared distance (per action element) between two teacher chunks for the same
    state from independent noise, twice the flow's variance: where the behaviour is nearly
    one action per state the tie holds tight, where it mixes behaviours (medium data, half
    random) the one-step chunk may move toward the better ones. Actions are normalised per
    dimension, so the target means the same on every dataset. 0 = the weight stays fixed;
    with consistency_weight 0 the tie is off either way."""
    consistency_steps: int = 8
    """Integration steps of the teacher's chunks (the one-step tie and the support
    constraint)."""
    support_samples: int = 0
    """Chunks K the teacher (the Polyak copy of the actor, as in the one-step tie) samples per
    state for the support constraint: the actor's one-step chunk is pulled toward the nearest
    of them, so it may sit on any mode of the behaviour flow but not off its support (a
    sampled support constraint in the spirit of BEAR, Kumar et al. 2019). Its weight is a dual
    variable, not a setting: see support_target. 0 = off; at least 2 when on."""
    support_target: float = 1.0
    """The support constraint's dual variable holds the one-step chunk's squared distance to
    its nearest teacher chunk at this multiple of the flow's own spread (the same distance
    from each teacher chunk to its nearest other one, measured on the same batch). The actions
    are normalised per dimension, so the target means the same on every dataset."""
    dual_lr: float = 0.01
    """Step size of the dual variables' logs (the support constraint's weight, the tie's with
    consistency_target and CQL's with cql_calibration_target): log(weight) += dual_lr x
    (measured / allowed - 1), the relative error clipped to +-1 per update; each weight stays
    in [1e-3, 1e4], CQL's in [cql_alpha, 10 x cql_alpha]."""
    corner_ratio: float = 0.0
    """Fraction of each batch trained at (r, t) = (0, 1), the point one-step sampling uses (the
    logit-normal sampler draws it with probability under 0.1%). At most ratio_r_neq_t."""

    # --- critic: double Q with CQL ----------------------------------------------------------
    critic_hidden_dim: int = 256
    """Width of each Q network."""
    critic_num_layers: int = 3
    """Hidden layers of each Q network."""
    critic_layer_norm: bool = True
    """LayerNorm after each hidden layer of the critic (as in FQL)."""
    reward_scale: float = 0.0
    """Multiplies every reward the critic learns from; 0 = automatic: 1 / (mean |reward| per
    step) when that mean exceeds 10, else 1. The factor used is saved in the checkpoint;
    evaluation returns stay in the environment's units."""
    gamma: float = 0.99
    """Discount per environment step."""
    tau: float = 0.005
    """Polyak rate of the target critic."""
    target_aggregate: str = "min"
    """How the two target Qs are combined in the TD target: `min` or `mean`."""
    cql_alpha: float = 0.1
    """Weight of the conservative (CQL) penalty; 0 turns it off. With cql_calibration_target
    (the default) it is the weight's start and its floor."""
    cql_calibrated: bool = True
    """Cal-QL (Nakamoto et al. 2023): the CQL penalty pushes the actor's chunks' Q down only to
    the data's discounted Monte-Carlo return of the same window, never below it. Plain CQL's
    push on the actor's chunks compounds through the TD target, which bootstraps on the
    actor's next chunk: at weight 1 on expert Pusher its critic valued the data at -189
    against a return of -8, and the Q term, divided by mean |Q|, weighed 20 times less.
    Where a time limit cut the episode the return stops at the cut, so near the cut it can sit
    above the state's value (negative rewards) and the penalty pushes less there. Runs saved
    before this setting existed keep plain CQL (SAVED_BEFORE)."""
    cql_calibration_target: float = 0.1
    """Target share (0 <= s < 1) of windows where the critic values the actor's chunk below the
    data's own return (Cal-QL's floor binds, `critic/calibration_binds`). CQL's weight, from
    cql_alpha up to 10 x cql_alpha, rises while fewer windows bind, so the critic grows more
    conservative where it rates the policy above the data almost everywhere, and falls back
    while more bind; it moves from update 2,500 on (a fresh critic's values mean nothing yet).
    A share means the same whatever the rewards' scale. 0 = a fixed weight. Only with
    calibrated CQL and cql_alpha > 0; otherwise it does nothing."""
    cql_num_samples: int = 1
    """Uniform-random chunks and actor chunks per state in the CQL logsumexp."""
    cql_behaviour_samples: int = 0
    """When > 0, the chunk whose Q the CQL penalty raises is not the data's own chunk but the
    best, by each critic, of the data's chunk and this many chunks of the behaviour flow (the
    teacher's multi-step samples for the same state): CQL then keeps the actor's chunks from
    being valued above the best in-support chunk rather than above the data's one. Where the
    data mixes good and random actions per step (medium Pusher) the data's chunk is mostly
    random, and raising it pulls the critic toward the random actions. Needs the teacher, so
    it is built whenever this is on. 0 = plain CQL's data chunk."""
    num_candidates: int = 1
    """At act time, sample this many chunks and execute the one the critic values most."""
    target_candidates: int = 1
    """In the TD target, sample this many next chunks per state and bootstrap from the one the
    target critic values most (MeanFlowQL uses 2, Q-chunking's best-of-N agent 32)."""

    # --- running ----------------------------------------------------------------------------
    mixed_precision: str = "32-true"
    """Lightning precision: 32-true, 16-mixed or bf16-mixed."""
    accelerator: str = "auto"
    """Lightning accelerator: cpu, gpu, auto."""
    compile: str = "auto"
    """Run each update's critic and actor losses (and their backward passes) through
    torch.compile: `on`, `off`, or `auto` = on for a CUDA GPU, where it fuses the small
    networks' hundreds of kernel launches into a few and replays them as CUDA graphs, and off
    on a CPU, where the compiled update measured 1.1-1.8x the eager one at batch 256 and 0.93x
    at 4096, after up to two minutes of compiling (docs/gpu.md). A compiled run draws the same
    random numbers as an eager one, so it trains to the same losses (within float rounding),
    and its checkpoints are the same as an eager run's."""
    devices: str = "auto"
    """Lightning devices: a count, a list like 0,1, or auto."""
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, ..."""
    num_nodes: int = 1
    """Machines taking part in a DDP run (each runs the same command; see the README)."""
    patience: int = 5
    """Early stopping: stop after this many validations without improvement of the online score
    (with eval_every) or, for pure behaviour cloning, of the validation loss; 0 = off. Q learning
    without eval_every never stops early (its validation loss does not rank RL policies)."""
    val_every_n_epochs: int = 1
    """Validate (and maybe checkpoint) every this many epochs."""
    val_every_updates: int = 500
    """Validate (and maybe checkpoint and evaluate online) every this many updates, when the
    budget counts updates; with num_epochs the schedule is val_every_n_epochs."""
    val_windows: int = 10_000
    """Windows scored at each validation: an evenly spaced, fixed subset of the validation
    episodes' windows when they hold more. An OGBench play dataset's 100 validation episodes
    hold 100,000 windows: scoring them all took 14.8 s per validation on one thread (1.8 s for
    10,000), half again the ~30 s of the 500 updates between validations. `main.py test` scores
    all of them."""
    eval_every: int = 0
    """Every this many validations, roll the policy out online and log eval/return and
    eval/normalized_score; the best checkpoint is then chosen by that score. 0 = off."""
    eval_episodes: int = 5
    """Episodes of each online evaluation during training, on validation seeds (2,000,000 +
    1000 x seed + i), never the seeds of dataset episodes or of the test evaluation."""
    output_dir: str = "runs"
    """Where run directories are created."""
    logger: str = "tensorboard"
    """Where the run's figures go: tensorboard, csv (runs/<run>/csv/metrics.csv), wandb
    (needs `pip install wandb`; offline without a network), or several, comma-separated:
    tensorboard,csv."""
    progress_every: int = 500
    """When the output is not a terminal (a file, a cluster job), print one progress line every
    this many updates instead of a progress bar."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("obs_horizon", "pred_horizon", "action_horizon", "batch_size", "num_updates",
                     "inference_steps", "consistency_steps", "actor_hidden_dim",
                     "actor_num_layers", "critic_hidden_dim", "critic_num_layers",
                     "cql_num_samples", "num_candidates", "target_candidates",
                     "val_every_n_epochs",
                     "val_every_updates", "val_windows", "eval_episodes", "num_nodes",
                     "progress_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.action_horizon > self.pred_horizon:
            problems.append(f"action_horizon ({self.action_horizon}) cannot exceed pred_horizon "
                            f"({self.pred_horizon}): a chunk only has pred_horizon actions")
        if not 0.0 < self.gamma <= 1.0:
            problems.append(f"gamma must lie in (0, 1] (got {self.gamma})")
        if not 0.0 < self.tau <= 1.0:
            problems.append(f"tau must lie in (0, 1] (got {self.tau})")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction must lie in [0, 1) (got {self.val_fraction})")
        if not 0.0 <= self.ratio_r_neq_t <= 1.0:
            problems.append(f"ratio_r_neq_t must lie in [0, 1] (got {self.ratio_r_neq_t})")
        if not 0.0 <= self.corner_ratio <= self.ratio_r_neq_t:
            problems.append(f"corner_ratio must lie in [0, ratio_r_neq_t = {self.ratio_r_neq_t}] "
                            f"(got {self.corner_ratio}): corner rows are among the r < t rows")
        for name in ("learning_rate",):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive (got {getattr(self, name)})")
        for name in ("cql_alpha", "actor_q_weight", "consistency_weight", "grad_clip",
                     "max_updates", "patience", "num_epochs", "reward_scale", "num_workers",
                     "adaptive_weight_power", "eval_every", "support_samples",
                     "cql_behaviour_samples", "support_target", "dual_lr", "consistency_target",
                     "critic_learning_rate", "cql_calibration_target"):
            if getattr(self, name) < 0:
                problems.append(f"{name} cannot be negative (got {getattr(self, name)})")
        if self.learning_rate_schedule not in ("cosine", "constant"):
            problems.append("learning_rate_schedule must be cosine or constant "
                            f"(got {self.learning_rate_schedule!r})")
        if self.critic_learning_rate_schedule not in ("same", "cosine", "constant"):
            problems.append("critic_learning_rate_schedule must be same, cosine or constant "
                            f"(got {self.critic_learning_rate_schedule!r})")
        if not 0.0 <= self.learning_rate_floor <= 1.0:
            problems.append(f"learning_rate_floor must lie in [0, 1] "
                            f"(got {self.learning_rate_floor})")
        if self.support_samples == 1:
            problems.append("support_samples must be 0 (off) or at least 2: the flow's spread "
                            "is measured between the teacher's own chunks")
        if self.cql_calibration_target >= 1:
            problems.append(f"cql_calibration_target is a share and must lie below 1 "
                            f"(got {self.cql_calibration_target})")
        if self.target_aggregate not in ("min", "mean"):
            problems.append(f"target_aggregate must be min or mean (got {self.target_aggregate!r})")
        if self.compile not in COMPILE_CHOICES:
            problems.append(f"compile must be one of {', '.join(COMPILE_CHOICES)} "
                            f"(got {self.compile!r})")
        if self.mixed_precision not in PRECISIONS:
            problems.append(f"mixed_precision must be one of {', '.join(PRECISIONS)} "
                            f"(got {self.mixed_precision!r})")
        unknown = [name for name in self.loggers if name not in LOGGERS]
        if unknown or not self.loggers or len(set(self.loggers)) < len(self.loggers):
            problems.append(f"logger must be one or several (comma-separated, each once) of "
                            f"{', '.join(LOGGERS)} (got {self.logger!r})")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def loggers(self) -> list[str]:
        """The names in `logger`."""
        return [name.strip() for name in self.logger.split(",") if name.strip()]

    @property
    def learns_q(self) -> bool:
        """Whether the run is Q learning (a Q term or CQL), not pure behaviour cloning."""
        return self.actor_q_weight > 0 or self.cql_alpha > 0

    @property
    def uses_teacher(self) -> bool:
        """Whether the actor has a Polyak-averaged teacher copy (the one-step tie, the
        support constraint or CQL's behaviour samples)."""
        return (self.consistency_weight > 0 or self.support_samples > 0
                or self.cql_behaviour_samples > 0)

    @property
    def adapts_cql_weight(self) -> bool:
        """Whether CQL's weight follows cql_calibration_target: only calibrated CQL with a
        starting weight (cql_alpha > 0) has a floor whose share it can steer."""
        return self.cql_calibration_target > 0 and self.cql_calibrated and self.cql_alpha > 0

    @property
    def trains_critic(self) -> bool:
        """Whether Q learning runs (pure behaviour cloning, with no Q term, no CQL and one
        candidate, never reads the critic and so never uses gamma)."""
        return self.learns_q or self.num_candidates > 1

    @property
    def critic_rate(self) -> float:
        """The critic's base Adam learning rate: critic_learning_rate, or learning_rate at 0."""
        return self.critic_learning_rate or self.learning_rate

    def capped(self, budget: int) -> int:
        """An update budget capped by max_updates (0 = no cap)."""
        return min(budget, self.max_updates) if self.max_updates else budget

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from a saved dict, ignoring keys this version does not know. A setting the dict
        lacks takes the value that reproduces what the saved run did (SAVED_BEFORE), not
        today's default. Settings since renamed (RENAMED) are read under their new names."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {RENAMED.get(k, k): v for k, v in values.items()}
        return cls(**{**SAVED_BEFORE, **{k: v for k, v in values.items() if k in known}})


# Old names of renamed settings, read as the new ones from saved configs.
RENAMED = {"support_dual_lr": "dual_lr"}

# Settings added after runs were already saved, with the value those runs trained with.
SAVED_BEFORE = {"cql_calibrated": False, "consistency_target": 0.0, "learning_rate_floor": 0.0,
                "critic_learning_rate": 0.0, "critic_learning_rate_schedule": "same",
                "cql_calibration_target": 0.0}

LOGGERS = ("tensorboard", "csv", "wandb")
COMPILE_CHOICES = ("auto", "on", "off")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "64-true", "16-true", "bf16-true")

# The seed's flag names, kept working beside the generated `--kebab-case` ones.
FLAG_ALIASES = {"num_epochs": ["--epochs"]}


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstring written under each field of a dataclass, by field name."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add one `--kebab-case` option per TrainConfig field (defaults left unset, see below)."""
    docs = field_docs(TrainConfig)
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("training configuration")
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flags = [f"--{f.name.replace('_', '-')}"] + FLAG_ALIASES.get(f.name, [])
        # argparse expands %-formats in help text: escape the literal ones.
        help_text = f"{docs.get(f.name, '')} (default: {f.default})".replace("%", "%%")
        kind = hints[f.name]
        # default=SUPPRESS: only flags the user typed reach the namespace, so a resumed or
        # tested run can tell a typed value from a default.
        if kind is bool:
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(*flags, dest=f.name, type=kind, default=argparse.SUPPRESS,
                               metavar=kind.__name__.upper(), help=help_text)


def add_config_file_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--config FILE`, read by `config_from_args` beneath the flags typed beside it."""
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help="YAML (.yaml, .yml) or JSON (.json) file of training settings, keys as in a run's "
             "config.json (snake_case or kebab-case); a run's own config.json repeats that run. "
             "Flags typed beside it override it.")


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser,
                     base: TrainConfig | None = None) -> TrainConfig:
    """TrainConfig from, in rising precedence: `base` (defaults when None), the `--config` file
    (when the parser has that flag and it was given), the flags typed on the command line.

    A bad typed flag exits 2 through `parser.error`; a bad file, or a file value that fails
    validation, raises UsageError naming the key and the file.
    """
    typed = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name)}
    values = (base or TrainConfig()).to_dict()
    path = getattr(args, "config", None)
    from_file = load_config_file(path) if path else {}
    if set(values) - set(SAVED_BEFORE) <= set(from_file) < set(values):
        # An older run's whole config.json: repeat that run, not today's defaults.
        from_file = {**SAVED_BEFORE, **from_file}
    values.update(from_file)
    values.update(typed)
    try:
        return TrainConfig(**values)
    except ValueError as err:
        # Blame the file only for the keys it set that no typed flag overrode.
        blamed = [k for k in from_file
                  if k not in typed and re.search(rf"\b{k}\b", str(err))]
        if not blamed:
            parser.error(str(err))
        flags = ", ".join("--" + k.replace("_", "-") for k in blamed)
        raise UsageError(f"Invalid setting in config file {config_file_path(path)}: {err}. "
                         f"Fix {', '.join(blamed)} in the file, or override it with {flags}.")


# --- config files ---------------------------------------------------------------------------

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def config_file_path(path: str | Path) -> Path:
    """The path as given, with `~` expanded (a shell leaves `--config=~/x.yaml` unexpanded)."""
    return Path(path).expanduser()


# Environment variables holding a path the project, or a library it calls, reads.
PATH_VARIABLES = ("MINARI_DATASETS_PATH",)


def expand_user_in_environment() -> None:
    """Expand a leading `~` in PATH_VARIABLES in this process's environment (and so its
    children's). A quoted `MINARI_DATASETS_PATH='~/x'` reaches Python unexpanded, and Minari,
    which reads the variable itself, would take it for a folder named `~` in the current one.
    Called first thing by every entry point (main.py, eval_online.py, collect.py)."""
    import os

    for name in PATH_VARIABLES:
        value = os.environ.get(name)
        if value and value.startswith("~"):
            os.environ[name] = os.path.expanduser(value)


def load_config_file(path: str | Path) -> dict:
    """TrainConfig settings from a YAML or JSON file, by field name, converted to each field's type.

    Keys may be snake_case (as `TrainConfig.to_dict()` writes them into a run's config.json) or
    kebab-case (as the flags are spelled). A missing or unreadable file, an unknown key, or a value
    that cannot be converted to its field's type raises UsageError naming the file (and the key).
    Whether the values fit together (`__post_init__`) is checked once they are merged with the
    flags, in `config_from_args`.
    """
    file = config_file_path(path)
    if file.suffix.lower() not in CONFIG_SUFFIXES:
        raise UsageError(f"Config file {file} must end in .yaml, .yml or .json, which says how to "
                         f"read it. Rename it, or pass a run's config.json.")
    if not file.is_file():
        raise UsageError(f"Config file {file} does not exist. Pass the path of a .yaml, .yml or "
                         f".json file of training settings, such as runs/<run>/config.json.")
    try:
        raw = read_settings(file)
    except (OSError, ValueError) as err:   # json's and yaml's parse errors are ValueErrors here
        raise UsageError(f"Config file {file} cannot be read: {' '.join(str(err).split())} "
                         f"Fix the file.") from None
    if raw is None:                                   # an empty YAML file: no settings
        return {}
    if not isinstance(raw, dict):
        raise UsageError(f"Config file {file} must hold a mapping of setting names to values "
                         f"(like a run's config.json), not a {type(raw).__name__}.")
    return settings_from_mapping(raw, f"Config file {file}")


def settings_from_mapping(raw: dict, where: str) -> dict:
    """TrainConfig settings from a mapping of setting names (snake_case or kebab-case) to values,
    each converted to its field's type; `where` names the mapping's source in messages ("Config
    file x.yaml", "Sweep spec s.yaml, setting bc"). An unknown key, a key given twice or a value
    that cannot be converted raises UsageError naming the key."""
    hints = typing.get_type_hints(TrainConfig)
    values: dict = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        name = RENAMED.get(name, name)
        if name not in hints:
            close = difflib.get_close_matches(name, list(hints), n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise UsageError(f"{where} has an unknown key {key!r}.{hint} Its keys are "
                             f"the names of the training settings (python main.py train --help).")
        if name in values:
            raise UsageError(f"{where} sets {name} twice (as snake_case and as "
                             f"kebab-case). Keep one.")
        try:
            values[name] = coerce(value, hints[name])
        except (TypeError, ValueError):
            raise UsageError(f"{where}: {key} must be {TYPE_WORDS[hints[name]]}, "
                             f"got {value!r}. Fix the value or remove the key.") from None
    return values


def read_settings(file: Path):
    """The parsed content of a .json or .yaml/.yml file; parse errors come out as ValueError."""
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() == ".json":
        return json.loads(text)
    import yaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"not valid YAML ({err}).") from None


TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def coerce(value, kind: type):
    """`value` as `kind`, or TypeError / ValueError when it cannot honestly be one.

    YAML 1.1 reads `3e-4` (no dot) as a string and `1` as an int: numbers given as strings and
    ints given for floats are converted; fractions for ints, numbers for bools and lists or
    mappings anywhere are refused.
    """
    if isinstance(value, (list, dict)) or value is None:
        raise TypeError(kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TypeError(kind)
    if isinstance(value, bool):                       # bool is an int: refuse it for numbers
        raise TypeError(kind)
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        number = float(value)
        if not number.is_integer():
            raise ValueError(kind)
        return int(number)
    if kind is float:
        return float(value)
    if kind is str:
        if isinstance(value, float):                  # a number where a name was meant
            raise TypeError(kind)
        return str(value)                             # `devices: 2` reads as an int
    raise TypeError(kind)
