"""Where a run's figures go: Lightning's loggers, a rendered episode, the console.

    runs/<run>/tensorboard/   TensorBoardLogger (--logger tensorboard, the default)
    runs/<run>/csv/metrics.csv CSVLogger         (--logger csv)
    runs/<run>/wandb/         WandbLogger        (--logger wandb; offline without a network)

Training logs through the Lightning loggers `make_loggers` builds; what comes after training
(the online evaluation's figures, one rendered episode) goes to the same places through
`log_figures` and `log_video`. On a terminal training shows Lightning's progress bar; when the
output goes to a file, `LineProgress` prints one line every few hundred updates instead.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import socket
import sys
import time
import warnings
from pathlib import Path

from config import TrainConfig, UsageError


# --- the console ------------------------------------------------------------------------------

def quiet_warnings() -> None:
    """Drop the stack's warnings that tell a user nothing (each matched by message and by the
    module that raises it, so the project's own and every other warning still show)."""
    # Lightning's own use of a torch name that torch deprecated, on every run.
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            FutureWarning, r"lightning\.pytorch\.utilities\._pytree")
    # OGBench's environments declare float64 bounds for float32 spaces (gym.logger.warn
    # colours the message, hence the leading .*).
    warnings.filterwarnings("ignore", r".*Box (low|high)'s precision lowered by casting",
                            UserWarning, r"gymnasium\.spaces\.box")
    # GLFW's missing-DISPLAY error is not filtered: it only comes when MUJOCO_GL is unset, and
    # main.py and eval_online.py set MUJOCO_GL=egl before MuJoCo is imported.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_tips)


def _no_tips(record: logging.LogRecord) -> bool:
    """Lightning's advertisement for its cloud logger, printed on every run."""
    return not str(record.msg).startswith("💡 Tip:")


def interactive() -> bool:
    """Whether the output is a terminal (a progress bar), not a file or a pipe (lines)."""
    return sys.stdout.isatty()


