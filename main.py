"""Command line: `python main.py train | test | collect`.

    python main.py train [--dataset ID] [--epochs N] [--batch-size B] [...]
    python main.py test  [--dataset ID] [--checkpoint PATH] [--skip-online-eval]
    python main.py collect --dataset local/pusher/expert-v0 [--episodes N] [--list]
    python main.py sweep SPEC.yaml [--address ADDR] [--report] [--dry-run]   (docs/sweeps.md)

Mistakes the user can fix end with one message and exit code 2, never with a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from config import DEFAULT_DATASET, TEST_SEED, TrainConfig, UsageError, add_config_arguments, \
    add_config_file_argument, config_from_args, expand_user_in_environment
from runs import RESULT_REASON, RESUMABLE, check_named_run_dir, check_same_data, \
    data_record, data_record_callback, forget_validations_after, log_place, new_run_dir, \
    newest_checkpoint, result_checkpoint, resume_point, resumed_config, \
    validation_record_callback  # noqa: F401 - RESUMABLE: what tests and callers read here


# --- running ------------------------------------------------------------------------------------

def parse_devices(devices: str):
    if devices == "auto":
        return devices
    try:
        values = [int(d) for d in devices.split(",") if d.strip()]
    except ValueError:
        raise UsageError(f"--devices takes a count, a comma-separated list of ids or auto "
                         f"(got {devices!r}).") from None
    return values if "," in devices else values[0]


def quiet_lightning() -> None:
    import logs
    logs.quiet_warnings()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    warnings.filterwarnings("ignore", ".*predict_dataloader.*")
    warnings.filterwarnings("ignore", ".*is not a valid dataset id.*")
    # A resumed run may drop early stopping (--patience 0) or change what the best checkpoint is
    # chosen by (--eval-every): the saved state of the callback it no longer has is not needed.
    warnings.filterwarnings("ignore", ".*callbacks used to create the checkpoint need to be.*")


# --- train --------------------------------------------------------------------------------------

def finish_validation_before_sigterm():
    """A Lightning callback that lets a validation that SIGTERM interrupts finish first.

    Lightning's evaluation loop raises on SIGTERM at the end of any validation batch, so a stop
    during the validation at update N saved a checkpoint at N without N's validation record,
    and the resumed run (which validates again only after N) never wrote it. Held here until
    the validation ends, the flag makes the training loop stop at the end of the same update
    instead, after every validation callback (records, online evaluation, checkpoints) ran.
    `_signal_connector` is Lightning's own holder of the flag (Trainer.received_sigterm).
    """
    import lightning as L

    class FinishValidation(L.Callback):
        held = False

        def on_validation_batch_end(self, trainer, *args) -> None:
            connector = trainer._signal_connector
            if connector.received_sigterm:
                connector.received_sigterm, self.held = False, True

        def on_validation_end(self, trainer, pl_module) -> None:
            if self.held:
                trainer._signal_connector.received_sigterm, self.held = True, False

    return FinishValidation()


class Interruption:
    """Turns Ctrl-C into a stop at the end of the current update (a second Ctrl-C kills).

    SIGTERM is Lightning's: it raises at the end of the current batch. Either way `train`
    saves `last.ckpt` and prints how to resume.
    """

    def __init__(self):
        self.signal = None
        self.trainer = None

    def install(self, trainer) -> None:
        import signal
        import threading

        self.trainer = trainer
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_sigint)

    def uninstall(self) -> None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _on_sigint(self, signum, frame) -> None:
        import signal

        self.signal = "SIGINT"
        self.trainer.should_stop = True
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class PreparedRun:
    """What `train` fits: built by `prepare_run`, before anything is trained."""
    cfg: TrainConfig
    run_dir: Path
    data: object                       # MinariDataModule
    model: object                      # MeanFlowQL
    trainer: object                    # lightning.Trainer
    checkpoint: object                 # the ModelCheckpoint callback (best.ckpt, last.ckpt)
    monitor: str                       # what best.ckpt is chosen by
    resume_from: Path | None           # the checkpoint a resumed run continues


def early_stopping(monitor: str, mode: str, patience: int):
    """Lightning's EarlyStopping, except that a resumed run keeps the patience it was given:
    Lightning's own restores the saved patience along with the wait count."""
    from lightning.pytorch.callbacks import EarlyStopping

    class ResumableEarlyStopping(EarlyStopping):
        @property
        def state_key(self) -> str:
            # Lightning's key for EarlyStopping, so runs saved by either class restore alike.
            return f"EarlyStopping{ {'monitor': self.monitor, 'mode': self.mode}!r}"

        def load_state_dict(self, state_dict: dict) -> None:
            patience = self.patience
            super().load_state_dict(state_dict)
            self.patience = patience

    return ResumableEarlyStopping(monitor=monitor, mode=mode, patience=patience)


