"""Runs the node's router: a detached nginx with its own config under FENCE_HOME/router."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from fence.atomic import atomic_file
from fence.config.schema import key_spec
from fence.errors import RouterConfigRefused, RouterUnavailable, ToolMissing
from fence.models import Route, RouterStatus, SkippedRoute
from fence.router.render import LISTEN_ADDRESS, check_dns_name, listen_address, render_config, usable_routes

log = logging.getLogger(__name__)

_NGINX_HINT = "apt-get install nginx-light; make test installs it"
# Where Debian puts nginx; often not on a non-root user's PATH.
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_WORKER_USERS = ("www-data", "nobody")
_CHECK_TIMEOUT = 30.0
# A config text that passed ``nginx -t`` this long ago is not checked again (``precheck`` ran
# the check while the instance it routes to was booting). Short: the check also reads files
# the text names (mime.types, the log folders), which an admin could change.
_CHECKED_FOR = 30.0
_START_TIMEOUT = 15.0
_RELOAD_TIMEOUT = 10.0
_RELOAD_POLL = 0.002   # seconds between looks for a reload's confirmation
_STOP_TIMEOUT = 35.0   # a little more than worker_shutdown_timeout in the template
_MAX_DETAIL = 600
# "2024/01/02 03:04:05 [emerg] 12#12: unknown directive ..." (or "nginx: [emerg] ...").
_PROBLEM = re.compile(r"\[(?:emerg|alert|crit|error)\] (?:\d+#\d+: )?(?:\*\d+ )?(.*)")


@dataclass(frozen=True)
class _State:
    """What the router last applied, kept in ``state.json`` across fence restarts."""

    port: int | None = None
    domain: str | None = None
    address: str | None = None
    apps: tuple[str, ...] = ()
    last_reload: str | None = None
    last_error: str | None = None
    skipped: tuple[SkippedRoute, ...] = ()


class NginxRouter:
    """The node's nginx, configured only through files under ``host_dir``.

    nginx runs detached (its own session, no inherited descriptors), so it keeps serving while
    the fence daemon restarts or is killed. The system nginx (``/etc/nginx``, ``/run/nginx.pid``)
    is never read or touched. Methods are safe to call from several threads and processes.
    """

    def __init__(self, *, host_dir: Path, nginx: str = "nginx") -> None:
        self._host_dir = host_dir.absolute()
        self._nginx = nginx
        self._lock = threading.Lock()
        self._host_state = self._host_dir / "state.json"
        self._host_start_log = self._host_dir / "logs" / "start.log"
        self._checked: dict[str, float] = {}  # sha256 of a config text → when it passed nginx -t
        self._checked_lock = threading.Lock()

    # --- paths --------------------------------------------------------------------------------

    @property
    def host_conf(self) -> Path:
        """The config nginx runs with (the last one that passed ``nginx -t``)."""
        return self._host_dir / "nginx.conf"

    @property
    def host_pid(self) -> Path:
        """The nginx master's pid file."""
        return self._host_dir / "run" / "nginx.pid"

    @property
    def host_error_log(self) -> Path:
        """nginx's error log (reloads and refusals are logged here too)."""
        return self._host_dir / "logs" / "error.log"

    @property
    def host_access_log(self) -> Path:
        """nginx's access log."""
        return self._host_dir / "logs" / "access.log"

    # --- public API ---------------------------------------------------------------------------

    def apply(self, *, routes: Sequence[Route], port: int, domain: str, address: str = LISTEN_ADDRESS,
              settle: bool = True) -> list[Route]:
        """Make nginx serve exactly these routes, starting it if it is not running.

        What of a route cannot be served (``render.usable_routes``: a host two apps claim, a bad
        upstream, …) is left out and the rest is served; ``status().skipped`` says what and why.
        The config is rendered, written to a candidate file and checked with ``nginx -t``; only
        then does it replace ``nginx.conf`` and nginx reload gracefully (in-flight requests
        finish on the old workers). An unchanged config while nginx runs does nothing.

        Args:
            routes: every app the node routes (apps not listed stop answering).
            port: ``router/port``.
            domain: ``router/domain``.
            address: ``router/bind_address``.
            settle: on a reload, return only once the old workers take no new connection
                (nginx tells them 100 ms after the new ones start). ``False`` returns once the
                new workers run: for a change after which an old worker's answer is still right
                (upstreams only added to apps that had some).

        Returns:
            The routes nginx now serves: ``routes`` without what was left out.

        Raises:
            InvalidName: a bad domain or worker user (nothing is written).
            UsageError: a bad port or address (nothing is written).
            RouterConfigRefused: nginx refused the config or the port is taken; the previous
                config keeps serving and ``status().last_error`` says why.
            RouterUnavailable: nginx could not be started.
            ToolMissing: nginx is not installed.
        """
        served, skipped, text = self._render(routes, port=port, domain=domain, address=address)
        apps = tuple(sorted(route.app for route in served))
        with self._locked():
            self._apply_text(text, port=port, domain=domain, address=address, apps=apps, settle=settle,
                             skipped=tuple(skipped))
        return served

    def precheck(self, *, routes: Sequence[Route], port: int, domain: str, address: str = LISTEN_ADDRESS) -> None:
        """Run ``nginx -t`` now on the config ``apply`` would render for these routes, so that an
        ``apply`` of the same text within a few seconds skips it: the reconciler calls this
        while an instance boots, with the routes it will publish once the instance is ready.
        Nothing is written or loaded; a refused config is only left unrecorded (``apply`` then
        checks it and says why).

        Raises:
            InvalidName: a bad domain.
            ToolMissing: nginx is not installed.
        """
        _, _, text = self._render(routes, port=port, domain=domain, address=address)
        if self._passed(text):  # before the dirs and the binary: a repeat costs nothing
            return
        self._prepare_dirs()
        try:
            self._check(self._binary(), text)
        except RouterConfigRefused:
            pass

    def _render(self, routes: Sequence[Route], *, port: int, domain: str,
                address: str) -> tuple[list[Route], list[SkippedRoute], str]:
        """What of ``routes`` can be served, what is left out, and the config text serving it
        (``apply`` and ``precheck`` render the same text for the same routes)."""
        served, skipped = usable_routes(routes, check_dns_name(domain, what="router domain"))
        text = render_config(routes=served, port=port, domain=domain, host_prefix=self._host_dir,
                             worker_user=_worker_user(), address=address)
        return served, skipped, text

    def serving(self) -> bool:
        """Whether nginx runs (serving the config it last applied)."""
        return self._running_pid() is not None

    def status(self) -> RouterStatus:
        """What the router runs now and what it last applied.

        Returns:
            Whether the nginx master is alive (and its pid), the address, port, domain and route
            count of the last applied config, the time of the last successful (re)load and the
            last error.
        """
        pid = self._running_pid()
        state = self._read_state()
        port, domain, address = _known(state)
        return RouterStatus(
            running=pid is not None,
            pid=pid,
            port=port,
            domain=domain,
            address=address,
            routes=len(state.apps),
            last_reload=state.last_reload,
            last_error=state.last_error,
            skipped=state.skipped,
        )

    def stop(self) -> None:
        """Stop nginx gracefully (QUIT: in-flight requests finish), forcing it after a timeout.

        Raises:
            RouterUnavailable: nginx is still running after being killed.
        """
        with self._locked():
            self._stop()

    def _stop(self) -> None:
        """``stop`` for a caller that holds the lock."""
        pid = self._running_pid()
        if pid is None:
            return
        master = _process(pid)
        workers = _children(master)
        for sig, wait in ((signal.SIGQUIT, _STOP_TIMEOUT), (signal.SIGTERM, 5.0),
                          (signal.SIGKILL, 5.0)):
            # Workers outlive a killed master; they go too.
            for proc in [master, *workers] if sig == signal.SIGKILL else [master]:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
            if _wait_gone([master, *workers] if sig == signal.SIGKILL else [master], wait):
                log.info("router: nginx (pid %s) stopped", pid)
                return
            log.warning("router: nginx (pid %s) ignored %s", pid, sig.name)
        raise RouterUnavailable(action="stop", detail=f"pid {pid} survived SIGKILL")

    # --- applying -----------------------------------------------------------------------------

    def _apply_text(self, text: str, *, port: int, domain: str, address: str, apps: tuple[str, ...],
                    settle: bool = True, skipped: tuple[SkippedRoute, ...] = ()) -> None:
        """Check, install and load a rendered config; the caller holds the lock."""
        binary = self._binary()
        self._prepare_dirs()
        state = self._read_state()
        if skipped != state.skipped:
            for left_out in skipped:
                log.warning("router: left out %s of app %s: %s", left_out.what, left_out.app, left_out.why)
        pid = self._running_pid()
        try:
            old_text: str | None = self.host_conf.read_text()
        except FileNotFoundError:
            old_text = None
        if pid is not None and text == old_text:
            current = dataclasses.replace(state, port=port, domain=domain, address=address, apps=apps,
                                          last_error=None, skipped=skipped)
            if current != state:
                self._write_state(current)
            return
        # A new listen address cannot be taken by a reload: 0.0.0.0:P and 127.0.0.1:P overlap,
        # and the running master holds the old one. nginx is restarted on it instead.
        moved = pid is not None and (state.address or LISTEN_ADDRESS) != address
        try:
            if moved:
                _check_port_free(address, 0)  # the address only: the running nginx holds the port
            elif pid is None or (state.port is not None and state.port != port):
                _check_port_free(address, port)
            self._check(binary, text)
            if moved:
                self._move(binary, text, old_text, address=address, port=port)
            else:
                self._install(binary, text, old_text, pid, settle=settle)
        except (RouterConfigRefused, RouterUnavailable) as exc:
            log.error("router: %s", exc.message)
            self._write_state(dataclasses.replace(state, last_error=exc.message))
            raise
        self._write_state(_State(port=port, domain=domain, address=address, apps=apps, last_reload=_now(),
                                 last_error=None, skipped=skipped))
        log.info("router: nginx serves %d route(s) on %s", len(apps), listen_address(address, port))

    def _install(self, binary: str, text: str, old_text: str | None, pid: int | None, *,
                 settle: bool = True) -> None:
        """Write a checked config and start nginx on it, or reload it; the old config comes back
        if that fails."""
        _write_atomic(self.host_conf, text)
        try:
            if pid is None:
                self._start(binary)
            else:
                self._reload(pid, settle=settle)
        except (RouterConfigRefused, RouterUnavailable):
            # nginx.conf is always the config that last served.
            if old_text is None:
                self.host_conf.unlink(missing_ok=True)
            else:
                _write_atomic(self.host_conf, old_text)
            raise

    def _move(self, binary: str, text: str, old_text: str | None, *, address: str, port: int) -> None:
        """Stop nginx (gracefully) and start it on a new listen address; if the address or port
        turns out to be taken, start it again on the old config."""
        self._stop()
        try:
            _check_port_free(address, port)
            self._install(binary, text, old_text, None)
        except (RouterConfigRefused, RouterUnavailable):
            if old_text is not None and self._running_pid() is None:
                with contextlib.suppress(RouterConfigRefused, RouterUnavailable):
                    self._start(binary)
            raise

    def _passed(self, text: str) -> bool:
        """Whether this exact text passed ``nginx -t`` within ``_CHECKED_FOR`` seconds."""
        digest, now = hashlib.sha256(text.encode()).hexdigest(), time.monotonic()
        with self._checked_lock:
            for old in [d for d, at in self._checked.items() if now - at > _CHECKED_FOR]:
                del self._checked[old]
            return digest in self._checked

    def _check(self, binary: str, text: str) -> None:
        """``nginx -t`` on a candidate file next to nginx.conf (skipped for a text that passed it
        a moment ago: ``precheck``)."""
        if self._passed(text):
            return
        fd, name = tempfile.mkstemp(prefix=".nginx.conf.", suffix=".candidate", dir=self._host_dir)
        host_candidate = Path(name)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            try:
                proc = subprocess.run(
                    [binary, "-t", "-q", "-p", f"{self._host_dir}/", "-c", str(host_candidate),
                     "-e", "stderr"],
                    check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                    timeout=_CHECK_TIMEOUT, cwd=self._host_dir)
            except subprocess.TimeoutExpired:
                raise RouterConfigRefused(
                    detail=f"nginx -t did not finish in {_CHECK_TIMEOUT:.0f} s") from None
        finally:
            host_candidate.unlink(missing_ok=True)
        if proc.returncode != 0:
            output = proc.stderr.replace(str(host_candidate), "new nginx.conf")
            detail = _problem_lines(output) or f"nginx -t exited {proc.returncode}"
            raise RouterConfigRefused(detail=detail)
        with self._checked_lock:
            self._checked[hashlib.sha256(text.encode()).hexdigest()] = time.monotonic()

    def _start(self, binary: str) -> None:
        """Start the nginx master detached, and wait for its pid file."""
        with open(self._host_start_log, "wb") as out:
            try:
                # nginx daemonizes itself; a new session and no inherited fds keep it
                # independent of fence, which may stop or be killed at any time.
                proc = subprocess.Popen(
                    [binary, "-p", f"{self._host_dir}/", "-c", str(self.host_conf), "-e", "stderr"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True,
                    start_new_session=True, cwd=self._host_dir)
            except FileNotFoundError:
                raise ToolMissing(tool="nginx", hint=_NGINX_HINT) from None
            try:
                code = proc.wait(timeout=_START_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RouterUnavailable(action="start", detail=f"nginx did not daemonize within "
                                                               f"{_START_TIMEOUT:.0f} s") from None
        output = self._host_start_log.read_text(errors="replace")
        if code != 0:
            raise RouterUnavailable(action="start",
                                    detail=_problem_lines(output) or f"nginx exited {code}")
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            pid = self._running_pid()
            if pid is not None:
                log.info("router: nginx started (pid %s)", pid)
                return
            time.sleep(0.05)
        raise RouterUnavailable(action="start", detail="no nginx master appeared; see "
                                                       f"{self.host_error_log}")

    def _reload(self, pid: int, *, settle: bool = True) -> None:
        """HUP the master; return once new workers run and (``settle``) the old ones stopped
        accepting: old workers finish their in-flight requests, but take no new connection after
        this.
        """
        try:
            offset = self.host_error_log.stat().st_size
        except FileNotFoundError:
            offset = 0
        old_workers = _children(_process(pid)) if settle else []  # a scan of every process: ~10-30 ms
        os.kill(pid, signal.SIGHUP)
        marker = f" {pid}#"
        started = False
        deadline = time.monotonic() + _RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            for line in [] if started else _read_from(self.host_error_log, offset):
                if marker not in line:
                    continue
                if "[emerg]" in line or "[alert]" in line:
                    raise RouterConfigRefused(detail=_problem_lines(line) or line.strip())
                started = started or "start worker process" in line
            if started and (not settle or not any(_accepting(worker) for worker in old_workers)):
                return
            # The new workers' line comes a few ms after the HUP, and every ms waited past it is
            # a ms a new instance waits to be routed: look often (a read from an offset is cheap).
            time.sleep(_RELOAD_POLL)
        log.warning("router: nginx (pid %s) did not confirm the reload within %.0f s; see %s",
                    pid, _RELOAD_TIMEOUT, self.host_error_log)

    # --- process and files --------------------------------------------------------------------

    def _running_pid(self) -> int | None:
        """The pid of this router's live nginx master, or ``None``.

        The pid file alone is not trusted: the process must be an nginx master started with
        this config, so a reused pid or the system nginx is never taken for ours.
        """
        try:
            pid = int(self.host_pid.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        title = _title(_process(pid))
        if title.startswith("nginx: master process") and str(self.host_conf) in title:
            return pid
        return None

    def _binary(self) -> str:
        search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
        found = shutil.which(self._nginx, path=search)
        if found is None:
            raise ToolMissing(tool="nginx", hint=_NGINX_HINT)
        return found

    def _prepare_dirs(self) -> None:
        self._host_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        for sub in ("run", "logs", "tmp"):
            (self._host_dir / sub).mkdir(exist_ok=True, mode=0o750)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # The thread lock serialises this process; flock serialises fence processes.
        with self._lock:
            self._host_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            with open(self._host_dir / ".lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_state(self) -> _State:
        try:
            raw = json.loads(self._host_state.read_text())
            return _State(
                port=int(raw["port"]) if raw.get("port") is not None else None,
                domain=str(raw["domain"]) if raw.get("domain") is not None else None,
                address=str(raw["address"]) if raw.get("address") is not None else None,
                apps=tuple(str(app) for app in raw.get("apps", ())),
                last_reload=raw.get("last_reload"),
                last_error=raw.get("last_error"),
                skipped=tuple(SkippedRoute(app=str(s["app"]), what=str(s["what"]), why=str(s["why"]))
                              for s in raw.get("skipped", ())),
            )
        except FileNotFoundError:
            return _State()
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("router: ignoring unreadable %s: %s", self._host_state, exc)
            return _State()

    def _write_state(self, state: _State) -> None:
        payload = dataclasses.asdict(state)
        payload["apps"] = list(state.apps)
        payload["skipped"] = [dataclasses.asdict(s) for s in state.skipped]
        _write_atomic(self._host_state, json.dumps(payload, indent=2) + "\n")


def _worker_user() -> str | None:
    """The unprivileged user nginx's workers run as when fence runs as root."""
    if os.geteuid() != 0:
        return None
    for name in _WORKER_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    log.warning("router: neither www-data nor nobody exists; nginx workers run as root")
    return None


def _check_port_free(address: str, port: int) -> None:
    """Refuse an address this machine does not have and, unless ``port`` is 0 (the address
    alone), a port another program already listens on there (nginx would fail to bind it). Only
    a bind is tried; nothing is sent."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise RouterConfigRefused(
                    detail=f"address {address} is not one of this machine's; choose another with "
                           "`kato config set fence router/bind_address ADDRESS`") from None
            if exc.errno == errno.EADDRINUSE:
                raise RouterConfigRefused(
                    detail=f"port {port} on {address} is in use by another program; choose "
                           "another with `kato config set fence router/port N`") from None
            if exc.errno == errno.EACCES:
                raise RouterConfigRefused(
                    detail=f"port {port} needs root to listen on; choose one above 1023 with "
                           "`kato config set fence router/port N`") from None
            raise


def _problem_lines(output: str) -> str:
    """nginx's error lines as one line, without the ``nginx:`` prefixes."""
    problems = [match.group(1).strip() for match in _PROBLEM.finditer(output)]
    text = "; ".join(problems)
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL - 3] + "..."


def _read_from(host_file: Path, offset: int) -> list[str]:
    try:
        with open(host_file, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return []
    # A partly written last line is read again on the next poll.
    complete = data[: data.rfind(b"\n") + 1]
    return complete.decode(errors="replace").splitlines()


def _write_atomic(host_file: Path, text: str) -> None:
    with atomic_file(host_file, mode=0o640) as handle:
        handle.write(text.encode())


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _title(proc: psutil.Process | None) -> str:
    """A process's title as ``ps`` shows it (nginx rewrites its argv into one), ``""`` once gone."""
    try:
        return " ".join(proc.cmdline()) if proc is not None else ""
    except psutil.Error:
        return ""


def _gone(proc: psutil.Process | None) -> bool:
    try:
        # A zombie is dead; pid 1 may be slow to reap it (psutil's wait would wait for the reap).
        return proc is None or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _accepting(worker: psutil.Process) -> bool:
    # A worker told to quit renames itself "worker process is shutting down" as it closes its
    # listening sockets.
    title = _title(worker)
    return bool(title) and "shutting down" not in title


def _wait_gone(procs: list[psutil.Process | None], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive := [proc for proc in procs if not _gone(proc)]:
        if time.monotonic() > deadline:
            return False
        psutil.wait_procs(alive, timeout=0.05)  # returns early when they exit and are reaped
    return True


def _children(proc: psutil.Process | None) -> list[psutil.Process]:
    try:
        return proc.children() if proc is not None else []
    except psutil.Error:
        return []


def _known(state: _State) -> tuple[int, str, str]:
    """The last applied port, domain and address, else the config defaults."""
    port_spec, domain_spec = key_spec("fence", "router/port"), key_spec("fence", "router/domain")
    port = state.port if state.port is not None else (port_spec.default if port_spec else 8080)
    domain = state.domain if state.domain is not None else (
        domain_spec.default if domain_spec else "localhost")
    return int(port), str(domain), state.address or LISTEN_ADDRESS


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
