"""The router on a real nginx: routing, 404s, reloads that lose no request, refusals, detaching."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fence.config import ConfigStore
from fence.errors import RouterConfigRefused
from fence.models import Route, Upstream
from fence.router import nginx as nginx_module
from fence.router.feed import RECHECK_SECONDS, RouteFeed
from fence.router.nginx import NginxRouter
from tests.integration.node_kit import Background

DOMAIN = "localhost"


def nginx_problem() -> str | None:
    """Why nginx cannot be used here, or ``None``."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    if shutil.which("nginx", path=search) is None:
        return "nginx is not installed (make test installs nginx-light)"
    return None


pytestmark = pytest.mark.skipif(nginx_problem() is not None, reason=str(nginx_problem()))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Backend:
    """A tiny app instance on 127.0.0.1 that answers with its name and the headers it got."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"   # keep-alive, as nginx's upstream keepalive uses it

            def setup(self) -> None:
                super().setup()
                with backend._lock:
                    backend._connections.add(self.connection)

            def finish(self) -> None:
                with backend._lock:
                    backend._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                body = json.dumps({"name": backend.name,
                                   "headers": {k.lower(): v for k, v in self.headers.items()}})
                data = body.encode()
                # One write: an instance killed mid-request has then sent all or nothing.
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(data), data))

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self.alive = True

    @property
    def upstream(self) -> Upstream:
        return Upstream(address="127.0.0.1", port=self.port)

    def kill(self) -> None:
        """Vanish like a stopped container: no listener, every open connection cut."""
        if not self.alive:
            return
        self.alive = False
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def get(port: int, host: str, path: str = "/", address: str = "127.0.0.1") -> tuple[int, str]:
    """One request through the router on a fresh connection."""
    conn = http.client.HTTPConnection(address, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def name_of(body: str) -> str:
    return str(json.loads(body)["name"])


def our_nginx_pids(host_dir: Path) -> list[int]:
    """Live (non-zombie) nginx masters and workers of this router."""
    masters: list[int] = []
    everything: dict[int, tuple[int, str, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if fields[0] == "Z":
            continue
        pid = int(entry.name)
        everything[pid] = (int(fields[1]), fields[0], cmdline)
        if cmdline.startswith(b"nginx: master") and str(host_dir).encode() in cmdline:
            masters.append(pid)
    workers = [pid for pid, (ppid, _, cmd) in everything.items()
               if ppid in masters and cmd.startswith(b"nginx:")]
    return masters + workers


@pytest.fixture
def host_dir(tmp_path: Path) -> Iterator[Path]:
    host = tmp_path / "router"
    yield host
    # Whatever a test did, no nginx of its own survives it.
    NginxRouter(host_dir=host).stop()
    for pid in our_nginx_pids(host):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while our_nginx_pids(host) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not our_nginx_pids(host)


@pytest.fixture
def router(host_dir: Path) -> NginxRouter:
    return NginxRouter(host_dir=host_dir)


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    pair = (Backend("a"), Backend("b"))
    yield pair
    for backend in pair:
        backend.kill()


def demo_route(*instances: Backend) -> Route:
    return Route(app="demo", hosts=(f"demo.{DOMAIN}",),
                 upstreams=tuple(backend.upstream for backend in instances))


class RequestLoop(Background):
    """Sends a request every 20 ms in a thread and records every answer."""

    def __init__(self, port: int, host: str) -> None:
        super().__init__(self._run)
        self.port, self.host = port, host
        self.results: list[tuple[float, str]] = []   # (time, backend name or failure)
        self.failures: list[str] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = get(self.port, self.host)
                if status == 200:
                    self.results.append((time.monotonic(), name_of(body)))
                else:
                    self.failures.append(f"HTTP {status}: {body[:200]}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.02)


def test_routes_reach_every_instance_and_unknown_hosts_get_404(
        router: NginxRouter, backends: tuple[Backend, Backend]) -> None:
    port = free_port()
    long_host = ".".join(["a" * 63] * 3 + ["b" * 61])
    routes = [Route(app="demo", hosts=(f"demo.{DOMAIN}", long_host),
                    upstreams=(backends[0].upstream, backends[1].upstream)),
              Route(app="idle", hosts=(f"idle.{DOMAIN}",))]
    router.apply(routes=routes, port=port, domain=DOMAIN)

    seen = set()
    for _ in range(20):
        status, body = get(port, f"demo.{DOMAIN}")
        assert status == 200, body
        seen.add(name_of(body))
    assert seen == {"a", "b"}

    status, body = get(port, long_host)
    assert status == 200 and name_of(body) in {"a", "b"}

    headers = json.loads(get(port, f"demo.{DOMAIN}")[1])["headers"]
    assert headers["host"] == f"demo.{DOMAIN}"
    assert headers["x-forwarded-host"] == f"demo.{DOMAIN}"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"

    status, body = get(port, "no-such-app-marker.localhost")
    assert status == 404
    assert "No app on this node has that name" in body
    assert "no-such-app-marker" not in body

    status, body = get(port, f"idle.{DOMAIN}")
    assert status == 503
    assert "app idle has no running instance" in body

    status = router.status()
    assert status.running and status.pid is not None
    assert (status.port, status.domain, status.routes) == (port, DOMAIN, 2)
    assert status.last_reload is not None and status.last_error is None
    # Everything of this router lives under its folder.
    assert (router.host_pid.read_text().strip() == str(status.pid))
    assert router.host_access_log.exists() and router.host_error_log.exists()


def test_curl_reaches_the_app_url(router: NginxRouter, backends: tuple[Backend, Backend]) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    port = free_port()
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN)
    proc = subprocess.run([curl, "-sS", "--resolve", f"demo.{DOMAIN}:{port}:127.0.0.1",
                           f"http://demo.{DOMAIN}:{port}/"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert name_of(proc.stdout) == "a"


def test_removing_an_upstream_loses_no_request(
        router: NginxRouter, backends: tuple[Backend, Backend]) -> None:
    port = free_port()
    router.apply(routes=[demo_route(*backends)], port=port, domain=DOMAIN)
    pid = router.status().pid
    with RequestLoop(port, f"demo.{DOMAIN}") as loop:
        time.sleep(0.5)
        router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN)
        applied_at = time.monotonic()
        time.sleep(0.5)
        backends[1].kill()        # the instance stops only after the router stopped using it
        time.sleep(0.5)
    assert loop.failures == []
    assert {name for _, name in loop.results} == {"a", "b"}
    after = [name for at, name in loop.results if at > applied_at + 0.05]
    assert len(after) > 10 and set(after) == {"a"}
    assert router.status().pid == pid   # reloaded, not restarted


def test_an_instance_vanishing_mid_flight_is_retried_on_the_next(
        router: NginxRouter, backends: tuple[Backend, Backend]) -> None:
    port = free_port()
    router.apply(routes=[demo_route(*backends)], port=port, domain=DOMAIN)
    with RequestLoop(port, f"demo.{DOMAIN}") as loop:
        time.sleep(0.5)
        backends[1].kill()       # still in the config: nginx must move on to the other one
        time.sleep(1.0)
    assert loop.failures == []
    assert {name for _, name in loop.results} == {"a", "b"}


def test_unchanged_config_is_not_reloaded(router: NginxRouter,
                                          backends: tuple[Backend, Backend]) -> None:
    port = free_port()
    router.apply(routes=[demo_route(*backends)], port=port, domain=DOMAIN)
    router.apply(routes=[demo_route(*reversed(backends))], port=port, domain=DOMAIN)
    assert "SIGHUP" not in router.host_error_log.read_text()
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN)
    assert router.host_error_log.read_text().count("SIGHUP") == 1


def test_a_prechecked_config_is_applied_without_a_second_nginx_t_and_a_refused_one_still_refused(
        router: NginxRouter, backends: tuple[Backend, Backend], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12's scale path: the reconciler prechecks the routes of a booting instance, so the
    apply that routes it does not wait for `nginx -t`; a precheck never serves anything."""
    port = free_port()
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN)
    checks: list[list[str]] = []
    run = subprocess.run

    def counted(args, **kwargs):  # noqa: ANN001, ANN003, ANN202
        if "-t" in args:
            checks.append(list(args))
        return run(args, **kwargs)
    monkeypatch.setattr(nginx_module.subprocess, "run", counted)
    router.precheck(routes=[demo_route(*backends)], port=port, domain=DOMAIN)
    assert len(checks) == 1 and "SIGHUP" not in router.host_error_log.read_text()  # checked, not loaded
    router.apply(routes=[demo_route(*backends)], port=port, domain=DOMAIN)
    assert len(checks) == 1 and router.host_error_log.read_text().count("SIGHUP") == 1
    assert {name_of(get(port, f"demo.{DOMAIN}")[1]) for _ in range(6)} == {"a", "b"}

    render = nginx_module.render_config
    monkeypatch.setattr(nginx_module, "render_config",
                        lambda **kw: render(**kw).replace("keepalive 16;", "keepalive_bogus 16;"))
    router.precheck(routes=[demo_route(backends[1])], port=port, domain=DOMAIN)  # refused: nothing said
    with pytest.raises(RouterConfigRefused, match="keepalive_bogus"):
        router.apply(routes=[demo_route(backends[1])], port=port, domain=DOMAIN)
    assert len(checks) == 3


