"""ServiceOps: the services facade the API calls (create, bind, backups …) and the daemon's loop."""

from __future__ import annotations

import logging
import threading
from typing import Callable, Mapping

from fence.config.store import ConfigStore
from fence.errors import FenceError, ServiceConflict, ServiceNotFound
from fence.services.backups import ServiceBackups
from fence.services.credentials import CredentialStore
from fence.services.env import service_env
from fence.services.kinds import check_service_name, kind_of
from fence.services.lifecycle import ServiceManager
from fence.services.records import ServiceRecords
from fence.services.views import BackupRecord, ServiceView

log = logging.getLogger("fence.services")
LineCallback = Callable[[str], None]
_TICK = 5.0  # seconds between reconcile passes (crash restarts, re-adoption, networks)


class ServiceOps:
    """What is done to the node's services.

    Args:
        manager: the service containers.
        backups: the backups.
        records: the services table.
        credentials: the credentials files.
        config: node config.
        restart_app: makes a new release of an app that runs (release phase, then a
            zero-downtime restart), so its instances see a binding change; given the app, a line
            callback and the release's note.
        app_started: whether an app exists and runs (then a binding change restarts it).
    """

    def __init__(self, *, manager: ServiceManager, backups: ServiceBackups, records: ServiceRecords,
                 credentials: CredentialStore, config: ConfigStore,
                 restart_app: Callable[[str, LineCallback, str], object] = lambda app, out, note: None,
                 app_started: Callable[[str], bool] = lambda app: False) -> None:
        self.manager = manager
        self.backups = backups
        self._records = records
        self._credentials = credentials
        self._config = config
        self._restart_app = restart_app
        self._app_started = app_started
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the verbs -----------------------------------------------------------------------------

    def create(self, kind: str, name: str, memory_mib: int | None = None) -> ServiceView:
        """See ``ServiceManager.create``."""
        return self.manager.create(kind=kind, name=name, memory_mib=memory_mib)

    def delete(self, name: str, *, delete_data: bool = False) -> None:
        """See ``ServiceManager.delete``."""
        self.manager.delete(name, delete_data=delete_data)

    def show(self, name: str) -> ServiceView:
        """See ``ServiceManager.show``."""
        return self.manager.show(name)

    def list(self) -> list[ServiceView]:
        """See ``ServiceManager.list``."""
        return self.manager.list()

    def restart(self, name: str) -> ServiceView:
        """See ``ServiceManager.restart``."""
        return self.manager.restart(name)

    def bind(self, name: str, app: str, on_line: LineCallback) -> ServiceView:
        """Bind, then restart the app (when it runs) so it gets the service's env.

        Raises:
            ServiceNotFound, AppNotFound: as ``ServiceManager.bind``.
        """
        if self.manager.bind(name, app) and self._app_started(app):
            on_line(f"-----> Restarting {app} with {name} bound")
            self._restart_app(app, on_line, f"bind service {name}")
        return self.manager.show(name)

    def unbind(self, name: str, app: str, on_line: LineCallback) -> ServiceView:
        """Unbind, then restart the app (when it runs) without the service's env."""
        if self.manager.unbind(name, app) and self._app_started(app):
            on_line(f"-----> Restarting {app} without {name}")
            self._restart_app(app, on_line, f"unbind service {name}")
        return self.manager.show(name)

    def backup(self, name: str) -> BackupRecord:
        """See ``ServiceBackups.backup``."""
        return self.backups.backup(name)

    def list_backups(self, name: str) -> list[BackupRecord]:
        """See ``ServiceBackups.list``."""
        self.manager.record(name)
        return self.backups.list(name)

    def restore(self, name: str, backup: str) -> ServiceView:
        """See ``ServiceBackups.restore``."""
        self.backups.restore(name, backup)
        return self.manager.show(name)

    def images(self) -> list[dict[str, object]]:
        """Each type's image: reference, id and size (``None`` when not built), services using it."""
        from fence.services.kinds import KINDS
        records = self._records.all()
        found = []
        for kind in KINDS.values():
            info = self.manager.image_info(kind.image_ref)
            found.append({"ref": kind.image_ref, "type": kind.name, "id": info.id if info else None,
                          "size": info.size if info else 0,
                          "services": sum(1 for r in records if r.image == kind.image_ref)})
        return found

    # --- pushes and apps -----------------------------------------------------------------------

    def ensure_for_push(self, app: str, wanted: Mapping[str, str], on_line: LineCallback) -> None:
        """Create the manifest's services that are missing and bind them all to ``app`` (before its
        release phase and instances start, so they see the env at once).

        Raises:
            ServiceConflict: a service of that name exists with another type.
        """
        for name, kind in wanted.items():
            check_service_name(name, where="services: name")
            kind_of(kind)
            try:
                record = self.manager.record(name)
            except ServiceNotFound:
                on_line(f"-----> Creating {kind} service {name}")
                self.manager.create(kind=kind, name=name)
                record = self.manager.record(name)
            if record.type != kind:
                raise ServiceConflict(service=name, detail=f"it is a {record.type} service, and the "
                                                           f"manifest asks for {kind}")
            if self.manager.bind(name, app, require_app=False):
                on_line(f"-----> Bound {kind} service {name}")

    def env_for(self, app: str) -> dict[str, str]:
        """The env an app's containers get from its bound services."""
        bound = []
        for record in self._records.bound_to(app):
            creds = self._credentials.read(record.name)
            if creds is not None:
                bound.append((record, creds))
        return service_env(bound)

    # --- the daemon's loop ---------------------------------------------------------------------

    def tick(self) -> None:
        """One pass: reconcile the containers, then make the periodic backups that are due."""
        self.manager.reconcile()
        for name in self.backups.due():
            try:
                made = self.backups.backup(name)
                log.info("periodic backup of %s: %s (%d bytes)", name, made.id, made.size)
            except FenceError as exc:
                log.warning("periodic backup of %s failed: %s", name, exc.message)

    def run_in_background(self) -> None:
        """Reconcile every few seconds in a thread (the first pass re-adopts at once)."""
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - the loop must outlive one bad pass
                    log.exception("services pass failed")
                self._stop.wait(_TICK)
        self._thread = threading.Thread(target=loop, name="services", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop."""
        self._stop.set()

    def states(self) -> dict[str, int]:
        """Services by state (``running`` …), for ``kato status``."""
        counts: dict[str, int] = {}
        for view in self.manager.list():
            counts[view.state] = counts.get(view.state, 0) + 1
        return dict(sorted(counts.items()))

    def usage(self) -> list:  # list[ServiceUsage]
        """Each service's memory and disk, for ``kato node info``."""
        return self.manager.usage()

    def warnings(self) -> list[str]:
        """For ``kato status``: unhealthy services and failed backups."""
        found = []
        for view in self.manager.list():
            if not view.healthy:
                found.append(f"service {view.name} ({view.type}) is {view.state}")
            if view.backup_error:
                found.append(f"the last backup of service {view.name} failed: {view.backup_error}")
        return found
