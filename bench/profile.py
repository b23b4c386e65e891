"""`python -m bench.profile`: where fence's time goes — every engine call of a staging and of an
instance launch, timed in process, and a cProfile of the apps API's list with 200 apps."""

from __future__ import annotations

import cProfile
import collections
import io
import json
import pstats
import re
import tempfile
import time
import uuid
from pathlib import Path

import docker.api.client as docker_client

from bench.node import EXAMPLES, close_in_process, in_process_service

_calls: list[tuple[float, float, str, str]] = []
_t0 = [time.perf_counter()]


def _timed_send(original):  # noqa: ANN001, ANN202 - wraps requests' Session.send
    def send(self, request, **kwargs):  # noqa: ANN001, ANN202
        started = time.perf_counter()
        try:
            return original(self, request, **kwargs)
        finally:
            path = re.sub(r"/v1\.\d+", "", request.path_url.split("?")[0])
            path = re.sub(r"[0-9a-f]{64}", "{id}", path)
            _calls.append((started - _t0[0], time.perf_counter() - started, request.method, path))
    return send


def _report(title: str, lines: list[str], out: list[str]) -> None:
    out.append(f"== {title}")
    out.extend(lines)
    by = collections.defaultdict(lambda: [0, 0.0])
    for _, took, method, path in _calls:
        by[f"{method} {path}"][0] += 1
        by[f"{method} {path}"][1] += took
    out.append("   engine calls (until the response headers; streams are read after):")
    for key, (count, total) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        out.append(f"   {count:4d} × {key:45s} {total * 1000:8.1f} ms")
    _calls.clear()


def main() -> None:
    """Stage python-hello (cold, warm, warm forced), make its droplet image, launch three instances,
    list 200 apps; print it all."""
    docker_client.APIClient.send = _timed_send(docker_client.APIClient.send)
    from fence.models import AppRecord
    from fence.running.starter import Launch
    from fence.service import StageOrder
    from fence.wire import to_wire

    root = Path(tempfile.mkdtemp(prefix="fence-profile-"))
    out: list[str] = []
    service = in_process_service(root)
    try:
        for label, force in (("cold", False), ("warm (inputs unchanged: reused)", False), ("warm --force", True)):
            log: list[str] = []
            _t0[0] = time.perf_counter()
            record = service.stage(StageOrder(origin=str(EXAMPLES / "python-hello"), app="profile", fallback_name="x",
                                              buildpacks=(), env={}, force=force), staging_id=uuid.uuid4().hex[:12],
                                   on_line=lambda line: log.append(f"   {time.perf_counter() - _t0[0]:6.3f} {line}")
                                   if line.startswith("-----> ") else None)
            _report(f"stage python-hello {label}: {time.perf_counter() - _t0[0]:.3f} s", log, out)
        app = AppRecord(name="profile", instances=1, memory_mib=128, env={}, started=True, release=1,
                        health_timeout=None, urls=(), created_at="x")
        _t0[0] = time.perf_counter()
        image = service.apps._starter.prepare(record, 128)
        _report(f"droplet image {image.ref}: {time.perf_counter() - _t0[0]:.3f} s", [], out)
        for index in range(3):
            _t0[0] = time.perf_counter()
            container = service.apps._starter.launch(Launch(app=app, release=1, droplet=record, index=index))
            _report(f"launch instance {index}: {time.perf_counter() - _t0[0]:.3f} s", [], out)
            container.destroy()
        _calls.clear()
        for index in range(200):
            name = f"profile-{index:03d}"
            service.store.put_app(AppRecord(name=name, instances=1, memory_mib=128, env={"K": "v"}, started=False,
                                            release=None, health_timeout=None, urls=(), created_at="x"))
            service.store.add_release(name, record.id, "x", "profile")
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for _ in range(10):
            json.dumps(to_wire(service.apps.views()))
        profiler.disable()
        out.append(f"== apps list with 200 apps, in process: {(time.perf_counter() - started) * 100:.1f} ms a call")
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(12)
        out.extend("   " + line for line in text.getvalue().splitlines() if line.strip())
    finally:
        close_in_process(service, root)
    print("\n".join(out))


if __name__ == "__main__":
    main()
