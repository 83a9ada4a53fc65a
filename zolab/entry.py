"""The ``zolab`` command: ``claims`` answers without importing torch or Lightning; the rest goes to zolab.lab.cli."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["claims"]:
        from zolab.claims import main as claims_main

        return claims_main(args[1:])
    from zolab.lab.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
