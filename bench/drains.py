"""The drain figures: a 10,000 lines/s flood from one instance through a TCP syslog drain, with the receiver up and down."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from bench.node import BenchNode
from bench.stats import Summary
from tests.drain_kit import (  # the receivers the drain tests use
    SyslogTcpReceiver,
    sd_line,
)

APP = "benchdrain"
RATE = 10_000  # lines per second
SECONDS = 10
# Writes RATE lines a second for SECONDS seconds in 10 ms steps, then answers with how many it wrote.
APP_PY = '''
import os, sys, time, urllib.parse, http.server as s
class H(s.BaseHTTPRequestHandler):
    def do_GET(self):
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        rate, seconds, pad, written = int(query.get("rate", 0)), float(query.get("seconds", 0)), "y" * 60, 0
        began = time.monotonic()
        while written < rate * seconds:
            due = min(int((time.monotonic() - began) * rate) + rate // 100, int(rate * seconds))
            sys.stdout.write("".join(f"bench {i} {pad}\\n" for i in range(written, due)))
            sys.stdout.flush()
            written = due
            time.sleep(0.01)
        body = f"{written} {time.monotonic() - began:.3f}".encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass
s.HTTPServer.allow_reuse_address = True
s.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
'''


def measure(node: BenchNode, *, host_work: Path, say: Callable[[str], None]) -> dict[str, Summary]:
    """Received/written with the receiver up; daemon RSS and drops with it down for SECONDS s."""
    receiver = SyslogTcpReceiver()
    try:
        host_app = host_work / "drain-app"
        host_app.mkdir(parents=True, exist_ok=True)
        (host_app / "app.py").write_text(APP_PY)
        (host_app / "Procfile").write_text("web: python3 -u app.py\n")
        node.cli("kato", "config", "set", "fence", "logs/drain_loopback", "true")  # the receiver is on loopback
        pushed = node.cli("fence", "push", str(host_app), "--name", APP, "--buildpack", "procfile")
        if pushed.returncode != 0:
            raise RuntimeError(f"push failed: {pushed.stderr.strip()[-500:]}")
        added = node.cli("fence", "drain", "add", APP, "tcp", f"syslog://127.0.0.1:{receiver.port}")
        if added.returncode != 0:
            raise RuntimeError(f"drain add failed: {added.stderr.strip()}")
        time.sleep(3)  # the taps' next pass follows the instance
        written, took = _flood(node)
        received = _settled(lambda: len(_numbers(receiver.messages)), written)
        say(f"       receiver up: {written} lines written in {took:.1f} s ({written / took:.0f}/s), "
            f"{received} distinct received ({len(receiver.messages)} messages: the engine's follow "
            "repeats some lines across a log rotation)")
        receiver.keep_only_count()
        receiver.stop()
        rss: list[float] = []
        sampling = threading.Event()
        daemon = psutil.Process(node.proc.pid) if node.proc is not None else None

        def sample() -> None:
            while not sampling.is_set() and daemon is not None:
                rss.append(daemon.memory_info().rss / 1e6)
                sampling.wait(0.25)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        down_written, down_took = _flood(node)
        time.sleep(2)
        sampling.set()
        sampler.join()
        drain = _drain_status(node)
        say(f"       receiver down: {down_written} lines in {down_took:.1f} s, daemon RSS ≤ {max(rss):.0f} MB, "
            f"drain {drain.get('state')}, {drain.get('dropped')} dropped, error {drain.get('error')!r}")
        receiver.start()
        return {"drains.written": Summary(samples=(float(written),), unit="lines"),
                "drains.received": Summary(samples=(float(received),), unit="lines"),
                "drains.rate": Summary(samples=(written / took,), unit="lines/s"),
                "drains.rss_down": Summary(samples=tuple(rss), unit="MB"),
                "drains.dropped": Summary(samples=(float(drain.get("dropped") or 0),), unit="lines"),
                "drains.down": Summary(samples=(1.0 if drain.get("state") == "down" else 0.0,), unit="")}
    finally:
        node.cli("fence", "delete", APP)
        receiver.stop()


def _flood(node: BenchNode) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", node.router_port, timeout=SECONDS * 6)
    try:
        conn.request("GET", f"/?rate={RATE}&seconds={SECONDS}", headers={"Host": f"{APP}.localhost"})
        written, took = conn.getresponse().read().decode().split()
        return int(written), float(took)
    finally:
        conn.close()


def _numbers(messages: list[str]) -> set[str]:
    """The distinct ``bench N`` lines among the messages."""
    return {line.split()[1] for line in map(sd_line, list(messages)) if line.startswith("bench ")}


def _settled(count: Callable[[], int], expected: int, *, quiet: float = 5.0, most: float = 120.0) -> int:
    """The count once it reached ``expected`` or stopped moving for ``quiet`` seconds."""
    deadline, last, moved = time.monotonic() + most, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = count()
        if now >= expected:
            return now
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > quiet:
            return now
        time.sleep(0.1)
    return count()


def _drain_status(node: BenchNode) -> dict:
    status = json.loads(node.cli("kato", "status", "--json").stdout)
    return next((d for d in status.get("drains", []) if d["app"] == APP and d["name"] == "tcp"), {})
