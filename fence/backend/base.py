"""The container contract every backend fulfils: fence's Garden, and the only seam to an engine."""

# The contract's docstrings live here only; DockerBackend and FakeBackend document what is
# particular to them (and nothing when nothing is).

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Generic, Iterable, Iterator, Mapping, Protocol, TypeVar

from fence.builds import BuildResult, BuildSpec, ImageConfig
from fence.cluster_models import ClusterNode, EngineChecks, JoinTokens, ServiceInfo, ServiceSpec, SwarmState
from fence.models import (
    ContainerInfo,
    ContainerSpec,
    EngineInfo,
    ImageInfo,
    NetworkInfo,
    NetworkSpec,
    ProcessResult,
    ProcessSpec,
    VolumeInfo,
    VolumeSpec,
)

# Called with each line of a process's output (without the newline), as it is produced.
OutputCallback = Callable[[str], None]
# Called with (done, total) byte counts while a long transfer runs; total may be 0 if unknown.
ProgressCallback = Callable[[int, int], None]
# How many of the last output lines a ProcessResult keeps.
TAIL_LINES = 50


@dataclass(frozen=True)
class LogRecord:
    """One line of a container's log as the engine keeps it.

    Attributes:
        time: when it was written (seconds since the epoch, the engine's timestamp).
        stream: ``stdout`` or ``stderr``.
        line: the line, without its newline.
    """

    time: float
    stream: str
    line: str


@dataclass(frozen=True)
class UsageSample:
    """A container's usage counters at one moment (cumulative counters, not rates).

    Attributes:
        cpu_seconds: CPU time its processes used since it started.
        memory_bytes: memory in use, as ``docker stats`` counts it (page cache that may be
            dropped, the inactive file pages, left out).
        memory_limit_bytes: its memory limit (0 when it has none).
        net_rx_bytes: bytes received on its interfaces (loopback left out).
        net_tx_bytes: bytes sent on them.
        at: ``time.monotonic()`` when it was read.
    """

    cpu_seconds: float
    memory_bytes: int
    memory_limit_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int
    at: float


@dataclass(frozen=True)
class ContainerEvent:
    """A change of a container's state, as the engine reports it.

    Attributes:
        container_id: the container's full id.
        action: one of ``CONTAINER_EVENTS``.
    """

    container_id: str
    action: str


# What ``container_events`` reports: a main process began or ended, the memory limit killed it,
# or the container went.
CONTAINER_EVENTS = ("start", "die", "oom", "destroy")


T = TypeVar("T")


