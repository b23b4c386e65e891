"""One API probe for the denial-of-service tests: calls the daemon beside an attack and samples its RSS."""

from __future__ import annotations

import statistics
import time
from typing import Self

import httpx
import psutil

from tests.integration.node_kit import Background, Node

MB = 1024 * 1024
RSS_LIMIT = 150 * MB  # what the DoS tests allow the daemon at its peak


class ApiProbe(Background):
    """While open: GETs ``/v1/apps`` over the daemon's socket every ``interval`` seconds,
    recording each call's latency and every error, and (``rss_every``) samples the daemon's RSS.

    Args:
        node: the node whose daemon is probed (its daemon must be running when sampling RSS).
        interval: seconds from the start of one call to the start of the next.
        timeout: seconds one call may take before it counts as an error.
        rss_every: seconds between RSS samples; ``None`` samples nothing.
        settle: seconds ``__enter__`` waits, so that calls before the attack are counted.
    """

    def __init__(self, node: Node, *, interval: float = 0.1, timeout: float = 5.0,
                 rss_every: float | None = None, settle: float = 0.0) -> None:
        self._socket = str(node.root / "fence.sock")
        self._daemon = psutil.Process(node.proc.pid) if rss_every is not None and node.proc else None
        self._interval, self._timeout, self._rss_every, self._settle = interval, timeout, rss_every, settle
        super().__init__(self._call, *([self._sample] if self._daemon is not None else []))
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.peak_rss = 0

    def __enter__(self) -> Self:
        super().__enter__()
        time.sleep(self._settle)
        return self

    def _call(self) -> None:
        with httpx.Client(transport=httpx.HTTPTransport(uds=self._socket), base_url="http://fence") as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.get("/v1/apps", timeout=self._timeout)
                    if response.status_code != 200:
                        self.errors.append(f"HTTP {response.status_code}: {response.text[:100]}")
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                self.latencies.append(time.monotonic() - started)
                self._stop.wait(max(0.0, self._interval - (time.monotonic() - started)))

    def _sample(self) -> None:
        assert self._daemon is not None and self._rss_every is not None
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, self._daemon.memory_info().rss)
            except psutil.NoSuchProcess:
                self.errors.append("the daemon is gone")
                return
            self._stop.wait(self._rss_every)

    @property
    def too_big(self) -> bool:
        """Whether the daemon's RSS has passed ``RSS_LIMIT`` (an attack can be cut short)."""
        return self.peak_rss > RSS_LIMIT

    @property
    def p99(self) -> float:
        """The 99th percentile of the call latencies, in seconds (0 with fewer than 2 calls)."""
        return statistics.quantiles(self.latencies, n=100)[98] if len(self.latencies) > 1 else 0.0

    def check(self, what: str = "API probe", *, min_calls: int = 2, p99_under: float = 1.0,
              rss_limit: int | None = None) -> None:
        """Assert the API answered every call, ``min_calls`` at least, 99 % of them within
        ``p99_under`` seconds, and (``rss_limit``) the daemon's RSS stayed below it."""
        rss = f"; daemon RSS peak {self.peak_rss / 1e6:.0f} MB" if self._daemon is not None else ""
        print(f"{what}: API p99 {self.p99 * 1000:.0f} ms over {len(self.latencies)} calls, "
              f"{len(self.errors)} errors{rss}")
        assert self.errors == [], self.errors[:5]
        assert len(self.latencies) >= min_calls, f"the probe made {len(self.latencies)} calls"
        assert self.p99 < p99_under, f"API p99 {self.p99 * 1000:.0f} ms"
        if rss_limit is not None:
            assert self.peak_rss < rss_limit, f"daemon RSS reached {self.peak_rss / 1e6:.0f} MB"
