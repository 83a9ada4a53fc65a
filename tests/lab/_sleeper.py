"""A stand-in worker for the test of ``workers.spawn``: says it is ready, waits for a signal, exits 128 + it."""

import os
import signal
import sys
import time
from pathlib import Path


def main(argv):
    folder, worker = Path(argv[0]), next(a for a in argv if a.startswith("--worker=")).split("=", 1)[1]

    def stop(signum, frame):
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    (folder / f"ready-{worker}").write_text(os.environ.get("OMP_NUM_THREADS", ""))
    time.sleep(120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
