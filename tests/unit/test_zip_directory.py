"""A zip's end records and central directory are checked against the limits before zipfile builds entries."""

from __future__ import annotations

import io
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from fence.errors import SourceRefused
from fence.models import SourceLimits
from fence.staging.gitfetch import FetchPolicy
from fence.staging.sources import prepare_source
from fence.staging.zip_directory import check_zip_directory, metadata_limit
from tests.unit.zip_kit import central_record, declared_only_zip, empty_files_zip, end_records

# These tests are about checking and packing, not about where a source may come from.
ANYWHERE = FetchPolicy(local_roots=(Path("/"),))


def _refusal(host_zip: Path, **limits: int) -> tuple[str, float, int]:
    """Prepare the zip as the daemon does; the one-line refusal, the seconds it took and the peak
    bytes Python allocated meanwhile."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(SourceRefused) as caught:
            prepare_source(str(host_zip), policy=ANYWHERE, host_workdir=host_zip.parent / "work", limits=SourceLimits(**limits),
                           uid=1000, gid=1000)
        took = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = caught.value.message
    assert "\n" not in message and message.startswith("source refused: "), message
    assert list((host_zip.parent / "work").glob("*.tar")) == []
    return message, took, peak


def test_a_zip_declaring_a_million_entries_is_refused_from_its_end_record(tmp_path: Path) -> None:
    host_zip = tmp_path / "bomb.zip"
    host_zip.write_bytes(declared_only_zip(1_000_000))
    message, took, peak = _refusal(host_zip)
    assert message == ("source refused: 'bomb.zip': is past the limit of 100000 entries (max_files): "
                       "the archive declares 1000000")
    assert peak < 2 * 1024 * 1024, took  # its 1 MiB read buffer; zipfile took ~540 MiB (memory, not time: no timed asserts)


def test_a_real_200k_entry_zip_is_refused_naming_the_first_entry_past_the_limit(tmp_path: Path) -> None:
    """200,000 real records (zipfile itself would build 200,000 ZipInfo objects, ~110 MB)."""
    host_zip = tmp_path / "many.zip"
    host_zip.write_bytes(empty_files_zip((f"f{i:06}" for i in range(200_000)), zip64=True))
    message, took, peak = _refusal(host_zip)
    assert message.startswith("source refused: 'f100000': is past the limit of 100000 entries (max_files)")
    assert "declares 200000" in message
    assert peak < 4 * 1024 * 1024, (took, peak)


def test_a_count_that_lies_low_is_caught_by_counting_the_records(tmp_path: Path) -> None:
    """zipfile parses records until the directory's bytes are used up, whatever the count says."""
    host_zip = tmp_path / "liar.zip"
    host_zip.write_bytes(empty_files_zip((f"f{i:04}" for i in range(2000)), declared=5))
    message, _, peak = _refusal(host_zip, max_files=1000)
    assert message == "source refused: 'f1000': is past the limit of 1000 entries (max_files)"
    assert peak < 2 * 1024 * 1024


def test_a_central_directory_over_the_metadata_cap_is_refused(tmp_path: Path) -> None:
    host_zip = tmp_path / "fat.zip"
    host_zip.write_bytes(empty_files_zip((f"f{i}" for i in range(20)), comment=b"c" * 65_000))
    limits = SourceLimits(max_files=100)
    message, _, _ = _refusal(host_zip, max_files=100)
    assert "has a central directory of" in message and f"past the limit of {metadata_limit(limits)}" in message
    assert "256 bytes per staging/max_files entry plus 1 MiB" in message


def test_a_zip64_locator_pointing_elsewhere_is_refused(tmp_path: Path) -> None:
    record = central_record(b"a", 0)
    local = b"PK\x03\x04" + bytes(26)
    host_zip = tmp_path / "moved.zip"
    host_zip.write_bytes(local + record + end_records(entries=1, cd_size=len(record), cd_offset=len(local),
                                                      zip64=True, locator_offset=7))
    message, _, _ = _refusal(host_zip)
    assert "zip64 end record that is not where its locator points" in message


def test_a_damaged_central_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    data = bytearray(empty_files_zip(["a", "b"]))
    data[data.rindex(b"PK\x01\x02")] = ord("X")
    host_zip = tmp_path / "damaged.zip"
    host_zip.write_bytes(bytes(data))
    message, _, _ = _refusal(host_zip)
    assert message == ("source refused: 'damaged.zip': is not a readable zip archive (its central "
                       "directory is damaged)")


def test_a_directory_larger_than_the_file_is_refused(tmp_path: Path) -> None:
    host_zip = tmp_path / "short.zip"
    host_zip.write_bytes(b"PK\x03\x04" + bytes(26) + end_records(entries=3, cd_size=10_000, cd_offset=30))
    assert "more than the file holds" in _refusal(host_zip)[0]


def _zipfile_bytes(*, comment: bytes = b"", prefix: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", b"print('hi')\n")
        archive.writestr("lib/", b"")
        archive.comment = comment
    return prefix + buffer.getvalue()


@pytest.mark.parametrize("shape", ["plain", "comment", "prepended", "zip64", "zip64-prepended", "empty"])
def test_the_check_reads_the_directory_zipfile_reads(tmp_path: Path, shape: str) -> None:
    data = {
        "plain": lambda: _zipfile_bytes(),
        "comment": lambda: _zipfile_bytes(comment=b"an archive comment, so the end record is not the last 22 bytes"),
        "prepended": lambda: _zipfile_bytes(prefix=b"#!/bin/sh\nexit 0\n" * 10),
        "zip64": lambda: empty_files_zip(["a", "b/c"], zip64=True),
        "zip64-prepended": lambda: b"stub" * 100 + empty_files_zip(["a", "b/c"], zip64=True),
        "empty": lambda: empty_files_zip([]),
    }[shape]()
    host_zip = tmp_path / "a.zip"
    host_zip.write_bytes(data)
    checked = check_zip_directory(host_zip, limits=SourceLimits())
    with zipfile.ZipFile(host_zip) as archive:
        assert (checked.entries, checked.start) == (len(archive.infolist()), archive.start_dir)
    assert checked.zip64 == shape.startswith("zip64")


def test_a_zip64_archive_within_the_limits_is_staged(tmp_path: Path) -> None:
    host_zip = tmp_path / "big-style.zip"
    host_zip.write_bytes(empty_files_zip([f"f{i}" for i in range(50)], zip64=True))
    prepared = prepare_source(str(host_zip), policy=ANYWHERE, host_workdir=tmp_path / "work", limits=SourceLimits(),
                              uid=1000, gid=1000)
    assert prepared.files == 51  # the app folder and 50 files


def test_exactly_max_files_entries_pass(tmp_path: Path) -> None:
    host_zip = tmp_path / "full.zip"
    host_zip.write_bytes(empty_files_zip([f"f{i}" for i in range(10)]))
    assert check_zip_directory(host_zip, limits=SourceLimits(max_files=10)).entries == 10
