"""One dataclass holds every setting; the command line is generated from it.

The attribute docstring under each field is its `--help` text. Values are checked in
`__post_init__`, so a bad value is rejected at parse time with the field's name in the message.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import typing
from dataclasses import dataclass, field


class UsageError(Exception):
    """A mistake the user can fix (bad flag, missing file, unknown dataset).

    `main.py` prints its message and exits with code 2, without a traceback.
    """


DEFAULT_DATASET = "local/pusher/expert-v0"


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
    num_workers: int = 0
    """DataLoader worker processes. Batches are index gathers on in-memory tensors, so 0 is
    usually fastest."""

    # --- optimisation -----------------------------------------------------------------------
    num_epochs: int = 8
    """Passes over the training windows (`--epochs`)."""
    max_updates: int = 0
    """Stop after this many updates (one critic and one actor step); 0 = no limit."""
    batch_size: int = 256
    """Windows per update. 256 keeps a 2-core CPU busy; the seed's 4096 suits a GPU."""
    learning_rate: float = 3e-4
    """Adam learning rate of both actor and critic."""
    learning_rate_schedule: str = "cosine"
    """`cosine`: both learning rates fall along a half cosine to 0 over the update budget, which
    steadies the final policy; `constant`: they stay fixed."""
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
    actor_q_weight: float = 2.0
    """Weight of the Q term in the actor loss (the Q term is normalised by mean |Q|, so this does
    not depend on the reward scale). 0 with cql_alpha 0 = MeanFlow behaviour cloning."""

    # --- critic: double Q with CQL ----------------------------------------------------------
    critic_hidden_dim: int = 256
    """Width of each Q network."""
    critic_num_layers: int = 3
    """Hidden layers of each Q network."""
    critic_layer_norm: bool = True
    """LayerNorm after each hidden layer of the critic (as in FQL)."""
    gamma: float = 0.99
    """Discount per environment step."""
    tau: float = 0.005
    """Polyak rate of the target critic."""
    target_aggregate: str = "min"
    """How the two target Qs are combined in the TD target: `min` or `mean`."""
    cql_alpha: float = 0.1
    """Weight of the conservative (CQL) penalty; 0 turns it off."""
    cql_num_samples: int = 1
    """Uniform-random chunks and actor chunks per state in the CQL logsumexp."""
    num_candidates: int = 1
    """At act time, sample this many chunks and execute the one the critic values most."""

    # --- running ----------------------------------------------------------------------------
    mixed_precision: str = "32-true"
    """Lightning precision: 32-true, 16-mixed or bf16-mixed."""
    accelerator: str = "auto"
    """Lightning accelerator: cpu, gpu, auto."""
    devices: str = "auto"
    """Lightning devices: a count, a list like 0,1, or auto."""
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, ..."""
    num_nodes: int = 1
    """Machines taking part in a DDP run (each runs the same command; see the README)."""
    patience: int = 5
    """Stop after this many validations without improvement of the validation loss; 0 = off."""
    val_every_n_epochs: int = 1
    """Validate (and maybe checkpoint) every this many epochs."""
    eval_every: int = 0
    """Every this many validations, roll the policy out online and log eval/return and
    eval/normalized_score; the best checkpoint is then chosen by that score. 0 = off."""
    eval_episodes: int = 5
    """Episodes of each online evaluation during training (seeds seed .. seed + n - 1)."""
    output_dir: str = "runs"
    """Where run directories are created."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("obs_horizon", "pred_horizon", "action_horizon", "batch_size", "num_epochs",
                     "inference_steps", "actor_hidden_dim", "actor_num_layers",
                     "critic_hidden_dim", "critic_num_layers", "cql_num_samples",
                     "num_candidates", "val_every_n_epochs", "eval_episodes", "num_nodes"):
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
        for name in ("learning_rate",):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive (got {getattr(self, name)})")
        for name in ("cql_alpha", "actor_q_weight", "grad_clip", "max_updates", "patience",
                     "num_workers", "adaptive_weight_power", "eval_every"):
            if getattr(self, name) < 0:
                problems.append(f"{name} cannot be negative (got {getattr(self, name)})")
        if self.learning_rate_schedule not in ("cosine", "constant"):
            problems.append("learning_rate_schedule must be cosine or constant "
                            f"(got {self.learning_rate_schedule!r})")
        if self.target_aggregate not in ("min", "mean"):
            problems.append(f"target_aggregate must be min or mean (got {self.target_aggregate!r})")
        if self.mixed_precision not in PRECISIONS:
            problems.append(f"mixed_precision must be one of {', '.join(PRECISIONS)} "
                            f"(got {self.mixed_precision!r})")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from a saved dict, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


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


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser,
                     base: TrainConfig | None = None) -> TrainConfig:
    """TrainConfig from parsed flags on top of `base` (defaults when None); bad values exit 2."""
    typed = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name)}
    values = (base or TrainConfig()).to_dict()
    values.update(typed)
    try:
        return TrainConfig(**values)
    except ValueError as err:
        parser.error(str(err))
