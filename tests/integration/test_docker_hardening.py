"""What DockerBackend asks of the real engine, read back with `docker inspect` and from inside."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from typing import Any, Iterator

import pytest

from fence import labels
from fence.backend.base import Container
from fence.errors import FenceError
from fence.models import ContainerSpec, Limits, PortSpec, ProcessSpec

IMAGE = os.environ.get("FENCE_TEST_IMAGE", "fence/stack:bookworm")
LIMITS = Limits(memory_bytes=96 * 1024 * 1024, pids=100, cpu_shares=512, nofile=4096,
                log_max_size="5m", log_max_files=2)

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def backend() -> Iterator[Any]:
    """DockerBackend on the local engine; skips with the reason when there is none to test."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed (needed to read back `docker inspect`)")
    from fence.backend.docker import DockerBackend

    chosen = DockerBackend()
    try:
        chosen.engine_info()
        if chosen.image_info(IMAGE) is None:
            pytest.skip(f"image {IMAGE} is not on the Docker Engine "
                        "(`kato image build` makes it; FENCE_TEST_IMAGE picks another)")
    except FenceError as exc:
        pytest.skip(f"no Docker Engine: {exc.message}")
    yield chosen
    chosen.close()


@pytest.fixture(scope="module")
def container(backend: Any) -> Iterator[Container]:
    """One started instance-like container: bridge network, one port, this module's node label."""
    node = f"hardening-{uuid.uuid4().hex[:12]}"
    spec = ContainerSpec(image=IMAGE, labels=labels.owned(node, labels.ROLE_INSTANCE),
                         user="1000", limits=LIMITS, network="bridge",
                         ports=(PortSpec(8080, host_ip="127.0.0.1"),))
    try:
        created = backend.create(spec)
        created.start()
        yield created
    finally:
        for leftover in backend.list({labels.NODE: node}):
            leftover.destroy()


@pytest.fixture(scope="module")
def inspect(container: Container) -> dict[str, Any]:
    """`docker inspect` of the container, as the engine itself reports it."""
    out = subprocess.run(["docker", "inspect", container.id], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return json.loads(out)[0]


def inside(container: Container, *argv: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    result = container.run(ProcessSpec(argv=argv, timeout=30), on_output=lines.append)
    return result.exit_code, lines


def test_capabilities_privileges_and_seccomp(inspect: dict[str, Any]) -> None:
    host = inspect["HostConfig"]
    assert host["CapDrop"] and "ALL" in host["CapDrop"]
    assert not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert not any("unconfined" in opt for opt in host["SecurityOpt"])
    assert host["Privileged"] is False
    assert host["Init"] is True
    assert inspect["Config"]["User"] == "1000"


def test_limits(inspect: dict[str, Any]) -> None:
    host = inspect["HostConfig"]
    assert host["PidsLimit"] == LIMITS.pids
    assert host["Memory"] == LIMITS.memory_bytes == host["MemorySwap"]
    assert host["CpuShares"] == LIMITS.cpu_shares
    assert {"Name": "nofile", "Soft": LIMITS.nofile, "Hard": LIMITS.nofile} in host["Ulimits"]
    assert host["LogConfig"] == {"Type": "json-file",
                                 "Config": {"max-size": "5m", "max-file": "2"}}
    assert host["RestartPolicy"]["Name"] == "no"


def test_no_host_paths_or_namespaces(inspect: dict[str, Any]) -> None:
    host = inspect["HostConfig"]
    assert not host.get("Binds") and not inspect.get("Mounts") and not host.get("Mounts")
    assert not host.get("VolumesFrom") and not host.get("Devices")
    assert host["NetworkMode"] == "bridge"
    for mode in ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode"):
        assert host.get(mode, "") != "host", mode


def test_port_is_published_on_loopback_only(inspect: dict[str, Any],
                                            container: Container) -> None:
    assert inspect["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1",
                                                                   "HostPort": ""}]}
    bound = inspect["NetworkSettings"]["Ports"]["8080/tcp"]
    assert bound and all(b["HostIp"] == "127.0.0.1" for b in bound)
    (published,) = container.info().ports
    assert published.host_ip == "127.0.0.1" and str(published.host_port) == bound[0]["HostPort"]


def test_inside_no_capabilities_no_new_privileges_and_the_app_uid(container: Container) -> None:
    code, status = inside(container, "cat", "/proc/self/status")
    assert code == 0
    assert "CapEff:\t0000000000000000" in status
    assert "CapPrm:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status
    seccomp = [line for line in status if line.startswith("Seccomp:")]
    assert seccomp == ["Seccomp:\t2"]  # 2 = filter mode: the engine's default profile is on
    assert inside(container, "id", "-u") == (0, ["1000"])


def test_root_in_the_container_is_not_root_on_the_host(backend: Any,
                                                       container: Container) -> None:
    if not backend.engine_info().userns_remap:
        pytest.skip("the engine runs without --userns-remap; nothing to check")
    code, uid_map = inside(container, "cat", "/proc/self/uid_map")
    assert code == 0 and uid_map
    for line in uid_map:
        inside_id, outside_id, count = (int(n) for n in line.split())
        assert not (inside_id <= 0 < inside_id + count and outside_id == 0), line
        assert outside_id != 0, line


def test_pids_limit_stops_a_fork_bomb(container: Container) -> None:
    # Each `sleep` holds a pid; past the limit, bash cannot fork and says so.
    code, lines = inside(container, "bash", "-c",
                         f"for i in $(seq {LIMITS.pids + 20}); do sleep 5 & done; wait")
    assert any("fork" in line or "Resource temporarily unavailable" in line for line in lines)
