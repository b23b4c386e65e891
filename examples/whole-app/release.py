"""The release phase of the whole-app sample: runs once per new release, before any instance."""

import os
import time

print(f"whole-app release phase for {os.environ.get('STACKATO_APP_NAME', '?')} at {time.time():.6f}: "
      "nothing to migrate", flush=True)
