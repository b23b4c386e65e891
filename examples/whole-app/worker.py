"""The worker process of the whole-app sample: no port, prints a line every second."""

import os
import signal
import sys
import time


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    name = f"worker.{os.environ.get('INSTANCE_INDEX', '?')}"
    beat = 0
    while True:
        print(f"whole-app {name} beat {beat} (PORT={'set' if 'PORT' in os.environ else 'unset'})", flush=True)
        beat += 1
        time.sleep(1)


if __name__ == "__main__":
    main()
