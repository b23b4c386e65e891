"""Git repositories and hostile remotes for the git-source tests of every tier."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Iterator


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` with the test's own empty identity (never the daemon's or a planted
    one: no system or global config, HOME is ``cwd``); its stdout, stripped."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c",
                           "init.defaultBranch=main", *args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def repo(host_dir: Path, files: dict[str, bytes], *, bare_as: Path | None = None) -> str:
    """Make ``host_dir`` a repository of one commit holding ``files`` (and, with ``bare_as``, a
    bare clone of it there).

    Returns:
        The commit's id.
    """
    host_dir.mkdir(parents=True)
    git(host_dir, "init", "-q")
    for name, data in files.items():
        (host_dir / name).write_bytes(data)
    git(host_dir, "add", "-A")
    git(host_dir, "commit", "-qm", "one")
    if bare_as is not None:
        git(host_dir.parent, "clone", "-q", "--bare", str(host_dir), str(bare_as))
    return git(host_dir, "rev-parse", "HEAD")


class _AskForPassword(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 401 Basic: git then asks its credential helpers."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="x"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def password_server() -> Iterator[int]:
    """An HTTP server on loopback that asks every client for a password; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AskForPassword)
    threading.Thread(target=server.serve_forever, name="ask-password", daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A loopback TCP listener that accepts connections and never answers (a hanging remote);
    yields its port, and closes it and every connection it took afterwards."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue
    thread = threading.Thread(target=accept, name="silent-listener", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
