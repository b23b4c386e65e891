"""Tiny PostgreSQL (SCRAM-SHA-256, simple queries), MySQL (native password, text queries) and Redis
(RESP) clients on the standard library."""

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


class MySQL:
    """One connection from a ``mysql://user:password@host:port/database`` URL."""

    _CAPS = 0x1 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x80000  # long password, with db, 4.1, transactions, secure, plugin

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 3306), timeout=10)
        self.seq = 0
        greeting = self._read()
        version_end = greeting.index(b"\0", 1)
        rest = greeting[version_end + 1:]
        scramble = rest[4:12]
        more = rest[13 + 2 + 1 + 2 + 2 + 1 + 10:]
        scramble += more[:12]
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        body = (struct.pack("<IIB", self._CAPS, 1 << 24, 45) + bytes(23) + user.encode() + b"\0"
                + bytes([20]) + _native(password, scramble) + parts.path.lstrip("/").encode() + b"\0"
                + b"mysql_native_password\0")
        self._write(body)
        answer = self._read()
        if answer[:1] == b"\xfe":  # switch to the plugin the server names, with a new scramble
            name_end = answer.index(b"\0", 1)
            self._write(_native(password, answer[name_end + 1:name_end + 21]))
            answer = self._read()
        if answer[:1] == b"\xff":
            raise RuntimeError(answer[9:].decode(errors="replace"))

    def _read(self) -> bytes:
        head = self._exactly(4)
        self.seq = (head[3] + 1) % 256
        return self._exactly(int.from_bytes(head[:3], "little"))

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise RuntimeError("connection closed")
            data += chunk
        return data

    def _write(self, payload: bytes) -> None:
        self.sock.sendall(len(payload).to_bytes(3, "little") + bytes([self.seq]) + payload)
        self.seq = (self.seq + 1) % 256

    def query(self, sql: str) -> list[tuple[str | None, ...]]:
        """Run one statement; returns its rows (values as text)."""
        self.seq = 0
        self._write(b"\x03" + sql.encode())
        first = self._read()
        if first[:1] == b"\xff":
            raise RuntimeError(first[9:].decode(errors="replace"))
        if first[:1] == b"\x00":
            return []
        columns, _ = _lenenc(first, 0)
        for _ in range(columns):
            self._read()
        self._read()  # EOF after the column definitions
        rows = []
        while True:
            packet = self._read()
            if packet[:1] == b"\xfe" and len(packet) < 9:
                return rows
            if packet[:1] == b"\xff":
                raise RuntimeError(packet[9:].decode(errors="replace"))
            row, offset = [], 0
            for _ in range(columns):
                if packet[offset] == 0xFB:
                    row.append(None)
                    offset += 1
                    continue
                size, offset = _lenenc(packet, offset)
                row.append(packet[offset:offset + size].decode())
                offset += size
            rows.append(tuple(row))

    def close(self) -> None:
        self.seq = 0
        self._write(b"\x01")
        self.sock.close()


def _native(password: str, scramble: bytes) -> bytes:
    """mysql_native_password: SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))."""
    if not password:
        return b""
    once = hashlib.sha1(password.encode()).digest()
    mask = hashlib.sha1(scramble[:20] + hashlib.sha1(once).digest()).digest()
    return bytes(a ^ b for a, b in zip(once, mask))


def _lenenc(data: bytes, offset: int) -> tuple[int, int]:
    first = data[offset]
    if first < 0xFB:
        return first, offset + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(data[offset + 1:offset + 1 + width], "little"), offset + 1 + width
