"""Builds a service image on the stack: the service's Debian packages (and what the stack lacks of
their dependencies) downloaded on the host, unpacked, streamed into a stack container, committed."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Callable

from fence import labels
from fence.backend.base import ContainerBackend
from fence.errors import ImageNotFound, StackBuildFailed, ToolMissing
from fence.models import ContainerSpec, ImageInfo
from fence.services.kinds import (
    CTR_CREDENTIALS,
    CTR_DATA,
    CTR_RUN,
    CTR_WORK,
    SERVICE_UID,
    SERVICE_USER,
    ServiceKind,
)
from fence.tarstream import file_chunks

LineCallback = Callable[[str], None]
IMAGE_LABEL = "fence.service-image"
# Top-level folders that are symlinks into /usr on a merged-/usr stack: a tar entry for the folder
# itself would replace the symlink, so their files are moved under usr/ first.
_MERGED = ("bin", "sbin", "lib", "lib64")
_OWNED_BY_SERVICE = (CTR_DATA, CTR_WORK)


def apt_download_argv(kind: ServiceKind, *, host_status: Path, host_archives: Path) -> list[str]:
    """apt-get resolving the kind's packages against the stack's dpkg status: it downloads only
    what the stack does not already have (no install, no lock on the host's dpkg)."""
    return ["apt-get", "install", "--yes", "--download-only", "--no-install-recommends",
            "-o", f"Dir::State::status={host_status}",
            "-o", f"Dir::Cache::archives={host_archives}",
            "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root", *kind.packages]


def build_service_image(*, kind: ServiceKind, stack: str, ref: str, node_id: str,
                        backend: ContainerBackend, host_workdir: Path, on_line: LineCallback,
                        run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> ImageInfo:
    """Build ``kind``'s image from the stack image ``stack`` and tag it ``ref``.

    Args:
        kind: the service type.
        stack: the stack image it is derived from.
        ref: the tag to give the image.
        node_id: this node's id (the short-lived build container's label).
        backend: the engine.
        host_workdir: where downloads and the layer are made (removed afterwards).
        on_line: receives progress lines.
        run: runs apt-get and dpkg-deb (replaced in tests).

    Returns:
        The committed image.

    Raises:
        ImageNotFound: the stack image is not on the engine.
        ToolMissing: apt-get or dpkg-deb is missing.
        StackBuildFailed: a download or an unpack failed.
    """
    stack_image = backend.image_info(stack)
    if stack_image is None:
        raise ImageNotFound(image=stack)
    for tool in ("apt-get", "dpkg-deb"):
        if run is subprocess.run and shutil.which(tool) is None:
            raise ToolMissing(tool=tool, hint="the node builds service images from Debian packages")
    started = time.monotonic()
    host_workdir.mkdir(parents=True, exist_ok=True)
    container = backend.create(ContainerSpec(
        image=stack_image.id, user=f"{1000}", network="none",
        labels=labels.owned(node_id, labels.ROLE_IMAGE)))
    try:
        with tempfile.TemporaryDirectory(prefix=f"service-{kind.name}-", dir=host_workdir) as tmp:
            host_tmp = Path(tmp)
            container.start()
            stack_files = _read_files(container, ("/var/lib/dpkg/status", "/etc/passwd", "/etc/group"))
            (host_tmp / "status").write_bytes(stack_files["status"])
            host_archives = host_tmp / "archives"
            (host_archives / "partial").mkdir(parents=True)
            on_line(f"-----> Downloading {', '.join(kind.packages)} and what the stack lacks of their dependencies")
            _check(run(apt_download_argv(kind, host_status=host_tmp / "status", host_archives=host_archives),
                       capture_output=True, text=True), "apt-get download")
            debs = sorted(host_archives.glob("*.deb"))
            host_tree = host_tmp / "root"
            host_tree.mkdir()
            on_line(f"-----> Unpacking {len(debs)} packages")
            for deb in debs:
                _check(run(["dpkg-deb", "-x", str(deb), str(host_tree)], capture_output=True, text=True),
                       f"dpkg-deb -x {deb.name}")
            _merge_usr(host_tree)
            host_layer = host_tmp / "layer.tar"
            _write_layer(host_tree, host_layer, kind=kind, passwd=stack_files["passwd"],
                         group=stack_files["group"])
            on_line(f"-----> Adding {host_layer.stat().st_size / 1e6:.0f} MB to {stack}")
            container.stream_in(PurePosixPath("/"), file_chunks(host_layer))
            container.stop(grace=0)
            # Shared by every node on the engine, like the stack: the build container's node and
            # role labels are blanked so no node's gc or clean-up takes it for its own.
            image = container.commit(ref, {IMAGE_LABEL: kind.name, labels.STACK_ID: stack_image.id,
                                           labels.STACK_REF: stack, labels.NODE: "", labels.ROLE: ""})
    finally:
        container.destroy()
    on_line(f"-----> Service image {ref} is {image.id[:19]} ({image.size / 1e6:.0f} MB), "
            f"built in {time.monotonic() - started:.0f} s")
    return image


def _read_files(container, paths: tuple[str, ...]) -> dict[str, bytes]:
    found = {}
    for path in paths:
        data = b"".join(container.stream_out(PurePosixPath(path)))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member is not None else None
            found[PurePosixPath(path).name] = handle.read() if handle is not None else b""
    return found


def _check(result: subprocess.CompletedProcess[str], step: str) -> None:
    if result.returncode != 0:
        tail = " | ".join(((result.stderr or "") + (result.stdout or "")).strip().splitlines()[-3:])
        raise StackBuildFailed(step=step, detail=tail or f"exit {result.returncode}")


def _merge_usr(host_tree: Path) -> None:
    for top in _MERGED:
        host_top = host_tree / top
        if host_top.is_dir() and not host_top.is_symlink():
            _merge_into(host_top, host_tree / "usr" / top)


def _merge_into(host_src: Path, host_dest: Path) -> None:
    """Move a folder's entries into another, merging folders both have (``shutil.move`` would
    put a folder inside its namesake)."""
    host_dest.mkdir(parents=True, exist_ok=True)
    for entry in list(host_src.iterdir()):
        target = host_dest / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir() and not target.is_symlink():
            _merge_into(entry, target)
        else:
            shutil.move(str(entry), target)
    host_src.rmdir()


def _write_layer(host_tree: Path, host_layer: Path, *, kind: ServiceKind, passwd: bytes,
                 group: bytes) -> None:
    """The layer: the unpacked packages (root-owned), the service user, its folders, the start script."""
    uid = SERVICE_UID
    if f"\n{SERVICE_USER}:".encode() not in b"\n" + passwd:
        passwd = passwd.rstrip(b"\n") + f"\n{SERVICE_USER}:x:{uid}:{uid}::/var/lib/fence-service:/usr/sbin/nologin\n".encode()
        group = group.rstrip(b"\n") + f"\n{SERVICE_USER}:x:{uid}:\n".encode()

    def root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(host_layer, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(host_tree.iterdir()):
            tar.add(entry, arcname=entry.name, filter=root_owned)
        now = time.time()

        def add_file(ctr_path: PurePosixPath, data: bytes, mode: int, owner: int = 0) -> None:
            info = tarfile.TarInfo(str(ctr_path).lstrip("/"))
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, now, owner, owner
            tar.addfile(info, io.BytesIO(data))

        def add_dir(ctr_path: PurePosixPath, mode: int, owner: int = 0) -> None:
            info = tarfile.TarInfo(str(ctr_path).lstrip("/"))
            info.type, info.mode, info.mtime, info.uid, info.gid = tarfile.DIRTYPE, mode, now, owner, owner
            tar.addfile(info)

        add_file(PurePosixPath("/etc/passwd"), passwd, 0o644)
        add_file(PurePosixPath("/etc/group"), group, 0o644)
        add_dir(CTR_RUN.parent, 0o755)
        add_file(CTR_RUN, kind.run_script.encode(), 0o755)
        add_dir(CTR_CREDENTIALS.parent, 0o755)
        add_dir(CTR_DATA.parent, 0o755)
        for ctr_dir in _OWNED_BY_SERVICE:
            add_dir(ctr_dir, 0o700, uid)
