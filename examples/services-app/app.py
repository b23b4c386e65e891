"""services-app: writes rows to its bound PostgreSQL (DATABASE_URL) and a value to its Redis
(REDIS_URL), and reads them back (a MySQL DATABASE_URL works too); /connect?host=H&port=P says
whether a TCP connect succeeds."""

from __future__ import annotations

import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from clients import MySQL, Postgres, Redis, quote


def rows(add: str | None, clear: bool = False) -> list[str]:
    url = os.environ["DATABASE_URL"]
    db = MySQL(url) if url.startswith("mysql://") else Postgres(url)
    try:
        db.query("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)")
        if clear:
            db.query("DELETE FROM notes")
        if add is not None:
            db.query(f"INSERT INTO notes (body) VALUES ({quote(add)})")
        return [r[0] or "" for r in db.query("SELECT body FROM notes ORDER BY id")]
    finally:
        db.close()


def cache(value: str | None) -> object:
    r = Redis(os.environ["REDIS_URL"])
    try:
        if value is not None:
            r.command("SET", "note", value)
        return r.command("GET", "note")
    finally:
        r.close()


def connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3):
            return "open"
    except OSError as exc:
        return f"closed: {type(exc).__name__}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/rows":
                answer: object = rows(query.get("add"), clear="clear" in query)
            elif url.path == "/cache":
                answer = cache(query.get("set"))
            elif url.path == "/connect":
                answer = connect(query["host"], int(query["port"]))
            elif url.path == "/env":
                answer = sorted(k for k in os.environ if k.endswith(("_URL", "_SERVICES")))
            else:
                answer = "services-app"
            status = 200
        except Exception as exc:  # noqa: BLE001 - the test reads the reason
            answer, status = f"{type(exc).__name__}: {exc}", 500
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
