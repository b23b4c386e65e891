"""Tiny PostgreSQL (SCRAM-SHA-256, simple queries) and Redis (RESP) clients on the standard library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
from urllib.parse import unquote, urlsplit


class PgError(Exception):
    """The server answered with an error."""


class Postgres:
    """One connection from a ``postgres://user:password@host:port/database`` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 5432), timeout=10)
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        params = f"user\0{user}\0database\0{parts.path.lstrip('/')}\0\0".encode()
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        self._authenticate(password)

    def _read(self) -> tuple[bytes, bytes]:
        head = self._exactly(5)
        kind, length = head[:1], struct.unpack("!i", head[1:])[0]
        return kind, self._exactly(length - 4)

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise PgError("connection closed")
            data += chunk
        return data

    def _send(self, kind: bytes, body: bytes) -> None:
        self.sock.sendall(kind + struct.pack("!i", 4 + len(body)) + body)

    def _authenticate(self, password: str) -> None:
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        while True:
            kind, body = self._read()
            if kind == b"E":
                raise PgError(_error_text(body))
            if kind == b"Z":
                return
            if kind != b"R":
                continue
            code = struct.unpack("!i", body[:4])[0]
            if code == 10:  # SASL: start SCRAM-SHA-256
                first = ("n,," + first_bare).encode()
                self._send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
            elif code == 11:  # SASL continue: the server's nonce, salt, iterations
                server_first = body[4:].decode()
                fields = dict(item.split("=", 1) for item in server_first.split(","))
                salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(fields["s"]),
                                             int(fields["i"]))
                client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
                stored_key = hashlib.sha256(client_key).digest()
                final_bare = f"c=biws,r={fields['r']}"
                message = f"{first_bare},{server_first},{final_bare}".encode()
                signature = hmac.new(stored_key, message, hashlib.sha256).digest()
                proof = bytes(a ^ b for a, b in zip(client_key, signature))
                self._send(b"p", f"{final_bare},p={base64.b64encode(proof).decode()}".encode())
            elif code not in (0, 12):
                raise PgError(f"authentication method {code} is not supported")

    def query(self, sql: str) -> list[tuple[str | None, ...]]:
        """Run one statement; returns its rows (values as text)."""
        self._send(b"Q", sql.encode() + b"\0")
        rows, error = [], None
        while True:
            kind, body = self._read()
            if kind == b"D":
                count, offset, row = struct.unpack("!h", body[:2])[0], 2, []
                for _ in range(count):
                    size = struct.unpack("!i", body[offset:offset + 4])[0]
                    offset += 4
                    row.append(None if size < 0 else body[offset:offset + size].decode())
                    offset += max(size, 0)
                rows.append(tuple(row))
            elif kind == b"E":
                error = _error_text(body)
            elif kind == b"Z":
                if error:
                    raise PgError(error)
                return rows

    def close(self) -> None:
        self._send(b"X", b"")
        self.sock.close()


def _error_text(body: bytes) -> str:
    fields = {part[:1]: part[1:].decode(errors="replace") for part in body.split(b"\0") if part}
    return fields.get(b"M", "error")


def quote(text: str) -> str:
    """A SQL string literal (standard_conforming_strings is on)."""
    return "'" + text.replace("'", "''") + "'"


class Redis:
    """One connection from a ``redis://:password@host:port/db`` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 6379), timeout=10)
        self.file = self.sock.makefile("rb")
        if parts.password:
            self.command("AUTH", unquote(parts.password))

    def command(self, *args: str) -> object:
        """Send one command; returns its reply."""
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self) -> object:
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)[:-2]
            return data.decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line[:40]!r}")

    def close(self) -> None:
        self.sock.close()
