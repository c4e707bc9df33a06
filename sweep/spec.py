"""A sweep's SPEC file: what to run, checked whole before anything starts.

    name: cube-screen
    datasets: [ogbench/cube-single-play-singletask-task2-v0, local/pusher/medium-v0]
    seeds: [0, 1]
    settings:                      # name -> training settings, the keys --config accepts
      defaults: {}
      bc: {actor_q_weight: 0, cql_alpha: 0}
    train: {num_updates: 20000}    # settings shared by every trial (a setting's own win)
    evaluate: {episodes: 50, seeds: test}   # after training; seeds: validation or test

Each (dataset, setting, seed) is one trial. `load_spec` raises UsageError naming the first bad
key or value; `Spec.canonical()` is what a rerun compares to the spec a sweep was started with.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from config import TEST_SEED, TrainConfig, UsageError, read_settings, settings_from_mapping

KEYS = ("name", "datasets", "seeds", "settings", "train", "evaluate")
EVALUATE_KEYS = {"episodes": 10, "seeds": "test", "num_envs": 1}
# Settings the sweep itself decides: from the grid (dataset, seed) or its layout (output_dir).
OWNED = {"dataset": "the datasets list", "seed": "the seeds list",
         "output_dir": "the sweep's layout (--output-dir of `sweep`)"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Trial:
    """One (dataset, setting, seed) of a sweep and the full settings it trains with."""
    dataset: str
    setting: str
    seed: int
    config: dict                       # TrainConfig.to_dict() without output_dir (the layout's)

    @property
    def id(self) -> str:
        """`<dataset-slug>_<setting>_seed<S>`: the trial's folder name."""
        from runs import dataset_slug
        return f"{dataset_slug(self.dataset)}_{self.setting}_seed{self.seed}"


@dataclass
class Spec:
    name: str
    datasets: list[str]
    seeds: list[int]
    settings: dict[str, dict]          # name -> converted settings
    train: dict
    evaluate: dict                     # episodes, seeds (validation | test), num_envs
    path: Path

    def trials(self) -> list[Trial]:
        """Every trial, seed-major: each dataset and setting's first seed before any second."""
        out = []
        for seed in self.seeds:
            for dataset in self.datasets:
                for setting, values in self.settings.items():
                    config = TrainConfig(**{**self.train, **values, "dataset": dataset,
                                            "seed": seed}).to_dict()
                    del config["output_dir"]
                    out.append(Trial(dataset, setting, seed, config))
        return out

    def canonical(self) -> dict:
        """The spec as run, with defaults filled in: what spec.yaml holds and reruns compare."""
        return {"name": self.name, "datasets": list(self.datasets), "seeds": list(self.seeds),
                "settings": {k: dict(v) for k, v in self.settings.items()},
                "train": dict(self.train), "evaluate": dict(self.evaluate)}


