"""``python -m zolab.claims``: the same as ``zolab claims``."""

import sys

from zolab.claims.command import main

sys.exit(main())