def prepare_run(cfg: TrainConfig, resume: str | None = None,
                typed: dict | None = None, run_dir: str | None = None) -> PreparedRun:
    """The data, module, callbacks and Trainer of a new or resumed run (a resumed one built from
    the checkpoint's settings and the running settings typed beside --resume). A new run's
    directory (`run_dir`, else a new timestamped one under output_dir) and config.json are
    written here; a resumed run writes nothing yet."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    import checkpoints as checkpoints_io
    import collect
    import logs
    from dataset import MinariDataModule, load_dataset
    from meanflow_ql import MeanFlowQL

    quiet_lightning()
    checkpoint_path = None
    if resume:
        checkpoint_path, run_dir = resume_point(resume)
        cfg = resumed_config(checkpoint_path, typed or {}, run_dir)
        checkpoints_io.check_run_dir_writable(run_dir)
    else:
        checkpoints_io.check_output_dir(cfg.output_dir)
    logs.check_loggers(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    build = functools.partial(collect.build_for_training, progress=logs.interactive())
    data = MinariDataModule(cfg, load_dataset(cfg.dataset, build=build))
    if cfg.gamma == 1 and cfg.trains_critic and not data.any_terminal:
        raise UsageError(
            f"--gamma 1 with Q learning needs episodes that end in a true termination, and no "
            f"episode of {cfg.dataset} does: every one is cut by a time limit, so the TD target "
            f"bootstraps forever and has no finite fixed point. Use a discount below 1 (e.g. "
            f"--gamma 0.99), or train pure behaviour cloning (--actor-q-weight 0 --cql-alpha 0 "
            f"--consistency-weight 0).")
    record = data_record(data)
    if resume:
        check_same_data(checkpoint_path, record)
    env_spec = None
    if cfg.eval_every > 0:
        # Made once now, so a missing environment fails in seconds, before any update.
        import eval_online
        env_spec = eval_online.environment_spec(data.minari_dataset, None)
        eval_online.make_env(env_spec).close()
    model = MeanFlowQL.from_data(cfg, data)

    if not resume:
        # DDP's extra processes re-run this script: they must join the first one's run directory.
        # Made below, once Lightning has accepted the run settings.
        run_dir = Path(os.environ.get("MEANFLOW_QL_RUN_DIR") or run_dir or new_run_dir(cfg))
    checkpoints = run_dir / "checkpoints"
    # What best.ckpt means: with --eval-every, the best online score on validation seeds; else
    # the lowest validation loss, a behaviour-cloning metric that ranks BC runs but not Q
    # learning ones, so with Q learning on, train evaluates and test uses last.ckpt.
    monitor, mode = "val/loss", "min"
    # A bar on a terminal; in a file, a line every progress_every updates.
    callbacks = [logs.make_progress_bar() if logs.interactive()
                 else logs.make_line_progress(cfg.progress_every), data_record_callback(record),
                 validation_record_callback(run_dir), finish_validation_before_sigterm()]
    if cfg.eval_every > 0:
        import eval_online
        callbacks.append(eval_online.make_online_eval_callback(
            data.minari_dataset, env_spec, cfg.eval_every, cfg.eval_episodes,
            eval_online.validation_seed(cfg.seed)))
        has_scores = data.minari_dataset.storage.metadata.get("ref_min_score") is not None
        monitor, mode = ("eval/normalized_score" if has_scores else "eval/return"), "max"
    # best.ckpt and last.ckpt, never versioned names, also where the run directory was moved.
    checkpoint = checkpoints_io.run_checkpoint(checkpoints, monitor, mode)
    callbacks.insert(0, checkpoint)
    if cfg.patience > 0 and (cfg.eval_every > 0 or not cfg.learns_q):
        callbacks.append(early_stopping(monitor, mode, cfg.patience))
    loggers = logs.make_loggers(cfg, run_dir, resumed=bool(resume))
    devices = parse_devices(cfg.devices)
    try:
        trainer = L.Trainer(
            # The module stops at its update budget (num_epochs x batches per epoch), which also
            # holds across an interrupted and resumed run; Lightning alone would count the
            # interrupted epoch as a whole one.
            max_epochs=-1, precision=cfg.mixed_precision, accelerator=cfg.accelerator,
            devices=devices, num_nodes=cfg.num_nodes, strategy=strategy_for(cfg, devices),
            callbacks=callbacks, logger=loggers, enable_progress_bar=logs.interactive(),
            # Checkpoints written through a temporary file, read back before they replace
            # the last good one (checkpoints.py).
            plugins=[checkpoints_io.verified_checkpoint_io()],
            log_every_n_steps=25, **validation_schedule(cfg),
            enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(run_dir))
    except (MisconfigurationException, ValueError, RuntimeError, ImportError) as err:
        raise UsageError(lightning_refusal(cfg, err)) from None
    if not resume:
        checkpoints_io.make_run_dir(run_dir, json.dumps(cfg.to_dict(), indent=2) + "\n")
        os.environ["MEANFLOW_QL_RUN_DIR"] = str(run_dir)
    else:
        # Every check passed: the validations after the checkpoint are about to be redone.
        forget_validations_after(run_dir, checkpoint_path)
    print(f"Run directory: {run_dir}{' (resumed from ' + str(checkpoint_path) + ')' if resume else ''}"
          f"\nData: {data.describe()}", flush=True)
    return PreparedRun(cfg, run_dir, data, model, trainer, checkpoint, monitor, checkpoint_path)


# Lightning's names for DDP that starts each process by running the command again (Lightning
# also accepts "find_unused_parameters_false", which cannot train this module), and the others.
DDP_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")
OTHER_STRATEGIES = ("auto", "single_device")


def strategy_for(cfg: TrainConfig, devices):
    """The Lightning strategy for the run settings: with more than one process in all (devices
    x nodes), DDP whether --strategy says ddp or auto, told to expect unused parameters. Each
    update runs two backward passes (critic, then actor), and each leaves the other network's
    parameters without gradient; Lightning's automatic DDP expects none and stops the run."""
    from lightning.pytorch.strategies import DDPStrategy

    strategy = cfg.strategy
    if strategy == "auto" and process_count(cfg, devices) > 1:
        strategy = "ddp"
    if strategy in DDP_STRATEGIES:
        return DDPStrategy(find_unused_parameters=True)
    if strategy not in OTHER_STRATEGIES:
        # Spawned or forked DDP processes need every callback to pickle or no CUDA in the first
        # process; FSDP, DeepSpeed and XLA shard or compile the two optimizers' manual steps in
        # ways this trainer was never run with.
        raise UsageError(f"--strategy {strategy} is not one main.py train runs: use "
                         f"{' or '.join(OTHER_STRATEGIES + DDP_STRATEGIES[:1])} (ddp starts one "
                         f"process per device by running the same command; auto picks it "
                         f"whenever --devices or --num-nodes ask for more than one).")
    return strategy


