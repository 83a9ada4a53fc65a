"""A sweep file: a base config and a grid of ``zolab fit`` overrides, expanded into its runs in order.

A sweep file::

    name: beta1_ablation               # runs go to runs/NAME/RUN_ID (TensorBoard: one run per RUN_ID)
    base: ../radazo/base.yaml          # a config (path relative to this file) or an inline mapping
    grid:                              # dotted config keys -> values; one run per combination,
      model.optimizer.init_args.betas: [[0.0, 0.99], [0.5, 0.99], [0.9, 0.99], [0.99, 0.99]]
    args: [--trainer.max_steps=2000]   # optional: extra command-line overrides for every run

Each run is exactly ``zolab fit --config BASE --KEY=VALUE ... --name NAME --version RUN_ID``, so a grid value
means what it means on the command line: a class path (``model.task: zolab.tasks.synthetic.Levy``), a mapping,
or a YAML file (a path relative to the sweep file) whose entries are merged onto the base, as LightningCLI does.
The first grid key varies slowest. RUN_ID joins one short label per key (a class or file name, else
``key=value``; shortened with a hash beyond 255 bytes); NAME is one directory name, so runs stay inside the
root. What the labels say holds: ``args`` and command-line overrides come after the grid values, so one that
sets a grid key (or a key above it) is an error, as is a key written twice in the file; an override below a
grid key refines every run (``--model.task.init_args.dim=8`` with a grid over ``model.task``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zolab.lab.rundir import NAME_MAX, check_name

SWEEP_KEYS = ("name", "base", "grid", "args", "root")


@dataclass
class Run:
    """One run of a sweep: its id, the grid values it takes, and its ``zolab fit`` arguments."""

    run_id: str
    values: dict
    args: list[str]
    run_dir: Path
    status: str = "pending"
    seconds: float = 0.0
    error: str = ""
    extra: list[str] = field(default_factory=list)
    steps: int | None = None  # global_step at the end (in-process runs)
    loss: float | None = None  # the last train/loss shown (in-process runs)
    signum: int | None = None  # the signal that interrupted it


def _label(key: str, value) -> str:
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        return Path(value).stem
    if isinstance(value, dict) and "class_path" in value:
        return str(value["class_path"]).rsplit(".", 1)[-1]
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+", value):
        return value.rsplit(".", 1)[-1]  # a class path
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return f"{key.rsplit('.', 1)[-1]}={text}"


def _safe(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", text)
    return "_" + text if text in (".", "..") else text


def _resolve(value, here: Path):
    """A YAML file path relative to the sweep file becomes absolute; everything else stays."""
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        path = Path(value) if Path(value).is_absolute() else here / value
        if not path.exists():
            raise ValueError(f"sweep: file {value!r} not found (paths are relative to the sweep file, {here})")
        return str(path.resolve())
    return value


def _cli_value(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)  # numbers, booleans, lists and mappings: JSON is YAML, which jsonargparse reads


def _display(path: str) -> str:
    """Relative to the working directory when below it (shorter commands), else absolute."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, but a key written twice in one mapping is an error (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ValueError(f"key {key!r} appears twice (lines {seen[key]} and {line}): YAML would keep the "
                                 "last one only; allowed: each key once (a grid key lists all its values)")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _config_key(dotted: str) -> str:
    """A config key as it reaches the config: ``init_args`` implied (``--model.optimizer.lr``), and a class path
    is the value it replaces (``model.task.class_path`` sets ``model.task``)."""
    parts = [p for p in dotted.split(".") if p != "init_args"]
    return ".".join(parts[:-1] if parts[-1:] == ["class_path"] else parts)


