"""ServiceManager: each service is one hardened container on its own network with its data in a
fence-owned volume; created, bound, restarted on crash with the instances' backoff, re-adopted."""

# Capabilities: none. Every server starts as the non-root service user (uid 1001) that owns its
# data folder (the image makes it so and the engine copies that owner into the new volume), listens
# on an unprivileged port and never changes user, so it needs neither CHOWN, SETUID/SETGID,
# DAC_OVERRIDE nor NET_BIND_SERVICE: the backend's cap_drop ALL stays whole.

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import PurePosixPath

from fence import labels
from fence.backend.base import Container, ContainerBackend
from fence.config.store import ConfigStore
from fence.errors import (
    AppNotFound,
    ContainerNotFound,
    FenceError,
    ProcessTimeout,
    ServiceConflict,
    ServiceFailed,
    ServiceNotFound,
    UsageError,
)
from fence.limits import container_limits
from fence.models import (
    ContainerSpec,
    NetworkSpec,
    ProcessSpec,
    ServiceUsage,
    VolumeMount,
    VolumeSpec,
)
from fence.running.backoff import BackoffPolicy, Clock, CrashCount, SystemClock
from fence.running.networks import network_name
from fence.services.credentials import CredentialStore
from fence.services.kinds import (
    CTR_CREDENTIALS,
    CTR_DATA,
    CTR_RUN,
    SERVICE_UID,
    ServiceKind,
    check_service_name,
    kind_of,
)
from fence.services.records import ServiceRecord, ServiceRecords
from fence.services.views import ServiceView
from fence.tarstream import TarMember, tar_bytes

