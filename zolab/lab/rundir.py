"""Run directories: names that stay inside the runs root, one process per run, atomic checkpoints, and the
newest loadable checkpoint of a run.

A run lives in ``ROOT/NAME/VERSION``; NAME and VERSION are single directory names, so nothing a run writes or a
sweep deletes can be outside ``ROOT`` (symbolic links included: paths are compared after resolving them).
Checkpoints are written to a hidden temporary file beside their target, synced, and renamed over it, so a crash
(kill -9, out of memory) during a save leaves the previous file whole; partial files end in ``.part`` and are
never taken for checkpoints. A run holds ``.zolab.lock`` (an advisory ``flock``, released by the kernel when
the process dies) while it trains, so a second process writing the same run is refused.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

CHECKPOINTS = "checkpoints"
LOCK_FILE = ".zolab.lock"
NAME_MAX = 255  # bytes in a directory name (Linux, macOS, Windows)
CHECKPOINT_KEYS = ("state_dict", "global_step", "loops", "optimizer_states")


def check_name(what: str, value) -> str:
    """``value`` as one directory name (a run's name or version) of at most NAME_MAX bytes, else a ValueError
    naming it."""
    text = str(value)
    seps = {"/", "\0", os.sep} | ({os.altsep} if os.altsep else set())
    if not text or text in (".", "..") or any(s in text for s in seps):
        raise ValueError(f"{what}={value!r} is not a directory name; allowed: one name without '/' (not '.' or "
                         "'..'), so that the run stays inside the runs root")
    size = len(text.encode("utf-8", "surrogateescape"))
    if size > NAME_MAX:
        raise ValueError(f"{what}={text[:40]!r}... is {size} bytes; allowed: at most {NAME_MAX} (a directory name)")
    return text


def inside(path, root) -> Path:
    """``path`` if it resolves strictly inside ``root`` (links followed), else a ValueError naming both."""
    path, root = Path(path), Path(root)
    resolved, base = path.resolve(), root.resolve()
    if resolved == base or base not in resolved.parents:
        raise ValueError(f"{path} resolves to {resolved}, outside the runs root {base}: refused")
    return path


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file."""


def read_checkpoint(path, keys=CHECKPOINT_KEYS) -> dict:
    """A Lightning checkpoint loaded with ``weights_only=True`` (memory-mapped: cheap for a check), or a
    CheckpointError naming the file and what is wrong (missing, empty, truncated, not a checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: empty file (0 bytes)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path}: not loadable with weights_only=True (truncated or not a "
                              f"checkpoint?): {reason}") from None
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path}: not a Lightning training checkpoint (missing {missing})")
    return ckpt


def checkpoint_files(run_dir) -> list[Path]:
    """The run's ``checkpoints/*.ckpt`` files (partial ``.part`` files excluded), sorted by name."""
    folder = Path(run_dir) / CHECKPOINTS
    return sorted(p for p in folder.glob("*.ckpt") if p.is_file()) if folder.is_dir() else []


def newest_checkpoint(run_dir) -> tuple[Path | None, int, list[str]]:
    """The run's loadable checkpoint with the highest ``global_step`` (the newest file among equals), its step,
    and one line per checkpoint file that could not be loaded."""
    best, best_key, bad = None, None, []
    for path in checkpoint_files(run_dir):
        try:
            step = int(read_checkpoint(path, keys=("global_step",))["global_step"])
        except CheckpointError as err:
            bad.append(str(err))
            continue
        key = (step, path.stat().st_mtime_ns)
        if best_key is None or key > best_key:
            best, best_key = path, key
    return best, (best_key[0] if best_key else -1), bad


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic saves: a temporary file beside the target (never outside
    the run's directory), ``fsync``, then ``os.replace``: a kill during a save leaves the old file whole."""

    @override
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with open(part, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RunLock:
    """An exclusive advisory lock on ``run_dir/.zolab.lock`` for as long as a process writes the run; a second
    process is refused with a ValueError. Released by ``release()`` or when the process ends (even by kill -9)."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK_FILE
        self._fh = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise ValueError(f"run directory {self.path.parent} is in use by {owner}: two processes cannot write "
                             "one run; wait for it to end or choose another --version") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"zolab process {os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file drops the flock
            self._fh = None
