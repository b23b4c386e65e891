"""Procfile parsing: good files, and a one-line error naming the line for every bad one."""

from __future__ import annotations

import pytest

from fence.errors import ProcfileInvalid
from fence.staging.procfile import parse_procfile


def _message(text: bytes) -> str:
    with pytest.raises(ProcfileInvalid) as caught:
        parse_procfile(text)
    message = caught.value.message
    assert "\n" not in message and "\r" not in message
    return message


def test_types_and_commands_in_order_with_comments_blanks_and_crlf() -> None:
    text = b"# processes\r\n\r\nweb: gunicorn app:app --bind 0.0.0.0:$PORT\r\n  worker:python w.py  \n"
    assert parse_procfile(text) == {"web": "gunicorn app:app --bind 0.0.0.0:$PORT",
                                    "worker": "python w.py"}


def test_empty_procfile_has_no_processes() -> None:
    assert parse_procfile(b"") == {}
    assert parse_procfile(b"\n# nothing\n") == {}


def test_line_without_colon_names_its_line() -> None:
    message = _message(b"web: ok\n\nthis is not a process\n")
    assert message.startswith("Procfile line 3:") and "type: command" in message


@pytest.mark.parametrize("line", [b"Web: x", b"9web: x", b"we b: x", b"$(rm -rf /): x",
                                  b"a" * 40 + b": x", b"../x: y"])
def test_bad_process_type_is_refused(line: bytes) -> None:
    message = _message(b"web: ok\n" + line + b"\n")
    assert message.startswith("Procfile line 2:") and "process type" in message


def test_empty_command_is_refused() -> None:
    assert "has no command" in _message(b"web:   \n")


def test_duplicate_type_names_both_lines() -> None:
    message = _message(b"web: a\nworker: b\nweb: c\n")
    assert message.startswith("Procfile line 3:") and "first on line 1" in message


def test_control_characters_and_non_utf8_are_refused() -> None:
    assert "control character" in _message(b"web: echo \x1b[31m\n")
    assert _message(b"web: ok\nweb2: caf\xe9\n").startswith("Procfile line 2:")


def test_procfile_over_64_kib_is_refused() -> None:
    message = _message(b"# padding\n" * 7000)
    assert "larger than 64 KiB" in message and message.startswith("Procfile line ")
