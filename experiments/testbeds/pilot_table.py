"""The testbeds' pilot table: per run, its start and end accuracy, steps, batch, step size and forwards.

    python experiments/testbeds/pilot_table.py runs/t1_pilot/version_0 runs/t2_pilot/version_0
    python experiments/testbeds/pilot_table.py --cache runs/.cache     # what computing each feature file cost

For each run directory of ``zolab fit`` (its ``config.yaml``, ``hparams.yaml`` and event files): the start,
i.e. the task as its config builds it before any step (the initial parameters, seeded), evaluated on the
validation and test splits; ``val/acc`` at each validation; the final ``test/acc`` (``FinalTest``); the
steps, the training batch, the step size, the forwards (``train/forwards``) and the test gain in points.
Run it from the repository root (the configs' ``../shared/data`` and the feature cache under ``runs/``).
``--cache DIR``: one line per cached feature file (``zolab.tasks.feature_cache``) with what its computation
recorded (sentences, seconds, threads; CPU seconds where recorded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from paper_figures._tb import read_config, read_hparams, read_scalars  # noqa: E402
from zolab.lab.final_test import evaluate  # noqa: E402


def start_metrics(run_dir: Path) -> dict[str, float]:
    """val/acc and test/acc of the run's task at its initial parameters (built from the run's config.yaml)."""
    from zolab.lab.cli import cli_main

    config = {k: v for k, v in read_config(run_dir).items() if k not in ("ckpt_path", "weights_only")}
    config["trainer"] = {**config["trainer"], "logger": False, "enable_progress_bar": False,
                         "enable_checkpointing": False, "callbacks": []}
    cli = cli_main(config, run=False)
    data, task = cli.datamodule, cli.model.task
    data.setup("fit")
    return {f"{split}/{k}": v for split, loader in (("val", data.val_dataloader()), ("test", data.test_dataloader()))
            for k, v in evaluate(task, loader, torch.device("cpu")).items()}


def row(run_dir: Path) -> tuple[str, float, float]:
    """The table's row of a run, its final test accuracy and its test gain (points)."""
    hp, config = read_hparams(run_dir), read_config(run_dir)
    start = start_metrics(run_dir)
    steps, forwards = read_scalars(run_dir, "train/forwards")
    val_steps, val_acc = read_scalars(run_dir, "val/acc")
    test_acc = read_scalars(run_dir, "test/acc")[1][-1]
    batch = config["data"]["init_args"]["batch_size"]
    vals = ", ".join(f"{s + 1}: {100 * v:.2f}" for s, v in zip(val_steps, val_acc))
    gain = 100 * (test_acc - start["test/acc"])
    return (f"| {run_dir} | {hp['rule']} | {hp['lr']:g} | {batch} | {hp['max_steps']:,} | {int(forwards[-1]):,} | "
            f"{hp['task_params']:,} | {100 * start['val/acc']:.2f} | {100 * start['test/acc']:.2f} | {vals} | "
            f"{100 * test_acc:.2f} | {gain:+.2f} |", 100 * test_acc, gain)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (runs/NAME/VERSION)")
    parser.add_argument("--cache", type=Path, help="a feature cache folder (runs/.cache): print its files' costs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.cache is not None:
        for path in sorted((args.cache / "features").glob("*.pt")):
            meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
            cpu = f", {meta['cpu_seconds']:.0f} CPU-s" if "cpu_seconds" in meta else ""
            print(f"{path.name}: {meta['rows']:,} sentences, {meta['seconds']:.0f} s{cpu}, {meta['threads']} thread(s)")
    if not args.runs:
        return 0
    rows = [row(run) for run in args.runs]
    print("| run | rule | lr | batch | steps | forwards | d | start val acc | start test acc | val acc (step: value) "
          "| final test acc | test gain (points) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(r[0] for r in rows))
    groups: dict[Path, list] = {}
    for run, r in zip(args.runs, rows):
        groups.setdefault(run.parent, []).append(r)
    for group, members in groups.items():  # runs of one testbed (runs/NAME/*): their spread over seeds
        acc = torch.tensor([m[1] for m in members], dtype=torch.float64)
        gains = [m[2] for m in members]
        spread = f" ± {acc.std().item():.2f} (sd over runs)" if len(members) > 1 else ""
        print(f"{group}: {len(members)} run(s), final test acc {acc.mean().item():.2f}{spread}, "
              f"test gain min {min(gains):+.2f}, mean {sum(gains) / len(gains):+.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
