"""FakeBackend: an in-memory ContainerBackend that behaves like the Docker one, for unit tests."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import math
import posixpath
import queue
import shlex
import tarfile
import threading
import time
import uuid
from collections import deque
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Mapping

from fence.backend.base import (TAIL_LINES, ContainerEvent, ContainerEvents, LogLines, LogRecord, OutputCallback,
                                ProgressCallback, UsageSample)
from fence.backend.fake_programs import (BUILTIN_PROGRAMS, FakeFile, FakeProcess, Program,
                                         SleptPastDeadline, StillRunning)
from fence.backend import fake_build
from fence.backend.fake_networks import FakeNetworks
from fence.backend.policy import (refuse_unsafe_build, refuse_unsafe_network, refuse_unsafe_process,
                                  refuse_unsafe_spec, refuse_unsafe_volume)
from fence.builds import BuildResult, BuildSpec, ImageConfig
from fence.labels import NODE
from fence.errors import (ContainerGone, ContainerNotFound, EngineError, EngineUnavailable, ImageNotFound,
                          InternalError, ProcessTimeout, StagingFailed, UsageError, UsernsRequired)
from fence.models import (VolumeInfo, VolumeSpec, ContainerInfo, ContainerSpec, EngineInfo, ImageInfo, NetworkInfo, NetworkSpec,
                          ProcessResult, ProcessSpec, PublishedPort)

_BASE_DIRS = ("/", "/bin", "/etc", "/home", "/root", "/tmp", "/usr", "/usr/bin", "/var")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CHUNK = 64 * 1024


class FakeBackend:
    """An in-memory ContainerBackend with the Docker backend's behaviour at the contract level.

    Processes are small built-in programs (``true``, ``false``, ``echo [-n]``, ``cat FILE…``,
    ``sleep N``, ``id [-u|-g]``, ``pwd``, ``printenv [NAME…]``, ``tar -xzpf FILE -C DIR``,
    ``rm -f FILE…``). Committed images keep their files. Tests add more to ``programs``,
    keyed by argv[0] (a path is also tried by its base name); each is a ``Program``: called
    with the ``FakeProcess``, it writes output with ``proc.write(text)`` and returns its exit
    status. Unknown programs exit 127 with ``sh: NAME: not found``.

    Attributes:
        created: every spec a container was created from, in order (to assert hardening).
        programs: argv[0] → ``Program``.
        clock: simulated seconds spent by ``sleep``.
        imported: ``(ref, changes)`` of every ``import_image``.

    Args:
        userns_remap: whether the fake engine reports user-namespace remapping.
        require_userns: asked at every ``create``: when true and ``userns_remap`` is off,
            create refuses.
        images: image references present from the start.
    """

    def __init__(self, *, userns_remap: bool = True,
                 require_userns: Callable[[], bool] = lambda: False,
                 images: Iterable[str] = ("fence/stack:bookworm",)) -> None:
        self.userns_remap = userns_remap
        self._require_userns = require_userns
        self.created: list[ContainerSpec] = []
        self.programs: dict[str, Program] = dict(BUILTIN_PROGRAMS)
        self.clock = 0.0
        self.imported: list[tuple[str, tuple[str, ...]]] = []
        self.builds: list[BuildSpec] = []  # every build asked for, in order
        self._built: dict[str, fake_build.FakeBuilt] = {}  # built image id → its steps and config
        self._lock = threading.RLock()
        self._containers: dict[str, FakeContainer] = {}
        self._images: dict[str, ImageInfo] = {}
        self._tags: dict[str, str] = {}  # full reference → image id
        self._trees: dict[str, dict[PurePosixPath, FakeFile]] = {}  # committed images' files
        self._parents: dict[str, str] = {}  # committed image id → the image it was made on
        self._ports = itertools.count(32768)
        self._networks = FakeNetworks()
        self._last_host: dict[str, int] = {}  # network → the host number it handed out last
        self._volumes: dict[str, VolumeInfo] = {}
        self._watchers: list[tuple[Mapping[str, str], queue.SimpleQueue[ContainerEvent | None]]] = []
        self._epoch = 0  # container_events streams opened (engine_epoch)
        self.events_broken = False  # tests: container_events raises EngineUnavailable while set
        for ref in images:
            image_id = "sha256:" + hashlib.sha256(ref.encode()).hexdigest()
            self._images[image_id] = ImageInfo(id=image_id, tags=(), size=0,
                                               created="1970-01-01T00:00:00Z")
            self._tags[_full_ref(ref)] = image_id

    def engine_info(self) -> EngineInfo:
        """See ``ContainerBackend.engine_info``: ``userns_remap`` as configured, seccomp on."""
        return EngineInfo(version="fake", api_version="fake", userns_remap=self.userns_remap,
                          seccomp=True, storage_driver="memory", data_root="/fake",
                          cgroup_version="2")

    def image_info(self, ref: str) -> ImageInfo | None:
        """See ``ContainerBackend.image_info``."""
        with self._lock:
            image_id = ref if ref in self._images else self._tags.get(_full_ref(ref))
            if image_id is None:
                return None
            info = self._images[image_id]
            tags = tuple(sorted(t for t, i in self._tags.items() if i == image_id))
            return ImageInfo(id=info.id, tags=tags, size=info.size, created=info.created,
                             labels=dict(info.labels))

    def list_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        """See ``ContainerBackend.list_images``."""
        with self._lock:
            ids = list(self._images)
        images = [info for info in map(self.image_info, ids) if info is not None]
        return [i for i in images
                if all(k in i.labels and (not v or i.labels[k] == v) for k, v in labels.items())]

    def import_image(self, host_tar: Path, ref: str, changes: tuple[str, ...] = (),
                     progress: ProgressCallback | None = None) -> ImageInfo:
        """See ``ContainerBackend.import_image``: id = the file's sha256; ``LABEL k=v`` changes are labels."""
        if "@" in ref:
            raise UsageError(detail=f"cannot import as {ref!r}: give repository:tag, not a digest")
        digest, done = hashlib.sha256(), 0
        try:
            total = host_tar.stat().st_size
            if progress is not None:
                progress(0, total)
            with host_tar.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            is_tar = tarfile.is_tarfile(host_tar)
        except OSError as exc:
            raise UsageError(detail=f"cannot read {host_tar}: {exc.strerror}") from exc
        if not is_tar:
            raise EngineError(action=f"importing {host_tar.name} as {ref}",
                              detail="archive/tar: invalid tar header")
        labels: dict[str, str] = {}
        for change in changes:
            word, _, rest = change.strip().partition(" ")
            if word.upper() == "LABEL":
                labels.update(part.split("=", 1) for part in shlex.split(rest) if "=" in part)
        image_id = "sha256:" + digest.hexdigest()
        with self._lock:
            self._images[image_id] = ImageInfo(id=image_id, tags=(), size=total, labels=labels,
                                               created=datetime.now(timezone.utc).isoformat())
            self._tags[_full_ref(ref)] = image_id
            self.imported.append((ref, tuple(changes)))
            return self.image_info(image_id)  # type: ignore[return-value]

    def image_config(self, ref: str) -> ImageConfig | None:
        """See ``ContainerBackend.image_config``: an image not built here has no USER, CMD or ENTRYPOINT, one layer."""
        info = self.image_info(ref)
        if info is None:
            return None
        with self._lock:
            built = self._built.get(info.id)
        if built is not None:
            return dataclasses.replace(built.config, tags=info.tags)
        return ImageConfig(id=info.id, tags=info.tags, user="", entrypoint=(), cmd=(), workdir="",
                           env=(), layers=1, size=info.size, labels=dict(info.labels),
                           parent=self._parents.get(info.id, ""))

    def build_image(self, spec: BuildSpec, *, on_line: OutputCallback,
                    cancelled: Callable[[], bool] = lambda: False) -> BuildResult:
        """See ``ContainerBackend.build_image``: the steps run as ``fence.backend.fake_build`` says."""
        refuse_unsafe_build(spec)
        base_ref = fake_build.base_ref_of(spec)
        with self._lock:
            previous = [self._built[i] for i in (self._tags.get(_full_ref(r), r) for r in spec.cache_from)
                        if i in self._built]
        made = fake_build.fake_build(spec, base=self.image_config(base_ref), base_ref=base_ref,
                                     previous=previous, on_line=on_line)
        if cancelled():
            raise StagingFailed(phase="the Dockerfile build", buildpack="", detail="cancelled")
        config = made.config
        with self._lock:
            self._images[config.id] = ImageInfo(id=config.id, tags=(), size=config.size,
                                                created=datetime.now(timezone.utc).isoformat(),
                                                labels=dict(config.labels))
            self._built[config.id] = made
            self._parents[config.id] = config.parent
            self._tags[_full_ref(spec.ref)] = config.id
            self.builds.append(spec)
        return BuildResult(image=self.image_config(config.id), cached_steps=made.cached,  # type: ignore[arg-type]
                           steps=made.steps)

    def remove_image(self, ref: str) -> None:
        """See ``ContainerBackend.remove_image``."""
        with self._lock:
            by_id = ref in self._images
            image_id = ref if by_id else self._tags.get(_full_ref(ref))
            if image_id is None:
                return
            tags = [t for t, i in self._tags.items() if i == image_id]
            if not by_id and len(tags) > 1:
                del self._tags[_full_ref(ref)]  # other tags keep the image
                return
            users = [c.id[:12] for c in self._containers.values() if c.image_id == image_id]
            if users:
                raise EngineError(action=f"removing image {ref}",
                                  detail=f"conflict: image is used by container {users[0]}")
            if image_id in self._parents.values():
                raise EngineError(action=f"removing image {ref}",
                                  detail="conflict: image has dependent child images")
            for tag in tags:
                del self._tags[tag]
            del self._images[image_id]
            self._trees.pop(image_id, None)
            self._parents.pop(image_id, None)

    def _commit(self, container: FakeContainer, ref: str, labels: Mapping[str, str]) -> ImageInfo:
        """A new image holding the container's files (see ``FakeContainer.commit``)."""
        repository, _, tag = ref.rpartition(":")
        if not repository or "/" in tag or "@" in ref:
            raise UsageError(detail=f"cannot commit as {ref!r}: give repository:tag")
        with self._lock:
            parent = self._images[container.image_id]
            image_id = "sha256:" + hashlib.sha256(uuid.uuid4().bytes).hexdigest()
            self._images[image_id] = ImageInfo(
                id=image_id, tags=(), size=parent.size + sum(len(f.data) for f in container.files.values()),
                created=datetime.now(timezone.utc).isoformat(),
                labels={**parent.labels, **container.spec.labels, **labels})
            self._trees[image_id] = {path: dataclasses.replace(node) for path, node in container.files.items()}
            self._parents[image_id] = container.image_id
            self._tags[_full_ref(ref)] = image_id
        return self.image_info(image_id)  # type: ignore[return-value]

    def _tree(self, image_id: str) -> dict[PurePosixPath, FakeFile] | None:
        with self._lock:
            tree = self._trees.get(image_id)
            return {path: dataclasses.replace(node) for path, node in tree.items()} if tree else None

    def create(self, spec: ContainerSpec) -> FakeContainer:
        """See ``ContainerBackend.create``; each spec is also appended to ``created``."""
        refuse_unsafe_spec(spec)
        if self._require_userns() and not self.userns_remap:
            raise UsernsRequired()
        if spec.network not in ("none", "bridge") and self.network_info(spec.network) is None:
            raise UsageError(detail=f"network {spec.network} does not exist: create_network makes it first")
        for mount in spec.volumes:
            if self.volume_info(mount.volume) is None:
                raise UsageError(detail=f"volume {mount.volume} does not exist: create_volume makes it first")
        image = self.image_info(spec.image)
        if image is None:
            raise ImageNotFound(image=spec.image)
        with self._lock:
            name = spec.name or f"fake_{len(self.created) + 1}"
            if any(c.name == name for c in self._containers.values()):
                raise EngineError(action=f"creating a container from {spec.image}",
                                  detail=f'Conflict. The container name "/{name}" is in use')
            container = FakeContainer(backend=self, spec=spec, image_id=image.id, name=name)
            self._containers[container.id] = container
            self.created.append(spec)
        return container

    def lookup(self, container_id: str) -> FakeContainer:
        """See ``ContainerBackend.lookup``."""
        with self._lock:
            found = [c for c in self._containers.values() if container_id
                     and (c.id.startswith(container_id) or c.name == container_id)]
        if len(found) != 1:
            raise ContainerNotFound(container=container_id[:12] or "''")
        return found[0]

    def cpu_seconds(self, container_ids: Iterable[str]) -> dict[str, tuple[float, float]]:
        """See ``ContainerBackend.cpu_seconds``: the ``counters``' CPU time."""
        return {cid: (sample.cpu_seconds, sample.at) for cid, sample in self.usage(container_ids).items()}

    def usage(self, container_ids: Iterable[str]) -> dict[str, UsageSample]:
        """See ``ContainerBackend.usage``: a running container's ``counters`` (tests set them;
        all zero but the memory limit until then)."""
        with self._lock:
            found = [self._containers.get(cid) for cid in container_ids]
        return {c.id: dataclasses.replace(c.counters, at=time.monotonic()) for c in found
                if c is not None and c._state == "running"}

    def container_events(self, labels: Mapping[str, str]) -> ContainerEvents:
        """See ``ContainerBackend.container_events``; ``end_events`` ends every open stream (as an
        engine restart does)."""
        if self.events_broken:
            raise EngineUnavailable(detail="the fake engine's event stream is broken")
        inbox: queue.SimpleQueue[ContainerEvent | None] = queue.SimpleQueue()
        watcher = (dict(labels), inbox)
        with self._lock:
            self._watchers.append(watcher)
            self._epoch += 1

        def events() -> Iterator[ContainerEvent]:
            while (event := inbox.get()) is not None:
                yield event

        def close() -> None:
            with self._lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)
            inbox.put(None)
        return ContainerEvents(events(), close=close)

    def engine_epoch(self) -> int | None:
        """See ``ContainerBackend.engine_epoch``: counts the streams opened; ``None`` while none is."""
        with self._lock:
            return self._epoch if self._watchers else None

    def end_events(self) -> None:
        """End every open ``container_events`` stream (tests: the engine went away)."""
        with self._lock:
            watchers, self._watchers = self._watchers, []
        for _, inbox in watchers:
            inbox.put(None)

    def _event(self, container: FakeContainer, action: str) -> None:
        with self._lock:
            watchers = [inbox for wanted, inbox in self._watchers
                        if all(container.spec.labels.get(k) == v for k, v in wanted.items())]
        for inbox in watchers:
            inbox.put(ContainerEvent(container_id=container.id, action=action))

    def list_info(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """See ``ContainerBackend.list_info``."""
        return [container.info() for container in self.list(labels)]

    def list(self, labels: Mapping[str, str]) -> list[FakeContainer]:
        """See ``ContainerBackend.list``."""
        with self._lock:
            everything = list(self._containers.values())
        return [c for c in reversed(everything)
                if all(c.spec.labels.get(k) == v for k, v in labels.items())]

    def create_network(self, spec: NetworkSpec) -> NetworkInfo:
        """See ``ContainerBackend.create_network``: subnets ``10.250.N.0/24``, gateway ``.1``."""
        refuse_unsafe_network(spec)
        return self._networks.create(spec)

    def network_info(self, name: str) -> NetworkInfo | None:
        """See ``ContainerBackend.network_info``."""
        return self._networks.info(name, self._running_on)

    def list_networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        """See ``ContainerBackend.list_networks``."""
        return self._networks.list(labels, self._running_on)

    def remove_network(self, name: str) -> None:
        """See ``ContainerBackend.remove_network``."""
        self._networks.remove(name, self._running_on)

    def create_volume(self, spec: VolumeSpec) -> VolumeInfo:
        """See ``ContainerBackend.create_volume``."""
        refuse_unsafe_volume(spec)
        with self._lock:
            found = self._volumes.setdefault(spec.name, VolumeInfo(name=spec.name, labels=dict(spec.labels)))
        if found.labels.get(NODE) != spec.labels[NODE]:
            raise UsageError(detail=f"volume {spec.name} exists but this node did not make it")
        return found

    def volume_info(self, name: str) -> VolumeInfo | None:
        """See ``ContainerBackend.volume_info``."""
        with self._lock:
            return self._volumes.get(name)

    def list_volumes(self, labels: Mapping[str, str]) -> list[VolumeInfo]:
        """See ``ContainerBackend.list_volumes``."""
        with self._lock:
            found = list(self._volumes.values())
        return [v for v in found if all(v.labels.get(k) == x for k, x in labels.items())]

    def remove_volume(self, name: str) -> None:
        """See ``ContainerBackend.remove_volume``: refused while a container mounts it."""
        with self._lock:
            if name not in self._volumes:
                return
            users = [c.id for c in self._containers.values() if any(m.volume == name for m in c.spec.volumes)]
            if users:
                raise EngineError(action=f"removing volume {name}",
                                  detail=f"remove {name}: volume is in use - [{users[0]}]")
            del self._volumes[name]

    def _running_on(self, network: str) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(c.id for c in self._containers.values()
                                if network in c.networks() and c.running))

    def _host_number(self, container: FakeContainer) -> int:
        """The next host number (2…251) on the container's network that no running container
        holds, after the one handed out last, as the engine's address pool hands them out: two
        running containers never share an address (the router and the manager tell instances
        apart by it)."""
        network = container.spec.network
        with self._lock:
            taken = {c._host for c in self._containers.values()  # noqa: SLF001 - the backend's own containers
                     if c is not container and c.spec.network == network and c.running}
            host = self._last_host.get(network, 1)
            for _ in range(250):
                host = host + 1 if host < 251 else 2
                if host not in taken:
                    self._last_host[network] = host
                    return host
        raise EngineError(action="starting a container", detail=f"no free address on network {network}")

    def _forget(self, container_id: str) -> None:
        with self._lock:
            self._containers.pop(container_id, None)