class ClosableStream(Generic[T]):
    """An engine stream as an iterator that ``close`` ends, also from another thread while a
    read waits for the next item (a follower whose client left must not hold a thread and an
    engine connection until the source ends).

    Args:
        items: the items.
        close: ends the source (e.g. shuts the engine connection down); called once.
    """

    def __init__(self, items: Iterator[T], *, close: Callable[[], None] = lambda: None) -> None:
        self._items = items
        self._close = close
        self._closed = False

    def __iter__(self) -> ClosableStream[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            return next(self._items)
        except StopIteration:
            raise
        except Exception:
            if self._closed:  # the read failed because the source was shut down under it
                raise StopIteration from None
            raise

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def close(self) -> None:
        """End the stream; a read waiting in another thread returns (ends) soon after."""
        if not self._closed:
            self._closed = True
            self._close()


class ContainerEvents(ClosableStream[ContainerEvent]):
    """The events ``ContainerBackend.container_events`` gives; the iterator ends when the
    engine's stream does (the engine went away) or ``close`` is called."""


class LogLines(ClosableStream[str]):
    """A container's log lines as ``Container.logs`` and ``Container.output`` give them."""


class Container(Protocol):
    """One container created by a backend."""

    @property
    def id(self) -> str:
        """The engine's container id."""

    def start(self) -> None:
        """Start the container's main process (a running container is left as it is).

        Raises:
            ContainerNotFound: the container was destroyed.
            EngineUnavailable: the engine does not answer.
            EngineError: the engine refused (e.g. the command or the user does not exist in the
                image).
        """

    def run(self, spec: ProcessSpec, on_output: OutputCallback | None = None) -> ProcessResult:
        """Run a process in the running container and wait for it.

        stdout and stderr are combined and passed to ``on_output`` line by line as they arrive.

        Args:
            spec: argv, env, user, cwd and timeout of the process.
            on_output: receives each output line; ``None`` to discard (the tail is still kept).

        Returns:
            The exit code (127 when the program does not exist) and the last ``TAIL_LINES``
            lines of output.

        Raises:
            UsageError: argv is empty, or the process would run as root (uid or gid 0).
            ProcessTimeout: the timeout passed; the whole container was killed, since the engine
                cannot kill one exec'd process tree.
            ContainerGone: the container is not running, or stopped while the process ran.
            ContainerNotFound: the container was destroyed.
            EngineUnavailable: the engine does not answer.
        """

    def run_to(self, spec: ProcessSpec, sink: Callable[[bytes], None]) -> ProcessResult:
        """Run a process in the running container; its stdout goes to ``sink`` as bytes, as it
        comes (a database dump streamed to a host file), and its stderr is kept as the tail.

        Args:
            spec: argv, env, user, cwd and timeout of the process.
            sink: receives each chunk of stdout, unchanged.

        Returns:
            The exit code (127 when the program does not exist) and the last lines of stderr.

        Raises:
            UsageError: argv is empty, or the process would run as root (uid or gid 0).
            ProcessTimeout: the timeout passed; the whole container was killed.
            ContainerGone: the container is not running, or stopped while the process ran.
            ContainerNotFound: the container was destroyed.
            EngineUnavailable: the engine does not answer.
        """

    def stream_in(self, ctr_dest: PurePosixPath, tar_stream: bytes | Iterable[bytes]) -> None:
        """Unpack a tar stream into a directory of the container (the engine extracts it).

        Ownership comes from the tar headers, so callers set uid/gid there.

        Args:
            ctr_dest: an existing directory in the container.
            tar_stream: the tar archive, whole or in chunks.

        Raises:
            ContainerNotFound: the container was destroyed.
            EngineUnavailable: the engine does not answer.
            EngineError: the directory does not exist or the archive was refused (it holds a
                device file, which the engine cannot make under userns-remap).
        """

    def stream_out(self, ctr_path: PurePosixPath) -> Iterator[bytes]:
        """Stream a file or directory out of the container as a tar archive.

        The owners in its headers are not the container's: under userns-remap, Engine 20.10
        writes host-side uids/gids (e.g. 101000), so callers that stream the archive back in set
        ownership themselves.

        Args:
            ctr_path: the file or directory; the archive's top entry is its base name.

        Returns:
            Chunks of the tar archive.

        Raises:
            ContainerNotFound: the container or the path does not exist.
            EngineUnavailable: the engine does not answer.
        """

    def commit(self, ref: str, labels: Mapping[str, str]) -> ImageInfo:
        """Save the container's file system as a new image (a layer on its own image).

        The image keeps its parent's config merged with the container's (user, env, command,
        labels), with ``labels`` added; containers created from it start with its files. A
        running container is paused while it is saved.

        Args:
            ref: ``repository:tag`` to give the image (moved from an older image that had it).
            labels: labels to add to the image.

        Returns:
            The new image.

        Raises:
            ContainerNotFound: the container was destroyed.
            UsageError: ``ref`` is not ``repository:tag``.
            EngineUnavailable: the engine does not answer.
            EngineError: the engine refused.
        """

    def info(self) -> ContainerInfo:
        """What the engine knows of the container now.

        Returns:
            Its state, labels, image and published ports (only while it runs).

        Raises:
            ContainerNotFound: the container was destroyed.
            EngineUnavailable: the engine does not answer.
        """

    def logs(self, *, follow: bool = False, tail: int | None = None) -> LogLines:
        """The main process's output (stdout and stderr) from the engine's log, line by line.

        Args:
            follow: keep streaming new lines until the container stops (or ``close``).
            tail: only the last ``tail`` lines already logged.

        Raises:
            ContainerNotFound: the container was destroyed.
            EngineUnavailable: the engine does not answer.
        """

    def output(self, *, stream: str, follow: bool = True, since: float | None = None,
               timestamps: bool = False, tail: int | None = None) -> LogLines:
        """One stream of the main process's output from the engine's log, line by line (log
        drains read each instance this way: from the engine's own log file, so a slow reader
        never holds the app's writes back; ``fence.backend.log_records`` merges both streams
        by time for ``fence logs``).

        Args:
            stream: ``stdout`` or ``stderr``.
            follow: keep streaming new lines until the container stops (or ``close``).
            since: only lines logged at or after this time (seconds since the epoch); ``None``:
                all.
            timestamps: start each line with the time the engine logged it (RFC 3339 with
                nanoseconds, UTC, then a space).
            tail: only the last ``tail`` lines (of those since ``since``); ``None``: all.

        Raises:
            UsageError: ``stream`` is neither.
            ContainerNotFound: the container was destroyed.
            EngineUnavailable: the engine does not answer.
        """

    def stop(self, grace: float = 10.0) -> None:
        """Send TERM to the main process, then KILL after ``grace`` seconds. A stopped container
        is left as it is.

        Args:
            grace: seconds between TERM and KILL (rounded up to whole seconds).

        Raises:
            ContainerNotFound: the container was destroyed.
            EngineUnavailable: the engine does not answer.
        """

    def connect(self, network: str, *, aliases: tuple[str, ...] = ()) -> None:
        """Attach the container to another network fence made (a service joins each bound app's
        network); attaching it where it already is is fine.

        Args:
            network: the network's name (``fence-…``).
            aliases: further names other containers on that network resolve to it.

        Raises:
            UsageError: the network is not a fence network or does not exist.
            ContainerNotFound: the container was destroyed.
            EngineUnavailable: the engine does not answer.
        """

    def disconnect(self, network: str) -> None:
        """Detach the container from a network; one it is not on (or a missing network) is fine.

        Raises:
            ContainerNotFound: the container was destroyed.
            EngineUnavailable: the engine does not answer.
        """

    def networks(self) -> tuple[str, ...]:
        """Names of the networks the container is attached to, sorted.

        Raises:
            ContainerNotFound: the container was destroyed.
            EngineUnavailable: the engine does not answer.
        """

    def destroy(self) -> None:
        """Kill and remove the container. Idempotent: destroying a missing container is fine.

        Raises:
            EngineUnavailable: the engine does not answer.
            EngineError: the engine refused.
        """


class ContainerBackend(Protocol):
    """Creates and finds containers and images on one engine."""

    def engine_info(self) -> EngineInfo:
        """Facts about the engine (version, userns remapping, seccomp …).

        Returns:
            What ``docker info`` and ``docker version`` report, as fence needs it.

        Raises:
            EngineUnavailable: the engine does not answer.
            EngineError: the engine gave an unexpected answer.
        """

    def create(self, spec: ContainerSpec) -> Container:
        """Create (not start) a hardened container: non-root user, no capabilities,
        no-new-privileges, default seccomp, pids/memory(=swap)/CPU/nofile limits, rotated
        json-file logs, an init as PID 1, no restart policy, never privileged, no host mounts or
        namespaces (a private cgroup namespace too), ports only on their ``host_ip``.

        Every backend first applies ``fence.backend.policy.refuse_unsafe_spec``.

        Args:
            spec: image, labels, user, command, env, limits, ports, network (``none``,
                ``bridge``, or a network made by ``create_network``).

        Returns:
            The created container.

        Raises:
            UsageError: the spec asks for root, lacks fence's node label, names a network that
                is not allowed or does not exist, publishes ports without a network, or gives a
                malformed image reference.
            UsernsRequired: ``require_userns`` is set and the engine does not remap.
            ImageNotFound: the image is not on the engine.
            EngineUnavailable: the engine does not answer.
            EngineError: the engine refused (e.g. the name is taken).
        """

    def lookup(self, container_id: str) -> Container:
        """A container by id (or unique id prefix, or name).

        Args:
            container_id: what ``create`` or ``list`` gave as ``Container.id``.

        Returns:
            The container.

        Raises:
            ContainerNotFound: no such container.
            EngineUnavailable: the engine does not answer.
        """

    def list(self, labels: Mapping[str, str]) -> list[Container]:
        """Containers (running or not) that carry all the given labels, newest first.

        Args:
            labels: label names and the values they must have.

        Returns:
            The matching containers.

        Raises:
            EngineUnavailable: the engine does not answer.
        """

    def list_info(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """``info()`` of every container carrying all the labels, in one engine call; without
        ``oom_killed`` and ``started_at`` (ask ``info()`` of an exited container for those).

        Raises:
            EngineUnavailable: the engine does not answer.
        """

    def container_events(self, labels: Mapping[str, str]) -> ContainerEvents:
        """The ``CONTAINER_EVENTS`` of every container carrying all the labels, from now on, as
        they happen (one engine connection held open; nothing is read while nothing happens).

        Raises:
            EngineUnavailable: the engine does not answer (a stream that was open just ends).
        """

    def engine_epoch(self) -> int | None:
        """A number that stays the same while this backend has seen the engine stay up: it
        changes each time a ``container_events`` stream is opened, and is ``None`` while none is
        open (an engine restart ends every stream, so nothing then says it did not restart).
        What only a restart changes (userns remapping) may be kept while it holds."""

    def cpu_seconds(self, container_ids: Iterable[str]) -> dict[str, tuple[float, float]]:
        """The CPU time of running containers alone, as cheaply as it can be read (one small
        file each): ``(CPU seconds since it started, time.monotonic() when read)`` by id; ids
        that do not run (or are unknown) are left out. Baselines for CPU %."""

    def usage(self, container_ids: Iterable[str]) -> dict[str, UsageSample]:
        """Usage counters of running containers, read cheaply (no engine stats stream).

        Args:
            container_ids: full container ids.

        Returns:
            A sample for each id that runs; ids that do not run (or are unknown) are left out.
        """

    def image_info(self, ref: str) -> ImageInfo | None:
        """An image by reference or id, or ``None`` if the engine does not have it.

        Args:
            ref: ``repository:tag`` or ``sha256:…``.

        Returns:
            The image, or ``None`` (also for a reference the engine cannot parse).

        Raises:
            EngineUnavailable: the engine does not answer.
        """

    def list_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        """Images carrying all the given labels; an empty value matches any value of that label.

        Raises:
            EngineUnavailable: the engine does not answer.
        """

    def import_image(self, host_tar: Path, ref: str, changes: tuple[str, ...] = (),
                     progress: ProgressCallback | None = None) -> ImageInfo:
        """Import a root filesystem tarball as an image (no registry involved).

        Args:
            host_tar: the root filesystem as a tar file on the host.
            ref: ``repository:tag`` to give the image (no tag: ``latest``).
            changes: Dockerfile instructions to apply (``ENV``, ``LABEL``, ``CMD`` …).
            progress: receives bytes sent so far and the file size.

        Returns:
            The new image.

        Raises:
            UsageError: ``host_tar`` cannot be read, or ``ref`` is a digest.
            EngineUnavailable: the engine does not answer.
            EngineError: the engine refused the archive.
        """

    def remove_image(self, ref: str) -> None:
        """Remove an image (or only this tag of it, when it has others); a missing image is fine.

        Args:
            ref: ``repository:tag`` or image id.

        Raises:
            EngineUnavailable: the engine does not answer.
            EngineError: a container (running or not) or a child image uses the image.
        """

    def image_config(self, ref: str) -> ImageConfig | None:
        """What an image runs (USER, ENTRYPOINT, CMD …) and its size and layers, or ``None`` if
        the engine does not have it (also for a reference it cannot parse).

        Raises:
            EngineUnavailable: the engine does not answer.
        """

    def build_image(self, spec: BuildSpec, *, on_line: OutputCallback,
                    cancelled: Callable[[], bool] = lambda: False) -> BuildResult:
        """Build an image from a Dockerfile with the builder that enforces limits (the classic
        one: BuildKit ignores memory, CPU and ulimits): every step's container gets memory =
        memory+swap, the CPU share, nofile and ``spec.network``; nothing is pulled; without
        ``cache_from`` no cache is used at all. Each output line goes to ``on_line`` as it comes.

        A failed, timed-out or cancelled build leaves no container and no image it made.

        Every backend first applies ``fence.backend.policy.refuse_unsafe_build``.

        Args:
            spec: context, Dockerfile, reference, labels, build args, limits, network, cache,
                timeout.
            on_line: receives each line of build output.
            cancelled: polled while the build runs; when it says so the build is cancelled.

        Returns:
            The image (tagged ``spec.ref``) and how many steps came from the cache.

        Raises:
            UsageError: the spec lacks the node label, names another network or a digest ref.
            BuildFailed: a step failed or the Dockerfile is invalid for the engine.
            StagingTimeout: the build ran past ``spec.timeout``.
            StagingFailed: ``cancelled`` said so (detail ``cancelled``).
            EngineUnavailable: the engine does not answer.
        """

    def create_network(self, spec: NetworkSpec) -> NetworkInfo:
        """Create a bridge network, or return it when this node already made it (two callers
        racing get the same network).

        Its containers reach each other and, masqueraded, other machines; the engine keeps them
        apart from every other bridge network. Its host interface is named
        ``fence.backend.firewall.bridge_interface(spec.name)`` (``fnc-…``), which the host
        firewall matches. IPv4 only: its containers have IPv6 off.

        Every backend first applies ``fence.backend.policy.refuse_unsafe_network``.

        Args:
            spec: name and labels.

        Returns:
            The network.

        Raises:
            UsageError: the name is not a fence network name, the node label is missing, or a
                network of that name exists that this node did not make.
            EngineUnavailable: the engine does not answer.
            EngineError: the engine refused (e.g. no free address pool left).
        """

    def network_info(self, name: str) -> NetworkInfo | None:
        """A network by name or id, or ``None`` if the engine does not have it.

        Raises:
            EngineUnavailable: the engine does not answer.
        """

    def list_networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        """Networks carrying all the given labels (with the running containers attached to each).

        Raises:
            EngineUnavailable: the engine does not answer.
        """

    def remove_network(self, name: str) -> None:
        """Remove a network; a missing network is fine. A stopped container created on it is
        left behind (and can no longer start): remove containers first.

        Args:
            name: its name or id.

        Raises:
            EngineUnavailable: the engine does not answer.
            EngineError: a running container is attached to it.
        """

    def create_volume(self, spec: VolumeSpec) -> VolumeInfo:
        """Create a named local volume, or return it when this node already made it.

        A container that mounts it first copies the image's files (and their owners) at the
        mount point into it, as the engine does for an empty named volume.

        Every backend first applies ``fence.backend.policy.refuse_unsafe_volume``.

        Raises:
            UsageError: the name is not a fence name, the node label is missing, or a volume of
                that name exists that this node did not make.
            EngineUnavailable: the engine does not answer.
        """

    def volume_info(self, name: str) -> VolumeInfo | None:
        """A volume by name, or ``None`` if the engine does not have it.

        Raises:
            EngineUnavailable: the engine does not answer.
        """

    def list_volumes(self, labels: Mapping[str, str]) -> list[VolumeInfo]:
        """Volumes carrying all the given labels.

        Raises:
            EngineUnavailable: the engine does not answer.
        """

    def remove_volume(self, name: str) -> None:
        """Remove a volume and its data; a missing volume is fine.

        Raises:
            EngineUnavailable: the engine does not answer.
            EngineError: a container (running or not) uses it.
        """


class ClusterBackend(Protocol):
    """One engine's part in a Swarm cluster: membership, the swarm's nodes, checks, image pushes."""

    def swarm_state(self) -> SwarmState:
        """This engine's swarm state (``inactive`` when in no swarm).

        Raises:
            EngineUnavailable: the engine does not answer.
        """

    def swarm_init(self, *, listen_addr: str, advertise_addr: str | None) -> SwarmState:
        """Make this engine the manager of a new swarm, or adopt the swarm it already manages.

        Args:
            listen_addr: ``host:port`` the swarm's control plane listens on.
            advertise_addr: ``host:port`` other nodes reach it at; ``None``: the engine picks
                (from the listen address, or its ``--swarm-default-advertise-addr``).

        Raises:
            ClusterError: the engine is a worker of a swarm (or in a pending/error state).
            EngineUnavailable: the engine does not answer.
        """

    def join_tokens(self) -> JoinTokens:
        """The swarm's join tokens.

        Raises:
            ClusterError: the engine is not a swarm manager.
        """

    def swarm_join(self, *, token: str, remote_addr: str, listen_addr: str,
                   advertise_addr: str | None) -> SwarmState:
        """Join this engine to a swarm.

        Args:
            token: a join token of the swarm.
            remote_addr: a manager's ``host:port``.
            listen_addr: ``host:port`` this engine's swarm listens on.
            advertise_addr: ``host:port`` the others reach it at; ``None``: the engine picks.

        Raises:
            ClusterError: the engine is already in a swarm, or the manager refused (bad token,
                unreachable address).
        """

    def swarm_leave(self, *, force: bool) -> None:
        """Leave the swarm (nothing to do when in none).

        Args:
            force: also when this is a manager whose leaving breaks the managers' quorum.

        Raises:
            ClusterError: the engine refused (a manager without ``force``).
        """

    def engine_checks(self, *, probe_image: str) -> EngineChecks:
        """What the engine enforces for containers that do not ask: remapping, from ``docker
        info``; daemon-wide no-new-privileges, from a probe container's ``/proc/self/status``
        (Engine 20.10's SecurityOptions do not list it).

        Args:
            probe_image: an image on this engine with ``cat``, run as uid 1000.

        Raises:
            UsageError: the probe image is not on the engine.
            EngineUnavailable: the engine does not answer.
        """

    def list_nodes(self) -> list[ClusterNode]:
        """The swarm's nodes, managers first, with the running tasks on each.

        Raises:
            ClusterError: this engine is not a swarm manager.
        """

    def set_availability(self, node: str, availability: str) -> ClusterNode:
        """Set a node's availability: ``drain`` moves its tasks away, ``active`` takes tasks again.

        Args:
            node: its id, unique id prefix or host name.
            availability: ``active``, ``pause`` or ``drain``.

        Raises:
            NodeNotFound: no such node.
            UsageError: a bad availability, or a name several nodes match.
            ClusterError: this engine is not a swarm manager.
        """

    def push_image(self, ref: str, *, registry: str, repository: str, tag: str) -> str:
        """Push a local image to a registry and return the reference by digest.

        Args:
            ref: the local image.
            registry: the registry's ``host:port``.
            repository: the repository in it.
            tag: the tag to push under (a digest, not the tag, is what callers use).

        Returns:
            ``registry/repository@sha256:…``.

        Raises:
            RegistryUnavailable: the registry does not answer or refused.
        """

    def pull_image(self, ref: str) -> str:
        """Pull an image by digest and return its image id.

        Raises:
            UsageError: ``ref`` is not ``repository@sha256:…``.
            RegistryUnavailable: the registry does not answer, or has no such image.
        """

    def probe_nodes(self, *, probe_image: str, timeout: float = 60.0) -> dict[str, EngineChecks]:
        """Each ready, active node's checks, read by a probe task on it (a global job that is
        removed afterwards): remapping from ``/proc/self/uid_map``, no-new-privileges from
        ``/proc/self/status`` of a task that did not ask for it.

        Args:
            probe_image: an image every node has or can pull (by digest from the registry).
            timeout: seconds to wait for the probe tasks; nodes whose task did not report are
                missing from the answer.

        Returns:
            Checks by node id.

        Raises:
            ClusterError: this engine is not a swarm manager.
        """

    # --- instances as services (issue 17 Build 3) ---

    def create_service(self, spec: ServiceSpec) -> str:
        """Create a replicated service of app instances (``swarm_services.service_body``).

        Returns:
            The service id.

        Raises:
            UsageError: the spec is unsafe (root, an image not by digest).
            ClusterError: this engine is not a swarm manager.
            EngineError: the engine refused (a name in use).
        """

    def scale_service(self, service_id: str, *, replicas: int, max_per_node: int) -> None:
        """Set a service's task count (and its per-node cap; a changed cap replaces its tasks,
        start-first, one at a time)."""

    def remove_service(self, service_id: str) -> None:
        """Remove a service (its tasks get TERM, then KILL after 10 s); a missing one is fine."""

    def list_services(self, labels: Mapping[str, str]) -> list[ServiceInfo]:
        """The services carrying all ``labels``, each with its tasks (live and Swarm's history)
        and each task's node address.

        Raises:
            ClusterError: this engine is not a swarm manager.
            EngineUnavailable: the engine does not answer.
        """