def test_a_refused_config_keeps_the_old_one_serving(
        router: NginxRouter, backends: tuple[Backend, Backend],
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN)
    before = router.host_conf.read_text()
    served_since = router.status().last_reload

    render = nginx_module.render_config

    def broken(**kwargs: object) -> str:
        text = render(**kwargs)  # type: ignore[arg-type]
        return text.replace("keepalive 16;", "keepalive_bogus 16;")

    monkeypatch.setattr(nginx_module, "render_config", broken)
    with pytest.raises(RouterConfigRefused) as caught:
        router.apply(routes=[demo_route(backends[1])], port=port, domain=DOMAIN)
    message = str(caught.value)
    assert "\n" not in message and 'unknown directive "keepalive_bogus"' in message
    monkeypatch.undo()

    assert router.host_conf.read_text() == before
    assert not list(router.host_conf.parent.glob(".nginx.conf.*"))
    status = router.status()
    assert status.running and status.last_error == message
    assert status.last_reload == served_since
    for _ in range(5):
        code, body = get(port, f"demo.{DOMAIN}")
        assert code == 200 and name_of(body) == "a"

    # Applying what already serves clears the error without a reload.
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN)
    assert router.status().last_error is None


def test_a_port_taken_by_another_program_is_refused(
        router: NginxRouter, backends: tuple[Backend, Backend]) -> None:
    port = free_port()
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = int(squatter.getsockname()[1])
        with pytest.raises(RouterConfigRefused, match=f"port {taken} .* in use"):
            router.apply(routes=[demo_route(backends[0])], port=taken, domain=DOMAIN)
    status = router.status()
    assert status.port == port and status.last_error and "in use" in status.last_error
    assert get(port, f"demo.{DOMAIN}")[0] == 200


