"""Errors and models cross the API boundary intact; the state store's schema is versioned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

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
from fence.models import EngineInfo, NodeStatus, StackStatus
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
