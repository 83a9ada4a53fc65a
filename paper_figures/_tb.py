"""Read TensorBoard event files written by ``zolab fit`` (shared by the paper-figure scripts and tests).

    steps, values = read_scalars("runs/radazo_fig1/Quadratic-RAdaZO", "train/loss")

A run directory may hold several event files (a run resumed in place); their scalars are merged and, for a
step logged twice, the last written value is kept. Steps are Lightning's logging steps: the ``train/loss``
logged at step k is f(θ_k), the loss after k updates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

__all__ = ["event_files", "find_runs", "read_config", "read_hparams", "read_scalars", "scalar_tags"]


def event_files(run_dir) -> list[Path]:
    """The run's event files, oldest first."""
    return sorted(Path(run_dir).glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name))


def find_runs(root) -> list[Path]:
    """Every directory under ``root`` (``root`` included) that holds an event file, sorted."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob("events.out.tfevents.*")})


def _accumulators(run_dir):
    files = event_files(run_dir)
    if not files:
        raise FileNotFoundError(f"no TensorBoard event file in {run_dir}")
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        yield acc


def scalar_tags(run_dir) -> list[str]:
    """The scalar tags logged in ``run_dir``."""
    return sorted({t for acc in _accumulators(run_dir) for t in acc.Tags()["scalars"]})


def read_scalars(run_dir, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one scalar tag, sorted by step (int64, float64)."""
    points: dict[int, float] = {}
    found = False
    for acc in _accumulators(run_dir):
        if tag in acc.Tags()["scalars"]:
            found = True
            points.update({e.step: e.value for e in acc.Scalars(tag)})
    if not found:
        raise KeyError(f"tag {tag!r} not logged in {run_dir}; logged: {scalar_tags(run_dir)}")
    steps = np.array(sorted(points), dtype=np.int64)
    return steps, np.array([points[s] for s in steps], dtype=np.float64)


def read_hparams(run_dir) -> dict:
    """The run's ``hparams.yaml`` (what ZOModule logged: rule, lr, ...), {} if absent."""
    path = Path(run_dir) / "hparams.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def read_config(run_dir) -> dict:
    """The run's ``config.yaml`` (the full LightningCLI config), {} if absent."""
    path = Path(run_dir) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
