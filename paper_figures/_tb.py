"""The figure scripts' name for zolab's one event-file reader, ``zolab.claims.events`` (see its docstring).

    steps, values = read_scalars("runs/radazo_fig1/Quadratic-RAdaZO", "train/loss")
"""

from zolab.claims.events import (  # noqa: F401 - re-exported
    Run,
    UnreadableRun,
    event_files,
    find_runs,
    label,
    read_config,
    read_hparams,
    read_scalars,
    scalar_tags,
)

__all__ = ["Run", "UnreadableRun", "event_files", "find_runs", "label", "read_config", "read_hparams", "read_scalars",
           "scalar_tags"]