def test_changing_the_port_moves_the_router(router: NginxRouter,
                                            backends: tuple[Backend, Backend]) -> None:
    first, second = free_port(), free_port()
    router.apply(routes=[demo_route(backends[0])], port=first, domain=DOMAIN)
    router.apply(routes=[demo_route(backends[0])], port=second, domain=DOMAIN)
    assert get(second, f"demo.{DOMAIN}")[0] == 200
    with pytest.raises(ConnectionRefusedError):
        get(first, f"demo.{DOMAIN}")
    assert router.status().port == second


def test_the_router_listens_on_its_bind_address_only(router: NginxRouter,
                                                     backends: tuple[Backend, Backend]) -> None:
    # 127.0.0.2 is loopback too (all of 127/8 is, on Linux): another address, no traffic leaves.
    port = free_port()
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN, address="127.0.0.2")
    assert name_of(get(port, f"demo.{DOMAIN}", address="127.0.0.2")[1]) == "a"
    with pytest.raises(ConnectionRefusedError):
        get(port, f"demo.{DOMAIN}")
    assert router.status().address == "127.0.0.2"
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN, address="127.0.0.1")
    assert get(port, f"demo.{DOMAIN}")[0] == 200
    with pytest.raises(ConnectionRefusedError):
        get(port, f"demo.{DOMAIN}", address="127.0.0.2")
    # Every interface, on the same port (overlaps the old address: nginx is restarted on it, a
    # reload could not bind it); asked over loopback only.
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN, address="0.0.0.0")
    assert get(port, f"demo.{DOMAIN}")[0] == 200 and get(port, f"demo.{DOMAIN}", address="127.0.0.2")[0] == 200
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN, address="127.0.0.1")
    with pytest.raises(ConnectionRefusedError):
        get(port, f"demo.{DOMAIN}", address="127.0.0.2")
    # An address the machine does not have is refused before nginx sees it (only a bind is
    # tried; nothing is sent); the router keeps serving where it was.
    with pytest.raises(RouterConfigRefused, match="not one of this machine's"):
        router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN, address="192.0.2.1")
    assert get(port, f"demo.{DOMAIN}")[0] == 200
    assert router.status().address == "127.0.0.1"


