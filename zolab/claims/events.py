"""The one reader of the runs' TensorBoard event files, for the claims and for paper_figures/.

    run = Run("runs/radazo_fig1/Quadratic-RAdaZO")
    steps, values = run.series("train/loss")          # lists; ([], []) when not logged
    steps, values = read_scalars(run.path, "train/loss")  # numpy arrays; KeyError when not logged

A run directory may hold several event files (a run resumed in place): their scalars are merged oldest
first, so for a step logged twice the last written value is kept. Steps are the x the run logged at (zolab's
``train/loss`` at x = k is f(θ_k)). Every record's length and checksums are verified: a run whose event
files are missing, empty, cut short or damaged raises ``UnreadableRun`` naming the file and the byte, never
a silently shorter series. The one damage a finished run may carry is a cut-short last record of an event file
that a later one continues (the run was killed while writing and resumed): that record is dropped.
"""

from __future__ import annotations

import struct
from functools import cache
from pathlib import Path

import yaml

__all__ = ["Run", "UnreadableRun", "event_files", "find_runs", "label", "read_config", "read_hparams",
           "read_scalars", "scalar_tags"]


class UnreadableRun(ValueError):
    """A run directory whose event files or ``hparams.yaml`` cannot be read completely."""


def event_files(run_dir) -> list[Path]:
    """The run's event files, oldest first."""
    return sorted(Path(run_dir).glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name))


def find_runs(root) -> list[Path]:
    """Every directory under ``root`` (``root`` included) that holds an event file, sorted."""
    return sorted({p.parent for p in Path(root).rglob("events.out.tfevents.*")})


class _CutShort(Exception):
    pass


def _records(path: Path):
    """The serialized events of one event file (TFRecord: length, its checksum, data, its checksum)."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    data = path.read_bytes()
    if not data:
        raise UnreadableRun(f"{path}: empty event file (not even the header a writer starts with)")
    pos = 0
    while pos < len(data):
        if len(data) - pos < 12:
            raise _CutShort(pos)
        (length,), (check,) = struct.unpack_from("<Q", data, pos), struct.unpack_from("<I", data, pos + 8)
        if masked_crc32c(data[pos:pos + 8]) != check:
            raise UnreadableRun(f"{path}: damaged at byte {pos} (a record's length fails its checksum)")
        end = pos + 12 + length + 4
        if end > len(data):
            raise _CutShort(pos)
        body = data[pos + 12:end - 4]
        if masked_crc32c(body) != struct.unpack_from("<I", data, end - 4)[0]:
            raise UnreadableRun(f"{path}: damaged at byte {pos} (a record's data fails its checksum)")
        yield body
        pos = end


def _scalars_of(body: bytes, path: Path, points: dict[str, dict[int, float]]) -> None:
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2

    try:
        event = event_pb2.Event.FromString(body)
    except DecodeError as err:
        raise UnreadableRun(f"{path}: a record is not a TensorBoard event ({err})") from None
    for v in event.summary.value:
        kind = v.WhichOneof("value")
        if kind == "simple_value":
            points.setdefault(v.tag, {})[event.step] = float(v.simple_value)
        elif kind == "tensor" and v.metadata.plugin_data.plugin_name == "scalars":
            from tensorboard.util.tensor_util import make_ndarray

            points.setdefault(v.tag, {})[event.step] = float(make_ndarray(v.tensor).item())


def read_events(run_dir) -> dict[str, tuple[list[int], list[float]]]:
    """{tag: (steps, values)} of every scalar the run logged, sorted by step; raises UnreadableRun."""
    files = event_files(run_dir)
    if not files:
        raise UnreadableRun(f"{run_dir}: no TensorBoard event file")
    key = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    return _read_events(key)


@cache
def _read_events(files: tuple) -> dict[str, tuple[list[int], list[float]]]:
    points: dict[str, dict[int, float]] = {}
    for i, (name, _, _) in enumerate(files):
        path = Path(name)
        try:
            for body in _records(path):
                _scalars_of(body, path, points)
        except _CutShort as cut:
            if i == len(files) - 1:  # the newest file: the run stopped while writing, its data is gone
                raise UnreadableRun(f"{path}: cut short at byte {cut.args[0]} of {path.stat().st_size} "
                                    "(a run still writing, or a damaged copy)") from None
    return {tag: (sorted(p), [p[s] for s in sorted(p)]) for tag, p in points.items()}


def read_scalars(run_dir, tag: str):
    """(steps, values) of one scalar tag as numpy arrays (int64, float64); KeyError when not logged."""
    import numpy as np

    scalars = read_events(run_dir)
    if tag not in scalars:
        raise KeyError(f"tag {tag!r} not logged in {run_dir}; logged: {sorted(scalars)}")
    steps, values = scalars[tag]
    return np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64)


def scalar_tags(run_dir) -> list[str]:
    """The scalar tags logged in ``run_dir``."""
    return sorted(read_events(run_dir))


def _yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UnreadableRun(f"{path}: not readable YAML ({type(err).__name__})") from None
    if data is not None and not isinstance(data, dict):
        raise UnreadableRun(f"{path}: not a mapping")
    return data or {}


def read_hparams(run_dir) -> dict:
    """The run's ``hparams.yaml`` (what ZOModule logged: rule, lr, seed, task arguments), {} if absent."""
    path = Path(run_dir) / "hparams.yaml"
    return _yaml(path) if path.exists() else {}


def read_config(run_dir) -> dict:
    """The run's ``config.yaml`` (the full LightningCLI config), {} if absent."""
    path = Path(run_dir) / "config.yaml"
    return _yaml(path) if path.exists() else {}


class Run:
    """One run directory: its ``hparams.yaml`` and its scalars, each read once."""

    def __init__(self, path):
        self.path = Path(path)
        self._hp: dict | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        """SWEEP/RUN_ID, as the scoreboard names a run."""
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def hp(self) -> dict:
        if self._hp is None:
            if not (self.path / "hparams.yaml").exists():
                raise UnreadableRun(f"{self.path}: no hparams.yaml")
            self._hp = read_hparams(self.path)
        return self._hp

    @property
    def scalars(self) -> dict[str, tuple[list[int], list[float]]]:
        return read_events(self.path)

    def series(self, tag: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a tag, ([], []) when not logged."""
        return self.scalars.get(tag, ([], []))

    def first(self, tag: str) -> float:
        values = self.series(tag)[1]
        return values[0] if values else float("nan")

    def last(self, tag: str) -> float:
        values = self.series(tag)[1]
        return values[-1] if values else float("nan")


def label(rule: str) -> str:
    """A rule class's display name (its ``label``, e.g. ``ZOSGD`` -> ``ZO-SGD``); the name itself when zolab
    has no such rule. Imports zolab.rules (and torch) only here: a scoreboard without runs never labels one."""
    import zolab.rules

    cls = getattr(zolab.rules, str(rule), None)
    return getattr(cls, "label", "") or str(rule)
