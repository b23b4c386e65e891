"""The build contract (ContainerBackend.build_image, image_config) on FakeBackend and DockerBackend alike."""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from fence import labels
from fence.backend.base import ContainerBackend
from fence.builds import BuildSpec
from fence.errors import (
    BuildFailed,
    ContainerNotFound,
    EngineError,
    StagingFailed,
    StagingTimeout,
    UsageError,
)
from fence.models import Limits

from .conftest import IMAGE


def context_tar(host_dir: Path, dockerfile: str, files: dict[str, bytes] | None = None) -> Path:
    host_tar = host_dir / f"context-{uuid.uuid4().hex[:8]}.tar"
    with tarfile.open(host_tar, mode="w") as archive:
        for name, data in {"Dockerfile": dockerfile.encode(), **(files or {})}.items():
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(data), 0o644
            archive.addfile(entry, io.BytesIO(data))
    return host_tar


@pytest.fixture
def refs(backend: ContainerBackend) -> Iterator[list[str]]:
    """Image references a test builds; removed afterwards."""
    made: list[str] = []
    yield made
    base = backend.image_config(IMAGE)
    chain: list[str] = []  # untagged parents (steps) of what was built: a warm build shares them
    for ref in made:
        found = backend.image_config(ref)
        while found is not None and base is not None and found.id != base.id:
            chain.append(found.id)
            found = backend.image_config(found.parent) if found.parent else None
    for ref in reversed(made):
        backend.remove_image(ref)
    for image in chain:
        with contextlib.suppress(EngineError):
            backend.remove_image(image)


def spec_of(tmp_path: Path, node_id: str, refs: list[str], dockerfile: str, **fields: object) -> BuildSpec:
    ref = f"fence/contract-build:{uuid.uuid4().hex[:10]}"
    refs.append(ref)
    values: dict[str, object] = dict(host_context=context_tar(tmp_path, dockerfile), dockerfile="Dockerfile",
                                     ref=ref, labels={labels.NODE: node_id}, timeout=120.0,
                                     limits=Limits(memory_bytes=256 * 1024 * 1024))
    values.update(fields)
    return BuildSpec(**values)  # type: ignore[arg-type]


def made_by(lines: list[str]) -> tuple[list[str], list[str]]:
    """The containers and images the build's output says it made."""
    containers = [m.group(1) for line in lines if (m := re.match(r"^ ---> Running in ([0-9a-f]+)$", line))]
    images, running = [], False
    for line in lines:
        if line.startswith(" ---> Running in"):
            running = True
        elif (m := re.match(r"^ ---> ([0-9a-f]{12,})$", line)) and running:
            images.append(m.group(1))
            running = False
    return containers, images


def assert_nothing_left(backend: ContainerBackend, lines: list[str]) -> None:
    containers, images = made_by(lines)
    for image in images:
        assert backend.image_info(image) is None, f"intermediate image {image} left behind"
    for container in containers:
        with pytest.raises(ContainerNotFound):
            backend.lookup(container).info()


def test_a_build_makes_a_labelled_image_with_its_user_and_command(backend: ContainerBackend, node_id: str,
                                                                  refs: list[str], tmp_path: Path) -> None:
    lines: list[str] = []
    spec = spec_of(tmp_path, node_id, refs, f"FROM {IMAGE}\nRUN echo building && echo built > /built\nUSER 1000\n"
                   "WORKDIR /srv\nCMD [\"python3\", \"-m\", \"http.server\"]\n", build_args={"V": "1"})
    result = backend.build_image(spec, on_line=lines.append)
    image = result.image
    assert image.user == "1000" and image.cmd == ("python3", "-m", "http.server") and image.entrypoint == ()
    assert image.workdir == "/srv" and image.labels[labels.NODE] == node_id
    base = backend.image_config(IMAGE)
    assert base is not None and image.layers == base.layers + 1 and image.parent
    assert spec.ref in image.tags and backend.image_config(spec.ref) == backend.image_config(image.id)
    assert result.cached_steps == 0 and "building" in lines and any(line.startswith("Step 1/") for line in lines)


