"""The cluster's image registry: Debian's docker-registry (distribution v2), run detached by fence like its nginx."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from fence.errors import RegistryUnavailable, ToolMissing
from fence.home import NodeHome

log = logging.getLogger(__name__)

_BINARY = "docker-registry"
_HINT = "install Debian's docker-registry package (scripts/ensure-engine does)"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class RegistryStatus:
    """Whether the registry runs, and where."""

    running: bool
    pid: int | None
    address: str


def render_config(*, host_storage: Path, address: str) -> str:
    """The registry's config.yml: storage under FENCE_HOME, plain HTTP on ``address``, no auth.

    Debian's shipped config has an ``auth.htpasswd`` block pointing at a directory; fence's has
    none: the registry listens on an address the admin chose (loopback by default), and nodes
    reach it as an insecure registry (127.0.0.0/8 is one by default).
    """
    import yaml

    return yaml.safe_dump({
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {"filesystem": {"rootdirectory": str(host_storage)}, "delete": {"enabled": True},
                    "cache": {"blobdescriptor": "inmemory"}},
        "http": {"addr": address, "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }, sort_keys=False)


def answers(address: str, *, timeout: float = 3.0) -> bool:
    """Whether a distribution v2 registry answers at ``address`` (``GET /v2/``)."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=timeout) as reply:  # noqa: S310 - http on purpose
            return reply.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # one with auth still answers
    except (OSError, ValueError):
        return False


class Registry:
    """The registry fence runs on the controller: detached, so it outlives a daemon restart.

    Args:
        home: the node's FENCE_HOME (the registry's folder is ``home.host_registry``).
        binary: the registry program.
    """

    def __init__(self, *, home: NodeHome, binary: str = _BINARY) -> None:
        self._home = home
        self._host_dir = home.host_registry
        self._binary = binary
        self.host_conf = home.host_registry_conf
        self.host_pid = home.host_registry_pid
        self.host_log = home.host_registry_log
        self.host_storage = home.host_registry_storage

    def ensure(self, *, address: str) -> RegistryStatus:
        """Start the registry on ``address`` unless it runs there already (restarted on a new address).

        Raises:
            ToolMissing: docker-registry is not installed.
            RegistryUnavailable: it did not come up (the log's last line says why).
        """
        text = render_config(host_storage=self.host_storage, address=address)
        pid = self._running_pid()
        if pid is not None and self.host_conf.exists() and self.host_conf.read_text() == text:
            return RegistryStatus(running=True, pid=pid, address=address)
        self.stop()
        binary = shutil.which(self._binary) or shutil.which(self._binary, path="/usr/bin:/usr/sbin")
        if binary is None:
            raise ToolMissing(tool=self._binary, hint=_HINT)
        if answers(address):
            raise RegistryUnavailable(address=address, detail="is taken by another registry that fence did not start")
        self._host_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.host_storage.mkdir(exist_ok=True, mode=0o750)
        self.host_conf.write_text(text)
        with open(self.host_log, "ab") as out:
            proc = subprocess.Popen([binary, "serve", str(self.host_conf)], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out, close_fds=True, start_new_session=True,
                                    cwd=self._host_dir)
        self.host_pid.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if answers(address, timeout=1.0):
                log.info("registry: started on %s (pid %s)", address, proc.pid)
                return RegistryStatus(running=True, pid=proc.pid, address=address)
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self.host_pid.unlink(missing_ok=True)
        last = (self.host_log.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
        raise RegistryUnavailable(address=address, detail=f"did not come up: {last[:300]}")

    def status(self, *, address: str) -> RegistryStatus:
        """Whether fence's registry runs (and answers at ``address``)."""
        pid = self._running_pid()
        return RegistryStatus(running=pid is not None and answers(address), pid=pid, address=address)

    def stop(self) -> None:
        """Stop fence's registry (TERM, then KILL); nothing to do when it does not run."""
        pid = self._running_pid()
        if pid is not None:
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT)
            except psutil.NoSuchProcess:
                pass
        self.host_pid.unlink(missing_ok=True)

    def _running_pid(self) -> int | None:
        """The pid of this registry, or ``None``: the process must be docker-registry serving this
        folder's config, so a reused pid is never taken for ours."""
        try:
            pid = int(self.host_pid.read_text().strip())
            cmdline = psutil.Process(pid).cmdline()
        except (FileNotFoundError, ValueError, psutil.Error):
            return None
        if cmdline[-2:] == ["serve", str(self.host_conf)] and os.path.basename(cmdline[0]) == self._binary:
            return pid
        return None
