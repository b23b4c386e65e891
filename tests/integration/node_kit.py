"""A whole fence node for integration tests: its own FENCE_HOME, daemon, router port and nginx."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Self, TypeVar

from fence import labels
from fence.home import NodeHome
from tests.conftest import CliResult, run_cli

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 60, interval: float = 0.2) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something true.

    Returns:
        What it returned then.

    Raises:
        AssertionError: it returned nothing true within ``timeout`` seconds (generous bounds:
            the machine is loaded).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout:g} s (last: {value!r:.200})")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port nothing listens on now (on loopback)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Node:
    """One test node; ``start()`` runs its daemon, ``close()`` stops it, its apps and nginx."""

    root: Path
    router_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def home(self) -> NodeHome:
        return NodeHome(host_root=self.root)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "FENCE_HOME": str(self.root)}

    def cli(self, *args: str, timeout: float = 600, stdin: str | None = None) -> CliResult:
        """`fence …` / `kato …` against this node (first argument picks the program)."""
        return run_cli(args[0], *args[1:], timeout=timeout, env=self.env, stdin=stdin)

    def start(self) -> None:
        """Start the daemon (the first time with this node's router port and buildpack root set)
        and return once it answers on its socket."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "config.yml").exists():
            # Written in-process (each CLI call costs an interpreter start, seconds on a loaded
            # machine); `kato config set` has tests of its own.
            from fence.wiring import config_store
            config = config_store(self.home)
            config.set("fence", "router/port", str(self.router_port))
            # Tests name buildpack folders they wrote in this pytest session's temporary folder.
            config.set("fence", "staging/buildpack_roots", json.dumps([str(self.root.parents[1])]), as_json=True)
        log = open(self.root / "daemon.log", "ab")  # noqa: SIM115 - lives as long as the daemon
        self.proc = subprocess.Popen([sys.executable, "-m", "fence", "serve"], stdout=log, stderr=log,
                                     env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.answers():
                return
            assert self.proc.poll() is None, (self.root / "daemon.log").read_text()[-3000:]
            time.sleep(0.05)
        raise AssertionError("daemon did not answer within 30 s")

    def answers(self) -> bool:
        """Whether the daemon answers ``GET /v1/node`` (what `kato status` asks) on its socket."""
        import httpx

        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.root / "fence.sock")),
                              base_url="http://fence") as client:
                return client.get("/v1/node", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def kill_daemon(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop_daemon(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def app(self, name: str) -> dict:
        result = self.cli("fence", "app", name, "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    def url_get(self, name: str, path: str = "/", timeout: float = 5,
                address: str = "127.0.0.1") -> tuple[int, str]:
        """GET through the router (at ``address``), with the app's host name."""
        request = urllib.request.Request(f"http://{address}:{self.router_port}{path}",
                                         headers={"Host": f"{name}.localhost"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def containers(self, role: str = labels.ROLE_INSTANCE) -> list[str]:
        out = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={labels.NODE}={self.home.node_id}",
                              "--filter", f"label={labels.ROLE}={role}"], capture_output=True, text=True, check=True)
        return sorted(out.stdout.split())

    def close(self) -> None:
        """Stop the daemon, remove everything this node created, stop its nginx."""
        self.stop_daemon()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={labels.NODE}={self.home.node_id}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        networks = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"label={labels.NODE}={self.home.node_id}"],
                                  capture_output=True, text=True).stdout.split()
        if networks:  # each app's own network (its containers are gone now)
            subprocess.run(["docker", "network", "rm", *networks], capture_output=True)
        volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label={labels.NODE}={self.home.node_id}"],
                                 capture_output=True, text=True).stdout.split()
        if volumes:  # services' data a failed test did not delete (CI once kept one after an engine restart)
            subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True)
        from fence.router.nginx import NginxRouter
        NginxRouter(host_dir=self.root / "router").stop()


class Background:
    """Runs its ``targets`` in daemon threads while open (``with``); on exit sets ``_stop``,
    which the targets watch, and joins them (the probes and pollers of every tier)."""

    def __init__(self, *targets: Callable[[], None]) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=target, name=f"{type(self).__name__}-{n}", daemon=True)
                         for n, target in enumerate(targets)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


class Poller(Background):
    """Sends GET requests through the router every 50 ms in the background, counting outcomes."""

    def __init__(self, node: Node, app: str, interval: float = 0.05) -> None:
        super().__init__(self._run)
        self.node, self.app, self.interval = node, app, interval
        self.outcomes: Counter[str] = Counter()
        self.bodies: Counter[str] = Counter()
        self.failures: list[str] = []

    def _run(self) -> None:
        deadline = time.monotonic() + 600  # bounded, whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = self.node.url_get(self.app, timeout=5)
                self.outcomes[str(status)] += 1
                self.bodies[body.strip()[:80]] += 1
                if status != 200:
                    self.failures.append(f"{status}: {body[:80]}")
            except OSError as exc:
                self.outcomes["error"] += 1
                self.failures.append(repr(exc))
            time.sleep(self.interval)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())


def started_node(root: Path) -> Iterator[Node]:
    """A node at ``root`` with its daemon running (``yield from`` it in a fixture); closed after."""
    node = Node(root=root)
    node.start()
    yield node
    node.close()
