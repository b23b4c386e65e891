"""Hostile ignore patterns (issue 13 item 1) cannot freeze the daemon: staged or refused, the API keeps answering."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.node_kit import Node
from tests.security.probe_kit import RSS_LIMIT, ApiProbe

# Shapes that made the old regex translation backtrack for minutes or more on one path.
HOSTILE_PATTERNS = [
    "**/" * 14 + "x",
    "/".join(["**", "d"] * 20) + "/x",
    "*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
    "*" + "?" * 300 + "b",
    "[" + "a" * 500 + "]" + "*a" * 30 + "*b",
]
DEEP = "/".join(["d"] * 40)  # 40 folders deep
LONG_NAME = "a" * 240


# Within the count and length bounds, but each walks the whole depth: past the work budget.
COSTLY_PATTERNS = ["/".join(["**", "d"] * 30) + f"/z{n}" for n in range(400)]

CASES = {  # name: (ignore files, the last event, what its message holds)
    "staged": ({".stackatoignore": HOSTILE_PATTERNS}, "result", ""),
    "refused": ({".stackatoignore": HOSTILE_PATTERNS + [f"{'**/' * 14}p{n}" for n in range(1000)]}, "error",
                "'.stackatoignore' line 1001: is past the limit of 1000 ignore patterns"),
    "costly": ({".stackatoignore": COSTLY_PATTERNS, ".cfignore": [p + "c" for p in COSTLY_PATTERNS]}, "error",
               "ignore patterns took more than"),
}


def _hostile_archive(host_path: Path, ignore_files: dict[str, list[str]]) -> Path:
    files = {
        **{name: "\n".join(patterns) + "\n" for name, patterns in ignore_files.items()},
        "Procfile": "web: python3 -m http.server $PORT\n",
        **{f"{DEEP}/{'d/' * 20}f{n}": "deeper\n" for n in range(50)},
        f"{DEEP}/y": "deep\n",
        f"{DEEP}/{LONG_NAME}": "long\n",
        **{f"wide/{LONG_NAME[:200]}{n}": "w\n" for n in range(300)},
    }
    with tarfile.open(host_path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return host_path


def _stage(node: Node, host_archive: Path, *, name: str) -> dict:
    """Upload the archive straight to the daemon (so the daemon, not the CLI, reads the patterns);
    the last event: ``result`` or ``error``."""
    transport = httpx.HTTPTransport(uds=str(node.root / "fence.sock"))
    with httpx.Client(transport=transport, base_url="http://fence") as client:
        with client.stream("POST", "/v1/stagings", params={"name": name, "filename": host_archive.name},
                           content=host_archive.read_bytes(), timeout=httpx.Timeout(10, read=90)) as response:
            last: dict = {}
            for line in response.iter_lines():
                if line.strip():
                    last = json.loads(line)
            return last


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_ignore_patterns_do_not_freeze_the_daemon(node: Node, tmp_path: Path, case: str) -> None:
    ignore_files, outcome, said = CASES[case]
    host_archive = _hostile_archive(tmp_path / "hostile.tar.gz", ignore_files)
    last: dict | None = None
    with ApiProbe(node, rss_every=0.1) as probe:
        time.sleep(1)
        started = time.monotonic()
        try:
            last = _stage(node, host_archive, name=f"ignores-{case}")
        except httpx.ReadTimeout:
            pass
        took = time.monotonic() - started
        time.sleep(1)
    if last is None:
        node.kill_daemon()  # stuck in a match that holds the GIL: nothing else stops it
        pytest.fail(f"the staging did not end within {took:.0f} s (daemon killed); API p99 "
                    f"{probe.p99 * 1000:.0f} ms, {len(probe.errors)} errors over {len(probe.latencies)} calls")
    print(f"hostile ignores ({case}): {last.get('event')} after {took:.1f} s")
    probe.check(f"hostile ignores ({case})", rss_limit=RSS_LIMIT)
    assert last.get("event") == outcome, last
    if outcome == "error":
        error = last["error"]
        assert error["type"] == "SourceRefused" and "\n" not in error["message"]
        assert said in error["message"], error["message"]
    else:
        assert last["droplet"]["app"] == f"ignores-{case}"
    assert node.cli("kato", "status", "--json").exit_code == 0
