"""The container contract every backend fulfils: fence's Garden, and the only seam to an engine."""

# The contract's docstrings live here only; DockerBackend and FakeBackend document what is
# particular to them (and nothing when nothing is).

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Mapping, Protocol

from fence.builds import BuildResult, BuildSpec, ImageConfig
from fence.models import (
    ContainerInfo,
    ContainerSpec,
    EngineInfo,
    ImageInfo,
    NetworkInfo,
    NetworkSpec,
    ProcessResult,
    ProcessSpec,
)

# Called with each line of a process's output (without the newline), as it is produced.
OutputCallback = Callable[[str], None]
# Called with (done, total) byte counts while a long transfer runs; total may be 0 if unknown.
ProgressCallback = Callable[[int, int], None]
# How many of the last output lines a ProcessResult keeps.
TAIL_LINES = 50


class LogLines:
    """A container's log lines as ``Container.logs`` gives them: an iterator that ``close``
    ends, also from another thread while a read waits for the next line (a follower whose
    client left must not hold a thread and an engine connection until the container stops).

    Args:
        lines: the lines.
        close: ends the source (e.g. shuts the engine connection down); called once.
    """

    def __init__(self, lines: Iterator[str], *, close: Callable[[], None] = lambda: None) -> None:
        self._lines = lines
        self._close = close
        self._closed = False

    def __iter__(self) -> LogLines:
        return self

    def __next__(self) -> str:
        if self._closed:
            raise StopIteration
        try:
            return next(self._lines)
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
        """End the lines; a read waiting in another thread returns (ends) soon after."""
        if not self._closed:
            self._closed = True
            self._close()


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

    def stop(self, grace: float = 10.0) -> None:
        """Send TERM to the main process, then KILL after ``grace`` seconds. A stopped container
        is left as it is.

        Args:
            grace: seconds between TERM and KILL (rounded up to whole seconds).

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