class FakeContainer:
    """One in-memory container of a ``FakeBackend``.

    Attributes:
        spec: what it was created from.
        files: its file tree by absolute path (tests may seed or inspect it).
        logs: output lines of its main process.
        killed: whether a timeout killed it.

    Args:
        backend: the backend that holds it.
        spec: what it is created from.
        image_id: the id of its image.
        name: its name.
    """

    def __init__(self, *, backend: FakeBackend, spec: ContainerSpec, image_id: str,
                 name: str) -> None:
        self._backend = backend
        self._id = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        self.spec, self.image_id, self.name = spec, image_id, name
        self.files = backend._tree(image_id) or {
            PurePosixPath(d): FakeFile(kind="dir", mode=0o1777 if d == "/tmp" else 0o755) for d in _BASE_DIRS}
        _make_dirs(self.files, spec.workdir)  # the engine creates a missing workdir too
        self.log_lines: list[str] = []
        # Tests may add lines with their own time and stream; log_lines count as stdout at start.
        self.log_records_extra: list[LogRecord] = []
        self.counters = UsageSample(cpu_seconds=0.0, memory_bytes=0, memory_limit_bytes=spec.limits.memory_bytes,
                                    net_rx_bytes=0, net_tx_bytes=0, at=0.0)
        self.err_lines: list[str] = []
        self._oom = False
        self.killed = False
        self._state, self._exit_code = "created", None
        self._started_at: str | None = None
        self._ports: tuple[PublishedPort, ...] = ()
        self._destroyed = False
        self._host = 0  # its address's host number, handed out at each start
        self._joined: set[str] = set()

    def __repr__(self) -> str:
        return f"FakeContainer({self._id[:12]}, {self._state})"

    @property
    def id(self) -> str:
        """See ``Container.id`` (64 hex digits, like the engine's)."""
        return self._id

    def start(self) -> None:
        """See ``Container.start``: a main program that sleeps keeps it running; one that returns ends it."""
        self._check_exists()
        if self._state == "running":
            return
        argv = self.spec.command or ("sleep", "infinity")
        output: list[str] = []
        proc = self._process(argv, self.spec.user, self.spec.workdir, {}, output.append,
                             deadline=None, main=True)
        program = self._program(argv[0])
        if proc is None or program is None:
            detail = "".join(output) or f'exec: "{argv[0]}": executable file not found in $PATH'
            raise EngineError(action="starting a container", detail=detail.strip())
        self._host = self._backend._host_number(self)  # noqa: SLF001 - its own backend
        self._state, self._exit_code, self.killed = "running", None, False
        self._started_at = datetime.now(timezone.utc).isoformat()
        self._ports = tuple(PublishedPort(container_port=p.container_port, host_ip=p.host_ip,
                                          host_port=p.host_port or next(self._backend._ports))
                            for p in self.spec.ports)
        self._backend._event(self, "start")  # noqa: SLF001 - its own backend
        try:
            self._end(program(proc))
        except StillRunning:
            pass
        finally:
            self.log_lines.extend("".join(output).splitlines())

    def run_to(self, spec: ProcessSpec, sink: Callable[[bytes], None]) -> ProcessResult:
        """See ``Container.run_to``: the fake's programs write text, so stdout reaches ``sink`` as
        each line's bytes (with its newline); a fake process has no separate stderr."""
        result = self.run(spec, on_output=lambda line: sink(line.encode() + b"\n"))
        return ProcessResult(exit_code=result.exit_code, output=())

    def run(self, spec: ProcessSpec, on_output: OutputCallback | None = None) -> ProcessResult:
        """See ``Container.run``; a program sleeping forever without a timeout raises ``InternalError``."""
        refuse_unsafe_process(spec)
        self._check_exists()
        if self._state != "running":
            raise ContainerGone(container=self._id[:12], detail=f"it is {self._state}")
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        pending = [""]

        def write(text: str) -> None:
            *complete, pending[0] = (pending[0] + text).split("\n")
            for line in complete:
                tail.append(line)
                if on_output is not None:
                    on_output(line)

        deadline = None if spec.timeout is None else self._backend.clock + spec.timeout
        proc = self._process(spec.argv, spec.user or self.spec.user,
                             spec.cwd or self.spec.workdir, spec.env, write,
                             deadline=deadline, main=False)
        program = self._program(spec.argv[0])
        try:
            if proc is None:
                code = 126
            elif program is None:
                write(f"sh: {spec.argv[0]}: not found\n")
                code = 127
            else:
                code = program(proc)
        except SleptPastDeadline:
            self.killed = True
            self._end(137)
            raise ProcessTimeout(what=f"`{shlex.join(spec.argv)}` in container {self._id[:12]}",
                                 seconds=spec.timeout) from None
        finally:
            if pending[0]:  # a last line without a newline is still output
                write("\n")
        return ProcessResult(exit_code=int(code), output=tuple(tail))

    def stream_in(self, ctr_dest: PurePosixPath, tar_stream: bytes | Iterable[bytes]) -> None:
        """See ``Container.stream_in``."""
        self._check_exists()
        dest = _norm(str(ctr_dest))
        action = f"unpacking an archive into {ctr_dest}"
        if getattr(self.files.get(dest), "kind", None) != "dir":
            raise EngineError(action=action,
                              detail=f"Could not find the file {ctr_dest} in container {self._id}")
        data = tar_stream if isinstance(tar_stream, (bytes, bytearray)) else b"".join(tar_stream)
        try:
            with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:*") as archive:
                for member in archive:
                    # Like the engine, which extracts chrooted: ".." cannot climb above "/".
                    target = _norm(posixpath.join(str(dest), member.name))
                    node = FakeFile(kind="file", mode=member.mode & 0o7777, uid=member.uid,
                                    gid=member.gid)
                    if member.isdir():
                        node.kind = "dir"
                    elif member.issym():
                        node.kind, node.target = "symlink", member.linkname
                    elif member.islnk():
                        linked = self.files.get(_norm(posixpath.join(str(dest), member.linkname)))
                        node.data = linked.data if linked is not None else b""
                    elif member.isfile():
                        node.data = archive.extractfile(member).read()  # type: ignore[union-attr]
                    else:
                        raise EngineError(action=action,
                                          detail=f"{member.name}: operation not permitted")
                    self._put(target, node)
        except tarfile.TarError as exc:
            raise EngineError(action=action, detail=str(exc)) from exc

    def stream_out(self, ctr_path: PurePosixPath) -> Iterator[bytes]:
        """See ``Container.stream_out``; unlike the engine's, the owners are the container-side ids."""
        self._check_exists()
        top = _norm(str(ctr_path))
        if top not in self.files:
            raise ContainerNotFound(container=f"{self._id[:12]}:{ctr_path}")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path in [top, *sorted(p for p in self.files if top in p.parents)]:
                node = self.files[path]
                name = top.name or "."
                entry = tarfile.TarInfo(name if path == top else f"{name}/{path.relative_to(top)}")
                entry.mode, entry.uid, entry.gid, entry.linkname = (node.mode, node.uid,
                                                                    node.gid, node.target)
                entry.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}.get(
                    node.kind, tarfile.REGTYPE)
                entry.size = len(node.data) if node.kind == "file" else 0
                archive.addfile(entry, io.BytesIO(node.data) if node.kind == "file" else None)
        raw = buffer.getvalue()
        return iter([raw[i:i + _CHUNK] for i in range(0, len(raw), _CHUNK)])

    def commit(self, ref: str, labels: Mapping[str, str]) -> ImageInfo:
        """See ``Container.commit``."""
        self._check_exists()
        return self._backend._commit(self, ref, labels)

    def info(self) -> ContainerInfo:
        """See ``Container.info``."""
        self._check_exists()
        running = self._state == "running"
        return ContainerInfo(
            id=self._id, name=self.name, image=self.spec.image, image_id=self.image_id,
            labels=dict(self.spec.labels), state=self._state, running=running,
            exit_code=self._exit_code, started_at=self._started_at, oom_killed=self._oom,
            ports=self._ports if running else (),
            ip_address=self._address() if running else None)

    def logs(self, *, follow: bool = False, tail: int | None = None) -> LogLines:
        """See ``Container.logs``; ``follow`` ends at the last line (nothing runs on)."""
        self._check_exists()
        lines = list(self.log_lines)
        return LogLines(iter(lines if tail is None else lines[-tail:] if tail else []))

    def output(self, *, stream: str, follow: bool = True, since: float | None = None,
               timestamps: bool = False, tail: int | None = None) -> LogLines:
        """See ``Container.output``: the main program's ``log_lines`` are stdout and tests'
        ``err_lines`` stderr, both logged at its start; ``log_records_extra`` (tests) carry their
        own time and stream; ``follow`` ends at the last line (nothing runs on)."""
        if stream not in ("stdout", "stderr"):
            raise UsageError(detail=f"output stream {stream!r}: use stdout or stderr")
        self._check_exists()
        started = datetime.fromisoformat(self._started_at).timestamp() if self._started_at else time.time()
        records = sorted([(started, line) for line in (self.log_lines if stream == "stdout" else self.err_lines)]
                         + [(r.time, r.line) for r in self.log_records_extra if r.stream == stream],
                         key=lambda r: r[0])
        records = [r for r in records if since is None or r[0] >= since]
        if tail is not None:
            records = records[max(0, len(records) - tail):] if tail > 0 else []
        return LogLines(iter([f"{_engine_stamp(when)} {line}" if timestamps else line for when, line in records]))

    def stop(self, grace: float = 10.0) -> None:
        """See ``Container.stop``; fake processes always honour TERM (exit status 143)."""
        self._check_exists()
        if self._state == "running":
            self._end(143)

    def exit(self, code: int, *, oom: bool = False) -> None:
        """Make the main process end now with ``code`` (tests: a crash; ``oom``: killed by the
        memory limit, as the engine reports it)."""
        self._check_exists()
        self._oom = oom
        self._end(code)

    def connect(self, network: str, *, aliases: tuple[str, ...] = ()) -> None:
        """See ``Container.connect``."""
        self._check_exists()
        if not network.startswith("fence-") or self._backend.network_info(network) is None:
            raise UsageError(detail=f"network {network[:140]!r} is not a fence network on this engine")
        self._joined.add(network)

    def disconnect(self, network: str) -> None:
        """See ``Container.disconnect``."""
        self._check_exists()
        self._joined.discard(network)

    def networks(self) -> tuple[str, ...]:
        """See ``Container.networks``."""
        own = {self.spec.network} if self.spec.network != "none" else set()
        return tuple(sorted(own | self._joined))

    def destroy(self) -> None:
        """See ``Container.destroy``."""
        was_running = self.running
        self._destroyed = True
        self._backend._forget(self._id)
        if was_running:  # as `docker rm -f`: the process dies, then the container goes
            self._backend._event(self, "die")  # noqa: SLF001 - its own backend
        self._backend._event(self, "destroy")  # noqa: SLF001 - its own backend

    def _address(self) -> str | None:
        """An address on its network, as the engine gives one (``None`` without a network)."""
        host = self._host
        if self.spec.network == "bridge":
            return f"192.0.2.{host}"
        prefix = self._backend._networks.prefix(self.spec.network)
        return None if prefix is None else f"{prefix}.{host}"

    @property
    def running(self) -> bool:
        """Whether its main process runs (without the checks of ``info``)."""
        return self._state == "running" and not self._destroyed

    def _check_exists(self) -> None:
        if self._destroyed:
            raise ContainerNotFound(container=self._id[:12])

    def _end(self, code: int) -> None:
        self._state, self._exit_code, self._ports = "exited", int(code), ()
        if self._oom:
            self._backend._event(self, "oom")  # noqa: SLF001 - its own backend
        self._backend._event(self, "die")  # noqa: SLF001 - its own backend

    def _put(self, target: PurePosixPath, node: FakeFile) -> None:
        _make_dirs(self.files, target.parent)
        if node.kind != "dir":  # a file replacing a directory replaces what was under it
            for path in [p for p in self.files if target in p.parents]:
                del self.files[path]
        if target != PurePosixPath("/"):
            self.files[target] = node

    def _program(self, name: str) -> Program | None:
        programs = self._backend.programs
        return programs.get(name) or programs.get(PurePosixPath(name).name if "/" in name else "")

    def _process(self, argv: tuple[str, ...], user: str, cwd: PurePosixPath,
                 env: Mapping[str, str], write: Callable[[str], None], *,
                 deadline: float | None, main: bool) -> FakeProcess | None:
        ids = self._ids(user)
        if ids is None:
            write(f"unable to find user {user}: no matching entries in passwd file\n")
            return None
        backend = self._backend

        def sleep(seconds: float) -> None:
            if main:
                raise StillRunning()
            if deadline is not None and backend.clock + seconds > deadline:
                backend.clock = deadline
                raise SleptPastDeadline()
            if math.isinf(seconds):
                raise InternalError(detail=f"fake: `{shlex.join(argv)}` would never return "
                                           "(give the process a timeout)")
            backend.clock += seconds

        full_env = {"PATH": _PATH, "HOSTNAME": self._id[:12], "HOME": "/",
                    **self.spec.env, **env}
        return FakeProcess(argv=tuple(argv), env=full_env, uid=ids[0], gid=ids[1],
                           cwd=PurePosixPath(cwd), files=self.files, write=write, sleep=sleep)

    @staticmethod
    def _ids(user: str) -> tuple[int, int] | None:
        # Specs carry numeric ids (models.ContainerSpec); a name is unknown, as in an image
        # without that passwd entry.
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or not (gid or uid).isdigit():
            return None
        return int(uid), int(gid or uid)


def _full_ref(ref: str) -> str:
    """``ref`` with the ``:latest`` the engine assumes when no tag is given."""
    return ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"


def _norm(path: str) -> PurePosixPath:
    return PurePosixPath(posixpath.normpath(path))


def _make_dirs(files: dict[PurePosixPath, FakeFile], path: PurePosixPath) -> None:
    for directory in [*reversed(path.parents), path]:
        if getattr(files.get(directory), "kind", None) != "dir":
            files[directory] = FakeFile(kind="dir")


def _engine_stamp(when: float) -> str:
    """``when`` as the engine writes log timestamps: RFC 3339, UTC, nanoseconds."""
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
