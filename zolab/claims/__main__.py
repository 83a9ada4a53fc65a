"""``python -m zolab.claims``: the claims scoreboard."""

import sys

from zolab.claims import main

sys.exit(main())
