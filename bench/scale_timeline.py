"""`python -m bench.scale_timeline [REPS [EXAMPLE]]`: where one `scale APP N+1` spends its time, in process
(real engine and nginx): every engine call, reconcile pass, health answer, `nginx -t` and reload,
timed from the scale call."""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import requests

from bench.node import EXAMPLES, close_in_process, free_port, in_process_service

_t0 = [0.0]
_events: list[tuple[float, str]] = []


def _timed(original: Callable[..., Any], label: Callable[..., str]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _events.append((started - _t0[0], f"{label(*args, **kwargs)} {1000 * (time.perf_counter() - started):.0f} ms"))
    return call


def _request_label(session: object, request: Any, **kwargs: Any) -> str:
    path = re.sub(r"[0-9a-f]{64}", "{id}", re.sub(r"/v1\.\d+", "", request.path_url.split("?")[0]))
    return f"{request.method} {path}"


def main() -> None:
    """Push an example (python-hello; `dockerfile-app` for an image app) with one instance, then
    time ``reps`` scale-ups 1 → 2 (printed one by one)."""
    from fence.router.nginx import NginxRouter
    from fence.running.health import NetworkHealth
    from fence.running.manager import InstanceManager
    from fence.service import StageOrder

    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    example = sys.argv[2] if len(sys.argv) > 2 else "python-hello"
    requests.Session.send = _timed(requests.Session.send, _request_label)  # type: ignore[method-assign]
    for cls, name, label in ((NginxRouter, "_check", "nginx -t"), (NginxRouter, "_reload", "reload"),
                             (NginxRouter, "apply", "router.apply"), (InstanceManager, "tick", "pass")):
        setattr(cls, name, _timed(getattr(cls, name), lambda *a, _l=label, **k: _l))
    check = NetworkHealth.check

    def noted_check(self: NetworkHealth, address: str, port: int, probe: Any, timeout: float) -> str | None:
        started = time.perf_counter()
        failed = check(self, address, port, probe, timeout)
        _events.append((started - _t0[0], f"health check {address}: {failed or 'passed'} "
                                          f"{1000 * (time.perf_counter() - started):.0f} ms"))
        return failed

    NetworkHealth.check = noted_check  # type: ignore[method-assign]
    root = Path(tempfile.mkdtemp(prefix="fence-timeline-"))
    service = in_process_service(root, router_port=free_port())
    service.start()
    totals = []
    try:
        service.push(StageOrder(origin=str(EXAMPLES / example), app="timeline", fallback_name="timeline",
                                buildpacks=(), env={}, force=False),
                     instances=1, memory_mib=None, staging_id=uuid.uuid4().hex[:12], on_line=lambda line: None)
        for rep in range(reps):
            _events.clear()
            _t0[0] = time.perf_counter()
            service.apps.scale("timeline", 2, on_line=lambda line: None)
            totals.append(time.perf_counter() - _t0[0])
            print(f"== scale 1 -> 2, #{rep + 1}: returned at {totals[-1]:.3f} s")
            for at, what in sorted(_events):
                if not what.startswith("GET /containers/json "):  # the passes' listings
                    print(f"   {at:7.3f} {what}")
            service.apps.scale("timeline", 1, on_line=lambda line: None)
            time.sleep(3)  # the stopped instance drains and goes
        print(f"median {statistics.median(totals):.3f} s over {reps}")
    finally:
        close_in_process(service, root)


if __name__ == "__main__":
    main()
