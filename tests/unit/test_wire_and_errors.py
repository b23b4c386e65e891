"""Errors and models cross the API boundary intact; the state store's schema is versioned."""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import sqlite3
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fence.errors import (
    EXIT_USAGE,
    ContainerNotFound,
    FenceError,
    ImageNotFound,
    InternalError,
    InvalidConfigValue,
    error_classes,
    from_wire,
)
from fence.api_schema import to_json_ready
from fence.models import (AppView, DropletRecord, EngineInfo, GcReport, NodeInfo, NodeStatus, ReleaseRecord,
                          RolloutReport, StackImage, StackStatus)
from fence.store import SCHEMA_VERSION, StateStore
from fence.wire import from_wire as model_from_wire
from fence.wire import to_wire


def test_errors_round_trip_as_the_same_class() -> None:
    err = InvalidConfigValue(component="fence", key="staging/timeout", value="-5", allowed="1..")
    back = from_wire(to_wire_error(err))
    assert type(back) is InvalidConfigValue and back.message == err.message
    assert back.exit_code == EXIT_USAGE and back.user_error


def test_unknown_wire_error_becomes_internal() -> None:
    back = from_wire({"type": "NoSuchError", "message": "boom", "fields": {}})
    assert isinstance(back, InternalError) and "boom" in back.message


def test_every_error_has_a_one_line_message_and_an_exit_code() -> None:
    for cls in error_classes().values():
        assert cls.exit_code > 0, cls
        assert cls.__doc__, cls
    err = ImageNotFound(image="a/b:c")
    assert "\n" not in err.message and "kato image build --tag a/b:c" in err.message
    assert "\n" not in ContainerNotFound(container="x\ny").message


def test_missing_template_fields_do_not_crash() -> None:
    assert "detail" in FenceError().message or FenceError().message


def test_models_round_trip() -> None:
    status = NodeStatus(
        version="0.1.0", node_id="n1", home="/h", daemon_pid=1, started_at="t",
        engine=EngineInfo(version="20.10", api_version="1.41", userns_remap=True, seccomp=True,
                          storage_driver="overlay2", data_root="/d", cgroup_version="1",
                          warnings=("w",)),
        engine_error=None,
        stack=StackStatus(configured="a", in_use="a", image_id="sha256:x", present=True, fallback=False),
        apps=0, containers={"staging": 1}, schema_version=1, warnings=("x",),
    )
    assert model_from_wire(NodeStatus, to_wire(status)) == status


# Every model the daemon answers with, in a response or a streamed result.
API_MODELS = (NodeStatus, StackImage, DropletRecord, AppView, ReleaseRecord, GcReport, NodeInfo, RolloutReport)
_SCALARS = {str: st.text(max_size=12), int: st.integers(-(2**63), 2**63 - 1), bool: st.booleans(),
            float: st.floats(allow_nan=False, allow_infinity=False), type(None): st.none()}


def _values(hint: typing.Any) -> st.SearchStrategy[typing.Any]:
    """Any value of a model field's type hint (nested dataclasses, optionals, tuples, mappings)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return st.builds(hint, **{f.name: _values(hints[f.name]) for f in dataclasses.fields(hint)})
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*map(_values, args))
    if origin is tuple:
        return st.lists(_values(args[0]), max_size=3).map(tuple)
    if origin in (dict, collections.abc.Mapping):
        return st.dictionaries(st.text(max_size=8), _values(args[1]), max_size=3)
    return _SCALARS[hint]


@pytest.mark.parametrize("kind", API_MODELS, ids=lambda kind: kind.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_the_daemon_s_pydantic_answers_are_what_the_cli_s_decoder_reads(kind: type, data: st.DataObject) -> None:
    value = data.draw(_values(kind))
    sent = json.loads(json.dumps(to_json_ready(value)))
    assert sent == json.loads(json.dumps(to_wire(value)))  # the two encoders agree
    assert model_from_wire(kind, sent) == value


def test_the_cli_side_decodes_without_pydantic() -> None:
    # pydantic's import and adapter builds cost more than the CLI's whole start budget.
    code = ("import sys, fence.cli, fence.client, fence.wire; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core', 'fastapi')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_store_schema_is_versioned_and_a_newer_one_refused(tmp_path: Path) -> None:
    host_db = tmp_path / "fence.db"
    store = StateStore(host_db=host_db)
    assert store.schema_version == SCHEMA_VERSION and store.count_apps() == 0
    store.close()
    assert StateStore(host_db=host_db).schema_version == SCHEMA_VERSION  # reopening is a no-op
    conn = sqlite3.connect(host_db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(FenceError, match="newer than this fence"):
        StateStore(host_db=host_db)


def to_wire_error(err: FenceError) -> dict:
    return err.to_wire()