def make_line_progress(every: int):
    """A Lightning callback printing `update N/M, loss/actor ..., loss/critic ..., updates/s`
    every `every` updates and after the last one, for output that goes to a file."""
    import lightning as L

    class LineProgress(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            self.mark = (int(pl_module.num_updates), time.monotonic())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            updates, budget = int(pl_module.num_updates), pl_module.update_budget()
            if not trainer.is_global_zero or (updates % every and updates < budget):
                return
            if updates == self.mark[0]:                     # already printed for this update
                return
            rate = (updates - self.mark[0]) / max(time.monotonic() - self.mark[1], 1e-9)
            self.mark = (updates, time.monotonic())
            figures = getattr(pl_module, "latest_figures", {})       # this update's
            losses = "".join(f", {key} {float(figures[key]):.4f}"
                             for key in ("loss/actor", "loss/critic") if key in figures)
            print(f"update {updates}/{budget}{losses}, {rate:.1f} updates/s", flush=True)

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or not trainer.is_global_zero:
                return
            metrics, updates = trainer.callback_metrics, int(pl_module.num_updates)
            figures = ", ".join(f"{key} {float(metrics[key]):.4f}"
                                for key in ("val/loss", "eval/return", "eval/normalized_score",
                                            "eval/success_rate") if key in metrics)
            # Online figures are those of the latest rollouts, which with --eval-every above 1
            # were made at an earlier validation: say at which update.
            rolled_out = int(metrics["eval/update"]) if "eval/update" in metrics else updates
            if rolled_out != updates:
                figures += f" (eval/ figures rolled out at update {rolled_out})"
            print(f"validation at update {updates}: {figures}", flush=True)

    return LineProgress()


def make_progress_bar():
    """Lightning's progress bar (for a terminal), showing the losses of the update it shows
    (the module logs its figures only every 25 updates, see MeanFlowQL.training_step)."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    class CurrentProgressBar(TQDMProgressBar):
        def get_metrics(self, trainer, pl_module) -> dict:
            metrics = super().get_metrics(trainer, pl_module)
            figures = getattr(pl_module, "latest_figures", {})
            metrics.update({key: f"{float(figures[key]):.3g}"
                            for key in ("loss/actor", "loss/critic") if key in figures})
            return metrics

    return CurrentProgressBar(refresh_rate=20)


# --- loggers -----------------------------------------------------------------------------------

WANDB_PROJECT = "meanflow-ql"


def check_loggers(cfg: TrainConfig) -> None:
    """Raise UsageError, before anything runs, when a logger's package is missing."""
    if "wandb" in cfg.loggers:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UsageError("--logger wandb needs the wandb package, which is not installed: "
                             "`pip install wandb`, or leave wandb out of --logger.") from None


def wandb_server() -> tuple[str, int]:
    """(host, port) of the W&B server: WANDB_BASE_URL's (a self-hosted server) when set, else
    W&B's cloud, api.wandb.ai:443."""
    from urllib.parse import urlsplit

    url = os.environ.get("WANDB_BASE_URL", "").strip()
    if not url:
        return "api.wandb.ai", 443
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.hostname or "api.wandb.ai", parts.port or (80 if parts.scheme == "http" else 443)


def wandb_offline() -> bool:
    """Offline W&B (synced later with `wandb sync`) when the user did not choose a WANDB_MODE
    and the W&B server (`wandb_server`) cannot be reached within 3 seconds."""
    if "WANDB_MODE" in os.environ:
        return False
    try:
        socket.create_connection(wandb_server(), timeout=3).close()
        return False
    except OSError:
        return True


def make_loggers(cfg: TrainConfig, run_dir: Path, resumed: bool = False) -> list:
    """Lightning loggers writing into the run directory, one per name in `cfg.logger`."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = []
    for name in cfg.loggers:
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="", version="tensorboard"))
        elif name == "csv":
            logger = CSVLogger(save_dir=str(run_dir), name="", version="csv")
            if resumed:
                _keep_csv_rows(logger)
            loggers.append(logger)
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger
            offline = wandb_offline()
            if offline:
                host, port = wandb_server()
                print(f"W&B: {host}:{port} cannot be reached, logging offline under "
                      f"{run_dir / 'wandb'}; upload later with "
                      f"`wandb sync {run_dir / 'wandb'}/offline-run-*`.", flush=True)
            # The run directory's name as W&B's run id: a resumed run continues the same one.
            loggers.append(WandbLogger(save_dir=str(run_dir), project=WANDB_PROJECT,
                                       name=run_dir.name, id=run_dir.name, resume="allow",
                                       offline=offline))
    return loggers


def _keep_csv_rows(logger) -> None:
    """CSVLogger starts metrics.csv afresh; on resume, write the interrupted run's rows back."""
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    rows = _read_csv(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*exists and is not empty")
        logger.experiment                     # noqa: B018 - opening it empties metrics.csv
    for row in rows:
        step = int(float(row.pop("step")))
        logger.log_metrics({k: float(v) for k, v in row.items() if v != ""}, step=step)
    logger.save()


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _wandb_run():
    """The W&B run this process is logging to (training's WandbLogger leaves it open), or None."""
    wandb = sys.modules.get("wandb")
    return getattr(wandb, "run", None) if wandb is not None else None


def log_figures(run_dir: Path, figures: dict, step: int) -> None:
    """Scalars into every log the run has: TensorBoard, CSV (a row appended to metrics.csv, as
    CSVLogger would write it), and the W&B run of this process if one is open."""
    if (run_dir / "tensorboard").is_dir():
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run_dir / "tensorboard"))
        for key, value in figures.items():
            writer.add_scalar(key, value, step)
        writer.close()
    metrics = run_dir / "csv" / "metrics.csv"
    if metrics.is_file():
        rows = _read_csv(metrics) + [{**figures, "step": step}]
        keys = sorted(set().union(*rows))
        with metrics.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
    run = _wandb_run()
    if run is not None:
        run.log({**figures, "trainer/global_step": step})


# --- video -------------------------------------------------------------------------------------

def encode_gif(frames, fps: float) -> bytes:
    import imageio.v3 as iio
    return iio.imwrite("<bytes>", frames, extension=".gif", duration=1000 / fps, loop=0)


def log_video(run_dir: Path, frames, fps: float, step: int, tag: str) -> None:
    """One rendered episode into the run's TensorBoard log and W&B run.

    TensorBoard shows an animated GIF stored as an image summary (its Images tab plays it);
    that is what torch's `SummaryWriter.add_video` writes too, but add_video needs moviepy to
    encode the GIF, and Pillow (through imageio) does it here.
    """
    run = _wandb_run()
    if not (run_dir / "tensorboard").is_dir() and run is None:
        return
    gif = encode_gif(frames, fps)
    if (run_dir / "tensorboard").is_dir():
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard.writer import FileWriter

        height, width = frames[0].shape[:2]
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
        writer = FileWriter(str(run_dir / "tensorboard"))
        writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        writer.close()
    if run is not None:
        import wandb
        run.log({tag: wandb.Video(io.BytesIO(gif), format="gif"), "trainer/global_step": step})