def process_count(cfg: TrainConfig, devices) -> int:
    """Processes a run with these settings starts on one node (devices as `parse_devices`)."""
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    # auto (or -1, all): every GPU where one is used, else one CPU process.
    import torch
    uses_gpu = cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto"
                                                       and torch.cuda.is_available())
    return max(torch.cuda.device_count(), 1) if uses_gpu else 1


def lightning_refusal(cfg: TrainConfig, err: Exception) -> str:
    """One paragraph for run settings Lightning refused when building the Trainer."""
    from dataset import first_line

    settings = " ".join(f"--{name.replace('_', '-')} {getattr(cfg, name)}" for name in
                        ("accelerator", "devices", "strategy", "num_nodes", "mixed_precision"))
    import torch

    mentions_gpu = any(word in str(err).lower() for word in ("gpu", "cuda"))
    gpu = ("" if not mentions_gpu or torch.cuda.is_available() else
           " This machine has no usable GPU for this torch (a CPU-only build, or no device): "
           "use --accelerator cpu, or install the CUDA build of torch (README).")
    return (f"Lightning cannot run these settings ({settings}): {first_line(err).rstrip('.!')}."
            f"{gpu} Change the flags above; nothing was written.")


def train(cfg: TrainConfig, resume: str | None = None,
          typed: dict | None = None, run_dir: str | None = None) -> Path | None:
    """Fit; returns the checkpoint that is the run's result (None in DDP's extra processes):
    last.ckpt with Q learning on, best.ckpt for pure behaviour cloning (`result_checkpoint`)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    run = prepare_run(cfg, resume, typed, run_dir)
    cfg, run_dir, model, trainer, checkpoint = run.cfg, run.run_dir, run.model, run.trainer, \
        run.checkpoint
    checkpoints = run_dir / "checkpoints"
    interruption = Interruption()
    interruption.install(trainer)
    try:
        trainer.fit(model, datamodule=run.data, ckpt_path=run.resume_from, weights_only=True)
    except SIGTERMException:
        interruption.signal = "SIGTERM"
    finally:
        interruption.uninstall()
    # The final state, also after an interruption (written to a temporary file, then renamed).
    trainer.save_checkpoint(checkpoints / "last.ckpt", weights_only=False)
    if not trainer.is_global_zero:
        return None
    if interruption.signal:
        print(f"\nInterrupted by {interruption.signal} after {int(model.num_updates)} updates. "
              f"Saved {checkpoints / 'last.ckpt'}; the best checkpoint is intact.\n"
              f"Resume: python main.py train --resume {shlex.quote(str(run_dir))}", flush=True)
        raise Interrupted(interruption.signal)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    result = result_checkpoint(cfg, checkpoints)
    print(f"Finished after {int(model.num_updates)} updates.\n"
          f"Best checkpoint ({run.monitor} {float(checkpoint.best_model_score or float('nan')):.4f}): "
          f"{best}\nLast checkpoint: {checkpoints / 'last.ckpt'}\n"
          f"The run's result: {result.name} ({RESULT_REASON[result.name]})\n"
          # Shell-quoted, so they paste back whatever the paths hold (spaces, quotes).
          f"Test it: python main.py test --dataset {shlex.quote(cfg.dataset)} "
          f"--checkpoint {shlex.quote(str(result))}\n"
          f"Logs: {', '.join(log_place(name, run_dir) for name in cfg.loggers)}",
          flush=True)
    return result


def validation_schedule(cfg: TrainConfig) -> dict:
    """Trainer arguments for when to validate: every val_every_n_epochs epochs when the budget
    counts epochs, else every val_every_updates updates (Lightning then counts batches across
    epochs, so a small dataset is not validated after each of its short epochs)."""
    if cfg.num_epochs > 0:
        return {"check_val_every_n_epoch": cfg.val_every_n_epochs}
    # At least one validation before the budget ends, so best.ckpt exists.
    return {"check_val_every_n_epoch": None,
            "val_check_interval": min(cfg.val_every_updates, cfg.capped(cfg.num_updates))}


class Interrupted(Exception):
    """Training stopped on a signal after saving its state."""


# --- test ---------------------------------------------------------------------------------------

def offline_test(checkpoint_path: Path, dataset_id: str | None) -> dict:
    """MSE between one-step chunks and the data's chunks on the held-out episodes."""
    import torch

    from dataset import MinariDataModule, load_dataset
    from meanflow_ql import flat, masked_mse
    from policy import load_checkpoint, predict_action

    model = load_checkpoint(checkpoint_path)
    cfg = model.cfg
    dataset_id = dataset_id or cfg.dataset
    data = MinariDataModule(cfg, load_dataset(dataset_id))
    if (data.obs_dim, data.action_dim) != (model.obs_dim, model.action_dim):
        raise UsageError(
            f"Checkpoint {checkpoint_path} was trained on observations of size {model.obs_dim} "
            f"and actions of size {model.action_dim} ({model.hparams['dataset_id']}), but "
            f"{dataset_id} has {data.obs_dim} and {data.action_dim}. Test it on the dataset it "
            f"was trained on: --dataset {model.hparams['dataset_id']}.")
    data.use_normalizers(model.obs_normalizer, model.action_normalizer)
    generator = torch.Generator().manual_seed(cfg.seed)
    total_mse = total_raw = count = 0.0
    with torch.no_grad():
        for batch in data.test_dataloader():
            obs, actions, mask = flat(batch["obs"]), batch["actions"], batch["mask"]
            noise = torch.randn(flat(actions).shape, generator=generator)
            chunk = model.actor.sample(obs, noise, cfg.inference_steps)
            raw_pred = predict_action(model, model.obs_normalizer.unnormalize(batch["obs"]),
                                      noise)
            raw_data = model.action_normalizer.unnormalize(actions)
            weight = float(mask.sum())
            total_mse += float(masked_mse(chunk, actions, mask)) * weight
            total_raw += float(masked_mse(raw_pred, raw_data, mask)) * weight
            count += weight
    held_out = "held-out" if data.val_ids else "training (no held-out episodes)"
    return {"checkpoint": str(checkpoint_path), "dataset": dataset_id,
            "episodes": len(data.val_ids) if data.val_ids else len(data.train_ids),
            "split": held_out, "windows": len(data.held_out_windows), "action_steps": int(count),
            "action_mse_normalized": total_mse / max(count, 1),
            "action_mse": total_raw / max(count, 1)}


