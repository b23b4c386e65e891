"""The container contract (fence.backend.base), checked against FakeBackend and DockerBackend alike."""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Callable

import pytest

from fence import labels
from fence.backend.base import Container, ContainerBackend
from fence.errors import (ContainerGone, ContainerNotFound, EngineError, ImageNotFound,
                          ProcessTimeout, UsageError, UsernsRequired)
from fence.models import ContainerSpec, PortSpec, ProcessSpec

from .conftest import new_backend

SpecMaker = Callable[..., ContainerSpec]


def started(backend: ContainerBackend, spec: ContainerSpec) -> Container:
    container = backend.create(spec)
    container.start()
    return container


def run(container: Container, *argv: str, **fields: object) -> tuple[int, list[str]]:
    lines: list[str] = []
    result = container.run(ProcessSpec(argv=argv, timeout=60, **fields),  # type: ignore[arg-type]
                           on_output=lines.append)
    assert list(result.output) == lines[-50:]
    return result.exit_code, lines


def tar_of(name: str, data: bytes, *, uid: int, mode: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        entry = tarfile.TarInfo(name)
        entry.size, entry.uid, entry.gid, entry.mode = len(data), uid, uid, mode
        archive.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


# --- processes ---------------------------------------------------------------------------------

def test_echo_is_streamed_to_the_callback_and_exits_zero(backend: ContainerBackend,
                                                          make_spec: SpecMaker) -> None:
    container = started(backend, make_spec())
    assert run(container, "echo", "hello", "fence") == (0, ["hello fence"])


def test_a_last_line_without_newline_is_still_delivered(backend: ContainerBackend,
                                                        make_spec: SpecMaker) -> None:
    container = started(backend, make_spec())
    assert run(container, "echo", "-n", "partial") == (0, ["partial"])


def test_non_zero_exit_code_is_reported(backend: ContainerBackend, make_spec: SpecMaker) -> None:
    container = started(backend, make_spec())
    assert run(container, "false")[0] == 1
    assert run(container, "cat", "/no/such/file")[0] == 1


def test_unknown_program_exits_127_and_names_it(backend: ContainerBackend,
                                                make_spec: SpecMaker) -> None:
    container = started(backend, make_spec())
    code, lines = run(container, "no-such-program-here")
    assert code == 127
    assert "no-such-program-here" in "\n".join(lines)


def test_env_and_cwd_reach_the_process(backend: ContainerBackend, make_spec: SpecMaker) -> None:
    container = started(backend, make_spec(env={"FROM_CONTAINER": "c"}))
    assert run(container, "printenv", "FROM_PROCESS", env={"FROM_PROCESS": "p 1"}) == (0, ["p 1"])
    assert run(container, "printenv", "FROM_CONTAINER") == (0, ["c"])
    assert run(container, "pwd", cwd=PurePosixPath("/tmp")) == (0, ["/tmp"])
    assert run(container, "printenv", "NOT_SET_ANYWHERE")[0] == 1


def test_processes_run_as_the_container_user_or_their_own(backend: ContainerBackend,
                                                          make_spec: SpecMaker) -> None:
    container = started(backend, make_spec(user="1000:1000"))
    assert run(container, "id", "-u") == (0, ["1000"])
    assert run(container, "id", "-u", user="1001") == (0, ["1001"])


@pytest.mark.parametrize("user", ["0", "root", "0:0", "1000:0"])
def test_a_process_as_root_is_refused(backend: ContainerBackend, make_spec: SpecMaker,
                                      user: str) -> None:
    container = started(backend, make_spec())
    with pytest.raises(UsageError, match="root"):
        container.run(ProcessSpec(argv=("id", "-u"), user=user))


def test_timeout_raises_and_kills_the_container(backend: ContainerBackend,
                                                make_spec: SpecMaker) -> None:
    container = started(backend, make_spec())
    began = time.monotonic()
    with pytest.raises(ProcessTimeout, match="sleep 30"):
        container.run(ProcessSpec(argv=("sleep", "30"), timeout=1))
    assert time.monotonic() - began < 20
    info = container.info()
    assert not info.running and info.state == "exited"
    with pytest.raises(ContainerGone):
        container.run(ProcessSpec(argv=("true",)))


def test_run_in_a_container_not_started_is_gone(backend: ContainerBackend,
                                                make_spec: SpecMaker) -> None:
    container = backend.create(make_spec())
    with pytest.raises(ContainerGone):
        container.run(ProcessSpec(argv=("true",)))


# --- files -------------------------------------------------------------------------------------

def test_stream_in_keeps_ownership_and_stream_out_returns_the_file(backend: ContainerBackend,
                                                                  make_spec: SpecMaker) -> None:
    container = started(backend, make_spec())
    archive = tar_of("hello.txt", b"hi from the host\nsecond line\n", uid=1000, mode=0o600)
    # In chunks, as large archives are sent.
    container.stream_in(PurePosixPath("/tmp"), [archive[:700], archive[700:]])
    # Mode 0600: only its owner, uid 1000, can read it (no capability can bypass that).
    assert run(container, "cat", "/tmp/hello.txt") == (0, ["hi from the host", "second line"])
    assert run(container, "cat", "/tmp/hello.txt", user="1001")[0] == 1
    out = b"".join(container.stream_out(PurePosixPath("/tmp/hello.txt")))
    with tarfile.open(fileobj=io.BytesIO(out)) as archive_out:
        members = archive_out.getmembers()
        assert [m.name for m in members] == ["hello.txt"]
        assert archive_out.extractfile(members[0]).read() == b"hi from the host\nsecond line\n"


def test_stream_out_of_a_directory_is_named_by_its_base_name(backend: ContainerBackend,
                                                            make_spec: SpecMaker) -> None:
    container = started(backend, make_spec())
    container.stream_in(PurePosixPath("/tmp"), tar_of("app/a.txt", b"a", uid=1000, mode=0o644))
    out = b"".join(container.stream_out(PurePosixPath("/tmp/app")))
    with tarfile.open(fileobj=io.BytesIO(out)) as archive:
        assert sorted(m.name for m in archive.getmembers()) == ["app", "app/a.txt"]


def test_stream_into_a_missing_directory_is_an_engine_error(backend: ContainerBackend,
                                                           make_spec: SpecMaker) -> None:
    container = started(backend, make_spec())
    with pytest.raises(EngineError):
        container.stream_in(PurePosixPath("/no/such/dir"), tar_of("x", b"x", uid=1000, mode=0o644))


def test_stream_out_of_a_missing_path_is_not_found(backend: ContainerBackend,
                                                  make_spec: SpecMaker) -> None:
    container = started(backend, make_spec())
    with pytest.raises(ContainerNotFound):
        container.stream_out(PurePosixPath("/no/such/file"))


# --- state, listing, lifecycle -----------------------------------------------------------------

def test_info_of_a_running_container(backend: ContainerBackend, make_spec: SpecMaker) -> None:
    spec = make_spec()
    container = started(backend, spec)
    info = container.info()
    assert info.id == container.id and info.running and info.state == "running"
    assert dict(info.labels).items() >= dict(spec.labels).items()
    assert info.image == spec.image and info.image_id.startswith("sha256:")
    assert info.image_id == backend.image_info(spec.image).id
    assert info.started_at and info.exit_code is None and not info.oom_killed


def test_published_port_is_on_its_host_ip_only(backend: ContainerBackend,
                                               make_spec: SpecMaker) -> None:
    container = started(backend, make_spec(network="bridge", ports=(PortSpec(8080, "127.0.0.1"),)))
    (port,) = container.info().ports
    assert (port.container_port, port.host_ip) == (8080, "127.0.0.1") and port.host_port > 0


def test_list_by_labels_finds_exactly_this_tests_containers(backend: ContainerBackend,
                                                            make_spec: SpecMaker,
                                                            node_id: str) -> None:
    task = backend.create(make_spec())
    staging = backend.create(make_spec(labels=labels.owned(node_id, labels.ROLE_STAGING)))
    other_node = backend.create(make_spec(labels=labels.owned(f"{node_id}-other",
                                                              labels.ROLE_TASK)))
    try:
        assert {c.id for c in backend.list({labels.NODE: node_id})} == {task.id, staging.id}
        assert [c.id for c in backend.list({labels.NODE: node_id,
                                            labels.ROLE: labels.ROLE_STAGING})] == [staging.id]
        assert backend.lookup(task.id).id == task.id
    finally:
        other_node.destroy()


def test_stop_ends_the_main_process_and_is_idempotent(backend: ContainerBackend,
                                                     make_spec: SpecMaker) -> None:
    container = started(backend, make_spec())
    container.stop(grace=1)
    info = container.info()
    assert not info.running and info.state == "exited" and info.exit_code == 143
    container.stop(grace=1)


def test_destroy_is_idempotent_then_lookup_is_not_found(backend: ContainerBackend,
                                                       make_spec: SpecMaker) -> None:
    container = started(backend, make_spec())
    container.destroy()
    container.destroy()
    with pytest.raises(ContainerNotFound):
        backend.lookup(container.id)
    with pytest.raises(ContainerNotFound):
        container.info()
    with pytest.raises(ContainerNotFound):
        container.start()


# --- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("user", ["root", "0", "", "0:0", "root:1000", "1000:0"])
def test_create_as_root_is_refused(backend: ContainerBackend, make_spec: SpecMaker,
                                   node_id: str, user: str) -> None:
    with pytest.raises(UsageError, match="root"):
        backend.create(make_spec(user=user))
    assert backend.list({labels.NODE: node_id}) == []


def test_missing_node_label_is_refused(backend: ContainerBackend, make_spec: SpecMaker) -> None:
    with pytest.raises(UsageError, match=labels.NODE):
        backend.create(make_spec(labels={labels.ROLE: labels.ROLE_TASK}))


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"network": "host"}, "network"),
    ({"network": "none", "ports": (PortSpec(8080),)}, "ports"),
])
def test_host_network_and_ports_without_network_are_refused(backend: ContainerBackend,
                                                            make_spec: SpecMaker,
                                                            fields: dict, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        backend.create(make_spec(**fields))


def test_missing_image_is_image_not_found(backend: ContainerBackend, make_spec: SpecMaker) -> None:
    with pytest.raises(ImageNotFound, match="fence/no-such-image:never"):
        backend.create(make_spec(image="fence/no-such-image:never"))


def test_require_userns(kind: str, backend: ContainerBackend, make_spec: SpecMaker) -> None:
    remapped = backend.engine_info().userns_remap
    strict = new_backend(kind, require_userns=lambda: True)
    try:
        if remapped:
            strict.create(make_spec()).destroy()
        else:
            with pytest.raises(UsernsRequired):
                strict.create(make_spec())
    finally:
        getattr(strict, "close", lambda: None)()
    if kind == "fake":  # the fake can also play an engine without remapping
        unremapped = new_backend(kind, userns_remap=False, require_userns=lambda: True)
        with pytest.raises(UsernsRequired):
            unremapped.create(make_spec())
        new_backend(kind, userns_remap=False).create(make_spec())


def test_require_userns_is_asked_at_every_create(kind: str, backend: ContainerBackend,
                                                make_spec: SpecMaker) -> None:
    asked: list[bool] = []
    watching = new_backend(kind, require_userns=lambda: asked.append(True) or False)
    try:
        watching.create(make_spec())
        watching.create(make_spec())
    finally:
        getattr(watching, "close", lambda: None)()
    assert len(asked) == 2


# --- images and engine -------------------------------------------------------------------------

def test_image_info(backend: ContainerBackend, make_spec: SpecMaker) -> None:
    image = backend.image_info(make_spec().image)
    assert image is not None and image.id.startswith("sha256:")
    assert backend.image_info(image.id) == image
    assert backend.image_info("fence/no-such-image:never") is None


def test_import_then_remove_an_image(backend: ContainerBackend, tmp_path: Path) -> None:
    ref = f"fence/contract-{uuid.uuid4().hex[:8]}:test"
    host_tar = tmp_path / "rootfs.tar"
    host_tar.write_bytes(tar_of("etc/fence-marker", b"marker\n", uid=0, mode=0o644))
    seen: list[tuple[int, int]] = []
    try:
        image = backend.import_image(host_tar, ref, changes=("LABEL fence.stack=contract",),
                                     progress=lambda done, total: seen.append((done, total)))
        assert image.id.startswith("sha256:") and ref in image.tags
        assert image.labels.get(labels.STACK) == "contract"
        assert seen and seen[-1] == (host_tar.stat().st_size, host_tar.stat().st_size)
        assert backend.image_info(ref) == image
        assert image in backend.list_images({labels.STACK: "contract"})  # type: ignore[attr-defined]
        assert image in backend.list_images({labels.STACK: ""})  # type: ignore[attr-defined]
        assert image not in backend.list_images({labels.STACK: "other"})  # type: ignore[attr-defined]
    finally:
        backend.remove_image(ref)
    assert backend.image_info(ref) is None
    backend.remove_image(ref)


def test_engine_info(backend: ContainerBackend) -> None:
    info = backend.engine_info()
    assert info.version and info.api_version and info.seccomp
    assert info.cgroup_version in ("1", "2")


def test_commit_makes_an_image_whose_containers_start_with_the_files(backend: ContainerBackend,
                                                                    make_spec: SpecMaker,
                                                                    node_id: str) -> None:
    builder = started(backend, make_spec())
    droplet = io.BytesIO()
    with tarfile.open(fileobj=droplet, mode="w:gz") as archive:
        for name, data in (("app/run.sh", b"echo from the image\n"), ("app/lib/data.txt", b"42\n")):
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(data), 0o640
            archive.addfile(entry, io.BytesIO(data))
    builder.stream_in(PurePosixPath("/tmp"), tar_of("droplet.tgz", droplet.getvalue(), uid=1000, mode=0o600))
    # Unpacked by tar inside, as the container user: the files are that user's.
    assert run(builder, "tar", "-xzpf", "/tmp/droplet.tgz", "-C", "/tmp")[0] == 0
    assert run(builder, "rm", "-f", "/tmp/droplet.tgz")[0] == 0
    ref = f"fence/contract-commit:{node_id}"
    image = builder.commit(ref, {labels.NODE: node_id, labels.DROPLET: "d1"})
    try:
        assert ref in image.tags and backend.image_info(ref) == image
        assert image.labels[labels.NODE] == node_id and image.labels[labels.DROPLET] == "d1"
        assert image in backend.list_images({labels.NODE: node_id, labels.DROPLET: ""})  # type: ignore[attr-defined]
        builder.destroy()
        child = started(backend, make_spec(image=ref, user="1001"))
        assert run(child, "cat", "/tmp/app/lib/data.txt", user="1000") == (0, ["42"])
        assert run(child, "cat", "/tmp/app/lib/data.txt")[0] == 1  # mode 0640, owner 1000
        assert run(child, "cat", "/tmp/droplet.tgz")[0] == 1  # removed before the commit
        # The parent cannot go while the child image exists; the child cannot while a container uses it.
        with pytest.raises(EngineError):
            backend.remove_image(ref)
        child.destroy()
    finally:
        for leftover in backend.list({labels.NODE: node_id}):
            leftover.destroy()
        backend.remove_image(ref)
    assert backend.image_info(ref) is None


def test_commit_refuses_a_malformed_reference(backend: ContainerBackend, make_spec: SpecMaker) -> None:
    container = backend.create(make_spec())
    with pytest.raises(UsageError):
        container.commit("no-tag-here", {})


# --- log drains (issue 18): one stream of the main process's output ---------------------------

def test_output_gives_one_stream_of_the_main_process_with_engine_timestamps(backend: ContainerBackend,
                                                                          make_spec: SpecMaker) -> None:
    import re as _re

    container = started(backend, make_spec(command=("echo", "drained-line")))
    deadline = time.monotonic() + 30
    while container.info().running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(container.output(stream="stdout", follow=False)) == ["drained-line"]
    assert list(container.output(stream="stderr", follow=False)) == []
    [stamped] = list(container.output(stream="stdout", follow=True, timestamps=True))  # it stopped: the follow ends
    assert _re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z drained-line", stamped), stamped
    with pytest.raises(UsageError, match="use stdout or stderr"):
        container.output(stream="both")
