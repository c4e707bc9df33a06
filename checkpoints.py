"""Where a run's checkpoints go, and writing them so that a failed write loses nothing.

    runs/<run>/config.json
    runs/<run>/checkpoints/best.ckpt     chosen by validation (ModelCheckpoint, `run_checkpoint`)
    runs/<run>/checkpoints/last.ckpt     the latest state

Every checkpoint is serialised in memory, written to a hidden temporary file beside its place,
flushed to disk, read back and compared byte for byte, and only then renamed over the old one:
a write that fails (a full disk, a file-size limit, no permission, a path that is a file) leaves
the last good checkpoint as it was and ends the run with `CheckpointWriteError`, which names the
file and the cause. A run directory is made only where a probe file can be written.
"""

from __future__ import annotations

import errno
import io
import os
import shlex
import shutil
from pathlib import Path

from config import UsageError


class CheckpointWriteError(UsageError):
    """A checkpoint could not be written; the file it would have replaced is unchanged."""


# What each errno means for a user who has to fix it.
CAUSES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
          errno.EFBIG: "the file would exceed the size limit for files (ulimit -f)",
          errno.EACCES: "no permission to write there", errno.EPERM: "no permission to write there",
          errno.EROFS: "the file system is read-only",
          errno.ENOTDIR: "a part of the path is a file, not a folder",
          errno.EISDIR: "the path is a folder"}


def cause(err: OSError) -> str:
    """Why a write failed, in words, with the system's own message."""
    words = CAUSES.get(err.errno)
    system = err.strerror or str(err)
    return f"{words} ({system})" if words else system


def write_verified(data: bytes, path: Path) -> None:
    """Write `data` to `path` through a temporary file that is flushed, read back and compared
    before it replaces `path`. Raises OSError (the temporary file removed, `path` untouched)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        with open(temporary, "rb") as file:
            if file.read() != data:
                raise OSError(errno.EIO, "the file read back differs from what was written")
        os.replace(temporary, path)
    except BaseException:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    if path.stat().st_size != len(data):
        raise OSError(errno.EIO, f"{path} holds {path.stat().st_size} bytes after the rename, "
                                 f"not the {len(data)} written")


def write_failure(path: Path, err: OSError, resume: bool = True) -> CheckpointWriteError:
    """The error for a checkpoint that could not be written to `path` (in a run's
    checkpoints/ folder), saying what was kept and how to go on."""
    kept = (f"The last good {path.name} is kept unchanged." if path.is_file()
            else f"No earlier {path.name} existed; none was left half-written.")
    run_dir = path.parent.parent
    then = (f" Free space or fix the folder's permissions, then continue: python main.py train "
            f"--resume {shlex.quote(str(run_dir))}") if resume else ""
    return CheckpointWriteError(f"Checkpoint {path} could not be written: {cause(err)}. "
                                f"{kept}{then}")


def verified_checkpoint_io():
    """A Lightning CheckpointIO writing each checkpoint with `write_verified`, so a checkpoint
    is reported saved only when the file on disk holds it. Raises CheckpointWriteError.
    (Lightning's own atomic save goes through fsspec, which has lost write errors: Lightning
    issue 21800.)"""
    import torch
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class VerifiedCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            path = Path(path)
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_verified(buffer.getvalue(), path)
            except OSError as err:
                raise write_failure(path, err) from None

    return VerifiedCheckpointIO()


def probe(folder: Path) -> None:
    """Write, read back and remove a small file in `folder`; raises OSError when that fails."""
    file = folder / f".write-probe-{os.getpid()}"       # one per process (DDP runs several)
    write_verified(b"meanflow-ql write probe\n", file)
    file.unlink()


def check_output_dir(output_dir: str) -> None:
    """Raise UsageError, before any work, when `output_dir` cannot hold run directories because
    a part of it is a file or the nearest existing folder refuses writes."""
    path = Path(output_dir).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"--output-dir {output_dir} cannot hold run directories: {existing} is "
                         f"a file, not a folder. Pass another --output-dir.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output-dir {output_dir} cannot hold run directories: {existing} "
                         f"refuses writes (no permission). Pass another --output-dir.")


def make_run_dir(run_dir: Path, config_text: str) -> None:
    """Create a new run's directory with its config.json and checkpoints/ folder, checked by
    writing a probe file there. On any failure, what was created is removed again and
    UsageError names the folder and the cause: no run directory is left behind."""
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_verified(config_text.encode(), run_dir / "config.json")
        probe(run_dir / "checkpoints")
    except OSError as err:
        if created:                                      # the outermost folder made here
            shutil.rmtree(created[-1], ignore_errors=True)
        where = err.filename or run_dir
        raise UsageError(f"The run directory {run_dir} cannot be written ({where}: "
                         f"{cause(err)}); nothing was left there. Pass an --output-dir this "
                         f"user can write to, or free space.") from None


def check_run_dir_writable(run_dir: Path) -> None:
    """Raise UsageError, before a resumed run trains, when its checkpoints/ folder refuses
    writes (the checkpoints it holds stay as they are)."""
    try:
        probe(run_dir / "checkpoints")
    except OSError as err:
        raise UsageError(f"The resumed run's folder {run_dir / 'checkpoints'} cannot be written "
                         f"({cause(err)}), so its checkpoints could not be updated; they are "
                         f"unchanged. Free space or fix the folder's permissions, or copy the "
                         f"run directory somewhere writable and resume the copy.") from None


def run_checkpoint(dirpath: Path, monitor: str, mode: str):
    """Lightning's ModelCheckpoint writing best.ckpt (by `monitor`) and last.ckpt into `dirpath`,
    which keeps its state when the run directory was moved since it was saved: Lightning then
    drops the best score and the paths, and versions the names it finds taken (best-v1.ckpt,
    last-v1.ckpt); here the saved paths are carried over to the new place and names are never
    versioned (the folder is this run's alone)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    class RunCheckpoint(ModelCheckpoint):
        @property
        def state_key(self) -> str:
            # Lightning's key for ModelCheckpoint, so runs saved by either class restore alike.
            return ModelCheckpoint.state_key.fget(self).replace(type(self).__qualname__,
                                                                "ModelCheckpoint", 1)

        def load_state_dict(self, state_dict: dict) -> None:
            old = state_dict.get("dirpath")
            if old and self.dirpath and old != self.dirpath:
                state_dict = moved_state(state_dict, old, self.dirpath)
            super().load_state_dict(state_dict)

    return RunCheckpoint(dirpath=dirpath, filename="best", monitor=monitor, mode=mode,
                         save_last=True, auto_insert_metric_name=False,
                         enable_version_counter=False)


def moved_state(state: dict, old: str, new: str) -> dict:
    """A ModelCheckpoint state with every path under folder `old` moved under `new`."""
    def move(path):
        if isinstance(path, str) and path and Path(path).parent == Path(old):
            return str(Path(new) / Path(path).name)
        return path

    state = dict(state, dirpath=new)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in state:
            state[key] = move(state[key])
    if isinstance(state.get("best_k_models"), dict):
        state["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
    return state
