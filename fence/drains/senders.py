"""The transports a drain sends framed lines over: TCP or TLS syslog, UDP syslog, HTTP(S) NDJSON posts."""

from __future__ import annotations

import base64
import http.client
import ipaddress
import select
import socket
import ssl
from typing import Protocol
from urllib.parse import urlsplit

from fence.drains.frame import LogEvent, ndjson, octet_counted, rfc5424
from fence.drains.urls import DrainUrl

# RFC 5426 asks receivers to take at least 2048 octets; common ones take 8 KiB; longer lines are cut.
MAX_DATAGRAM = 8192


class SendFailed(Exception):
    """A send did not get through (the message says why, in one line)."""


class Sender(Protocol):
    """Delivers batches of events to one drain; the drain's thread is its only caller."""

    def send(self, events: list[LogEvent]) -> None:
        """Deliver the events, in order, or raise.

        Raises:
            SendFailed: nothing may be assumed delivered; the caller retries the batch.
        """

    def close(self) -> None:
        """Drop the connection (the next send makes a new one)."""


def sender_for(url: DrainUrl, *, hostname: str, timeout: float, ca_file: str | None,
               own_host: bool = True) -> Sender:
    """The transport for a drain URL.

    Args:
        url: the drain.
        hostname: this node's name (the syslog HOSTNAME, the JSON ``node``).
        timeout: seconds each connect and write may take.
        ca_file: a PEM file of CAs to trust for TLS (``logs/ca_file``), ``None``: the system's.
        own_host: whether the drain may reach this node's own addresses (loopback, link-local,
            unspecified): an app's drain only when the admin allows it (``logs/drain_loopback``),
            else a developer could make the daemon post to services that listen on the node only.
    """
    if url.scheme in ("http", "https"):
        sender: Sender = HttpSender(url, hostname=hostname, timeout=timeout, ca_file=ca_file)
    elif url.scheme == "syslog+udp":
        sender = UdpSender(url, hostname=hostname)
    else:
        sender = StreamSender(url, hostname=hostname, timeout=timeout,
                              ca_file=ca_file if url.scheme == "syslog+tls" else None, tls=url.scheme == "syslog+tls")
    return sender if own_host else _Guarded(sender, url)


class _Guarded:
    """A sender that first checks what the drain's host resolves to: none of the node's own addresses."""

    def __init__(self, sender: Sender, url: DrainUrl) -> None:
        self._sender, self._url = sender, url

    def send(self, events: list[LogEvent]) -> None:
        try:
            infos = socket.getaddrinfo(self._url.host, self._url.port, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            raise SendFailed(_reason(exc)) from exc
        for info in infos:
            address = str(info[4][0])
            if own_address(address):
                raise SendFailed(f"refused: {self._url.host} is this node's own address {address} "
                                 "(the admin allows that with logs/drain_loopback)")
        self._sender.send(events)

    def close(self) -> None:
        self._sender.close()


def own_address(address: str) -> bool:
    """Whether an IP address is the node's own: loopback, link-local or unspecified."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file or None)


class StreamSender:
    """Syslog over TCP (or TLS): RFC 5424 messages, octet-counted (RFC 6587 3.4.1, RFC 5425)."""

    def __init__(self, url: DrainUrl, *, hostname: str, timeout: float, ca_file: str | None, tls: bool) -> None:
        self._url, self._hostname, self._timeout = url, hostname, timeout
        self._tls = _tls_context(ca_file) if tls else None
        self._sock: socket.socket | None = None

    def send(self, events: list[LogEvent]) -> None:
        data = b"".join(octet_counted(rfc5424(e, hostname=self._hostname)) for e in events)
        try:
            if self._sock is not None and _peer_closed(self._sock):
                self.close()  # a receiver that restarted: a new connection, rather than writing into the void
            if self._sock is None:
                self._sock = self._connect()
            self._sock.sendall(data)
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise SendFailed(_reason(exc)) from exc

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self._url.host, self._url.port), timeout=self._timeout)
        if self._tls is None:
            return sock
        try:
            return self._tls.wrap_socket(sock, server_hostname=self._url.host)
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


class UdpSender:
    """Syslog over UDP: one RFC 5424 message per datagram (RFC 5426). The socket is connected,
    so a port nobody listens on (ICMP unreachable) shows as an error on a later send."""

    def __init__(self, url: DrainUrl, *, hostname: str) -> None:
        self._url, self._hostname = url, hostname
        self._sock: socket.socket | None = None

    def send(self, events: list[LogEvent]) -> None:
        try:
            if self._sock is None:
                family = socket.AF_INET6 if ":" in self._url.host else socket.AF_INET
                infos = socket.getaddrinfo(self._url.host, self._url.port, family, socket.SOCK_DGRAM)
                self._sock = socket.socket(infos[0][0], socket.SOCK_DGRAM)
                self._sock.connect(infos[0][4])
            for event in events:
                self._sock.send(rfc5424(event, hostname=self._hostname)[:MAX_DATAGRAM])
        except OSError as exc:
            self.close()
            raise SendFailed(_reason(exc)) from exc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class HttpSender:
    """HTTP(S): each batch is one POST of newline-delimited JSON objects; any 2xx is delivery."""

    def __init__(self, url: DrainUrl, *, hostname: str, timeout: float, ca_file: str | None) -> None:
        parts = urlsplit(url.url)
        self._url, self._hostname, self._timeout = url, hostname, timeout
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/x-ndjson", "User-Agent": "fence-drain"}
        if parts.username is not None:
            token = f"{parts.username}:{parts.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self._tls = _tls_context(ca_file) if url.scheme == "https" else None
        self._conn: http.client.HTTPConnection | None = None

    def send(self, events: list[LogEvent]) -> None:
        body = b"".join(ndjson(e, hostname=self._hostname) for e in events)
        try:
            if self._conn is None:
                self._conn = (http.client.HTTPSConnection(self._url.host, self._url.port, timeout=self._timeout,
                                                          context=self._tls) if self._tls is not None
                              else http.client.HTTPConnection(self._url.host, self._url.port, timeout=self._timeout))
            self._conn.request("POST", self._path, body=body, headers=self._headers)
            response = self._conn.getresponse()
            response.read(64 * 1024)
            if response.will_close:
                self.close()
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            self.close()
            raise SendFailed(_reason(exc)) from exc
        if not 200 <= response.status < 300:
            self.close()
            raise SendFailed(f"the receiver answered HTTP {response.status} {response.reason}"[:200])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the receiver closed an idle connection (it reads as ready: EOF or a reset)."""
    try:
        if not select.select([sock], [], [], 0)[0]:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]
