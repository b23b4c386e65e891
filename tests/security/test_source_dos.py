"""Hostile uploads against the real daemon: a zip bomb of metadata, and six memory-heavy uploads at once."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.node_kit import Node, started_node
from tests.security.probe_kit import ApiProbe
from tests.unit.zip_kit import central_record, empty_files_zip, end_records

MB = 1024 * 1024


@pytest.fixture
def node(tmp_path: Path, engine: str):  # noqa: ANN201
    """A fresh daemon for each test: what one test's upload left in its heap must not blur the next."""
    yield from started_node(tmp_path / "home")


def _watch(node: Node) -> ApiProbe:
    """While open: a probe calls the API every 100 ms, and the daemon's RSS is sampled every 20 ms."""
    return ApiProbe(node, timeout=10, rss_every=0.02, settle=0.3)


def _api(node: Node) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(node.root / "fence.sock")), base_url="http://fence")


def _upload(node: Node, host_zip: Path) -> dict:
    """POST the zip as a staging; the final NDJSON event."""
    with _api(node) as client, host_zip.open("rb") as body:
        response = client.post("/v1/stagings", params={"filename": host_zip.name, "name": "hostile"},
                               content=body, timeout=httpx.Timeout(30.0, read=300.0))
    return json.loads(response.text.strip().splitlines()[-1])


def _rss(node: Node) -> int:
    assert node.proc is not None
    return psutil.Process(node.proc.pid).memory_info().rss


def test_a_zip_declaring_a_million_entries_is_refused_in_one_line_and_the_daemon_stays_small(
        node: Node, tmp_path: Path) -> None:
    """A million real central-directory records (54 MB; zipfile built every one before counting:
    540 MiB of daemon RSS) are refused from the end record, the API answering throughout."""
    host_zip = tmp_path / "bomb.zip"
    local = b"PK\x03\x04" + bytes(26)
    directory = b"".join(central_record(b"e%07d" % i, 0) for i in range(1_000_000))
    host_zip.write_bytes(local + directory + end_records(entries=1_000_000, cd_size=len(directory),
                                                         cd_offset=len(local), zip64=True))
    with _watch(node) as watch:
        result = node.cli("fence", "stage", str(host_zip), "--name", "bomb", timeout=300)
        time.sleep(0.5)
    print(f"zip bomb: refused; API p99 {watch.p99 * 1000:.0f} ms over {len(watch.latencies)} calls; "
          f"daemon RSS peak {watch.peak_rss / MB:.0f} MiB")
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr == ("error: source refused: 'e0100000': is past the limit of 100000 entries "
                             "(max_files): the archive declares 1000000\n")
    assert watch.errors == [] and watch.p99 < 1.0
    assert watch.peak_rss < 150 * MB
    assert not list((node.root / "work").glob("*")), "the upload's scratch folder was left"


def test_six_hostile_uploads_at_once_cost_what_staging_concurrency_allows(node: Node, tmp_path: Path) -> None:
    """Each upload is a zip of 30,000 entries (under every limit) whose last entry is refused, so
    checking it holds all its entries first (~25 MB); six at once must not cost six times that.

    With staging/concurrency 1 the six are checked one after another: what is left of the heap
    between them (fragmentation) aside, six cost what one does; on main they cost ~5x.
    """
    host_zip = tmp_path / "heavy.zip"
    names = [f"d{i // 1000:03}/file-{i:06}.txt" for i in range(30_000)] + ["../escape"]
    host_zip.write_bytes(empty_files_zip(names, zip64=True))
    concurrency = 1
    assert node.cli("kato", "config", "set", "fence", "staging/concurrency", str(concurrency)).exit_code == 0
    time.sleep(1)
    base = _rss(node)
    with _watch(node) as one:
        assert "'..' component" in _upload(node, host_zip)["error"]["message"]
    time.sleep(1)
    with _watch(node) as six, ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: _upload(node, host_zip), range(6)))
    one_grew, six_grew = one.peak_rss - base, six.peak_rss - base
    print(f"one hostile upload grew the daemon {one_grew / MB:.0f} MiB, six at once {six_grew / MB:.0f} MiB "
          f"(staging/concurrency {concurrency}); peak {six.peak_rss / MB:.0f} MiB; API p99 "
          f"{six.p99 * 1000:.0f} ms")
    assert all("'..' component" in result["error"]["message"] for result in results)
    assert six_grew < (concurrency + 1.5) * one_grew
    assert six.peak_rss < 150 * MB
    assert six.errors == [] and six.p99 < 1.0
