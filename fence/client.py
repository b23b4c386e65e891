"""The daemon's API client (HTTP/1.1 over the Unix socket); errors arrive as the same fence error classes."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Mapping, Sequence, TypeVar
from urllib.parse import quote

from fence.client_http import (AnswerBroken, Response, UnixConnection, dropped, json_body, payload, read_lines, send,
                               unreachable)
from fence.errors import InternalError, UsageError, from_wire

if TYPE_CHECKING:
    from fence.models import (AppView, CronView, DropletRecord, GcReport, NodeInfo, NodeStatus, ReleaseRecord,
                              RolloutReport, SourceLimits, StackImage)
    from fence.drains.models import DrainHealth, DrainRecord
    from fence.services.views import BackupRecord, ServiceView

# A small HTTP/1.1 client of our own (fence.client_http), neither httpx nor the stdlib's http.client:
# every CLI call imports the client, and httpx's import alone (~100 ms here) was most of a `fence apps`
# call, http.client's (email and ssl with it) ~40 ms more; the daemon speaks plain HTTP/1.1 on one
# local socket.
# For the same reason each method imports the fence.models class it returns (a local import, once
# per process): fence.models costs ~20 ms to import, and `fence apps --json` prints the daemon's
# JSON as it came (`apps_data`) without ever building one (tests/unit/test_cli_start.py checks it).
LineCallback = Callable[[str], None]
T = TypeVar("T")


class FenceClient:
    """Talks to one fence daemon.

    Args:
        host_socket: the daemon's Unix socket.
        timeout: seconds to wait for a connection and for each answer (streams wait as long as
            the work takes).
    """

    def __init__(self, *, host_socket: Path, timeout: float = 30.0) -> None:
        self._host_socket = host_socket
        self._timeout = timeout
        self._lock = threading.Lock()
        self._idle: UnixConnection | None = None  # kept alive between calls, as httpx's pool did

    def info(self) -> NodeStatus:
        """The node's status.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
        """
        from fence.models import NodeStatus

        return model_from_wire(NodeStatus, self._get("/v1/info"))

    def images(self) -> list[StackImage]:
        """Stack images the node knows.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
            EngineUnavailable: the daemon cannot reach the engine.
        """
        from fence.models import StackImage

        return [model_from_wire(StackImage, item) for item in self._get("/v1/images")]

    def node_info(self) -> NodeInfo:
        """CPU, memory, disks and containers of the node.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
            EngineUnavailable: the daemon cannot reach the engine.
        """
        from fence.models import NodeInfo

        return model_from_wire(NodeInfo, self._get("/v1/node"))

    def gc(self, *, dry_run: bool) -> GcReport:
        """Run garbage collection (``dry_run``: only list what it would remove).

        Raises:
            DaemonNotRunning: nothing answers on the socket.
            EngineUnavailable: the daemon cannot reach the engine.
        """
        from fence.models import GcReport

        return model_from_wire(GcReport, self._call("POST", "/v1/gc", params=[("dry_run", str(dry_run).lower())],
                                                    read_timeout=600.0))

    def rollout(self, *, restage: bool, on_line: LineCallback) -> RolloutReport:
        """Move every app onto the configured stack, passing progress lines on.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
            ImageNotFound: no configured stack is on the engine.
            RolloutFailed: some apps could not move (their old instances keep serving).
        """
        from fence.models import RolloutReport

        result = self._stream("POST", "/v1/stack/rollout", params=[("restage", str(restage).lower())],
                              on_line=on_line, what="rollout")
        return model_from_wire(RolloutReport, _field(result, "rollout"))

    def stage(self, *, source: str, app: str | None, buildpacks: tuple[str, ...],
              env_pairs: tuple[str, ...], on_line: LineCallback,
              limits: SourceLimits | None = None, force: bool = False) -> DropletRecord:
        """Send app source to the daemon and stage it, passing the log on as it comes.

        Args:
            source: a folder, a .tar.gz/.tgz/.tar/.zip file, or a git URL with optional ``#ref``.
            app: the app's name, or ``None`` (the manifest's, else the folder's name).
            buildpacks: buildpack specs, in chain order.
            env_pairs: ``NAME=VALUE`` settings.
            on_line: receives each log line.
            limits: bounds for packing a folder (the daemon checks again).
            force: stage even when the staging inputs are unchanged (else the daemon reuses the
                droplet staged from them).

        Returns:
            The droplet.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
            UsageError: the source is neither a folder, an archive nor a git URL.
            FenceError: whatever the staging failed with, as the daemon reported it.
        """
        from fence.models import DropletRecord

        result = self._upload(source=source, app=app, buildpacks=buildpacks, env_pairs=env_pairs,
                              on_line=on_line, limits=limits, extra=[("force", "true")] if force else [])
        return model_from_wire(DropletRecord, _field(result, "droplet"))

    def push(self, *, source: str, app: str | None, buildpacks: tuple[str, ...], env_pairs: tuple[str, ...],
             instances: int | None, mem: str | None, on_line: LineCallback,
             limits: SourceLimits | None = None, force: bool = False, builder: str | None = None,
             image: str | None = None) -> AppView:
        """Stage and run an app (see ``stage`` for the arguments; ``builder``: ``--builder``,
        ``image``: ``--image``, an image on the node to deploy); returns it once healthy.

        Raises:
            FenceError: staging or deploy failures, as the daemon reported them.
        """
        from fence.models import AppView

        extra = [("deploy", "true")] + ([("force", "true")] if force else [])
        extra += [(key, value) for key, value in (("builder", builder), ("image", image)) if value is not None]
        if instances is not None:
            extra.append(("instances", str(instances)))
        if mem:
            extra.append(("mem", mem))
        result = self._upload(source=source, app=app, buildpacks=buildpacks, env_pairs=env_pairs,
                              on_line=on_line, limits=limits, extra=extra)
        return model_from_wire(AppView, _field(result, "app"))

    def _upload(self, *, source: str, app: str | None, buildpacks: tuple[str, ...],
                env_pairs: tuple[str, ...], on_line: LineCallback,
                limits: SourceLimits | None, extra: list[tuple[str, str]]) -> dict[str, Any]:
        from fence.models import SourceLimits
        from fence.rules import looks_like_git_url

        params: list[tuple[str, str]] = [("buildpack", b) for b in buildpacks] + extra
        params += [("env", pair) for pair in env_pairs]
        if app:
            params.append(("name", app))
        if looks_like_git_url(source):
            params.append(("git", source))
            return self._stream("POST", "/v1/stagings", params=params, content=b"", on_line=on_line, what="staging")
        host_source = Path(source).expanduser()
        if host_source.is_dir():
            import tempfile  # only a push or stage of a folder packs one (this and sources cost an import each)

            from fence.staging.sources import pack_directory_for_upload
            with tempfile.TemporaryDirectory(prefix="fence-upload-") as tmp:
                host_upload = Path(tmp) / "upload.tar.gz"
                pack_directory_for_upload(host_source, host_upload, limits=limits or SourceLimits())
                params += [("fallback_name", _name_from(host_source.resolve().name)),
                           ("filename", host_upload.name),
                           ("packed_folder", "true")]  # a folder is staged as it is, never unwrapped
                return self._send_file(params, host_upload, on_line)
        if host_source.is_file():
            params += [("fallback_name", _name_from(host_source.name.split(".")[0])),
                       ("filename", host_source.name)]
            return self._send_file(params, host_source, on_line)
        raise UsageError(detail=f"source {source!r} is not a folder, an archive or a git URL")

    def _send_file(self, params: list[tuple[str, str]], host_upload: Path, on_line: LineCallback) -> dict[str, Any]:
        with host_upload.open("rb") as handle:
            return self._stream("POST", "/v1/stagings", params=params, content=handle, on_line=on_line,
                                what="staging")

    def droplets(self, app: str | None = None) -> list[DropletRecord]:
        """Droplets, newest first.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
        """
        from fence.models import DropletRecord

        params = [("app", app)] if app else None
        return [model_from_wire(DropletRecord, item) for item in self._get("/v1/droplets", params)]

    def apps_data(self) -> list[dict[str, Any]]:
        """Every app as the daemon sent it (JSON-ready), for printing it unchanged."""
        return list(self._get("/v1/apps"))

    def app_data(self, name: str) -> dict[str, Any]:
        """One app in detail as the daemon sent it (JSON-ready), for printing it unchanged."""
        return dict(self._get(_app_path(name)))

    def apps(self) -> list[AppView]:
        """Every app."""
        from fence.models import AppView

        return [model_from_wire(AppView, item) for item in self._get("/v1/apps")]

    def app(self, name: str) -> AppView:
        """One app in detail."""
        from fence.models import AppView

        return model_from_wire(AppView, self._get(_app_path(name)))

    def releases(self, name: str) -> list[ReleaseRecord]:
        """An app's releases, newest first."""
        from fence.models import ReleaseRecord

        return [model_from_wire(ReleaseRecord, r) for r in self._get(_app_path(name, "releases"))]

    def start(self, name: str, *, on_line: LineCallback) -> AppView:
        """Start a stopped app; returns it once its instances are healthy."""
        return self._app_action(name, "start", on_line=on_line)

    def stop(self, name: str, *, on_line: LineCallback) -> AppView:
        """Stop every instance of the app."""
        return self._app_action(name, "stop", on_line=on_line)

    def restart(self, name: str, *, on_line: LineCallback) -> AppView:
        """Replace every instance, each new one healthy before its old one stops."""
        return self._app_action(name, "restart", on_line=on_line)

    def restage(self, name: str, *, force: bool, on_line: LineCallback) -> AppView:
        """Stage the app again from its kept source and roll the result out (``force``: even if unchanged)."""
        return self._app_action(name, "restage", on_line=on_line, params=[("force", "true")] if force else [])

    def scale(self, name: str, instances: int | Mapping[str, int], *, on_line: LineCallback) -> AppView:
        """Run ``instances`` web instances of the app, or the given count of each process type."""
        from fence.models import AppView

        return model_from_wire(AppView, self.scale_data(name, instances, on_line=on_line))

    def scale_data(self, name: str, instances: int | Mapping[str, int], *, on_line: LineCallback) -> dict[str, Any]:
        """``scale``, with the app as the daemon sent it (JSON-ready): `fence scale` prints two
        counts of it, and building an AppView would cost the CLI the import of fence.models."""
        if isinstance(instances, int):
            params = [("instances", str(instances))]
        else:
            params = [("count", f"{kind}={count}") for kind, count in instances.items()]
        result = self._stream("POST", _app_path(name, "scale"), params=params, on_line=on_line, what="scale")
        return dict(_field(result, "app"))

    def rollback(self, name: str, release: int | None, *, on_line: LineCallback) -> AppView:
        """Run an earlier release again (``None``: the previous one)."""
        params = [("release", str(release))] if release is not None else []
        return self._app_action(name, "rollback", on_line=on_line, params=params)

    def set_env(self, name: str, *, changes: Mapping[str, str], removals: Sequence[str],
                on_line: LineCallback) -> AppView:
        """Set and unset env variables of the app (which restarts if it runs)."""
        body = {"set": dict(changes), "unset": list(removals)}
        return self._app_action(name, "env", on_line=on_line, body=body)

    def run(self, name: str, argv: Sequence[str], *, on_line: LineCallback) -> int:
        """Run a one-off command from the app's current droplet; returns its exit code."""
        result = self._stream("POST", _app_path(name, "run"), body={"argv": list(argv)}, on_line=on_line,
                              what="run")
        return int(_field(result, "exit_code"))

    def route(self, name: str, verb: str, host: str) -> AppView:
        """Add (``verb="add"``) or remove an extra host name of an app."""
        from fence.models import AppView

        return model_from_wire(AppView, self._call("POST", _app_path(name, "routes"), body={verb: host}))

    def delete(self, name: str) -> None:
        """Delete an app."""
        self._call("DELETE", _app_path(name), read_timeout=120.0)

    def logs(self, name: str, *, follow: bool, staging: bool, on_line: LineCallback, release: bool = False) -> None:
        """Pass the app's log lines on (until the stream ends); ``release``: its last release-phase output."""
        params = [("follow", str(follow).lower()), ("staging", str(staging).lower())]
        if release:
            params.append(("release", "true"))
        self._stream("GET", _app_path(name, "logs"), params=params, on_line=on_line, what="logs",
                     result_required=False)

    # --- cron (issue 14) ---------------------------------------------------------------------

    def cron(self, name: str) -> list[CronView]:
        """An app's cron entries with their next and last runs."""
        from fence.models import CronView

        return [model_from_wire(CronView, v) for v in self._get(_app_path(name, "cron"))]

    def cron_logs(self, name: str, *, on_line: LineCallback) -> None:
        """Pass the app's cron job output on, line by line (``[cron]`` prefixes)."""
        self._stream("GET", _app_path(name, "cron/logs"), on_line=on_line, what="cron logs",
                     result_required=False)

    def close(self) -> None:
        """Close the kept-alive connection to the daemon."""
        with self._lock:
            conn, self._idle = self._idle, None
        if conn is not None:
            conn.close()

    # --- log drains (issue 18) ---------------------------------------------------------------

    def drains(self, name: str) -> list[DrainHealth]:
        """The app's drains with their health, then the node-wide drains.

        Raises:
            AppNotFound: no such app.
        """
        from fence.drains.models import DrainHealth

        return [model_from_wire(DrainHealth, item) for item in self._get(_app_path(name, "drains"))]

    def add_drain(self, name: str, drain: str, url: str) -> DrainRecord:
        """Add a drain to an app (or point its drain of that name at a new URL).

        Raises:
            AppNotFound: no such app.
            InvalidName, UsageError: a bad drain name or URL.
        """
        from fence.drains.models import DrainRecord

        return model_from_wire(DrainRecord, self._call("PUT", _app_path(name, "drains", quote(drain, safe="")),
                                                       body={"url": url}))

    def delete_drain(self, name: str, drain: str) -> None:
        """Remove an app's drain.

        Raises:
            AppNotFound: no such app.
            UsageError: it has no drain of that name.
        """
        self._call("DELETE", _app_path(name, "drains", quote(drain, safe="")))
    # --- end log drains ---

    def _app_action(self, name: str, action: str, *, on_line: LineCallback,
                    params: list[tuple[str, str]] | None = None, body: Any = None) -> AppView:
        from fence.models import AppView

        result = self._stream("POST", _app_path(name, action), params=params, body=body, on_line=on_line,
                              what=action)
        return model_from_wire(AppView, _field(result, "app"))

    def _get(self, path: str, params: list[tuple[str, str]] | None = None) -> Any:
        return self._call("GET", path, params=params)

    def _call(self, method: str, path: str, *, params: list[tuple[str, str]] | None = None, body: Any = None,
              read_timeout: float | None = None) -> Any:
        """One request whose answer is one JSON document.

        Raises:
            DaemonNotRunning, DaemonPermissionDenied: the socket cannot be used, or the daemon went
                away before answering.
            FenceError: the error the daemon answered with, as the same class.
        """
        # A GET on a kept-alive connection is tried once more on a new one: the daemon may have
        # closed the idle connection just as this request went out.
        for attempt in ("kept", "fresh") if method == "GET" else ("any",):
            conn = self._take(fresh=attempt == "fresh")
            try:
                response = send(conn, method, path, params=params, content=json_body(body),
                                 timeout=self._timeout, read_timeout=read_timeout or self._timeout)
                data = response.read()
            except ConnectionError as exc:  # AnswerBroken too: the answer broke off
                conn.close()
                if attempt == "kept":
                    continue
                raise unreachable(exc, self._host_socket) from exc
            except BaseException:
                conn.close()
                raise
            self._give(conn, response)
            return payload(response.status, data)
        raise AssertionError("unreachable")  # pragma: no cover - the last attempt returns or raises

    def _stream(self, method: str, path: str, *, params: list[tuple[str, str]] | None = None,
                content: bytes | BinaryIO | None = None, body: Any = None, on_line: LineCallback,
                what: str, result_required: bool = True) -> dict[str, Any]:
        """Send a request whose answer is NDJSON events; pass ``log`` lines on, return ``result``.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
            FenceError: the ``error`` event, as the same class.
            InternalError: the stream broke off, or (``result_required``) ended without a result.
        """
        conn = self._take()
        response: Response | None = None
        try:
            response = send(conn, method, path, params=params, content=json_body(body) if content is None
                             else content, timeout=self._timeout, read_timeout=None)
            if response.status >= 400:
                payload(response.status, response.read())
            for raw in read_lines(response):
                if not raw.strip():
                    continue
                event = json.loads(raw)
                if event.get("event") == "log":
                    on_line(str(event.get("line", "")))
                elif event.get("event") == "result":
                    return event
                elif event.get("event") == "error":
                    raise from_wire(event["error"])
            if response.length:  # it ended before the length it promised
                raise AnswerBroken(f"the answer ended {response.length} bytes short of its Content-Length")
        except ConnectionError as exc:  # AnswerBroken too: the stream broke off
            response = None
            raise InternalError(detail=f"the daemon closed the stream ({exc or type(exc).__name__})") from exc
        finally:
            if response is not None and response.isclosed():
                self._give(conn, response)
            else:  # left mid-stream: this connection cannot carry another request
                conn.close()
        if result_required:
            raise InternalError(detail=f"the daemon ended the {what} stream without a result")
        return {}

    def _take(self, *, fresh: bool = False) -> UnixConnection:
        """The kept-alive connection if it is still open (and not ``fresh``), else a new one; each
        call has its own.

        Raises:
            DaemonNotRunning, DaemonPermissionDenied: the socket cannot be connected to.
        """
        with self._lock:
            conn, self._idle = (None, self._idle) if fresh else (self._idle, None)
        if conn is not None and conn.sock is not None and not dropped(conn.sock):
            return conn
        if conn is not None:
            conn.close()
        conn = UnixConnection(self._host_socket, timeout=self._timeout)
        try:
            conn.connect()
        except TimeoutError:
            conn.close()
            raise
        except OSError as exc:
            conn.close()
            raise unreachable(exc, self._host_socket) from exc
        return conn

    def _give(self, conn: UnixConnection, response: Response) -> None:
        """Keep a connection whose answer was read whole for the next call (one is kept)."""
        if response.will_close or conn.sock is None:
            conn.close()
            return
        with self._lock:
            if self._idle is None:
                self._idle = conn
                return
        conn.close()

    # --- backing services (issue 16) -----------------------------------------------------------

    def services(self) -> list[ServiceView]:
        """Every service of the node."""
        from fence.services.views import ServiceView

        return [model_from_wire(ServiceView, v) for v in self._get("/v1/services")]

    def service(self, name: str) -> ServiceView:
        """One service."""
        from fence.services.views import ServiceView

        return model_from_wire(ServiceView, self._get(_service_path(name)))

    def create_service(self, kind: str, name: str, *, mem: str | None = None) -> ServiceView:
        """Create a service; returns once its server accepts connections."""
        from fence.services.views import ServiceView

        body = {"type": kind, "name": name, **({"mem": mem} if mem else {})}
        return model_from_wire(ServiceView, self._call("POST", "/v1/services", body=body, read_timeout=900.0))

    def delete_service(self, name: str, *, delete_data: bool) -> None:
        """Remove a service (its data too with ``delete_data``)."""
        self._call("DELETE", _service_path(name), params=[("delete_data", "true")] if delete_data else None,
                   read_timeout=300.0)

    def restart_service(self, name: str) -> ServiceView:
        """Restart a service's server."""
        from fence.services.views import ServiceView

        return model_from_wire(ServiceView, self._call("POST", _service_path(name, "restart"), read_timeout=900.0))

    def bind_service(self, name: str, app: str, *, unbind: bool = False, on_line: LineCallback) -> ServiceView:
        """Bind (or unbind) a service and an app; the app restarts if it runs."""
        from fence.services.views import ServiceView

        verb = "unbind" if unbind else "bind"
        result = self._stream("POST", _service_path(name, verb), body={"app": app}, on_line=on_line, what=verb)
        return model_from_wire(ServiceView, _field(result, "service"))

    def backup_service(self, name: str) -> BackupRecord:
        """Make a backup of a service now."""
        from fence.services.views import BackupRecord

        return model_from_wire(BackupRecord, self._call("POST", _service_path(name, "backups"), read_timeout=6 * 3600.0))

    def service_backups(self, name: str) -> list[BackupRecord]:
        """A service's kept backups, oldest first."""
        from fence.services.views import BackupRecord

        return [model_from_wire(BackupRecord, b) for b in self._get(_service_path(name, "backups"))]

    def restore_service(self, name: str, backup: str) -> ServiceView:
        """Load a backup into a service."""
        from fence.services.views import ServiceView

        return model_from_wire(ServiceView, self._call("POST", _service_path(name, "restore"),
                                                       body={"backup": backup}, read_timeout=6 * 3600.0))

    def service_images(self) -> list[dict[str, Any]]:
        """Each service type's image (reference, id, size, services using it)."""
        return list(self._get("/v1/service-images"))

    def service_env(self, app: str) -> dict[str, str]:
        """The env an app gets from its bound services."""
        return dict(self._get(_app_path(app, "service-env")))

    # --- logs filters, stats, top, metrics (issue 18) -------------------------------------------

    def log_entries(self, name: str, *, since: float | None = None, tail: int | None = None,
                    process: str | None = None, instance: int | None = None) -> list[dict[str, Any]]:
        """The app's instance log lines as records (time, app, type, instance, release, stream, line),
        oldest first, filtered as ``fence logs`` asks."""
        params = [(key, str(value)) for key, value in (("since", since), ("tail", tail), ("type", process),
                                                        ("instance", instance)) if value is not None]
        return list(self._get(_app_path(name, "log-entries"), params=params))

    def stats(self, name: str) -> list[Any]:
        """Per-instance usage of an app (``fence.usage_models.InstanceStats``)."""
        from fence.usage_models import InstanceStats

        return [model_from_wire(InstanceStats, v) for v in self.stats_data(name)]

    def stats_data(self, name: str) -> list[dict[str, Any]]:
        """``stats`` as the daemon sent it (JSON-ready): `fence stats --json` prints it as it is,
        without building (and importing) the models only to turn them back into JSON."""
        return list(self._get(_app_path(name, "stats")))

    def node_top(self) -> list[Any]:
        """Every app's usage on the node, the busiest CPU first (``fence.usage_models.AppUsage``)."""
        from fence.usage_models import AppUsage

        return [model_from_wire(AppUsage, v) for v in self._get("/v1/node/top")]

    def metrics_text(self) -> str:
        """The daemon's /metrics page (Prometheus text format)."""
        conn = self._take()
        try:
            response = send(conn, "GET", "/metrics", params=None, content=None, timeout=self._timeout,
                             read_timeout=self._timeout)
            body = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            payload(response.status, body)
        return body.decode()


def model_from_wire(kind: type[T], data: Any) -> T:
    """``data`` rebuilt as ``kind`` (fence.wire, imported on first use)."""
    from fence.wire import from_wire as decode

    return decode(kind, data)


def _app_path(name: str, *rest: str) -> str:
    return "/".join(("/v1/apps", quote(name, safe=""), *rest))


def _service_path(name: str, *rest: str) -> str:
    return "/".join(["/v1/services", quote(name, safe=""), *rest])


def _field(result: dict[str, Any], key: str) -> Any:
    if key not in result:
        raise InternalError(detail=f"the daemon's result lacks {key!r}")
    return result[key]


def _name_from(text: str) -> str:
    """A folder or file name turned into an app-name candidate (the daemon checks it)."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")[:63]