def test(args: argparse.Namespace) -> dict:
    quiet_lightning()
    if args.checkpoint:
        checkpoint = Path(args.checkpoint).expanduser()
    else:
        checkpoint = newest_checkpoint(args.output_dir, args.dataset or DEFAULT_DATASET)
        print(f"Using the result checkpoint of the newest run: {checkpoint}")
    results = offline_test(checkpoint, args.dataset)
    print(f"Offline test on {results['windows']} windows of {results['episodes']} {results['split']} "
          f"episodes of {results['dataset']}:\n"
          f"  action MSE (normalised units): {results['action_mse_normalized']:.5f}\n"
          f"  action MSE (raw units):        {results['action_mse']:.5f}")
    out = checkpoint.with_name(checkpoint.stem + ".test.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Saved {out}")
    if not args.skip_online_eval:
        import eval_online
        eval_online.evaluate_checkpoint(checkpoint, dataset_id=args.dataset,
                                        episodes=args.episodes, seed=args.seed,
                                        num_envs=args.num_envs, log_to_tensorboard=True)
    return results


# --- the command line -----------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="train a policy on a Minari dataset")
    add_config_arguments(train_parser)
    add_config_file_argument(train_parser)
    train_parser.add_argument("--resume", metavar="PATH",
                              help="continue a run: its directory or one of its checkpoints")
    train_parser.add_argument("--checkpoint", dest="resume", help="same as --resume")
    train_parser.add_argument("--skip-online-eval", action="store_true",
                              help="skip the online evaluation of the result checkpoint "
                                   "after training")
    train_parser.add_argument("--run-dir", metavar="DIR",
                              help="the run's directory, as named (no timestamp; created when "
                                   "missing, refused when it holds a run) instead of a new "
                                   "<output-dir>/<dataset>_seed<S>_<time>")

    test_parser = commands.add_parser("test", help="offline (and online) test of a checkpoint")
    test_parser.add_argument("--dataset", help="dataset id (default: the checkpoint's)")
    test_parser.add_argument("--checkpoint", help="checkpoint file (default: best of the newest "
                             "run on the dataset)")
    test_parser.add_argument("--skip-online-eval", action="store_true",
                             help="only the offline test")
    test_parser.add_argument("--output-dir", default="runs", help="where runs are (default runs)")
    test_parser.add_argument("--episodes", type=int, default=10,
                             help="online evaluation episodes (default 10)")
    test_parser.add_argument("--seed", type=int, default=TEST_SEED,
                             help=f"seed of the first online episode (default {TEST_SEED}, the "
                                  "test seeds; see eval_online.py)")
    test_parser.add_argument("--num-envs", type=int, default=1,
                             help="environments stepped at once in the online evaluation")
    test_parser.add_argument("--mixed-precision",
                             help="accepted for the seed's command lines; testing runs in float32")
    commands.add_parser("collect", help="build a local Minari dataset (see collect --help)",
                        add_help=False)
    commands.add_parser("sweep", help="datasets x settings x seeds on Ray (see sweep --help)",
                        add_help=False)
    return parser