log = logging.getLogger(__name__)
_PROBE_TIMEOUT = 30.0  # a probe past this kills the container (the engine cannot kill one exec)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class ServiceManager:
    """Creates, binds, restarts and re-adopts the node's services.

    Args:
        backend: the engine.
        config: node config (``services/…`` keys, container limits).
        records: the services table.
        credentials: the credentials files.
        node_id: this node's id.
        app_exists: whether an app of that name exists (binding refuses a missing app).
        clock: time for the crash backoff.
        policy: the crash backoff (the instances' one).
    """

    def __init__(self, *, backend: ContainerBackend, config: ConfigStore, records: ServiceRecords,
                 credentials: CredentialStore, node_id: str, app_exists=lambda app: True,  # noqa: ANN001
                 clock: Clock | None = None, policy: BackoffPolicy | None = None) -> None:
        self._backend = backend
        self._config = config
        self._records = records
        self._credentials = credentials
        self._node_id = node_id
        self._app_exists = app_exists
        self._clock = clock or SystemClock()
        self._policy = policy or BackoffPolicy()
        self._lock = threading.RLock()
        self._crashes: dict[str, CrashCount] = {}
        self._restarts: dict[str, int] = {}

    # --- names ---------------------------------------------------------------------------------

    def container_name(self, service: str) -> str:
        """The service container's name (one per service: a second create is refused by the engine)."""
        return f"fence-{self._node_id}-svc-{service}"

    def volume_name(self, service: str) -> str:
        """The service's data volume."""
        return f"fence-{self._node_id}-svcdata-{service}"

    def own_network(self, service: str) -> str:
        """The service's own network (a container needs one to join the apps' networks later)."""
        return f"fence-{self._node_id}-svcnet-{service}"

    # --- verbs ---------------------------------------------------------------------------------

    def create(self, *, kind: str, name: str, memory_mib: int | None = None,
               image: str | None = None) -> ServiceView:
        """Create a service and wait until its server accepts connections.

        Raises:
            UsageError: unknown type or bad name.
            ServiceConflict: a service of that name exists.
            ImageNotFound: the service image is not built.
            ServiceFailed: the server did not answer its probe in time.
        """
        service_kind = kind_of(kind)
        check_service_name(name)
        memory = int(memory_mib or self._config.fence("services/memory") or service_kind.memory_mib)
        ref = image or service_kind.image_ref
        if self._backend.image_info(ref) is None:
            from fence.errors import ImageNotFound
            raise ImageNotFound(image=ref)
        record = ServiceRecord(name=name, type=kind, memory_mib=memory, created_at=_now(), image=ref)
        try:
            with self._lock:  # the reconciler must not launch it too, between the record and the launch
                if not self._records.add(record):
                    raise ServiceConflict(service=name, detail="a service of that name exists")
                self._credentials.ensure(name, kind)
                container = self._launch(record)
            self._wait_healthy(record, container)
        except ServiceConflict:
            raise
        except FenceError:
            with self._lock:
                self._remove_everything(name, delete_data=True)
                self._records.delete(name)
            raise
        return self.show(name)

    def delete(self, name: str, *, delete_data: bool = False) -> None:
        """Remove a service's container and network; its data too with ``delete_data``.

        Raises:
            ServiceNotFound: no such service.
            ServiceConflict: apps are bound to it.
        """
        record = self._record(name)
        live = [app for app in record.bound if self._app_exists(app)]
        if live:
            raise ServiceConflict(service=name, detail=f"bound to {', '.join(live)}: unbind it first "
                                                       f"(`fence service unbind APP {name}`)")
        for app in record.bound:  # bindings of apps deleted since: nothing uses them any more
            self._records.unbind(name, app)
        with self._lock:  # the reconciler must not start it again while it goes
            self._remove_everything(name, delete_data=delete_data)
            self._records.delete(name)

    def bind(self, name: str, app: str, *, require_app: bool = True) -> bool:
        """Bind a service to an app: it joins the app's network. ``False``: it was bound already.

        ``require_app=False``: a push binds before its app is first recorded.

        Raises:
            ServiceNotFound: no such service.
            AppNotFound: no such app.
        """
        self._record(name)
        if require_app and not self._app_exists(app):
            raise AppNotFound(app=app)
        added = self._records.bind(name, app, _now())
        self._attach(self._record(name))
        return added

    def unbind(self, name: str, app: str) -> bool:
        """Unbind: the service leaves the app's network. ``False``: it was not bound.

        Raises:
            ServiceNotFound: no such service.
        """
        self._record(name)
        removed = self._records.unbind(name, app)
        container = self._container(name)
        if container is not None:
            container.disconnect(network_name(self._node_id, app))
        return removed

    def restart(self, name: str) -> ServiceView:
        """Stop the server (TERM, so it shuts down cleanly) and start it again; its data stays.

        Raises:
            ServiceNotFound: no such service.
            ServiceFailed: it did not come back in time.
        """
        record = self._record(name)
        with self._lock:
            container = self._container(name)
            if container is None:
                container = self._launch(record)
            else:
                container.stop(grace=30)
                container.start()
                self._count(name).started(self._clock.now())
        self._wait_healthy(record, container)
        return self.show(name)

    def show(self, name: str) -> ServiceView:
        """One service now.

        Raises:
            ServiceNotFound: no such service.
        """
        return self._view(self._record(name), size=True)

    def list(self) -> list[ServiceView]:
        """Every service now."""
        return [self._view(r) for r in self._records.all()]

    def records(self) -> list[ServiceRecord]:
        """The services as recorded (no engine call)."""
        return self._records.all()

    def record(self, name: str) -> ServiceRecord:
        """One service's record.

        Raises:
            ServiceNotFound: no such service.
        """
        return self._record(name)

    def running_container(self, name: str) -> Container:
        """The service's container, running and answering its probe.

        Raises:
            ServiceNotFound: no such service.
            ServiceFailed: it is not running or not healthy.
        """
        record = self._record(name)
        container = self._container(name)
        if container is None or not container.info().running:
            raise ServiceFailed(service=name, detail="it is not running (`fence service restart` it)")
        if not self._probe(record, container):
            raise ServiceFailed(service=name, detail="it does not answer its probe")
        return container

    def usage(self) -> list[ServiceUsage]:
        """Each service's memory (its cgroup's, read in the container) and data size."""
        found = []
        for record in self._records.all():
            container = self._container(record.name)
            used = disk = None
            if container is not None and container.info().running:
                disk = self._data_size(container)
                try:
                    result = container.run(ProcessSpec(argv=("bash", "-c", "cat /sys/fs/cgroup/memory.current 2>/dev/null "
                                                             "|| cat /sys/fs/cgroup/memory/memory.usage_in_bytes"),
                                                       timeout=_PROBE_TIMEOUT))
                    used = int(result.output[-1]) if result.exit_code == 0 and result.output else None
                except (FenceError, ValueError):
                    used = None
            found.append(ServiceUsage(name=record.name, type=record.type, memory_used=used,
                                      memory_limit=record.memory_mib * 1024 * 1024, disk_used=disk))
        return found

    def image_info(self, ref: str):  # noqa: ANN201 - ImageInfo | None
        """The engine's image of that reference, if it has it."""
        return self._backend.image_info(ref)

    def reconcile(self) -> None:
        """One pass: adopt running service containers, restart crashed ones after the backoff,
        make missing ones again from their volume, and join the bound apps' networks."""
        for record in self._records.all():
            try:
                self._reconcile_one(record)
            except FenceError as exc:
                log.warning("service %s: %s", record.name, exc.message)

    # --- inner work ----------------------------------------------------------------------------

    def _reconcile_one(self, record: ServiceRecord) -> None:
        with self._lock:
            container = self._container(record.name)
            now = self._clock.now()
            count = self._count(record.name)
            if container is not None and container.info().running:
                if count.last_start is None:
                    count.started(now)  # adopted: it ran before this daemon started
                count.healthy_for(now, self._policy)
                self._attach(record, container)
                return
            if count.gave_up:
                return
            if count.restart_at is None:
                delay = count.crashed(now, self._policy)
                log.warning("service %s is down; restart in %s s", record.name,
                            "never" if delay is None else f"{delay:.0f}")
                if delay is None or delay > 0:
                    return
            elif now < count.restart_at:
                return
            self._restarts[record.name] = self._restarts.get(record.name, 0) + 1
            if container is None:
                self._launch(record)
            else:
                container.start()
                count.started(now)
                self._attach(record, container)

    def _launch(self, record: ServiceRecord) -> Container:
        kind_of(record.type)  # an unknown type in the table fails here, before anything is made
        creds = self._credentials.ensure(record.name, record.type)
        self._backend.create_volume(VolumeSpec(
            name=self.volume_name(record.name),
            labels=labels.owned(self._node_id, labels.ROLE_VOLUME, service=record.name,
                                service_type=record.type)))
        self._backend.create_network(NetworkSpec(
            name=self.own_network(record.name),
            labels=labels.owned(self._node_id, labels.ROLE_SERVICE, service=record.name)))
        container = self._backend.create(ContainerSpec(
            image=record.image, name=self.container_name(record.name),
            labels=labels.owned(self._node_id, labels.ROLE_SERVICE, service=record.name,
                                service_type=record.type),
            user=f"{SERVICE_UID}:{SERVICE_UID}", command=(str(CTR_RUN),),
            limits=container_limits(self._config, record.memory_mib),
            network=self.own_network(record.name),
            volumes=(VolumeMount(volume=self.volume_name(record.name), ctr_path=CTR_DATA),)))
        # The credentials travel as a file (0400, the service user's), not in the container's
        # environment, which `docker inspect` and every exec'd process would show.
        ctr_dir = str(CTR_CREDENTIALS.parent).lstrip("/")
        container.stream_in(PurePosixPath("/"), tar_bytes([
            TarMember(name=ctr_dir, kind="dir", mode=0o755, uid=0),
            TarMember(name=f"{ctr_dir}/{CTR_CREDENTIALS.name}", data=creds.shell_file(), mode=0o400,
                      uid=SERVICE_UID)]))
        self._attach(record, container)
        container.start()
        self._count(record.name).started(self._clock.now())
        return container

    def _attach(self, record: ServiceRecord, container: Container | None = None) -> None:
        container = container or self._container(record.name)
        if container is None:
            return
        wanted = {network_name(self._node_id, app) for app in record.bound}
        for app in record.bound:
            self._backend.create_network(NetworkSpec(
                name=network_name(self._node_id, app),
                labels=labels.owned(self._node_id, labels.ROLE_NETWORK, app=app)))
        have = set(container.networks())
        for network in sorted(wanted - have):
            container.connect(network, aliases=(record.name,))
        for network in sorted(have - wanted - {self.own_network(record.name)}):
            container.disconnect(network)

    def _wait_healthy(self, record: ServiceRecord, container: Container) -> None:
        timeout = float(self._config.fence("services/health_timeout"))
        deadline = time.monotonic() + timeout
        while True:
            info = container.info()
            if not info.running:
                tail = " | ".join(list(container.logs(tail=3)))
                raise ServiceFailed(service=record.name,
                                    detail=f"its server exited ({info.exit_code}): {tail[:300]}")
            if self._probe(record, container):
                return
            if time.monotonic() > deadline:
                raise ServiceFailed(service=record.name,
                                    detail=f"its server did not answer its probe in {timeout:.0f} s")
            time.sleep(0.2)

    def _probe(self, record: ServiceRecord, container: Container) -> bool:
        try:
            result = container.run(ProcessSpec(argv=kind_of(record.type).probe, timeout=_PROBE_TIMEOUT))
        except (ProcessTimeout, FenceError):
            return False
        return result.exit_code == 0

    def _view(self, record: ServiceRecord, *, size: bool = False) -> ServiceView:
        kind: ServiceKind = kind_of(record.type)
        container = self._container(record.name)
        state, healthy, size_bytes = "missing", False, None
        if container is not None:
            try:
                info = container.info()
            except ContainerNotFound:
                info = None
            if info is not None and info.running:
                healthy = self._probe(record, container)
                state = "running" if healthy else "starting"
                if size:
                    size_bytes = self._data_size(container)
            elif info is not None:
                state = "crashed" if info.exit_code not in (0, None) or info.state == "exited" else "stopped"
        return ServiceView(name=record.name, type=record.type, state=state, healthy=healthy,
                           memory_mib=record.memory_mib, bound=record.bound, host=record.name,
                           port=kind.port, restarts=self._restarts.get(record.name, 0),
                           last_backup=record.last_backup, last_backup_at=record.last_backup_at,
                           backup_error=record.backup_error, image=record.image,
                           created_at=record.created_at, size_bytes=size_bytes)

    @staticmethod
    def _data_size(container: Container) -> int | None:
        try:
            result = container.run(ProcessSpec(argv=("du", "-sb", str(CTR_DATA)), timeout=_PROBE_TIMEOUT))
        except FenceError:
            return None
        try:
            return int(result.output[-1].split()[0]) if result.exit_code == 0 and result.output else None
        except (ValueError, IndexError):
            return None

    def _container(self, name: str) -> Container | None:
        found = self._backend.list({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_SERVICE,
                                    labels.SERVICE: name})
        return found[0] if found else None

    def _record(self, name: str) -> ServiceRecord:
        if not isinstance(name, str) or not name:
            raise UsageError(detail="a service name is needed")
        found = self._records.get(name)
        if found is None:
            raise ServiceNotFound(service=name)
        return found

    def _count(self, name: str) -> CrashCount:
        return self._crashes.setdefault(name, CrashCount())

    def _remove_everything(self, name: str, *, delete_data: bool) -> None:
        for container in self._backend.list({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_SERVICE,
                                             labels.SERVICE: name}):
            container.stop(grace=30)
            container.destroy()
        self._backend.remove_network(self.own_network(name))
        if delete_data:
            self._backend.remove_volume(self.volume_name(name))
            self._credentials.remove(name)
        with self._lock:
            self._crashes.pop(name, None)
