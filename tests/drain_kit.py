"""Log receivers on loopback for drain tests and the bench: TCP syslog (octet-counted, optionally TLS), UDP syslog, HTTP NDJSON."""

from __future__ import annotations

import http.server
import json
import re
import socket
import ssl
import subprocess
import threading
from pathlib import Path

_SD = re.compile(r'\[fence@32473 ([^\]]*)\]')
_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def sd_params(message: str) -> dict[str, str]:
    """The fence structured-data parameters of one RFC 5424 message."""
    match = _SD.search(message)
    return dict(_PARAM.findall(match.group(1))) if match else {}


def sd_line(message: str) -> str:
    """The MSG part of one fence RFC 5424 message (after its structured data)."""
    return message.split("] ", 1)[1] if "] " in message else ""


def self_signed(host_dir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (cert, key), made with openssl."""
    cert, key = host_dir / "cert.pem", host_dir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class SyslogTcpReceiver:
    """Accepts octet-counted RFC 5424 messages over TCP (TLS with ``cert``); ``stop`` and
    ``start`` again keep the port."""

    def __init__(self, *, cert: tuple[Path, Path] | None = None, port: int = 0) -> None:
        self.messages: list[str] = []
        self.count = 0
        self._keep = True
        self._cert = cert
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self.port = port
        self._server: socket.socket | None = None
        self.start()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def keep_only_count(self) -> None:
        """Count messages without keeping them (a flood)."""
        self._keep = False

    def _accept(self, server: socket.socket) -> None:
        context = None
        if self._cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self._cert[0]), str(self._cert[1]))
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn, context), daemon=True).start()

    def _read(self, conn: socket.socket, context: ssl.SSLContext | None) -> None:
        try:
            if context is not None:
                conn = context.wrap_socket(conn, server_side=True)
            with self._lock:
                self._conns.append(conn)
            pending = b""
            while chunk := conn.recv(65536):
                pending += chunk
                while b" " in pending:
                    length, _, rest = pending.partition(b" ")
                    size = int(length)
                    if len(rest) < size:
                        break
                    message, pending = rest[:size], rest[size:]
                    with self._lock:
                        self.count += 1
                        if self._keep:
                            self.messages.append(message.decode("utf-8", "replace"))
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        """Close the listening socket and every connection (a receiver that died)."""
        if self._server is not None:
            try:  # wakes the accept() another thread waits in; close() alone leaves the port listening
                self._server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


class SyslogUdpReceiver:
    """Takes RFC 5424 messages, one per datagram."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            self.messages.append(data.decode("utf-8", "replace"))

    def stop(self) -> None:
        self._sock.close()


class NdjsonReceiver:
    """An HTTP server that keeps the JSON lines POSTed to it."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        records = self.records

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                records.extend(json.loads(line) for line in body.splitlines() if line.strip())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
