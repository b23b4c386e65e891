"""The release phase of the whole-app sample: runs once per new release, before any instance."""

import os

print(f"whole-app release phase for {os.environ.get('STACKATO_APP_NAME', '?')}: nothing to migrate", flush=True)
