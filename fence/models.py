"""Frozen dataclasses for the data that crosses fence's module boundaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Mapping

from fence.drains.models import DrainHealth
from fence.labels import STACK_ID

WEB_PROCESS = "web"  # the process type that gets $PORT, the router and the port check


@dataclass(frozen=True)
class Limits:
    """Resource limits of one container.

    Attributes:
        memory_bytes: hard memory limit; swap is set to the same value (no hidden swap).
        pids: maximum number of processes (fork-bomb guard).
        cpu_shares: relative CPU weight (Docker's default is 1024).
        nofile: soft and hard limit on open file descriptors.
        log_max_size: size of one json-file log before rotation, e.g. ``"10m"``.
        log_max_files: how many rotated log files are kept.
    """

    memory_bytes: int = 256 * 1024 * 1024
    pids: int = 512
    cpu_shares: int = 1024
    nofile: int = 16384
    log_max_size: str = "10m"
    log_max_files: int = 3


@dataclass(frozen=True)
class PortSpec:
    """A container TCP port published on the host.

    Attributes:
        container_port: the port inside the container.
        host_ip: the host address to publish on (``container/bind_address``).
        host_port: the host port, or ``None`` for a free port chosen by the engine.
    """

    container_port: int
    host_ip: str = "127.0.0.1"
    host_port: int | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one unprivileged container.

    Attributes:
        image: image reference (the stack).
        labels: labels to set; must include fence's ownership labels (see ``fence.labels``).
        user: ``uid`` or ``uid:gid`` the container's processes run as; never root.
        command: argv of the container's main process (``None``: keep the container idle).
        env: environment of the main process.
        workdir: working directory inside the container.
        limits: resource limits.
        ports: TCP ports to publish.
        network: ``"none"``, ``"bridge"`` (the engine's default bridge) or the name of a
            network fence made (``NetworkSpec``; an app's instances and tasks join its own).
        name: optional container name.
        volumes: named volumes fence made (``VolumeSpec``) mounted into it; never host paths.
    """

    image: str
    labels: Mapping[str, str]
    user: str
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: PurePosixPath = PurePosixPath("/")
    limits: Limits = field(default_factory=Limits)
    ports: tuple[PortSpec, ...] = ()
    network: str = "none"
    name: str | None = None
    volumes: tuple[VolumeMount, ...] = ()


@dataclass(frozen=True)
class ProcessSpec:
    """A process to run inside an existing container.

    Attributes:
        argv: the program and its arguments (no shell unless argv names one).
        env: extra environment variables.
        user: ``uid`` or ``uid:gid``; ``None`` means the container's user.
        cwd: working directory inside the container, ``None`` for the container's.
        timeout: seconds before the process is killed, ``None`` for no limit.
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    cwd: PurePosixPath | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class ProcessResult:
    """How a process ended.

    Attributes:
        exit_code: the process's exit status.
        output: the last lines of combined stdout and stderr (the full stream went to the callback).
    """

    exit_code: int
    output: tuple[str, ...] = ()


@dataclass(frozen=True)
class PublishedPort:
    """A container port and where the engine published it."""

    container_port: int
    host_ip: str
    host_port: int


@dataclass(frozen=True)
class ContainerInfo:
    """What the engine reports about one container.

    Attributes:
        id: the engine's container id.
        name: the container name.
        image: the image reference it was created from.
        image_id: the image's id (``sha256:…``).
        labels: its labels.
        state: ``created``, ``running``, ``exited``, ``dead`` …
        running: whether its main process runs.
        exit_code: the main process's exit status once it has exited.
        oom_killed: whether the kernel's OOM killer ended it.
        started_at: ISO timestamp of the last start, if any.
        ports: published ports.
        ip_address: the container's address on its bridge network, if it has one.
    """

    id: str
    name: str
    image: str
    image_id: str
    labels: Mapping[str, str]
    state: str
    running: bool
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: str | None = None
    ports: tuple[PublishedPort, ...] = ()
    ip_address: str | None = None

    @property
    def stack_image_id(self) -> str:
        """The stack image it runs on: its ``fence.stack-id`` label (a container from a droplet
        image), else its own image."""
        return str(self.labels.get(STACK_ID) or self.image_id)


@dataclass(frozen=True)
class VolumeMount:
    """A named volume fence made, mounted in a container (a service's data; issue 16).

    Attributes:
        volume: the volume's name (``fence-…``).
        ctr_path: where it is mounted.
    """

    volume: str
    ctr_path: PurePosixPath


@dataclass(frozen=True)
class VolumeSpec:
    """A named, engine-managed volume fence owns (never a host folder).

    Attributes:
        name: its name; must start with ``fence-`` (``fence.backend.policy``).
        labels: labels to set; must include fence's node label.
    """

    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class VolumeInfo:
    """What the engine reports about one volume.

    Attributes:
        name: its name.
        labels: its labels.
    """

    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class NetworkSpec:
    """A bridge network fence owns (one per app: its instances and tasks join only it).

    Attributes:
        name: the network's name; must start with ``fence-`` (``fence.backend.policy``).
        labels: labels to set; must include fence's node label.
    """

    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class NetworkInfo:
    """What the engine reports about one network.

    Attributes:
        id: the engine's network id.
        name: its name.
        labels: its labels.
        bridge: the host interface of its bridge (``fnc-…`` for a network fence made), which
            the host firewall matches.
        subnet: its IPv4 subnet (CIDR), if it has one.
        gateway: the host's address on it, if it has one.
        containers: ids of the running containers attached to it now.
    """

    id: str
    name: str
    labels: Mapping[str, str]
    bridge: str
    subnet: str | None = None
    gateway: str | None = None
    containers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageInfo:
    """An image on the engine.

    Attributes:
        id: image id (``sha256:…``).
        tags: its repository tags.
        size: size in bytes.
        created: ISO timestamp.
        labels: image labels.
    """

    id: str
    tags: tuple[str, ...]
    size: int
    created: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineInfo:
    """Facts about the container engine fence runs on.

    Attributes:
        version: the engine's server version.
        api_version: the API version in use.
        userns_remap: whether the engine remaps container root to an unprivileged host uid.
        seccomp: whether the engine applies a seccomp profile.
        storage_driver: e.g. ``overlay2``.
        data_root: the engine's data directory.
        cgroup_version: ``"1"`` or ``"2"``.
        warnings: what the engine says it cannot enforce.
        disk_quota: whether the storage driver can limit a container's disk use (overlay2 on
            xfs with project quotas, btrfs, zfs); ``False`` means containers can fill the disk.
    """

    version: str
    api_version: str
    userns_remap: bool
    seccomp: bool
    storage_driver: str
    data_root: str
    cgroup_version: str
    warnings: tuple[str, ...] = ()
    disk_quota: bool = False


@dataclass(frozen=True)
class AppUid:
    """The uid (and gid) app processes run as in every container, and why that one.

    Attributes:
        uid: the uid.
        remapped: whether the engine remaps user namespaces (then ``uid`` is a container uid,
            mapped to an unprivileged subordinate uid on the host).
        source: ``container/uid`` (configured, or its default under remapping) or ``picked``
            (no remapping: a uid no host account has, chosen once and kept in FENCE_HOME).
        host_owner: on an engine without remapping, the host account (``user NAME``, ``group
            NAME``, ``subordinate ids of NAME``) that has this uid too; ``None`` when none does.
    """

    uid: int
    remapped: bool
    source: str
    host_owner: str | None = None


@dataclass(frozen=True)
class StackStatus:
    """Which stack image the node uses.

    Attributes:
        configured: ``docker/image``.
        in_use: the image containers start from: ``docker/image`` if present, else the first
            present entry of ``docker/images``; ``None`` if none is present.
        image_id: the id of ``in_use``.
        present: whether ``configured`` itself is on the engine.
        fallback: whether ``in_use`` is a fallback from ``docker/images``.
    """

    configured: str
    in_use: str | None
    image_id: str | None
    present: bool
    fallback: bool


@dataclass(frozen=True)
class StackImage:
    """An image fence knows: a stack it built or one the config names.

    Attributes:
        ref: the reference (``repository:tag``) or id.
        image_id: the engine's id, ``None`` if the image is absent.
        size: bytes, 0 if absent.
        created: ISO timestamp, ``""`` if absent.
        configured: whether ``docker/image`` names it.
        fallback: whether ``docker/images`` lists it.
        containers: how many of this node's containers run from it.
        apps: the apps whose instances run on it, by name.
        in_use: whether it is the image new containers start from (``docker/image``, or the
            fallback from ``docker/images`` that stands in for it).
    """

    ref: str
    image_id: str | None
    size: int
    created: str
    configured: bool
    fallback: bool
    containers: int
    apps: tuple[str, ...] = ()
    in_use: bool = False


@dataclass(frozen=True)
class NodeStatus:
    """What ``kato status`` reports.

    Attributes:
        version: fence's version.
        node_id: this node's id (the ``fence.node`` label).
        home: FENCE_HOME.
        daemon_pid: the daemon's process id.
        started_at: when the daemon started (ISO).
        engine: the engine's facts, ``None`` if it does not answer.
        engine_error: why the engine did not answer.
        stack: the stack image in use, ``None`` without an engine.
        apps: apps in the state store.
        containers: this node's containers, by role.
        schema_version: the state store's schema version.
        warnings: things the admin should act on.
        router: the router's status, ``None`` when the node has none.
        app_uid: the uid app processes run as, ``None`` without an engine.
        drains: the log drains (the apps' and the node's) with their health.
    """

    version: str
    node_id: str
    home: str
    daemon_pid: int
    started_at: str
    engine: EngineInfo | None
    engine_error: str | None
    stack: StackStatus | None
    apps: int
    containers: Mapping[str, int]
    schema_version: int
    warnings: tuple[str, ...] = ()
    router: RouterStatus | None = None
    app_uid: AppUid | None = None
    drains: tuple[DrainHealth, ...] = ()  # issue 18: every drain's state, counts and last error
    services: Mapping[str, int] = field(default_factory=dict)  # issue 16: services by state
    backup_interval: int = 0  # issue 16: services/backup_interval (0: no periodic backups)


@dataclass(frozen=True)
class ServiceUsage:
    """One backing service's resources, as ``kato node info`` shows them (issue 16).

    Attributes:
        name: the service.
        type: its type.
        memory_used: bytes of memory its container uses now (``None``: unknown, not running).
        memory_limit: its memory limit in bytes.
        disk_used: bytes its data volume holds (``None``: unknown).
    """

    name: str
    type: str
    memory_used: int | None
    memory_limit: int
    disk_used: int | None


# --- staging -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hooks:
    """Commands an app runs at each phase (``stackato.yml`` ``hooks:``), in order.

    A command starting with ``-`` may fail without aborting (the ``-`` is not part of it).
    """

    pre_staging: tuple[str, ...] = ()
    post_staging: tuple[str, ...] = ()
    pre_running: tuple[str, ...] = ()


# --- health checks (issue 14 item 4) -----------------------------------------------------------

HEALTH_TYPES = ("port", "http", "process")


@dataclass(frozen=True)
class HealthSettings:
    """How an app's web instances are checked (``health:`` / CF ``health-check-*``).

    Attributes:
        type: ``port`` (a TCP connection to $PORT), ``http`` (a 2xx/3xx answer to ``path``
            from the instance itself) or ``process`` (its process is running).
        path: the ``http`` check's path (starts with ``/``); ``None`` for the others.
        interval: seconds between liveness checks while it runs (unset: 10).
    """

    type: str = "port"
    path: str | None = None
    interval: int | None = None

# --- end health checks -------------------------------------------------------------------------


# --- process types (issue 14, P1) ---
@dataclass(frozen=True)
class ProcessScale:
    """How many instances of one process type a manifest asks for, and their memory.

    Attributes:
        instances: the type's instance count (unset: the app's current, else 1; for ``web``:
            the manifest's ``instances:``).
        memory_mib: memory per instance of the type (unset: the app's).
    """

    instances: int | None = None
    memory_mib: int | None = None
# --- end process types ---


@dataclass(frozen=True)
class Manifest:
    """An app's ``stackato.yml`` (or Cloud Foundry ``manifest.yml``), parsed and checked.

    Attributes:
        name: the app's name, if given.
        mem_mib: memory per instance in MiB.
        instances: instance count.
        env: app environment variables (values as strings).
        buildpacks: buildpack specs (``buildpack:`` or ``buildpacks:``), in chain order.
        processes: process type → command (``processes: {web: …}`` or CF ``command``).
        timeout: health-check timeout in seconds (1 to 180).
        ignores: extra ignore patterns (``.stackatoignore`` syntax).
        hooks: staging and running hooks.
        urls: extra host names the app answers at.
        source_name: the file it came from (``stackato.yml`` / ``manifest.yml``), ``None`` if none.
        warnings: unknown keys and other things the developer should know.
        health: the ``health:`` block (CF ``health-check-type``/``-http-endpoint``), if given.
    """

    name: str | None = None
    mem_mib: int | None = None
    instances: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    buildpacks: tuple[str, ...] = ()
    processes: Mapping[str, str] = field(default_factory=dict)
    timeout: int | None = None
    ignores: tuple[str, ...] = ()
    hooks: Hooks = field(default_factory=Hooks)
    urls: tuple[str, ...] = ()
    source_name: str | None = None
    warnings: tuple[str, ...] = ()
    health: HealthSettings | None = None  # health checks (issue 14 item 4)
    cron: tuple[CronEntry, ...] = ()  # cron (issue 14): stackato.yml `cron:` entries
    drains: Mapping[str, str] = field(default_factory=dict)  # issue 18: stackato.yml `drain: {name: url}`
    # --- process types (issue 14, P1) ---
    process_scale: Mapping[str, ProcessScale] = field(default_factory=dict)
    services: Mapping[str, str] = field(default_factory=dict)  # issue 16: `services:` name → type
    # --- end process types ---
    # Dockerfile apps (issue 15): `builder:` (dockerfile|buildpack), `dockerfile:` (a path in
    # the app), `build_args:` (the only values a Dockerfile build sees; never the app's env)
    builder: str | None = None
    dockerfile: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceLimits:
    """Bounds on what an app upload may hold.

    Attributes:
        max_bytes: total uncompressed size of files.
        max_files: number of entries.
        max_depth: directory depth of any path.
        max_path: length of any path in characters.
        max_ignore_patterns: patterns the ignore files and ``ignores:`` may hold together.
        max_ignore_pattern_length: characters in one ignore pattern.
    """

    max_bytes: int = 1024 ** 3
    max_files: int = 100_000
    max_depth: int = 64
    max_path: int = 1024
    max_ignore_patterns: int = 1000
    max_ignore_pattern_length: int = 1024


@dataclass(frozen=True)
class PreparedSource:
    """App source checked and packed as a tar stream ready to copy into a staging container.

    Attributes:
        host_tar: the tar file (relative paths under ``app/``... see ``fence.staging.sources``).
        files: number of entries packed.
        size: total bytes of file content.
        origin: where it came from (a path or a URL without credentials).
        commit: the git commit, when it came from git.
        manifest: the parsed manifest (empty when the app has none).
        procfile: process type → command from the app's ``Procfile``, if it has one.
        warnings: ignored entries and other notes for the developer.
    """

    host_tar: Path
    files: int
    size: int
    origin: str
    commit: str | None
    manifest: Manifest
    procfile: Mapping[str, str] | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildpackRef:
    """A buildpack as the developer or admin named it.

    Attributes:
        kind: ``builtin``, ``path`` or ``git``.
        spec: the text as given.
        location: the built-in name, the host path, or the git URL (without ``#ref``).
        ref: the git branch, tag or commit after ``#``, if any.
    """

    kind: str
    spec: str
    location: str
    ref: str | None = None


@dataclass(frozen=True)
class ResolvedBuildpack:
    """A buildpack ready to copy into a staging container.

    Attributes:
        name: a short name for logs and ``staging_info.yml``.
        host_dir: its folder on the host (``bin/detect`` … inside).
        version: the git commit, or ``builtin-<content hash>`` / ``path-<content hash>``.
        origin: the spec it was resolved from.
        digest: what its content is known by in full: the sha256 of the folder's content, or
            the git commit (part of the staging-input key).
    """

    name: str
    host_dir: Path
    version: str
    origin: str
    digest: str = ""


@dataclass(frozen=True)
class BuildpackUse:
    """One buildpack of a staging, as recorded in the droplet.

    Attributes:
        name: what its bin/detect printed, or its folder name.
        version: git commit or content hash.
        origin: the spec it was resolved from.
    """

    name: str
    version: str
    origin: str


@dataclass(frozen=True)
class DropletRecord:
    """A droplet in the store: what was staged, with what, from what.

    Attributes:
        id: sha256 of the droplet file (hex).
        app: the app's name.
        size: bytes of the droplet file.
        buildpacks: the buildpacks that ran, the last one being the detected/final one.
        start_command: the web process command, if any.
        process_types: process type → command (Procfile over bin/release over manifest).
        config_vars: env defaults from bin/release.
        stack_image: the stack image reference it was staged on.
        stack_image_id: that image's id.
        commit: the git commit of the source, when from git.
        staged_at: ISO timestamp.
        staging_id: the staging that made it (names its log).
        pre_running: the app's pre-running hooks, run before every instance starts.
        inputs_key: the digest of everything it was staged from (``fence.staging.inputs``); a
            staging with the same key reuses this droplet. Empty for droplets staged before.
        cron: the manifest's ``cron:`` entries it runs.
        builder, image_id, image_ref, dockerfile_digest, base_image, base_image_id, run_user,
            run_home, workdir: an image droplet's (issue 15; see the comments on each field).
    """

    id: str
    app: str
    size: int
    buildpacks: tuple[BuildpackUse, ...]
    start_command: str | None
    process_types: Mapping[str, str]
    config_vars: Mapping[str, str]
    stack_image: str
    stack_image_id: str
    commit: str | None
    staged_at: str
    staging_id: str
    pre_running: tuple[str, ...] = ()
    inputs_key: str = ""
    cron: tuple[CronEntry, ...] = ()  # cron (issue 14): the manifest's `cron:` entries it runs
    # Image droplets (issue 15): a Dockerfile build's or a pushed image, run as it is. ``builder``
    # is buildpack, dockerfile or image; the rest is empty for a buildpack droplet.
    builder: str = "buildpack"
    image_id: str = ""  # the image it runs (``sha256:…``)
    image_ref: str = ""  # the reference it was pushed or built as
    dockerfile_digest: str = ""
    base_image: str = ""  # FROM as written, and its id
    base_image_id: str = ""
    run_user: str = ""  # ``uid[:gid]`` or name its processes run as (``image_apps.run_as``)
    run_home: str = ""  # HOME to set ("" keeps the image's)
    workdir: str = ""  # the image's WORKDIR ("" for /)


# --- router ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Upstream:
    """One healthy instance a route sends requests to.

    Attributes:
        address: IP address nginx connects to.
        port: TCP port.
    """

    address: str
    port: int


@dataclass(frozen=True)
class Route:
    """How one app is reached through the node's router.

    Attributes:
        app: the app's name (it answers at ``APP.<router/domain>``).
        hosts: every host name of the app: ``APP.<domain>`` first, then its extra ``url:`` names.
        upstreams: its healthy web instances (empty: the app answers 503 "no instance running").
    """

    app: str
    hosts: tuple[str, ...]
    upstreams: tuple[Upstream, ...] = ()


@dataclass(frozen=True)
class SkippedRoute:
    """Part of a route the router left out of its config, so that the rest is served.

    Attributes:
        app: the app the route is for.
        what: what was left out: ``route`` (all of it), ``host NAME`` or ``upstream ADDRESS:PORT``.
        why: the reason, in words.
    """

    app: str
    what: str
    why: str


@dataclass(frozen=True)
class RouterStatus:
    """What ``kato status`` shows of the router.

    Attributes:
        running: whether the nginx master process runs.
        pid: its pid, if running.
        port: the port it listens on (``router/port``).
        domain: ``router/domain``.
        routes: how many apps it routes.
        last_reload: ISO time of the last successful reload, if any.
        last_error: why the last config was refused (``nginx -t``), if it was.
        address: the address it listens on (``router/bind_address``).
        skipped: what the last applied config left out of the routes it was given, and why
            (``kato status`` warns of each).
    """

    running: bool
    pid: int | None
    port: int
    domain: str
    routes: int
    last_reload: str | None = None
    last_error: str | None = None
    address: str = "127.0.0.1"
    skipped: tuple[SkippedRoute, ...] = ()


# --- apps and instances ------------------------------------------------------------------------

@dataclass(frozen=True)
class AppRecord:
    """An app's desired state.

    Attributes:
        name: the app's name.
        instances: how many web instances should run.
        memory_mib: memory limit per instance.
        env: the app's environment (set with --env, stackato.yml, `fence env`).
        started: whether instances should run at all (`fence stop` clears it).
        release: the current release number, ``None`` before the first successful staging.
        health_timeout: seconds the web process has to accept connections (manifest ``timeout``).
        urls: extra host names the app answers at.
        created_at: ISO time the app was first pushed.
        health: how its web instances are checked (``None``: a ``port`` check every 10 s).
        processes: desired instance counts of the process types other than ``web`` (a type
            that left the process table stays at 0).
        process_memory: memory per instance of the types that have their own (MiB).
    """

    name: str
    instances: int
    memory_mib: int
    env: Mapping[str, str]
    started: bool
    release: int | None
    health_timeout: int | None
    urls: tuple[str, ...]
    created_at: str
    health: HealthSettings | None = None  # health checks (issue 14 item 4)
    # --- process types (issue 14, P1) ---
    processes: Mapping[str, int] = field(default_factory=dict)
    process_memory: Mapping[str, int] = field(default_factory=dict)

    def count(self, process: str) -> int:
        """How many instances of ``process`` should run (``web``: ``instances``)."""
        return self.instances if process == WEB_PROCESS else int(self.processes.get(process, 0))

    def counts(self) -> dict[str, int]:
        """Every type's desired count, ``web`` first, then the others by name."""
        return {WEB_PROCESS: self.instances, **{k: int(v) for k, v in sorted(self.processes.items())
                                                if k != WEB_PROCESS}}

    def memory_for(self, process: str) -> int:
        """Memory per instance of ``process`` in MiB (the app's unless the type has its own)."""
        return int(self.process_memory.get(process, self.memory_mib))
    # --- end process types ---


@dataclass(frozen=True)
class DeploySettings:
    """How a new release of an app should run; each field left unset keeps what the app has.

    Attributes:
        instances: instance count (unset: the app's current, else 1).
        memory_mib: memory per instance (unset: the app's current, else ``container/memory``).
        env: variables set over the app's env.
        urls: extra host names (empty: the app's current ones).
        health_timeout: seconds the web process has to accept connections (unset: the app's).
        health: how its web instances are checked (unset: the app's).
        process_scale: per process type, the manifest's instance count and memory.
    """

    instances: int | None = None
    memory_mib: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()
    health_timeout: int | None = None
    health: HealthSettings | None = None  # health checks (issue 14 item 4)
    # --- process types (issue 14, P1) ---
    process_scale: Mapping[str, ProcessScale] = field(default_factory=dict)
    # --- end process types ---

    @classmethod
    def of_push(cls, manifest: Manifest, *, instances: int | None, memory_mib: int | None,
                env: Mapping[str, str]) -> DeploySettings:
        """What a push deploys with: its flags, else its manifest's values.

        Args:
            manifest: the manifest of the source that was staged.
            instances: ``--instances``, if given.
            memory_mib: ``--mem``, if given.
            env: ``--env`` settings (over the manifest's ``env:``).
        """
        web = manifest.process_scale.get(WEB_PROCESS, ProcessScale())
        return cls(instances=instances if instances is not None else
                   manifest.instances if manifest.instances is not None else web.instances,
                   memory_mib=memory_mib or manifest.mem_mib or web.memory_mib, env={**manifest.env, **env},
                   urls=manifest.urls, health_timeout=manifest.timeout,
                   health=manifest.health, process_scale=dict(manifest.process_scale))


@dataclass(frozen=True)
class ReleaseRecord:
    """One release of an app: a droplet it ran or runs.

    Attributes:
        app: the app's name.
        number: 1, 2, … per app.
        droplet: the droplet's id.
        created_at: ISO time.
        note: what made it (``push``, ``rollback to 3`` …).
    """

    app: str
    number: int
    droplet: str
    created_at: str
    note: str = ""


@dataclass(frozen=True)
class InstanceView:
    """One instance as `fence app` shows it.

    Attributes:
        index: the instance index.
        state: ``starting``, ``running``, ``crashed``, ``stopping``, ``stopped``.
        container: the container id (short).
        host_port: where its web port is published on ``container/bind_address``.
        restarts: crashes counted by the restart policy.
        release: the release it runs.
        uptime: seconds since it became healthy, 0 if it is not.
        reason: why it is not running (``exited 1``, ``out of memory``, ``unhealthy`` …).
        last_crash: why its slot last crashed, if it ever did (kept after the restart).
        image_id: the id of the stack image its container runs on (``""`` when it has none).
        process: its process type (``web``, ``worker`` …).
        health: its health check and where it stands (``port: passing``, ``process: waiting`` …).
    """

    index: int
    state: str
    container: str
    host_port: int | None
    restarts: int
    release: int
    uptime: float = 0.0
    reason: str | None = None
    last_crash: str | None = None
    image_id: str = ""
    # --- process types (issue 14, P1) ---
    process: str = "web"
    health: str = ""

    @property
    def name(self) -> str:
        """``TYPE.INDEX``, the instance's name everywhere (``web.0``, ``worker.1``)."""
        return f"{self.process}.{self.index}"
    # --- end process types ---


@dataclass(frozen=True)
class AppView:
    """An app as `fence apps` and `fence app` show it.

    Attributes:
        name: the app's name.
        url: its stable URL through the router.
        urls: every URL it answers at.
        state: ``started`` or ``stopped``.
        instances: desired web instance count.
        running: web instances of the current release running now.
        memory_mib: memory per instance.
        release: current release number.
        droplet: current droplet id.
        stack_image: the stack its droplet was staged on.
        env: its environment.
        instance_list: the instances.
        releases: its releases, newest first.
        processes: desired instances per process type, ``web`` first.
        running_by_process: instances of the current release running now, per process type.
    """

    name: str
    url: str
    urls: tuple[str, ...]
    state: str
    instances: int
    running: int
    memory_mib: int
    release: int | None
    droplet: str | None
    stack_image: str | None
    env: Mapping[str, str]
    instance_list: tuple[InstanceView, ...] = ()
    releases: tuple[ReleaseRecord, ...] = ()
    # --- process types (issue 14, P1) ---
    processes: Mapping[str, int] = field(default_factory=dict)
    running_by_process: Mapping[str, int] = field(default_factory=dict)
    # --- end process types ---


# --- stack rollouts ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RolloutProgress:
    """Where one app's move onto a stack image stands (the instance manager's view).

    Attributes:
        app: the app's name.
        image_id: the stack image id its instances move to.
        replaced: instances replaced so far (new one healthy, old one stopped).
        remaining: indexes whose serving instance still runs on another image.
        events: what happened, one line each, oldest first (progress for the admin).
        failed: why the rollout stopped, ``None`` while it goes on or when it is done.
        done: every serving instance runs on ``image_id`` and the old ones are gone.
    """

    app: str
    image_id: str
    replaced: int
    remaining: tuple[int, ...]
    events: tuple[str, ...] = ()
    failed: str | None = None
    done: bool = False


@dataclass(frozen=True)
class AppRollout:
    """How one app's rollout ended.

    Attributes:
        app: the app's name.
        outcome: ``moved`` (every instance on the new stack), ``restaged`` (a new release staged
            and running on it), ``already`` (nothing to replace), ``skipped`` (stopped or never
            staged) or ``failed``.
        replaced: instances replaced.
        why: for ``failed`` and ``skipped``: the reason.
    """

    app: str
    outcome: str
    replaced: int = 0
    why: str | None = None


@dataclass(frozen=True)
class RolloutReport:
    """What ``kato stack rollout`` did.

    Attributes:
        image: the stack image reference instances moved to.
        image_id: its id.
        restage: whether apps were restaged rather than restarted.
        apps: one entry per app, by name.
        seconds: how long the rollout took.
    """

    image: str
    image_id: str
    restage: bool
    apps: tuple[AppRollout, ...]
    seconds: float = 0.0


# --- garbage collection ------------------------------------------------------------------------

@dataclass(frozen=True)
class GcItem:
    """One thing garbage collection removes (or, in a dry run, would remove).

    Attributes:
        kind: ``droplet``, ``droplet-record``, ``cache``, ``source``, ``container``,
            ``network``, ``droplet-image``, ``image``,
            ``staging-log`` or ``buildpack``.
        name: what it is: a droplet digest, an app name, a container or image id, a network name, a path
            relative to FENCE_HOME.
        size: bytes it frees (0 where the engine does not say, e.g. a stopped container).
        detail: why it is garbage, for the admin.
    """

    kind: str
    name: str
    size: int = 0
    detail: str = ""


@dataclass(frozen=True)
class GcReport:
    """What one garbage collection removed, or would remove.

    Attributes:
        dry_run: nothing was removed; ``items`` is what a real run removes now.
        items: removed (or removable) things, by kind then name.
        errors: things that could not be removed, one line each.
        notes: categories skipped and why (e.g. a staging was running).
    """

    dry_run: bool
    items: tuple[GcItem, ...] = ()
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def freed(self) -> int:
        """Bytes freed (or that would be)."""
        return sum(item.size for item in self.items)


# --- node operations ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DiskUsage:
    """One file system's usage, as ``kato node info`` shows it.

    Attributes:
        label: what lives there (``FENCE_HOME``, ``engine data root``).
        path: the folder measured.
        total: bytes.
        used: bytes.
        free: bytes available to unprivileged users.
        percent: used, in percent of total.
    """

    label: str
    path: str
    total: int
    used: int
    free: int
    percent: float


@dataclass(frozen=True)
class NodeInfo:
    """The node's resources, as ``kato node info`` shows them.

    Attributes:
        node_id: this node's id.
        cpus: logical CPUs.
        load: the 1, 5 and 15 minute load averages.
        cpu_percent: CPU busy, in percent, over a short sample.
        memory_total: RAM in bytes.
        memory_available: RAM available without swapping, in bytes.
        memory_promised_mib: the sum of the memory limits of this node's instances, in MiB.
        memory_limit_mib: what they may add up to (``node/memory_overcommit`` × RAM), in MiB.
        disks: FENCE_HOME's and the engine data root's file systems.
        containers: this node's containers by role and state (``instance/running`` …).
        engine_containers: every container on the engine by state, other nodes' and non-fence
            ones included.
        engine: the engine's facts, ``None`` if it does not answer.
    """

    node_id: str
    cpus: int
    load: tuple[float, ...]
    cpu_percent: float
    memory_total: int
    memory_available: int
    memory_promised_mib: int
    memory_limit_mib: int
    disks: tuple[DiskUsage, ...]
    containers: Mapping[str, int]
    engine_containers: Mapping[str, int]
    engine: EngineInfo | None = None
    services: tuple[ServiceUsage, ...] = ()  # issue 16


# --- cron (issue 14 item 3) ----------------------------------------------------------------------

@dataclass(frozen=True)
class CronEntry:
    """One stackato.yml ``cron:`` line: a five-field schedule and the command it runs.

    Attributes:
        schedule: ``MIN HOUR DOM MON DOW`` (checked with croniter at push).
        command: the shell command, run in a one-off task container.
    """

    schedule: str
    command: str

    @property
    def key(self) -> str:
        """What the store keeps the entry's runs by (the line as written, normalised)."""
        return f"{self.schedule} {self.command}"


@dataclass(frozen=True)
class CronRun:
    """The last run of one cron entry.

    Attributes:
        minute: the schedule minute it ran for, ISO time (UTC).
        started_at: ISO time its container was asked for.
        finished_at: ISO time it ended, ``None`` while it runs (or when the daemon died under it).
        exit_code: its exit code, ``None`` while it runs or when it never got one.
        duration: seconds it ran, ``None`` while it runs.
        outcome: ``running``, ``exited``, ``timed out``, ``failed`` (no container), ``interrupted``.
    """

    minute: str
    started_at: str
    finished_at: str | None = None
    exit_code: int | None = None
    duration: float | None = None
    outcome: str = "running"


@dataclass(frozen=True)
class CronView:
    """One cron entry as ``fence cron APP`` shows it.

    Attributes:
        schedule: its five-field schedule.
        command: its command.
        next_run: ISO time (UTC) it runs next, ``None`` while the app is stopped.
        last_run: its last run, if any.
        running: whether a run is in progress now.
    """

    schedule: str
    command: str
    next_run: str | None
    last_run: CronRun | None = None
    running: bool = False
