"""`--config FILE`: YAML or JSON settings under the flags typed beside them."""

import argparse
import json

import pytest

from config import (TrainConfig, UsageError, add_config_arguments, add_config_file_argument,
                    config_from_args, load_config_file)


def parse(argv: list[str]) -> TrainConfig:
    """The config `main.py train ARGV` would build, through the real generated flags."""
    parser = argparse.ArgumentParser(prog="main.py train")
    add_config_arguments(parser)
    add_config_file_argument(parser)
    return config_from_args(parser.parse_args(argv), parser)


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_file_beats_default_and_typed_flag_beats_file(tmp_path):
    file = write(tmp_path / "c.yaml", "batch_size: 64\ngamma: 0.9\ncritic-layer-norm: false\n")
    cfg = parse(["--config", file])
    assert (cfg.batch_size, cfg.gamma, cfg.critic_layer_norm) == (64, 0.9, False)
    assert cfg.seed == TrainConfig().seed                      # not in the file: the default
    cfg = parse(["--config", file, "--batch-size", "32", "--critic-layer-norm"])
    assert (cfg.batch_size, cfg.gamma, cfg.critic_layer_norm) == (32, 0.9, True)
    # The order on the command line does not matter: a typed flag always wins.
    assert parse(["--batch-size", "32", "--config", file]).batch_size == 32
    # A typed flag equal to the default still beats the file.
    assert parse(["--config", file, "--batch-size", str(TrainConfig().batch_size)]).batch_size \
        == TrainConfig().batch_size


def test_saved_config_json_round_trips(tmp_path):
    saved = TrainConfig(dataset="local/pusher/medium-v0", seed=3, learning_rate=1e-3,
                        critic_layer_norm=False, devices="0,1", max_updates=500)
    file = tmp_path / "config.json"
    file.write_text(json.dumps(saved.to_dict(), indent=2) + "\n")   # as main.py writes it
    assert load_config_file(file) == saved.to_dict()
    assert parse(["--config", str(file)]) == saved
    # The same settings as YAML, kebab-case keys, read back equal too.
    yaml_file = write(tmp_path / "config.yml", "".join(
        f"{k.replace('_', '-')}: {json.dumps(v)}\n" for k, v in saved.to_dict().items()))
    assert parse(["--config", yaml_file]) == saved


def test_an_older_runs_config_json_repeats_that_run_not_todays_defaults(tmp_path):
    """A config.json written before --cql-calibrated existed (plain CQL) still repeats its run;
    a partial file, and a typed flag, get today's default and the typed value as ever."""
    old = TrainConfig(dataset="local/pusher/medium-v0", cql_alpha=0.1).to_dict()
    del old["cql_calibrated"]
    file = write(tmp_path / "config.json", json.dumps(old))
    assert parse(["--config", file]).cql_calibrated is False
    assert parse(["--config", file, "--cql-calibrated"]).cql_calibrated is True
    partial = write(tmp_path / "partial.json", json.dumps({"cql_alpha": 0.1}))
    assert parse(["--config", partial]).cql_calibrated is TrainConfig().cql_calibrated is True
    # Written before the schedules' settings and the adaptive tie: one cosine to 0 for both
    # networks, a fixed tie, whatever today's defaults say.
    for key in ("learning_rate_floor", "critic_learning_rate", "critic_learning_rate_schedule",
                "consistency_target"):
        del old[key]
    repeated = parse(["--config", write(tmp_path / "older.json", json.dumps(old))])
    assert (repeated.learning_rate_floor, repeated.critic_learning_rate,
            repeated.critic_learning_rate_schedule,
            repeated.consistency_target) == (0, 0, "same", 0)
    assert TrainConfig().consistency_target > 0 and TrainConfig().learning_rate_floor > 0


def test_unknown_key_is_refused_naming_it_and_the_file(tmp_path):
    file = write(tmp_path / "c.yaml", "batch_size: 64\nepochs: 3\n")
    with pytest.raises(UsageError, match=r"unknown key 'epochs'.*num_epochs") as err:
        parse(["--config", file])
    assert file in str(err.value)


@pytest.mark.parametrize("text, key", [
    ("batch_size: lots\n", "batch_size"),            # not a number
    ("num_epochs: 2.5\n", "num_epochs"),              # a fraction for an int
    ("critic_layer_norm: 1\n", "critic_layer_norm"),  # a number for a bool
    ("gamma: [0.9]\n", "gamma"),                      # a list
    ("learning_rate:\n", "learning_rate"),            # no value
])
def test_value_of_the_wrong_type_is_refused_naming_key_and_file(tmp_path, text, key):
    file = write(tmp_path / "c.yaml", text)
    with pytest.raises(UsageError, match=key) as err:
        load_config_file(file)
    assert file in str(err.value)


def test_value_failing_validation_is_refused_naming_key_and_file(tmp_path):
    file = write(tmp_path / "c.json", json.dumps({"gamma": 2.0}))
    with pytest.raises(UsageError, match=r"gamma must lie in \(0, 1\]") as err:
        parse(["--config", file])
    assert file in str(err.value) and "--gamma" in str(err.value)
    # A typed flag that overrides the bad value rescues the run.
    assert parse(["--config", file, "--gamma", "0.95"]).gamma == 0.95
    # Values that only fit together with a typed flag are judged together with it.
    file = write(tmp_path / "h.yaml", "pred_horizon: 2\n")
    assert parse(["--config", file, "--action-horizon", "2"]).pred_horizon == 2


def test_bad_typed_flag_beside_a_good_file_is_still_the_flags_error(tmp_path, capsys):
    file = write(tmp_path / "c.yaml", "batch_size: 64\n")
    with pytest.raises(SystemExit) as exit_info:
        parse(["--config", file, "--gamma", "2"])
    assert exit_info.value.code == 2
    assert "gamma must lie in (0, 1]" in capsys.readouterr().err


def test_yaml_1_1_numbers_are_converted_to_the_field_type(tmp_path):
    # YAML 1.1 reads 3e-4 (no dot) as the string '3e-4' and 1 as an int.
    file = write(tmp_path / "c.yaml", "learning_rate: 3e-4\ngrad_clip: 1\ndevices: 2\n"
                                      "max_updates: '100'\n")
    cfg = parse(["--config", file])
    assert cfg.learning_rate == 3e-4 and isinstance(cfg.learning_rate, float)
    assert cfg.grad_clip == 1.0 and isinstance(cfg.grad_clip, float)
    assert cfg.devices == "2" and cfg.max_updates == 100


def test_tilde_in_the_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path / "c.yaml", "seed: 7\n")
    assert parse(["--config=~/c.yaml"]).seed == 7     # the shell leaves ~ after '=' alone


@pytest.mark.parametrize("name, text, message", [
    ("absent.yaml", None, "does not exist"),
    ("c.yaml", "batch_size: [64\n", "cannot be read"),
    ("c.json", "{\"batch_size\": 64,}", "cannot be read"),
    ("c.yaml", "- 64\n", "must hold a mapping"),
    ("c.toml", "batch_size = 64\n", "must end in .yaml, .yml or .json"),
])
def test_missing_or_unreadable_file_is_a_usage_error_naming_it(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(UsageError, match=message) as err:
        parse(["--config", str(path)])
    assert str(path) in str(err.value)


def test_without_config_flag_nothing_changes():
    assert parse([]) == TrainConfig()
    assert parse(["--seed", "4"]) == TrainConfig(seed=4)
