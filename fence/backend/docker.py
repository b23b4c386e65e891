"""DockerBackend: fence's containers on a Docker Engine (the only module that imports ``docker``)."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Mapping

import docker
import docker.errors
import docker.types
import docker.utils
import requests.exceptions

from fence.backend import docker_answers as answers
from fence.backend import docker_build
from fence.backend.base import LogLines, OutputCallback, ProgressCallback, UsageSample
from fence.backend.cgroups import CgroupReader, default_reader
from fence.backend.docker_process import ExecCalls, follow_exec, follow_exec_to
from fence.backend.firewall import bridge_interface
from fence.backend.base import CONTAINER_EVENTS, ContainerEvent, ContainerEvents
from fence.backend.policy import (refuse_unsafe_build, refuse_unsafe_network, refuse_unsafe_process,
                                  refuse_unsafe_spec)
from fence.builds import BuildResult, BuildSpec, ImageConfig
from fence.labels import NODE
from fence.errors import (ContainerGone, ContainerNotFound, EngineError, EngineUnavailable,
                          FenceError, ImageNotFound, UsageError, UsernsRequired)
from fence.lines import bounded_lines
from fence.backend.policy import refuse_unsafe_volume
from fence.models import (ContainerInfo, ContainerSpec, EngineInfo, ImageInfo, NetworkInfo, NetworkSpec,
                          ProcessResult, ProcessSpec, VolumeInfo, VolumeSpec)

log = logging.getLogger(__name__)

_IDLE_COMMAND = ("sleep", "infinity")
_CHUNK = 1024 * 1024
_KILL_WAIT = 10  # seconds to wait for a killed container to be reported as exited


class DockerBackend:
    """The ContainerBackend of a Docker Engine, reached through the docker SDK.

    The engine is first contacted on first use; if it does not answer, the call raises
    ``EngineUnavailable`` and the next call tries again.

    Args:
        base_url: the engine's address (``unix:///var/run/docker.sock``); ``None`` reads
            ``DOCKER_HOST`` and friends from the environment.
        require_userns: asked at every ``create`` whether user-namespace remapping is
            mandatory (config may change while the daemon runs).
    """

    def __init__(self, *, base_url: str | None = None,
                 require_userns: Callable[[], bool] = lambda: False) -> None:
        self._base_url = base_url
        self._require_userns = require_userns
        self._lock = threading.Lock()
        self._client: docker.DockerClient | None = None
        self._streams: docker.DockerClient | None = None
        self._cgroups: CgroupReader | None = None
        self._version: dict | None = None  # the engine's GET /version, per connection
        self._epoch = 0  # container_events streams opened (engine_epoch)
        self._open_events = 0  # of them, those not ended

    # --- clients -------------------------------------------------------------------------------

    def _connect(self, *, version: str, timeout: float | None) -> docker.DockerClient:
        try:
            if self._base_url is None:
                return docker.from_env(version=version, timeout=timeout)
            return docker.DockerClient(base_url=self._base_url, version=version, timeout=timeout)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineUnavailable(detail=_explain(exc)) from exc

    def _api(self) -> docker.APIClient:
        """The low-level client for short calls (the SDK's default read timeout applies)."""
        with self._lock:
            if self._client is None:
                self._client = self._connect(version="auto", timeout=60)
            return self._client.api

    def _stream_api(self) -> docker.APIClient:
        """A client without a read timeout, for process output and large archives: a process
        may stay silent longer than any socket timeout (``follow_exec`` keeps the deadline)."""
        version = self._api().api_version
        with self._lock:
            if self._streams is None:
                self._streams = self._connect(version=version, timeout=None)
            return self._streams.api

    def close(self) -> None:
        """Close the connections to the engine (a later call opens them again)."""
        with self._lock:
            self._version = None
            for client in (self._client, self._streams):
                if client is not None:
                    client.close()
            self._client = self._streams = None

    # --- engine and images ---------------------------------------------------------------------

    def engine_info(self) -> EngineInfo:
        """See ``ContainerBackend.engine_info``."""
        api = self._api()
        with _engine("reporting its state"):
            info = api.info()
            # The version is shown, never decided on: asked once per connection (about 10-20 ms a
            # call, on the path of every instance start whose remapping check is due).
            version = self._version if self._version is not None else api.version()
        self._version = version
        options = [str(o) for o in info.get("SecurityOptions") or ()]
        return EngineInfo(
            version=str(version.get("Version", "")),
            api_version=str(api.api_version),
            userns_remap=any("name=userns" in o for o in options),
            seccomp=any(o.startswith("name=seccomp") and "profile=unconfined" not in o
                        for o in options),
            storage_driver=str(info.get("Driver", "")),
            disk_quota=answers.disk_quota(info),
            data_root=str(info.get("DockerRootDir", "")),
            cgroup_version=str(info.get("CgroupVersion") or "1"),
            warnings=tuple(str(w) for w in info.get("Warnings") or ()),
        )

    def image_info(self, ref: str) -> ImageInfo | None:
        """See ``ContainerBackend.image_info`` (the engine's 400 for an unparsable reference is ``None``)."""
        api = self._api()
        with _engine(f"inspecting image {ref}"):
            try:
                attrs = api.inspect_image(ref)
            except docker.errors.NotFound:
                return None
            except docker.errors.APIError as exc:
                if exc.status_code == 400:
                    return None
                raise
        return answers.image_info(attrs)

    def list_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        """See ``ContainerBackend.list_images``."""
        api = self._api()
        wanted = [f"{k}={v}" if v else k for k, v in labels.items()]
        found = []
        with _engine("listing images"):
            for summary in api.images(filters={"label": wanted} if wanted else None):
                with contextlib.suppress(docker.errors.NotFound):  # removed meanwhile
                    found.append(answers.image_info(api.inspect_image(summary["Id"])))
        return found

    def import_image(self, host_tar: Path, ref: str, changes: tuple[str, ...] = (),
                     progress: ProgressCallback | None = None) -> ImageInfo:
        """See ``ContainerBackend.import_image`` (the archive is streamed to the engine in 1 MiB chunks)."""
        try:
            total = host_tar.stat().st_size
        except OSError as exc:
            raise UsageError(detail=f"cannot read {host_tar}: {exc.strerror}") from exc
        repository, tag = docker.utils.parse_repository_tag(ref)
        if "@" in ref:
            raise UsageError(detail=f"cannot import as {ref!r}: give repository:tag, not a digest")
        api = self._stream_api()
        action = f"importing {host_tar.name} as {ref}"
        with _engine(action):
            answer = api.import_image_from_data(
                _file_chunks(host_tar, total, progress), repository=repository,
                tag=tag or "latest", changes=list(changes) or None)
        for line in str(answer).splitlines():
            if '"error"' in line or '"errorDetail"' in line:
                raise EngineError(action=action, detail=line.strip()[:300])
        found = self.image_info(ref)
        if found is None:
            raise EngineError(action=action, detail=f"no image {ref} after import: {answer!s:.300}")
        return found

    def remove_image(self, ref: str) -> None:
        """See ``ContainerBackend.remove_image``."""
        _removed(f"removing image {ref}", lambda: self._api().remove_image(ref),
                 refused_ok=True)  # 400: a reference no image can have

    def image_config(self, ref: str) -> ImageConfig | None:
        """See ``ContainerBackend.image_config``."""
        api = self._api()
        with _engine(f"inspecting image {ref}"):
            try:
                return docker_build.image_config(api.inspect_image(ref))
            except docker.errors.NotFound:
                return None
            except docker.errors.APIError as exc:
                if exc.status_code == 400:
                    return None
                raise

    def build_image(self, spec: BuildSpec, *, on_line: OutputCallback,
                    cancelled: Callable[[], bool] = lambda: False) -> BuildResult:
        """See ``ContainerBackend.build_image`` (POST /build without BuildKit; closing its connection cancels)."""
        refuse_unsafe_build(spec)
        with _engine(f"building {spec.ref}"):
            return docker_build.run_build(self._stream_api(), spec, on_line=on_line, cancelled=cancelled)

    # --- containers ----------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> DockerContainer:
        """See ``ContainerBackend.create`` (docker-init is the init, ``cgroupns=private`` the cgroup namespace)."""
        refuse_unsafe_spec(spec)
        api = self._api()
        if self._require_userns() and not self.engine_info().userns_remap:
            raise UsernsRequired()
        if spec.network not in ("none", "bridge") and self.network_info(spec.network) is None:
            # The engine would create the container and refuse only its start.
            raise UsageError(detail=f"network {spec.network} does not exist: create_network makes it first")
        for mount in spec.volumes:
            if self.volume_info(mount.volume) is None:
                raise UsageError(detail=f"volume {mount.volume} does not exist: create_volume makes it first")
        limits = spec.limits
        bindings: dict[str, list[tuple[str, int | None]]] = {}
        for port in spec.ports:
            bindings.setdefault(f"{port.container_port}/tcp", []).append(
                (port.host_ip, port.host_port))
        with _engine(f"creating a container from {spec.image}"):
            host_config = api.create_host_config(
                cap_drop=["ALL"], security_opt=["no-new-privileges"], privileged=False,
                init=True, restart_policy={"Name": "no"},
                pids_limit=limits.pids, cpu_shares=limits.cpu_shares,
                mem_limit=limits.memory_bytes, memswap_limit=limits.memory_bytes,
                ulimits=[docker.types.Ulimit(name="nofile", soft=limits.nofile,
                                             hard=limits.nofile)],
                log_config=docker.types.LogConfig(type="json-file", config={
                    "max-size": limits.log_max_size, "max-file": str(limits.log_max_files)}),
                network_mode=spec.network, port_bindings=bindings or None,
                cgroupns="private",  # on cgroup v1 the engine's default is the host's
                mounts=[docker.types.Mount(target=str(m.ctr_path), source=m.volume, type="volume")
                        for m in spec.volumes] or None,
            )
            try:
                created = api.create_container(
                    image=spec.image, name=spec.name, user=spec.user, labels=dict(spec.labels),
                    command=list(spec.command if spec.command is not None else _IDLE_COMMAND),
                    environment=dict(spec.env), working_dir=str(spec.workdir),
                    ports=sorted({p.container_port for p in spec.ports}) or None,
                    host_config=host_config, detach=True)
            except docker.errors.ImageNotFound as exc:
                raise ImageNotFound(image=spec.image) from exc
            except docker.errors.APIError as exc:
                if exc.status_code == 400 and "reference format" in _explain(exc):
                    raise UsageError(
                        detail=f"image reference {spec.image!r} is malformed: {_explain(exc)}"
                    ) from exc
                raise
        for warning in created.get("Warnings") or ():
            log.warning("engine warning for container %s: %s", created["Id"][:12], warning)
        return DockerContainer(backend=self, container_id=created["Id"])

    def lookup(self, container_id: str) -> DockerContainer:
        """See ``ContainerBackend.lookup``."""
        if not container_id:
            raise ContainerNotFound(container="''")
        api = self._api()
        with _engine("looking up a container", container=container_id):
            attrs = api.inspect_container(container_id)
        return DockerContainer(backend=self, container_id=attrs["Id"])

    def list(self, labels: Mapping[str, str]) -> list[DockerContainer]:
        """See ``ContainerBackend.list``."""
        return [DockerContainer(backend=self, container_id=c["Id"]) for c in self._summaries(labels)]


    def cpu_seconds(self, container_ids: Iterable[str]) -> dict[str, tuple[float, float]]:
        """See ``ContainerBackend.cpu_seconds`` (the cgroup's CPU counter; no engine call)."""
        if self._cgroups is None:
            self._cgroups = default_reader()
        found = {cid: self._cgroups.cpu_seconds(cid) for cid in container_ids}
        return {cid: read for cid, read in found.items() if read is not None}

    def usage(self, container_ids: Iterable[str]) -> dict[str, UsageSample]:
        """See ``ContainerBackend.usage`` (the kernel's cgroup and /proc counters; no engine call)."""
        if self._cgroups is None:
            self._cgroups = default_reader()
        found = {cid: self._cgroups.sample(cid) for cid in container_ids}
        return {cid: sample for cid, sample in found.items() if sample is not None}

    def container_events(self, labels: Mapping[str, str]) -> ContainerEvents:
        """See ``ContainerBackend.container_events`` (``GET /events`` filtered by the engine)."""
        filters = {"type": "container", "event": list(CONTAINER_EVENTS),
                   "label": [f"{k}={v}" for k, v in labels.items()]}
        action = "following container events"
        with _engine(action):
            stream = self._stream_api().events(decode=True, filters=filters)
        with self._lock:
            self._epoch += 1
            self._open_events += 1
        ended = threading.Event()

        def end() -> None:
            with self._lock:
                if not ended.is_set():
                    ended.set()
                    self._open_events -= 1

        def events() -> Iterator[ContainerEvent]:
            try:
                with _engine(action):
                    for raw in stream:
                        container_id = raw.get("id") or (raw.get("Actor") or {}).get("ID")
                        if container_id:
                            yield ContainerEvent(container_id=container_id,
                                                 action=str(raw.get("Action") or raw.get("status")))
            finally:
                end()

        def close() -> None:
            end()
            stream.close()
        return ContainerEvents(events(), close=close)

    def engine_epoch(self) -> int | None:
        """See ``ContainerBackend.engine_epoch`` (the event streams this backend opened)."""
        with self._lock:
            return self._epoch if self._open_events else None

    def list_info(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """See ``ContainerBackend.list_info`` (one ``/containers/json`` call)."""
        return [answers.summary_info(c) for c in self._summaries(labels)]

    def _summaries(self, labels: Mapping[str, str]) -> list[Mapping[str, Any]]:
        """The engine's /containers/json entries (running or not) carrying all the labels."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]} if labels else None
        with _engine("listing containers"):
            return self._api().containers(all=True, filters=filters)

    # --- networks ------------------------------------------------------------------------------

    def create_network(self, spec: NetworkSpec) -> NetworkInfo:
        """See ``ContainerBackend.create_network`` (a bridge named by ``com.docker.network.bridge.name``)."""
        refuse_unsafe_network(spec)
        api = self._api()
        action = f"creating network {spec.name}"
        with _engine(action):
            try:
                api.create_network(
                    spec.name, driver="bridge", labels=dict(spec.labels), check_duplicate=True,
                    internal=False, enable_ipv6=False,
                    options={"com.docker.network.bridge.name": bridge_interface(spec.name),
                             "com.docker.network.bridge.enable_icc": "true",
                             "com.docker.network.bridge.enable_ip_masquerade": "true"})
            except docker.errors.APIError as exc:
                # It exists: made before (409), or by a racing caller, whose bridge of the same name
                # the engine may find first ("same bridge name"); either way it is looked up below.
                if exc.status_code != 409 and "same bridge name" not in _explain(exc):
                    if "address pool" in _explain(exc):
                        raise EngineError(action=action, detail=f"{_explain(exc)} (each app has its own "
                                          "network: give the engine more default-address-pools)") from exc
                    raise
        found = self.network_info(spec.name)
        if found is None or found.labels.get(NODE) != spec.labels[NODE]:
            raise UsageError(detail=f"network {spec.name} exists but this node did not make it "
                                    "(remove it with `docker network rm` if it is stale)")
        return found

    def network_info(self, name: str) -> NetworkInfo | None:
        """See ``ContainerBackend.network_info``."""
        api = self._api()
        with _engine(f"inspecting network {name}"):
            try:
                return answers.network_info(api.inspect_network(name))
            except docker.errors.NotFound:
                return None

    def list_networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        """See ``ContainerBackend.list_networks`` (the list answer lacks containers: each is inspected)."""
        api = self._api()
        found = []
        with _engine("listing networks"):
            filters = {"label": [f"{k}={v}" for k, v in labels.items()]} if labels else None
            for summary in api.networks(filters=filters):
                with contextlib.suppress(docker.errors.NotFound):  # removed meanwhile
                    found.append(answers.network_info(api.inspect_network(summary["Id"])))
        return found

    def remove_network(self, name: str) -> None:
        """See ``ContainerBackend.remove_network``."""
        _removed(f"removing network {name}", lambda: self._api().remove_network(name))


    # --- volumes -------------------------------------------------------------------------------

    def create_volume(self, spec: VolumeSpec) -> VolumeInfo:
        """See ``ContainerBackend.create_volume`` (the ``local`` driver)."""
        refuse_unsafe_volume(spec)
        found = self.volume_info(spec.name)
        if found is None:
            with _engine(f"creating volume {spec.name}"):
                self._api().create_volume(spec.name, driver="local", labels=dict(spec.labels))
            found = self.volume_info(spec.name)
        if found is None or found.labels.get(NODE) != spec.labels[NODE]:
            raise UsageError(detail=f"volume {spec.name} exists but this node did not make it")
        return found

    def volume_info(self, name: str) -> VolumeInfo | None:
        """See ``ContainerBackend.volume_info``."""
        with _engine(f"inspecting volume {name}"):
            try:
                attrs = self._api().inspect_volume(name)
            except docker.errors.NotFound:
                return None
        return VolumeInfo(name=attrs["Name"], labels=dict(attrs.get("Labels") or {}))

    def list_volumes(self, labels: Mapping[str, str]) -> list[VolumeInfo]:
        """See ``ContainerBackend.list_volumes``."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]} if labels else None
        with _engine("listing volumes"):
            answer = self._api().volumes(filters=filters) or {}
        return [VolumeInfo(name=v["Name"], labels=dict(v.get("Labels") or {}))
                for v in answer.get("Volumes") or ()]

    def remove_volume(self, name: str) -> None:
        """See ``ContainerBackend.remove_volume``."""
        _removed(f"removing volume {name}", lambda: self._api().remove_volume(name))


class DockerContainer:
    """One container on the Docker Engine; made by ``DockerBackend``, used as a ``Container``.

    Args:
        backend: the backend whose engine holds it.
        container_id: the engine's full container id.
    """

    def __init__(self, *, backend: DockerBackend, container_id: str) -> None:
        self._backend = backend
        self._id = container_id

    def __repr__(self) -> str:
        return f"DockerContainer({self._id[:12]})"

    @property
    def id(self) -> str:
        """See ``Container.id``."""
        return self._id

    def start(self) -> None:
        """See ``Container.start``."""
        api = self._backend._api()
        with _engine("starting a container", container=self._id):
            api.start(self._id)

    def run(self, spec: ProcessSpec, on_output: OutputCallback | None = None) -> ProcessResult:
        """See ``Container.run`` (the engine reports 126 for a missing program; fence says 127)."""
        with _engine("running a process", container=self._id):
            calls = self._exec(spec, demux=False)
            return follow_exec(calls, spec=spec, on_output=on_output, container=self._id[:12])

    def run_to(self, spec: ProcessSpec, sink: Callable[[bytes], None]) -> ProcessResult:
        """See ``Container.run_to`` (stdout and stderr apart: the SDK's demuxed exec stream)."""
        with _engine("running a process", container=self._id):
            calls = self._exec(spec, demux=True)
            return follow_exec_to(calls, spec=spec, sink=sink, container=self._id[:12])

    def _exec(self, spec: ProcessSpec, *, demux: bool) -> ExecCalls:
        """Create and start an exec of ``spec``; its output combined (or ``(stdout, stderr)``
        pairs with ``demux``), with the calls that follow it to its end."""
        refuse_unsafe_process(spec)
        api = self._backend._api()
        try:
            exec_id = api.exec_create(
                self._id, list(spec.argv), stdout=True, stderr=True, tty=False,
                environment=dict(spec.env) or None,
                workdir=str(spec.cwd) if spec.cwd is not None else None,
                user=spec.user or "")["Id"]
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise ContainerGone(container=self._id[:12], detail=_explain(exc)) from exc
            raise
        stream = self._backend._stream_api().exec_start(exec_id, stream=True, demux=demux)

        def exit_code() -> int | None:
            state = api.exec_inspect(exec_id)
            return None if state.get("Running") else state.get("ExitCode")

        def running() -> bool:
            return bool((api.inspect_container(self._id).get("State") or {}).get("Running"))

        def close() -> None:
            with contextlib.suppress(Exception):  # closing twice, or after the engine went, is fine
                stream.close()

        return ExecCalls(output=stream, close_output=close, exit_code=exit_code,
                         container_running=running, kill_container=self._kill)

    def _kill(self) -> None:
        api = self._backend._api()
        quiet = (docker.errors.DockerException, requests.exceptions.RequestException)
        with contextlib.suppress(*quiet):
            # docker-init is PID 1: killing it ends every process in the container's namespace.
            api.kill(self._id)
        with contextlib.suppress(*quiet):
            api.wait(self._id, timeout=_KILL_WAIT)

    def stream_in(self, ctr_dest: PurePosixPath, tar_stream: bytes | Iterable[bytes]) -> None:
        """See ``Container.stream_in`` (a chunked body: requests would form-encode a list)."""
        if isinstance(tar_stream, (bytes, bytearray, memoryview)):
            data: bytes | Iterator[bytes] = bytes(tar_stream)
        else:
            # requests would form-encode a list; a generator is sent as a chunked body.
            data = (bytes(chunk) for chunk in tar_stream)
        api = self._backend._stream_api()
        action = f"unpacking an archive into {ctr_dest}"
        with _engine(action, container=self._id):
            if not api.put_archive(self._id, str(ctr_dest), data):
                raise EngineError(action=action, detail="the engine did not confirm")

    def stream_out(self, ctr_path: PurePosixPath) -> Iterator[bytes]:
        """See ``Container.stream_out``."""
        api = self._backend._stream_api()
        action = f"archiving {ctr_path}"
        with _engine(action, container=self._id):
            try:
                chunks, _stat = api.get_archive(self._id, str(ctr_path), chunk_size=_CHUNK)
            except docker.errors.NotFound as exc:
                if _no_such_container(exc):
                    raise
                raise ContainerNotFound(container=f"{self._id[:12]}:{ctr_path}") from exc
        return _translated(chunks, action, self._id)

    def commit(self, ref: str, labels: Mapping[str, str]) -> ImageInfo:
        """See ``Container.commit``."""
        repository, _, tag = ref.rpartition(":")
        if not repository or "/" in tag or "@" in ref:
            raise UsageError(detail=f"cannot commit as {ref!r}: give repository:tag")
        api = self._backend._api()
        with _engine(f"saving container {self._id[:12]} as {ref}", container=self._id):
            created = api.commit(self._id, repository=repository, tag=tag, pause=True,
                                 conf={"Labels": dict(labels)})
            attrs = api.inspect_image(created["Id"])
        return answers.image_info(attrs)

    def info(self) -> ContainerInfo:
        """See ``Container.info``."""
        api = self._backend._api()
        with _engine("inspecting a container", container=self._id):
            attrs = api.inspect_container(self._id)
        return answers.container_info(attrs)

    def logs(self, *, follow: bool = False, tail: int | None = None) -> LogLines:
        """See ``Container.logs`` (``close`` shuts the engine connection down)."""
        api = self._backend._stream_api() if follow else self._backend._api()
        with _engine("reading container logs", container=self._id):
            chunks = api.logs(self._id, stream=True, follow=follow, tail="all" if tail is None else tail)
        return LogLines(_log_lines(chunks, self._id), close=getattr(chunks, "close", lambda: None))

    def output(self, *, stream: str, follow: bool = True, since: float | None = None,
               timestamps: bool = False, tail: int | None = None) -> LogLines:
        """See ``Container.output`` (``close`` shuts the engine connection down)."""
        if stream not in ("stdout", "stderr"):
            raise UsageError(detail=f"output stream {stream!r}: use stdout or stderr")
        api = self._backend._stream_api() if follow else self._backend._api()
        with _engine("reading container logs", container=self._id):
            chunks = api.logs(self._id, stdout=stream == "stdout", stderr=stream == "stderr", stream=True,
                              follow=follow, timestamps=timestamps, tail="all" if tail is None else tail,
                              **({"since": since} if since else {}))
        return LogLines(_log_lines(chunks, self._id), close=getattr(chunks, "close", lambda: None))

    def stop(self, grace: float = 10.0) -> None:
        """See ``Container.stop``."""
        api = self._backend._api()
        with _engine("stopping a container", container=self._id):
            api.stop(self._id, timeout=max(0, math.ceil(grace)))

    def connect(self, network: str, *, aliases: tuple[str, ...] = ()) -> None:
        """See ``Container.connect``."""
        if not network.startswith("fence-") or self._backend.network_info(network) is None:
            raise UsageError(detail=f"network {network[:140]!r} is not a fence network on this engine")
        if network in self.networks():
            return
        with _engine(f"attaching a container to {network}", container=self._id):
            self._backend._api().connect_container_to_network(self._id, network,
                                                              aliases=list(aliases) or None)

    def disconnect(self, network: str) -> None:
        """See ``Container.disconnect``."""
        if network not in self.networks():
            return
        with _engine(f"detaching a container from {network}", container=self._id):
            try:
                self._backend._api().disconnect_container_from_network(self._id, network, force=True)
            except docker.errors.NotFound as exc:
                if _no_such_container(exc):
                    raise
            except docker.errors.APIError as exc:
                if "is not connected" not in _explain(exc):
                    raise

    def networks(self) -> tuple[str, ...]:
        """See ``Container.networks``."""
        with _engine("inspecting a container", container=self._id):
            attrs = self._backend._api().inspect_container(self._id)
        return tuple(sorted((attrs.get("NetworkSettings") or {}).get("Networks") or {}))

    def destroy(self) -> None:
        """See ``Container.destroy``."""
        api = self._backend._api()
        with _engine("removing a container"):
            try:
                api.remove_container(self._id, force=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "in progress" not in _explain(exc):
                    raise


# --- translation of what the engine says -------------------------------------------------------

def _removed(action: str, remove: Callable[[], object], *, refused_ok: bool = False) -> None:
    """Run an engine removal; what is already gone is fine (``refused_ok``: a 400 too).

    Raises:
        EngineUnavailable, EngineError: as ``_engine`` says.
    """
    with _engine(action):
        try:
            remove()
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if not (refused_ok and exc.status_code == 400):
                raise


@contextlib.contextmanager
def _engine(action: str, *, container: str | None = None) -> Iterator[None]:
    """Turn docker and requests exceptions into fence errors (a 404 on ``container`` included)."""
    try:
        yield
    except FenceError:
        raise
    except docker.errors.NotFound as exc:
        if container is not None and _no_such_container(exc):
            raise ContainerNotFound(container=container[:12]) from exc
        raise EngineError(action=action, detail=_explain(exc)) from exc
    except docker.errors.APIError as exc:
        raise EngineError(action=action, detail=_explain(exc)) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise EngineUnavailable(detail=_explain(exc)) from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(action=action, detail=_explain(exc)) from exc
    except OSError as exc:
        raise EngineUnavailable(detail=_explain(exc)) from exc


def _log_lines(chunks: Iterable[bytes], container: str) -> Iterator[str]:
    # Bounded: an app printing without newlines costs one cut line, not its whole output.
    yield from bounded_lines(_translated(chunks, "reading container logs", container))


def _translated(chunks: Iterable[bytes], action: str, container: str) -> Iterator[bytes]:
    with _engine(action, container=container):
        yield from chunks


def _explain(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:300]


def _no_such_container(exc: docker.errors.NotFound) -> bool:
    return "no such container" in _explain(exc).lower()


def _file_chunks(host_tar: Path, total: int,
                 progress: ProgressCallback | None) -> Iterator[bytes]:
    done = 0
    if progress is not None:
        progress(0, total)
    with host_tar.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            done += len(chunk)
            if progress is not None:
                progress(done, total)
            yield chunk