def typed_settings(args: argparse.Namespace) -> dict:
    """The TrainConfig settings typed on the command line (flags left out are not in `args`)."""
    return {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    expand_user_in_environment()
    if argv[:1] == ["collect"]:
        import collect
        return collect.main(argv[1:], prog="main.py collect")
    if argv[:1] == ["sweep"]:
        from sweep.cli import main as sweep_main
        return sweep_main(argv[1:], prog="main.py sweep")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            from meanflow_ql import NonFiniteLossError
            typed = typed_settings(args)
            if args.resume and args.config:
                raise UsageError("--config starts a new run from a file of settings, while "
                                 "--resume continues a saved run with its own settings: pass one "
                                 "of them, not both.")
            cfg = config_from_args(args, parser)
            if args.run_dir:
                if args.resume:
                    raise UsageError("--run-dir names a new run's directory, while --resume "
                                     "continues a saved run in its own: pass one of them.")
                run_dir = check_named_run_dir(args.run_dir)
                if "output_dir" in typed and Path(cfg.output_dir).expanduser().resolve() != \
                        run_dir.resolve().parent:
                    raise UsageError(f"--output-dir {cfg.output_dir} and --run-dir "
                                     f"{args.run_dir} disagree on where the run lives: pass one.")
                # config.json says where the run lives, as output_dir would have.
                cfg = TrainConfig.from_dict({**cfg.to_dict(),
                                             "output_dir": str(run_dir.resolve().parent)})
            try:
                best = train(cfg, resume=args.resume, typed=typed, run_dir=args.run_dir)
            except NonFiniteLossError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            except Interrupted as err:
                return 130 if str(err) == "SIGINT" else 143
            if best is not None and not args.skip_online_eval:
                import eval_online
                from policy import load_checkpoint
                print(f"Online evaluation of {best.name} (--skip-online-eval skips it):")
                # The run's own settings, as trained (a resumed run's come from its checkpoint,
                # not from the flags typed now).
                run_cfg = load_checkpoint(best).cfg
                try:
                    # Validation seeds: a figure to develop with; `test` reports on test seeds.
                    eval_online.evaluate_checkpoint(best, log_to_tensorboard=True,
                                                    missing_env_ok=True,
                                                    log_video=run_cfg.eval_every > 0,
                                                    seed=eval_online.validation_seed(run_cfg.seed))
                except UsageError as err:
                    raise UsageError(
                        f"Training finished and its checkpoints are kept ({best.parent}), but "
                        f"the online evaluation failed. {err} Evaluate later with `python "
                        f"eval_online.py --checkpoint {shlex.quote(str(best))} --env ENV_ID`.") \
                        from None
        elif args.command == "test":
            test(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Outside an update loop (loading data, evaluating): what was written stays written.
        print(f"\nInterrupted by SIGINT; {args.command} stopped, files already written are "
              f"kept.", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    sys.exit(main())
