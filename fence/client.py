"""The daemon's API client (httpx over the Unix socket); errors arrive as the same fence error classes."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx

from fence.errors import DaemonNotRunning, DaemonPermissionDenied, FenceError, InternalError, UsageError, from_wire
from fence.models import (AppView, DropletRecord, GcReport, NodeInfo, NodeStatus, ReleaseRecord, RolloutReport,
                          SourceLimits, StackImage)
from fence.staging.gitfetch import looks_like_git_url
from fence.staging.sources import pack_directory_for_upload
from fence.tarstream import file_chunks
from fence.wire import from_wire as model_from_wire


class FenceClient:
    """Talks to one fence daemon."""

    def __init__(self, *, host_socket: Path, timeout: float = 30.0) -> None:
        self._host_socket = host_socket
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(host_socket)),
                                  base_url="http://fence", timeout=timeout)

    def info(self) -> NodeStatus:
        """The node's status.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
        """
        return model_from_wire(NodeStatus, self._get("/v1/info"))

    def images(self) -> list[StackImage]:
        """Stack images the node knows.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
            EngineUnavailable: the daemon cannot reach the engine.
        """
        return [model_from_wire(StackImage, item) for item in self._get("/v1/images")]

    def node_info(self) -> NodeInfo:
        """CPU, memory, disks and containers of the node.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
            EngineUnavailable: the daemon cannot reach the engine.
        """
        return model_from_wire(NodeInfo, self._get("/v1/node"))

    def gc(self, *, dry_run: bool) -> GcReport:
        """Run garbage collection (``dry_run``: only list what it would remove).

        Raises:
            DaemonNotRunning: nothing answers on the socket.
            EngineUnavailable: the daemon cannot reach the engine.
        """
        try:
            response = self._http.post("/v1/gc", params={"dry_run": str(dry_run).lower()},
                                       timeout=httpx.Timeout(30.0, read=600.0))
        except (httpx.ConnectError, FileNotFoundError, PermissionError) as exc:
            raise _unreachable(exc, self._host_socket) from exc
        return model_from_wire(GcReport, _payload(response))

    def rollout(self, *, restage: bool, on_line: Callable[[str], None]) -> RolloutReport:
        """Move every app onto the configured stack, passing progress lines on.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
            ImageNotFound: no configured stack is on the engine.
            RolloutFailed: some apps could not move (their old instances keep serving).
        """
        result = self._stream("POST", "/v1/stack/rollout", params=[("restage", str(restage).lower())],
                              on_line=on_line)
        if "rollout" not in result:
            raise InternalError(detail="the daemon ended the rollout stream without a result")
        return model_from_wire(RolloutReport, result["rollout"])

    def stage(self, *, source: str, app: str | None, buildpacks: tuple[str, ...],
              env_pairs: tuple[str, ...], on_line: Callable[[str], None],
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
        result = self._upload(source=source, app=app, buildpacks=buildpacks, env_pairs=env_pairs,
                              on_line=on_line, limits=limits, extra=[("force", "true")] if force else [])
        return model_from_wire(DropletRecord, result["droplet"])

    def _upload(self, *, source: str, app: str | None, buildpacks: tuple[str, ...],
                env_pairs: tuple[str, ...], on_line: Callable[[str], None],
                limits: SourceLimits | None, extra: list[tuple[str, str]]) -> dict[str, Any]:
        params: list[tuple[str, str]] = [("buildpack", b) for b in buildpacks] + extra
        params += [("env", pair) for pair in env_pairs]
        if app:
            params.append(("name", app))
        with tempfile.TemporaryDirectory(prefix="fence-upload-") as tmp:
            if looks_like_git_url(source):
                params.append(("git", source))
                body: Iterable[bytes] = iter([b""])
            else:
                host_source = Path(source).expanduser()
                if host_source.is_dir():
                    host_upload = Path(tmp) / "upload.tar.gz"
                    pack_directory_for_upload(host_source, host_upload, limits=limits or SourceLimits())
                    params.append(("fallback_name", _name_from(host_source.resolve().name)))
                    params.append(("packed_folder", "true"))  # a folder is staged as it is, never unwrapped
                elif host_source.is_file():
                    host_upload = host_source
                    params.append(("fallback_name", _name_from(host_source.name.split(".")[0])))
                else:
                    raise UsageError(detail=f"source {source!r} is not a folder, an archive or a git URL")
                params.append(("filename", host_upload.name))
                body = file_chunks(host_upload)
            return self._stream_staging(params, body, on_line)

    def droplets(self, app: str | None = None) -> list[DropletRecord]:
        """Droplets, newest first.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
        """
        params = {"app": app} if app else {}
        return [model_from_wire(DropletRecord, item) for item in self._get("/v1/droplets", params)]

    def _stream(self, method: str, path: str, *, params: list[tuple[str, str]] | None = None,
                content: Iterable[bytes] | None = None, body: Any = None,
                on_line: Callable[[str], None]) -> dict[str, Any]:
        """Send a request whose answer is NDJSON events; pass ``log`` lines on, return ``result``.

        Raises:
            DaemonNotRunning: nothing answers on the socket.
            FenceError: the ``error`` event, as the same class.
        """
        try:
            with self._http.stream(method, path, params=params, content=content, json=body,
                                   timeout=httpx.Timeout(30.0, read=None)) as response:
                if response.is_error:
                    response.read()
                    _payload(response)
                for raw in response.iter_lines():
                    if not raw.strip():
                        continue
                    event = json.loads(raw)
                    if event.get("event") == "log":
                        on_line(str(event.get("line", "")))
                    elif event.get("event") == "result":
                        return event
                    elif event.get("event") == "error":
                        raise from_wire(event["error"])
        except (httpx.ConnectError, FileNotFoundError, PermissionError) as exc:
            raise _unreachable(exc, self._host_socket) from exc
        except httpx.RemoteProtocolError as exc:
            raise InternalError(detail=f"the daemon closed the stream ({exc})") from exc
        return {}

    def _stream_staging(self, params: list[tuple[str, str]], body: Iterable[bytes],
                        on_line: Callable[[str], None]) -> dict[str, Any]:
        result = self._stream("POST", "/v1/stagings", params=params, content=body, on_line=on_line)
        if not result:
            raise InternalError(detail="the daemon ended the staging stream without a result")
        return result

    def push(self, *, source: str, app: str | None, buildpacks: tuple[str, ...], env_pairs: tuple[str, ...],
             instances: int | None, mem: str | None, on_line: Callable[[str], None],
             limits: SourceLimits | None = None, force: bool = False) -> AppView:
        """Stage and run an app (see ``stage`` for the arguments); returns it once healthy.

        Raises:
            FenceError: staging or deploy failures, as the daemon reported them.
        """
        extra = [("deploy", "true")] + ([("force", "true")] if force else [])
        if instances is not None:
            extra.append(("instances", str(instances)))
        if mem:
            extra.append(("mem", mem))
        result = self._upload(source=source, app=app, buildpacks=buildpacks, env_pairs=env_pairs,
                              on_line=on_line, limits=limits, extra=extra)
        return model_from_wire(AppView, result["app"])

    def apps(self) -> list[AppView]:
        """Every app."""
        return [model_from_wire(AppView, item) for item in self._get("/v1/apps")]

    def app(self, name: str) -> AppView:
        """One app in detail."""
        return model_from_wire(AppView, self._get(f"/v1/apps/{name}"))

    def releases(self, name: str) -> list[ReleaseRecord]:
        """An app's releases, newest first."""
        return [model_from_wire(ReleaseRecord, r) for r in self._get(f"/v1/apps/{name}/releases")]

    def act(self, name: str, action: str, *, on_line: Callable[[str], None],
            params: dict[str, str] | None = None, body: Any = None) -> dict[str, Any]:
        """start, stop, restart, restage, scale, rollback, env or run; returns the result event."""
        return self._stream("POST", f"/v1/apps/{name}/{action}", params=list((params or {}).items()),
                            body=body, on_line=on_line)

    def route(self, name: str, verb: str, host: str) -> AppView:
        """Add (``verb="add"``) or remove an extra host name of an app."""
        try:
            response = self._http.post(f"/v1/apps/{name}/routes", json={verb: host})
        except (httpx.ConnectError, FileNotFoundError, PermissionError) as exc:
            raise _unreachable(exc, self._host_socket) from exc
        return model_from_wire(AppView, _payload(response))

    def delete(self, name: str) -> None:
        """Delete an app."""
        try:
            response = self._http.delete(f"/v1/apps/{name}", timeout=httpx.Timeout(30.0, read=120.0))
        except (httpx.ConnectError, FileNotFoundError, PermissionError) as exc:
            raise _unreachable(exc, self._host_socket) from exc
        _payload(response)

    def logs(self, name: str, *, follow: bool, staging: bool, on_line: Callable[[str], None]) -> None:
        """Pass the app's log lines on (until the stream ends)."""
        params = [("follow", str(follow).lower()), ("staging", str(staging).lower())]
        self._stream("GET", f"/v1/apps/{name}/logs", params=params, on_line=on_line)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            response = self._http.get(path, params=params)
        except (httpx.ConnectError, httpx.RemoteProtocolError, FileNotFoundError, PermissionError) as exc:
            raise _unreachable(exc, self._host_socket) from exc
        return _payload(response)


def _unreachable(exc: Exception, host_socket: Path) -> FenceError:
    """The error for a socket that cannot be used: permission, or nothing listening."""
    if isinstance(exc, PermissionError) or "Permission denied" in str(exc) or "Errno 13" in str(exc):
        return DaemonPermissionDenied(socket=host_socket)
    return DaemonNotRunning(socket=host_socket)


def _name_from(text: str) -> str:
    """A folder or file name turned into an app-name candidate (the daemon checks it)."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")[:63]


def _payload(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        raise InternalError(detail=f"daemon answered {response.status_code} without JSON") from None
    if response.is_error:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            raise from_wire(body["error"])
        raise InternalError(detail=f"daemon answered {response.status_code}: {body!r}"[:300])
    return body
