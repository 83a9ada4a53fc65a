"""``zolab``: the LightningCLI entry point (``zolab fit --config experiments/...yaml``)."""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

from zolab.module import ZOModule


class ZOLabCLI(LightningCLI):
    pass


def cli_main(args=None, run: bool = True):
    return ZOLabCLI(
        ZOModule,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"max_steps": 1000, "num_sanity_val_steps": 0},
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cli_main(argv)


if __name__ == "__main__":
    main()