def _leaves(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in data.items():
        keys += _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return keys


def _overrides(common: list[str]) -> list[tuple[str, str]]:
    """(argument, config key) for every key the common arguments set; a ``--config`` file sets its leaves."""
    found = []
    for i, arg in enumerate(common):
        key, _, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key == "config":
            value = value or (common[i + 1] if i + 1 < len(common) else "")
            try:
                data = yaml.safe_load(Path(value).read_text(encoding="utf-8") if value.endswith((".yaml", ".yml"))
                                      else value)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue  # zolab fit names the bad file itself
            found += [(arg, k) for k in _leaves(data)] if isinstance(data, dict) else []
        elif key:
            found.append((arg, key.rstrip("+")))
    return found


def _check_overrides(grid: dict, common: list[str]) -> None:
    """The common arguments come after the grid values on each run's command line: one that sets a grid key (or a
    key above it) would give every run its value whatever the run's label."""
    for arg, key in _overrides(common):
        for g in grid:
            if _config_key(g) == _config_key(key) or _config_key(g).startswith(_config_key(key) + "."):
                raise ValueError(f"sweep: {arg!r} (args: or the command line) sets the grid key {g}: every run would "
                                 "take its value whatever its label; allowed: overrides of other keys, or of keys "
                                 "below a grid key (e.g. --model.task.init_args.dim=8 with a grid over model.task)")


def load(spec, root: str | None = None, extra_args: list[str] | None = None,
         name: str | None = None) -> tuple[str, list[Run]]:
    """Parse a sweep (a path or a mapping) into its name and its runs, in order; ``root``, ``name`` and
    ``extra_args`` (``--KEY=VALUE`` for every run) override the file's. Raises ValueError naming the bad
    entry (a name that is not one directory name included)."""
    if isinstance(spec, str | Path):
        path = Path(spec)
        if not path.exists():
            raise ValueError(f"sweep file {str(spec)!r} not found")
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeys)  # a SafeLoader
        except (UnicodeDecodeError, yaml.YAMLError) as err:
            raise ValueError(f"sweep file {path}: not readable YAML: {err}") from None
        except ValueError as err:
            raise ValueError(f"sweep file {path}: {err}") from None
        here, default_name = path.resolve().parent, path.stem
    else:
        here, data, default_name = Path.cwd(), spec, "sweep"
    if not isinstance(data, dict):
        raise ValueError(f"a sweep must be a mapping with keys {list(SWEEP_KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ValueError(f"sweep: unknown key(s) {unknown}; allowed: {list(SWEEP_KEYS)}")
    name = check_name("sweep: name", name or data.get("name") or default_name)
    base = data.get("base")
    if base is None:
        base_args = []
    elif isinstance(base, str):
        base_args = ["--config", _display(_resolve(base, here)) if base.endswith((".yaml", ".yml")) else base]
    elif isinstance(base, dict):
        base_args = ["--config", json.dumps(base)]
    else:
        raise ValueError(f"sweep: base must be a config path or a mapping, got {type(base).__name__}")
    grid = data.get("grid") or {}
    if not isinstance(grid, dict):
        raise ValueError(f"sweep: grid must map dotted keys to lists of values, got {type(grid).__name__}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep: grid[{key!r}] must be a non-empty list of values, got {values!r}")
    common = [str(a) for a in (data.get("args") or [])] + list(extra_args or [])
    for a in common:
        if re.match(r"--(name|version|trainer\.default_root_dir)(=|$)", a):
            raise ValueError(f"sweep: {a!r}: the sweep sets --name, --version and the root itself (use name: and "
                             "root: in the sweep file, or --root)")
    _check_overrides(grid, common)
    root = Path(root or data.get("root") or "runs")
    runs, seen = [], {}
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
        values = dict(zip(keys, combo, strict=True))
        run_id = _safe("-".join(_label(k, v) for k, v in values.items()) or "run")
        if len(run_id) > NAME_MAX:  # ASCII: a directory name of at most NAME_MAX bytes, still unique
            run_id = f"{run_id[:NAME_MAX - 13]}-{hashlib.sha1(run_id.encode()).hexdigest()[:12]}"
        if run_id in seen:
            raise ValueError(f"sweep: two runs would share the id {run_id!r}: {seen[run_id]} and {values}")
        seen[run_id] = values
        args = ["fit", *base_args]
        for k, v in values.items():
            v = _resolve(v, here)
            args.append(f"--{k}={_display(v) if isinstance(v, str) and os.path.isabs(v) else _cli_value(v)}")
        args += [*common, f"--trainer.default_root_dir={root}", f"--name={name}", f"--version={run_id}"]
        runs.append(Run(run_id, values, args, root / name / run_id))
    return name, runs