def load_spec(path: str | Path) -> Spec:
    """Read and check a SPEC file (YAML or JSON); UsageError names the key at fault."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"Sweep spec {file} does not exist. Pass a YAML file with name, "
                         f"datasets, seeds and settings (docs/sweeps.md).")
    if file.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise UsageError(f"Sweep spec {file} must end in .yaml, .yml or .json. Rename it.")
    try:
        raw = read_settings(file)
    except (OSError, ValueError) as err:
        raise UsageError(f"Sweep spec {file} cannot be read: {' '.join(str(err).split())} "
                         f"Fix the file.") from None
    return parse_spec(raw, file)


def parse_spec(raw, file: Path) -> Spec:
    """A Spec from the parsed content of `file`; UsageError names the first problem."""
    where = f"Sweep spec {file}"
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must hold a mapping with the keys {', '.join(KEYS)}.")
    for key in raw:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise UsageError(f"{where} has an unknown key {key!r}.{hint} Its keys are "
                             f"{', '.join(KEYS)} (docs/sweeps.md).")
    for key in ("name", "datasets", "seeds", "settings"):
        if key not in raw:
            raise UsageError(f"{where} lacks {key!r}: a sweep needs name, datasets, seeds and "
                             f"settings (docs/sweeps.md).")
    name = raw["name"]
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(f"{where}: name must be one word of letters, digits, '.', '_' and '-' "
                         f"(it names the sweep's folder), got {name!r}.")
    datasets = nonempty_list(raw["datasets"], "datasets", where, str, "dataset ids")
    seeds = nonempty_list(raw["seeds"], "seeds", where, int, "integer seeds")
    if any(seed < 0 for seed in seeds):
        raise UsageError(f"{where}: seeds must be at least 0, got {seeds}.")
    train = settings(raw.get("train"), f"{where}, train")
    settings_raw = raw["settings"]
    if not isinstance(settings_raw, dict) or not settings_raw:
        raise UsageError(f"{where}: settings must map at least one setting name to its training "
                         f"settings (`defaults: {{}}` runs the defaults), got {settings_raw!r}.")
    named = {}
    for setting, values in settings_raw.items():
        if not isinstance(setting, str) or not NAME.fullmatch(setting):
            raise UsageError(f"{where}: setting name {setting!r} must be one word of letters, "
                             f"digits, '.', '_' and '-' (it names trial folders).")
        named[setting] = settings(values, f"{where}, setting {setting}")
        for dataset in datasets:
            for seed in seeds[:1]:     # the seed changes no check
                try:
                    TrainConfig(**{**train, **named[setting], "dataset": dataset, "seed": seed})
                except ValueError as err:
                    raise UsageError(f"{where}, setting {setting}: {err}. Fix the value in the "
                                     f"spec.") from None
    evaluate = evaluation(raw.get("evaluate"), where)
    return Spec(name, datasets, seeds, named, train, evaluate, file)


def nonempty_list(value, key: str, where: str, kind: type, words: str) -> list:
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where}: {key} must be a non-empty list of {words}, got {value!r}.")
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise UsageError(f"{where}: {key} must be a list of {words}, got {value!r}.")
    if len(set(value)) < len(value):
        raise UsageError(f"{where}: {key} lists an entry twice ({value!r}). Keep one of each.")
    return list(value)


def settings(values, where: str) -> dict:
    """Training settings of a spec section, converted and checked key by key."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UsageError(f"{where} must be a mapping of training settings, got {values!r}.")
    converted = settings_from_mapping(values, where)
    for key, owner in OWNED.items():
        if key in converted:
            raise UsageError(f"{where} sets {key}, which a sweep takes from {owner}. Remove it.")
    return converted


def evaluation(values, where: str) -> dict:
    """The evaluate section with defaults: episodes (0 = none), seeds, num_envs."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise UsageError(f"{where}: evaluate must be a mapping (episodes, seeds, num_envs), got "
                         f"{values!r}.")
    out = dict(EVALUATE_KEYS)
    for key, value in values.items():
        if key not in EVALUATE_KEYS:
            raise UsageError(f"{where}: evaluate has an unknown key {key!r}; its keys are "
                             f"{', '.join(EVALUATE_KEYS)}.")
        out[key] = value
    if not isinstance(out["episodes"], int) or isinstance(out["episodes"], bool) \
            or out["episodes"] < 0:
        raise UsageError(f"{where}: evaluate episodes must be an integer, 0 for no online "
                         f"evaluation, got {out['episodes']!r}.")
    if out["seeds"] not in ("validation", "test"):
        raise UsageError(f"{where}: evaluate seeds must be validation (training-time and tuning "
                         f"seeds) or test (reported figures, from {TEST_SEED}), got "
                         f"{out['seeds']!r}.")
    if not isinstance(out["num_envs"], int) or isinstance(out["num_envs"], bool) \
            or out["num_envs"] < 1:
        raise UsageError(f"{where}: evaluate num_envs must be an integer of at least 1, got "
                         f"{out['num_envs']!r}.")
    return out


def differences(then: dict, now: dict, prefix: str = "") -> list[str]:
    """What changed between two canonical specs, one phrase per changed key."""
    out = []
    for key in sorted(set(then) | set(now), key=str):
        a, b = then.get(key, "(absent)"), now.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} then, {b!r} now")
    return out


def check_datasets(spec: Spec) -> None:
    """Make sure every dataset can be loaded before any trial starts: present, built here now
    (local and OGBench ids, once, rather than by several trials at once), or downloaded.
    UsageError (from dataset.load_dataset) names the one that cannot."""
    import functools

    import collect
    import logs
    from dataset import load_dataset

    build = functools.partial(collect.build_for_training, progress=logs.interactive())
    for dataset_id in spec.datasets:
        try:
            load_dataset(dataset_id, build=build)
        except UsageError as err:
            raise UsageError(f"Sweep spec {spec.path}: dataset {dataset_id} cannot be loaded. "
                             f"{err}") from None
