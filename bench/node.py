"""A throw-away fence node for benchmarks: its own FENCE_HOME, daemon, router port, and clean-up."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fence import labels
from fence.client import FenceClient
from fence.home import NodeHome

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
BUILDPACKS = REPO / "buildpacks"
STACK = os.environ.get("FENCE_TEST_IMAGE", "fence/stack:bookworm")

if TYPE_CHECKING:
    from fence.service import NodeService


def free_port() -> int:
    """A TCP port nothing listens on now (on loopback)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(port: int, *, host: str = "localhost", address: str = "127.0.0.1",
             timeout: float = 1.0) -> tuple[int, str]:
    """One GET of ``/`` on address:port with a Host header; ``(0, "")`` when nothing answers."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return 0, ""
    finally:
        conn.close()


def wait_for_200(port: int, *, host: str = "localhost", containing: str = "", timeout: float = 120.0,
                 interval: float = 0.005, address: str = "127.0.0.1") -> float:
    """Poll until a GET answers 200 (with ``containing`` in the body); returns perf_counter() then.

    Raises:
        TimeoutError: nothing answered in time.
    """
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        status, body = http_get(port, host=host, address=address, timeout=0.5)
        if status == 200 and containing in body:
            return time.perf_counter()
        time.sleep(interval)
    raise TimeoutError(f"no 200 from {address}:{port} ({host}) within {timeout:.0f} s")


class BenchNode:
    """A fence node under a temporary FENCE_HOME, with its daemon running as a child process.

    Args:
        keep: leave FENCE_HOME on disk after ``close`` (to read the daemon's log).
    """

    def __init__(self, *, keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fence-bench-"))
        self.router_port = free_port()
        self.keep = keep
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: FenceClient | None = None

    @property
    def home(self) -> NodeHome:
        """The node's home."""
        return NodeHome(host_root=self.root)

    @property
    def env(self) -> dict[str, str]:
        """The environment of the node's CLIs and daemon. Bytecode is written and reused, as in an
        installed fence (with PYTHONDONTWRITEBYTECODE set, each CLI call compiled its modules
        from source: about 20 ms more for `fence stats` than for `fence --version`)."""
        env = {**os.environ, "FENCE_HOME": str(self.root)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run ``fence …`` or ``kato …`` (first argument) against this node."""
        return subprocess.run([sys.executable, "-m", args[0], *args[1:]], env=self.env, text=True,
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self) -> FenceClient:
        """Configure the router port, start the daemon and wait until it answers."""
        done = self.cli("kato", "config", "set", "fence", "router/port", str(self.router_port))
        if done.returncode != 0:
            raise RuntimeError(f"kato config set failed: {done.stderr.strip()}")
        log = open(self.root / "daemon.log", "ab")  # noqa: SIM115 - lives as long as the daemon
        self.proc = subprocess.Popen([sys.executable, "-m", "fence", "serve"], stdout=log, stderr=log,
                                     env=self.env, stdin=subprocess.DEVNULL)
        self.client = FenceClient(host_socket=self.home.host_socket, timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.client.info()
                return self.client
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None:
                    raise RuntimeError((self.root / "daemon.log").read_text()[-3000:]) from None
                time.sleep(0.1)
        raise RuntimeError("the daemon did not answer within 60 s")

    def containers(self, role: str = labels.ROLE_INSTANCE) -> list[str]:
        """Ids of this node's containers of a role."""
        out = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={labels.NODE}={self.home.node_id}",
                              "--filter", f"label={labels.ROLE}={role}"], capture_output=True, text=True)
        return out.stdout.split()

    def close(self) -> None:
        """Stop the daemon, remove every container, image and network of this node, stop its nginx."""
        if self.client is not None:
            self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        node = self.home.node_id
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={labels.NODE}={node}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        images = subprocess.run(["docker", "images", "-q", "--filter", f"label={labels.NODE}={node}"],
                                capture_output=True, text=True).stdout.split()
        if images:
            subprocess.run(["docker", "rmi", "-f", *sorted(set(images))], capture_output=True)
        remove_networks(node)
        from fence.router.nginx import NginxRouter
        NginxRouter(host_dir=self.root / "router").stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def in_process_service(host_root: Path, *, router_port: int | None = None) -> NodeService:
    """A node service under ``host_root`` for in-process profiles (bench.profile, bench.scale_timeline):
    the samples in examples/ may be staged by path, and the router (when ``router_port``) listens there.

    Its ``close_in_process`` undoes everything it made.
    """
    from fence.home import NodeHome
    from fence.wiring import config_store, node_service

    home = NodeHome(host_root=host_root)
    home.ensure()
    config = config_store(home)
    config.set("fence", "staging/local_roots", json.dumps([str(EXAMPLES)]), as_json=True)
    if router_port is None:
        return node_service(home, router=None)
    config.set("fence", "router/port", str(router_port))
    return node_service(home)


def close_in_process(service: NodeService, host_root: Path) -> None:
    """Close an ``in_process_service``: its containers, images and networks, its nginx and ``host_root`` go."""
    from fence.router.nginx import NginxRouter

    service.close()
    for container in service.backend.list({labels.NODE: service.node_id}):
        container.destroy()
    for image in service.backend.list_images({labels.NODE: service.node_id}):
        for tag in image.tags:
            service.backend.remove_image(tag)
    remove_networks(service.node_id)
    NginxRouter(host_dir=NodeHome(host_root=host_root).host_router).stop()
    shutil.rmtree(host_root, ignore_errors=True)


def remove_networks(node_id: str) -> None:
    """Remove the node's networks (each app's own bridge, made at its first start), once its
    containers are gone."""
    networks = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"label={labels.NODE}={node_id}"],
                              capture_output=True, text=True).stdout.split()
    if networks:
        subprocess.run(["docker", "network", "rm", *networks], capture_output=True)
