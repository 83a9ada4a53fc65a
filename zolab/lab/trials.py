"""What a sweep's trial records: its run's arguments as they read on any machine, its final metrics; and the table.

A trial (``zolab.lab.study``) holds its run's ``zolab fit`` arguments with the root left out and each YAML file
named by the hash of its content (``fingerprint``; ``diff`` says how two differ), and, once it ends, its final
metrics (``final_metrics``): the last logged ``train/loss``, ``train/forwards`` and every ``val/*`` and ``test/*``
scalar of the run's event files (a resumed run's later file wins at equal steps), and ``steps``, the global step
of its newest checkpoint. ``table`` prints one row per run of a sweep from the storage alone: its grid values,
status, metrics and seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from optuna.trial import TrialState

from zolab.lab.rundir import newest_checkpoint

KEPT = ("train/loss", "train/forwards")  # with every val/* and test/*


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def fingerprint(run) -> list[str]:
    """The run's ``zolab fit`` arguments as they read on any machine: the root left out, each YAML file named by
    its file name and the hash of its content (a base edited under a study counts as a changed run)."""
    out = []
    for arg in run.args:
        if arg.startswith("--trainer.default_root_dir="):
            continue
        key, sep, value = arg.partition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
        if value.endswith((".yaml", ".yml")) and Path(value).is_file():
            value = f"{Path(value).name}#{_digest(Path(value))}"
        out.append(f"{key}{sep}{value}")
    return out


def _flat(args) -> list[str]:
    """Arguments with each inline JSON mapping (a base given inline) spelled as dotted ``KEY=VALUE`` entries."""
    out = []
    for arg in args or []:
        try:
            value = json.loads(arg) if arg.startswith("{") else None
        except ValueError:
            value = None
        if not isinstance(value, dict):
            out.append(arg)
            continue
        stack = [("", value)]
        while stack:
            prefix, node = stack.pop()
            for k, v in node.items():
                if isinstance(v, dict) and v:
                    stack.append((f"{prefix}{k}.", v))
                else:
                    out.append(f"{prefix}{k}={json.dumps(v)}")
    return out


def diff(old, new) -> str:
    """How two runs' arguments differ: ``-ARG +ARG`` (an inline base compared key by key)."""
    old, new = _flat(old), _flat(new)
    gone, came = [a for a in old if a not in new], [a for a in new if a not in old]
    return "arguments " + " ".join([*(f"-{a}" for a in gone), *(f"+{a}" for a in came)] or ["reordered"])


def final_metrics(run_dir, prefixes=("val/", "test/")) -> dict[str, float]:
    """{tag: last value} of the run's event files, plus ``steps``; {} for a run without event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    run_dir = Path(run_dir)
    last: dict[str, tuple[int, float]] = {}
    files = sorted(run_dir.glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if not (v.tag in KEPT or v.tag.startswith(prefixes)):
                    continue
                kind = v.WhichOneof("value")
                value = v.simple_value if kind == "simple_value" else (
                    float(tensor_util.make_ndarray(v.tensor)) if kind == "tensor" else None)
                if value is not None and (v.tag not in last or event.step >= last[v.tag][0]):
                    last[v.tag] = (event.step, float(value))
    metrics = {tag: value for tag, (_, value) in sorted(last.items())}
    _, step, _ = newest_checkpoint(run_dir) if run_dir.is_dir() else (None, -1, [])
    if step >= 0:
        metrics["steps"] = step
    elif "train/loss" in last:
        metrics["steps"] = last["train/loss"][0] + 1
    return metrics


def objective(metrics: dict) -> float | None:
    """What a sweep's trial reports as its value: the final ``val/loss``, else the final ``train/loss``."""
    return metrics.get("val/loss", metrics.get("train/loss"))


def status(trials) -> str:
    """A run's status from its trials (oldest first): done once any finished, else its newest trial's."""
    if any(t.state == TrialState.COMPLETE for t in trials):
        return "done"
    newest = trials[-1]
    if newest.state == TrialState.WAITING:
        return "pending"
    if newest.state == TrialState.RUNNING:
        return "running"
    if newest.state == TrialState.PRUNED:
        return "pruned"
    return newest.user_attrs.get("status") or "failed"


def best_attempt(trials):
    """The trial whose record a run shows: its newest finished one, else its newest."""
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    return (done or trials)[-1]


def _short(value) -> str:
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        return Path(value).stem
    if isinstance(value, dict) and "class_path" in value:
        return str(value["class_path"]).rsplit(".", 1)[-1]
    if isinstance(value, str) and "." in value and " " not in value and not value.replace(".", "").isdigit():
        return value.rsplit(".", 1)[-1]
    if isinstance(value, list | tuple):
        return ",".join(map(_short, value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def rows(by_run: dict, run_ids, keys) -> list[dict]:
    """One dict per run id (in ``run_ids`` order): ``run``, each grid key's value, ``status``, metrics, seconds."""
    out = []
    for rid in run_ids:
        trials = by_run.get(rid)
        if not trials:
            out.append({"run": rid, "status": "not in the study"})
            continue
        shown = best_attempt(trials)
        attrs = shown.user_attrs
        row = {"run": rid, **{k: (attrs.get("values") or {}).get(k) for k in keys}, "status": status(trials)}
        row.update(attrs.get("metrics") or {})
        row["seconds"] = attrs.get("seconds")
        row["error"] = attrs.get("error") if row["status"] != "done" else ""
        out.append(row)
    return out


def table(rows_: list[dict], keys) -> str:
    """A text table: run, grid values, status, steps, the metrics any run has, seconds."""
    present = {k for r in rows_ for k, v in r.items() if v is not None}
    metric_cols = ["train/loss"] + sorted(k for k in present if k.startswith("val/")) + sorted(
        k for k in present if k.startswith("test/")) + ["train/forwards"]
    cols = ["run", *keys, "status", "steps", *[c for c in metric_cols if c in present], "seconds"]
    heads = [c.rsplit(".", 1)[-1] if c in keys else ("forwards" if c == "train/forwards" else c) for c in cols]
    cells = [heads]
    for r in rows_:
        line = []
        for c in cols:
            v = r.get(c)
            if c in ("run", "status"):
                line.append(str(v if v is not None else "-"))
            elif c in keys:
                line.append(_short(v) if v is not None else "-")
            elif c == "steps" or c == "train/forwards":
                line.append(_number(int(v)) if isinstance(v, int | float) and math.isfinite(v) else _number(v))
            elif c == "seconds":
                line.append(f"{v:.1f}" if v else "-")
            else:
                line.append(_number(v))
        cells.append(line)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    text = ["  ".join(cell.ljust(w) if i == 0 or cols[i] in keys or cols[i] == "status" else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in cells]
    return "\n".join([text[0], "  ".join("-" * w for w in widths), *text[1:]])