def test_nginx_outlives_the_fence_process_and_stop_ends_it(
        host_dir: Path, backends: tuple[Backend, Backend]) -> None:
    port = free_port()
    # A separate "fence daemon" applies the route and is then killed outright.
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from fence.models import Route, Upstream
        from fence.router.nginx import NginxRouter
        router = NginxRouter(host_dir=Path({str(host_dir)!r}))
        router.apply(routes=[Route(app="demo", hosts=("demo.{DOMAIN}",),
                                   upstreams=(Upstream("127.0.0.1", {backends[0].port}),))],
                     port={port}, domain={DOMAIN!r})
        print("applied", flush=True)
        time.sleep(600)
    """)
    daemon = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        ready = daemon.stdout.readline().strip()
        assert ready == "applied", daemon.stderr.read() if daemon.stderr else ""
    finally:
        daemon.kill()
    # Had nginx inherited the pipes, reading them to the end would hang.
    daemon.communicate(timeout=10)

    router = NginxRouter(host_dir=host_dir)
    status = router.status()
    assert status.running and status.pid is not None
    assert (status.port, status.routes) == (port, 1) and status.last_reload
    assert os.getsid(status.pid) not in (os.getsid(0), daemon.pid)
    fds = {os.readlink(link) for link in Path(f"/proc/{status.pid}/fd").iterdir()}
    assert not [fd for fd in fds if fd.startswith("pipe:")]
    code, body = get(port, f"demo.{DOMAIN}")
    assert code == 200 and name_of(body) == "a"

    # A restarted daemon's first pass hands the same routes again: nothing restarts or reloads.
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN)
    again = router.status()
    assert (again.pid, again.last_reload) == (status.pid, status.last_reload)

    router.stop()
    assert not router.status().running
    assert not our_nginx_pids(host_dir)
    with pytest.raises(ConnectionRefusedError):
        get(port, f"demo.{DOMAIN}")


def test_the_route_feed_restarts_a_router_that_died_with_its_routes(
        router: NginxRouter, backends: tuple[Backend, Backend], tmp_path: Path) -> None:
    # Moved from test_ensure_running_restarts_a_stopped_router_with_its_routes: nothing called
    # ensure_running; the feed's periodic re-check is what brings a dead router back.
    port = free_port()
    config = ConfigStore(host_file=tmp_path / "config.yml")
    config.set("fence", "router/port", str(port))
    now = [0.0]
    feed = RouteFeed(router=router, config=config, clock=lambda: now[0])
    feed.publish([demo_route(backends[0])])
    old_pid = router.status().pid
    router.stop()   # as an admin's kill, or another fence process, would
    router.stop()   # stopping a stopped router is fine
    now[0] = RECHECK_SECONDS / 2
    feed.publish([demo_route(backends[0])])
    assert not router.status().running   # unchanged routes between re-checks: not asked
    now[0] = RECHECK_SECONDS + 0.1
    feed.publish([demo_route(backends[0])])
    status = router.status()
    assert status.running and status.pid != old_pid and status.routes == 1
    code, body = get(port, f"demo.{DOMAIN}")
    assert code == 200 and name_of(body) == "a"


def test_the_master_is_an_nginx_of_this_folder_only(router: NginxRouter,
                                                    backends: tuple[Backend, Backend]) -> None:
    port = free_port()
    router.apply(routes=[demo_route(backends[0])], port=port, domain=DOMAIN)
    pid = router.status().pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert str(router.host_conf) in cmdline
    assert not re.search(r"/etc/nginx|/run/nginx\.pid", cmdline)
    # A pid file naming some other process is not taken for the router.
    router.stop()
    router.host_pid.write_text(f"{os.getpid()}\n")
    assert not router.status().running
