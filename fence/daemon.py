"""Runs the fence daemon: the API on FENCE_HOME/fence.sock (mode 0660) until TERM."""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import signal
import socket
from pathlib import Path

import uvicorn

from fence.api import create_app
from fence.errors import DaemonAlreadyRunning
from fence.service import NodeService

log = logging.getLogger("fence.daemon")
SOCKET_GROUP = "fence"


def bind_socket(host_socket: Path, *, host_home: Path | None = None) -> socket.socket:
    """Bind the daemon's Unix socket with mode 0660 (group ``fence``), replacing a stale one.

    The socket's folder is closed to other users (mode 0750, group ``fence``) only when it is
    fence's own: FENCE_HOME (``host_home``) or a folder made here for the socket. A folder that
    already existed (``FENCE_SOCKET=/tmp/fence.sock``, ``/run/…``) is shared with the rest of the
    system and is never chmodded or chowned; the socket's own mode and group guard it there.

    Raises:
        DaemonAlreadyRunning: another daemon answers on the socket.
    """
    if host_socket.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(host_socket))
        except (ConnectionRefusedError, FileNotFoundError):
            host_socket.unlink(missing_ok=True)
        else:
            raise DaemonAlreadyRunning(socket=host_socket)
        finally:
            probe.close()
    host_folder = host_socket.parent
    made_folder = not host_folder.exists()
    host_folder.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117)  # never world-reachable, not even for an instant
    try:
        sock.bind(str(host_socket))
    finally:
        os.umask(old_umask)
    os.chmod(host_socket, 0o660)
    gid = socket_group()
    if gid is not None:
        # Members of the `fence` group may use the CLIs without root; nobody else may.
        os.chown(host_socket, -1, gid)
        fences_own = made_folder or (host_home is not None and host_folder.resolve() == host_home.resolve())
        if fences_own and host_folder.stat().st_uid == os.geteuid():
            os.chown(host_folder, -1, gid)
            os.chmod(host_folder, 0o750)
    sock.listen(128)
    return sock


def socket_group(name: str = SOCKET_GROUP) -> int | None:
    """The gid of the group allowed to use the daemon's socket, if the node has that group."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class _Server(uvicorn.Server):
    """uvicorn's server, whose main loop looks at its housekeeping (the Date header, a stop
    asked for) once a second instead of ten times: an idle daemon's event loop then sleeps. A
    stop signal still ends it at once: the handler wakes the loop."""

    async def main_loop(self) -> None:
        self._woken = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # on_tick's once-a-second work runs at every tick
            try:
                await asyncio.wait_for(self._woken.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass

    def handle_exit(self, sig: int, frame: object) -> None:
        super().handle_exit(sig, frame)  # type: ignore[arg-type]
        loop, woken = getattr(self, "_loop", None), getattr(self, "_woken", None)
        if loop is not None and woken is not None:
            loop.call_soon_threadsafe(woken.set)


def serve(service: NodeService) -> None:
    """Serve the API in the foreground; TERM or INT stops gracefully, leaving containers running.

    Raises:
        DaemonAlreadyRunning: another daemon answers on the socket.
    """
    host_socket = service.home.host_socket
    sock = bind_socket(host_socket, host_home=service.home.host_root)
    taken = service.router_port_problem()
    if taken:  # said at once, not when a push finds its instances unrouted
        log.warning(taken)
    # Before any instance starts: app containers must never find the host open.
    firewall = service.protect_host()
    if firewall is not None and firewall.protected:
        log.info("host firewall in place: app containers cannot reach the host")
    for line in service.recover():
        log.info("removed after an unclean stop", extra={"what": line})
    service.start()
    config = uvicorn.Config(create_app(service, service.apps), log_config=None, access_log=False,
                            timeout_graceful_shutdown=10)
    server = _Server(config)
    log.info("fence daemon listening", extra={"socket": str(host_socket), "node": service.node_id,
                                              "pid": os.getpid()})
    # uvicorn re-raises the stop signal once it has shut down; with these no-op handlers in place
    # (it restores them before re-raising) a TERM ends the daemon normally, with exit status 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        host_socket.unlink(missing_ok=True)
        sock.close()
        service.close()
        log.info("fence daemon stopped", extra={"node": service.node_id})
