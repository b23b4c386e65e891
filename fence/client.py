"""The daemon's API client (httpx over the Unix socket); errors arrive as the same fence error classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from fence.errors import DaemonNotRunning, InternalError, from_wire
from fence.models import NodeStatus, StackImage
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

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _get(self, path: str) -> Any:
        try:
            response = self._http.get(path)
        except (httpx.ConnectError, httpx.RemoteProtocolError, FileNotFoundError) as exc:
            raise DaemonNotRunning(socket=self._host_socket) from exc
        return _payload(response)


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
