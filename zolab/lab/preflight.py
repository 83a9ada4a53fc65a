"""Checks before training: a ``--ckpt_path`` that fits the task and the rule, a run directory without another run.

Each raises ``ValueError`` with a message that names the checkpoint, the tensor or setting, or the run directory
(``zolab.lab.cli`` reports it as ``zolab: error: ...``, exit status 2), before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from zolab.lab.rundir import CheckpointError, checkpoint_files, read_checkpoint


def check_resume(module, optimizer, path: Path, ckpt: dict) -> None:
    """The checkpoint ``ckpt`` (read from ``path``) holds ``module``'s tensors with their shapes and one
    optimizer state whose settings ``optimizer`` accepts (its ``load_state_dict`` compares them); records the
    resume in ``module.extra_hparams``. No tensor is copied."""
    where = f"--ckpt_path={path}"
    mine = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    saved = {k: tuple(getattr(v, "shape", ())) for k, v in ckpt["state_dict"].items()}
    changed = [f"{k}: shape {list(saved[k])} (saved) -> {list(mine[k])} (now)"
               for k in sorted(mine.keys() & saved.keys()) if mine[k] != saved[k]]
    changed += [f"{k}: missing (now)" for k in sorted(saved.keys() - mine.keys())]
    changed += [f"{k}: missing (saved)" for k in sorted(mine.keys() - saved.keys())]
    if changed:
        raise ValueError(f"{where}: the checkpoint's task has other tensors: " + "; ".join(changed[:8]) +
                         (" ..." if len(changed) > 8 else "") + ". Resume with the saved model.task settings")
    states = ckpt["optimizer_states"]
    if len(states) != 1:
        raise ValueError(f"{where}: {len(states)} optimizer states saved; a zolab run has one")
    state = {k: v for k, v in states[0].items() if k != "state"}  # settings only: no tensor is copied
    try:
        optimizer.load_state_dict({**state, "state": {}})
    except (ValueError, KeyError) as err:
        hint = " (zolab fit: --model.resume_overrides=[lr])" if "resume_overrides" in str(err) else ""
        raise ValueError(f"{where}: {err}{hint}") from None
    module.extra_hparams["resumed_from"] = str(path)
    module.extra_hparams["resumed_at_step"] = int(ckpt["global_step"])


def check_run_dir(run_dir: Path, resume: tuple[Path, dict] | None) -> None:
    """A fresh run (``resume`` None) needs a run directory without checkpoints; a run resumed from
    ``resume = (path, checkpoint)`` needs its checkpoint among the directory's and none newer than it (it would
    be overwritten)."""
    existing = checkpoint_files(run_dir)
    source = resume[0].resolve() if resume else None
    if existing and (source is None or source not in {p.resolve() for p in existing}):
        raise ValueError(
            f"run directory {run_dir} already holds checkpoints ({', '.join(p.name for p in existing[:3])}) of "
            "another run: choose another --version, or resume one of them with --ckpt_path")
    if source is None or not existing:
        return
    step = int(resume[1]["global_step"])
    for p in existing:
        try:
            other = int(read_checkpoint(p, keys=("global_step",))["global_step"])
        except CheckpointError:
            continue
        if other > step:
            raise ValueError(f"--ckpt_path={resume[0]} (step {step}): {p} in the same run is newer (step {other}) "
                             "and would be overwritten: resume from it, or write to another --version")
