"""Dockerfile builds on the real engine: no network with staging/network none, memory enforced, root remapped, caps."""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pytest

from fence import labels
from fence.config import ConfigStore
from fence.errors import BuildFailed, DockerfileRefused, FenceError
from fence.staging.dockerfile_build import build_app_image

IMAGE = os.environ.get("FENCE_TEST_IMAGE", "fence/stack:bookworm")

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def backend() -> Iterator[Any]:
    """DockerBackend on the local engine; skips with the reason when there is none to test."""
    from fence.backend.docker import DockerBackend

    chosen = DockerBackend()
    try:
        if chosen.image_info(IMAGE) is None:
            pytest.skip(f"image {IMAGE} is not on the Docker Engine (`kato image build` makes it)")
    except FenceError as exc:
        pytest.skip(f"no Docker Engine: {exc.message}")
    yield chosen
    chosen.close()


@pytest.fixture
def node(backend: Any) -> Iterator[str]:
    """A node id of this test alone; its build images are removed afterwards."""
    node_id = f"n{uuid.uuid4().hex[:12]}"
    yield node_id
    for image in backend.list_images({labels.NODE: node_id}):
        for tag in image.tags:
            backend.remove_image(tag)
        if backend.image_info(image.id) is not None:
            backend.remove_image(image.id)


def build(backend: Any, node: str, tmp_path: Path, dockerfile: str, lines: list[str] | None = None,
          **settings: str) -> tuple[Any, list[str]]:
    config = ConfigStore(host_file=tmp_path / "config.yml")
    config.set("fence", "docker/image", IMAGE)
    for key, value in settings.items():
        config.set("fence", key.replace("__", "/"), value)
    host_source = tmp_path / "source.tar"
    with tarfile.open(host_source, mode="w") as archive:
        data = dockerfile.encode()
        entry = tarfile.TarInfo("app/Dockerfile")
        entry.size, entry.mode = len(data), 0o644
        archive.addfile(entry, io.BytesIO(data))
    lines = [] if lines is None else lines
    result = build_app_image(backend=backend, config=config, node_id=node, app="probe", host_source=host_source,
                             host_workdir=tmp_path, dockerfile="Dockerfile", build_args={}, on_line=lines.append)
    return result, lines


def test_a_run_step_cannot_reach_the_network_with_staging_network_none(backend: Any, node: str,
                                                                       tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(BuildFailed, match="non-zero code"):
        build(backend, node, tmp_path, f"FROM {IMAGE}\nRUN python3 -c \"import socket; "
              "socket.create_connection(('10.201.0.1', 53), 3)\"\n", lines)
    assert any("Network is unreachable" in line for line in lines)  # no route at all, not a refused port


def test_a_run_step_past_staging_memory_is_killed(backend: Any, node: str, tmp_path: Path) -> None:
    with pytest.raises(BuildFailed, match="non-zero code: 137"):  # SIGKILL from the memory cgroup
        build(backend, node, tmp_path, f"FROM {IMAGE}\nRUN python3 -c \"b = bytearray(400 * 2**20); "
              "b[::4096] = b'x' * len(b[::4096])\"\n", staging__memory="64")
    lines: list[str] = []
    build(backend, node, tmp_path, f"FROM {IMAGE}\nRUN python3 -c \"b = bytearray(16 * 2**20)\" && echo fits\n",
          lines, staging__memory="64")
    assert "       fits" in lines


def test_a_run_step_writing_as_root_wrote_as_a_remapped_host_uid(backend: Any, node: str, tmp_path: Path) -> None:
    if not backend.engine_info().userns_remap:
        pytest.skip("the engine runs without userns-remap (building is refused there anyway)")
    import docker

    result, _ = build(backend, node, tmp_path, f"FROM {IMAGE}\nRUN id -u > /built-by && touch /rootfile\n"
                          "USER 1000\nCMD [\"cat\", \"/built-by\"]\n")
    client = docker.APIClient(version="auto")
    upper = Path(client.inspect_image(result.image.id)["GraphDriver"]["Data"]["UpperDir"])
    client.close()
    host_file = upper / "rootfile"
    assert (upper / "built-by").read_text().strip() == "0"  # root inside the build …
    assert host_file.stat().st_uid >= 65536  # … is a subordinate uid on the host, never 0
    assert result.image.user == "1000" and result.check.base.ref == IMAGE


def test_a_fence_label_cannot_be_forged_and_nothing_is_built(backend: Any, node: str, tmp_path: Path) -> None:
    with pytest.raises(DockerfileRefused, match="Dockerfile:2: LABEL"):
        build(backend, node, tmp_path, f"FROM {IMAGE}\nLABEL fence.node=someone-else\n")
    assert backend.list_images({labels.NODE: node}) == []


def test_an_image_whose_user_is_unset_runs_as_the_app_user_unprivileged(backend: Any, node: str,
                                                                         tmp_path: Path) -> None:
    """The run-time rule on a built image (the container spec fence's starter will give it)."""
    import shlex
    import urllib.request

    from fence.image_apps import process_types, run_as
    from fence.models import ContainerSpec, Limits, PortSpec, ProcessSpec

    result, _ = build(backend, node, tmp_path, f"FROM {IMAGE}\nRUN mkdir -p /srv && echo hi > /srv/index.html\n"
                      "WORKDIR /srv\nCMD [\"python3\", \"-m\", \"http.server\", \"8080\"]\n",
                      security__root_apps='["other"]')  # root is allowed for another app, not this one
    assert result.image.user == ""  # unset: root, as most images on a registry are
    who = run_as(image_user=result.image.user, app_uid=1000, app_home="/home/stackato", root_allowed=False,
                 remapped=True)
    web = process_types(image=result.image, procfile=None, processes={})["web"]
    container = backend.create(ContainerSpec(
        image=result.image.id, labels=labels.owned(node, labels.ROLE_INSTANCE, app="probe"), user=who.user,
        command=tuple(shlex.split(web)), env={"HOME": who.home, "PORT": "8080"}, workdir=PurePosixPath("/srv"),
        limits=Limits(memory_bytes=128 * 2**20), ports=(PortSpec(container_port=8080, host_ip="127.0.0.1"),),
        network="bridge"))
    try:
        container.start()
        lines: list[str] = []
        code = container.run(ProcessSpec(argv=("cat", "/proc/self/status"), timeout=30), on_output=lines.append)
        assert code.exit_code == 0
        status = dict(line.split(":", 1) for line in lines if ":" in line)
        assert status["Uid"].split()[:2] == ["1000", "1000"] and int(status["CapEff"].strip(), 16) == 0
        assert status["NoNewPrivs"].strip() == "1"
        port = container.info().ports[0].host_port
        body = b""
        for _ in range(60):  # the server needs a moment to bind; bounded by the loop, not a timing assertion
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2).read()
                break
            except OSError:
                import time

                time.sleep(0.5)
        assert body == b"hi\n"
    finally:
        container.destroy()
