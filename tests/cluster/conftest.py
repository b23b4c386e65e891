"""Fixtures of the cluster tier: extra engines on this machine (never the main one), shared per session."""

from __future__ import annotations

import os
import shutil
from typing import Iterator

import pytest

from tests.cluster.engines import EngineKit


def kit_problem() -> str | None:
    """Why extra engines cannot be started here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "extra Docker Engines need root (dockerd, bridges)"
    for program in ("dockerd", "docker", "ip", "dpkg-deb"):
        if shutil.which(program) is None:
            return f"extra Docker Engines need {program}, which is not installed"
    return None


@pytest.fixture(scope="session")
def engine_kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineKit]:
    """A kit of extra engines for the whole session; all of them are brought down at its end."""
    if problem := kit_problem():
        pytest.skip(problem)
    kit = EngineKit(host_root=tmp_path_factory.mktemp("engines", numbered=True))
    try:
        yield kit
    finally:
        kit.down()