def test_image_config_of_a_missing_image_is_none(backend: ContainerBackend) -> None:
    assert backend.image_config("fence/no-such-image:never") is None
    assert backend.image_config("NOT A REF") is None


def test_a_failing_step_fails_the_build_and_leaves_nothing(backend: ContainerBackend, node_id: str,
                                                           refs: list[str], tmp_path: Path) -> None:
    lines: list[str] = []
    spec = spec_of(tmp_path, node_id, refs, f"FROM {IMAGE}\nRUN echo one > /one\nRUN false\n")
    with pytest.raises(BuildFailed) as caught:
        backend.build_image(spec, on_line=lines.append)
    assert "step 3/" in caught.value.message and "non-zero code: 1" in caught.value.message
    assert backend.image_info(spec.ref) is None
    assert_nothing_left(backend, lines)


def test_a_build_past_its_timeout_is_cancelled_and_leaves_nothing(backend: ContainerBackend, node_id: str,
                                                                   refs: list[str], tmp_path: Path) -> None:
    lines: list[str] = []
    spec = spec_of(tmp_path, node_id, refs, f"FROM {IMAGE}\nRUN echo one > /one\nRUN sleep infinity\n",
                   timeout=4.0)
    with pytest.raises(StagingTimeout, match="after 4 s"):
        backend.build_image(spec, on_line=lines.append)
    assert backend.image_info(spec.ref) is None
    assert_nothing_left(backend, lines)


def test_a_cancelled_build_leaves_nothing(backend: ContainerBackend, node_id: str, refs: list[str],
                                          tmp_path: Path) -> None:
    lines: list[str] = []
    spec = spec_of(tmp_path, node_id, refs, f"FROM {IMAGE}\nRUN echo one > /one\nRUN sleep 30\n")
    with pytest.raises(StagingFailed, match="cancelled"):
        backend.build_image(spec, on_line=lines.append, cancelled=lambda: any("sleep" in line for line in lines))
    assert backend.image_info(spec.ref) is None
    assert_nothing_left(backend, lines)


def test_cache_is_used_only_from_the_images_given(backend: ContainerBackend, node_id: str,
                                                  refs: list[str], tmp_path: Path) -> None:
    text = f"FROM {IMAGE}\nRUN echo layer > /layer\nCMD [\"true\"]\n"
    first_lines: list[str] = []
    first = backend.build_image(spec_of(tmp_path, node_id, refs, text), on_line=first_lines.append)
    lines: list[str] = []
    again = backend.build_image(spec_of(tmp_path, node_id, refs, text), on_line=lines.append)
    assert again.cached_steps == 0 and " ---> Using cache" not in lines  # no cache_from: nothing reused
    lines.clear()
    warm = backend.build_image(spec_of(tmp_path, node_id, refs, text, cache_from=(first.image.id,)),
                               on_line=lines.append)
    assert warm.cached_steps >= 2 and " ---> Using cache" in lines
    # the engine re-links cached steps under new step images: the old ones must not stay behind
    chain, found = set(), backend.image_config(warm.image.id)
    while found is not None:
        chain.add(found.id.removeprefix("sha256:")[:12])
        found = backend.image_config(found.parent) if found.parent else None
    for step in made_by(first_lines)[1]:
        assert backend.image_info(step) is None or step[:12] in chain, f"step image {step} left behind"


@pytest.mark.parametrize("fields", [{"labels": {}}, {"network": "host"}, {"ref": "fence/x@sha256:" + "a" * 64},
                                    {"ref": "fence/x"}, {"timeout": 0.0}])
def test_unsafe_build_specs_are_refused(backend: ContainerBackend, node_id: str, refs: list[str],
                                        tmp_path: Path, fields: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        backend.build_image(spec_of(tmp_path, node_id, refs, f"FROM {IMAGE}\n", **fields), on_line=lambda _: None)
