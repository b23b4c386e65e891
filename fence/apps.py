"""App lifecycle: push, start, stop, restart, scale, env, releases, rollback, delete, one-off tasks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping

from fence import labels
from fence.backend.base import Container, ContainerBackend
from fence.config import ConfigStore
from fence.droplets import DropletStore
from fence.errors import AppNotFound, DeployFailed, FenceError, NoRelease, ReleaseNotFound, UsageError
from fence.home import NodeHome
from fence.models import AppRecord, AppView, DropletRecord, InstanceView, ProcessSpec, ReleaseRecord
from fence.running.manager import InstanceManager
from fence.router.render import check_dns_name
from fence.running.starter import InstanceStarter, Launch
from fence.staging.stager import check_app_name, check_env
from fence.store import StateStore

LineCallback = Callable[[str], None]
MAX_INSTANCES = 100


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class AppOps:
    """Changes apps' desired state and waits for the instance manager to carry it out.

    Args:
        store: desired state.
        config: node config.
        manager: the instance reconciler.
        starter: builds task containers for ``run``.
        backend: the engine (tasks, logs).
        droplets: the droplet store.
        home: FENCE_HOME (build caches, kept sources, staging logs).
        node_id: this node's id.
        routing: whether a router must carry new instances before a deploy counts as done.
    """

    def __init__(self, *, store: StateStore, config: ConfigStore, manager: InstanceManager,
                 starter: InstanceStarter, backend: ContainerBackend, droplets: DropletStore,
                 home: NodeHome, node_id: str, routing: bool = True) -> None:
        self._store = store
        self._config = config
        self._manager = manager
        self._starter = starter
        self._backend = backend
        self._droplets = droplets
        self._home = home
        self._node_id = node_id
        self._routing = routing
        self._tasks: dict[str, Container] = {}
        self._tasks_lock = threading.Lock()

    # --- reading ---------------------------------------------------------------------------

    def app(self, name: str) -> AppRecord:
        """An app's desired state.

        Raises:
            InvalidName: a malformed name.
            AppNotFound: no such app.
        """
        record = self._store.app(check_app_name(name))
        if record is None:
            raise AppNotFound(app=name)
        return record

    def view(self, name: str) -> AppView:
        """An app with its instances and releases.

        Raises:
            AppNotFound: no such app.
        """
        return self._view(self.app(name), detail=True)

    def views(self) -> list[AppView]:
        """Every app, with its instances.

        One query each for the apps, their releases and their current droplets, and one config
        read, however many apps there are (``fence apps`` on a node with hundreds of apps).
        """
        apps = self._store.apps()
        releases = self._store.releases_by_app()
        current = [_current(releases.get(app.name, []), app) for app in apps]
        droplets = self._store.droplets_by_id(r.droplet for r in current if r is not None)
        router = self._router_address()
        instances = self._manager.instances_by_app()
        return [self._assemble(app, releases.get(app.name, []), release,
                               droplets.get(release.droplet) if release else None, router, detail=True,
                               instances=tuple(instances.get(app.name, ())))
                for app, release in zip(apps, current)]

    def url(self, name: str) -> str:
        """The app's stable URL through the node's router."""
        domain, suffix = self._router_address()
        return f"http://{name}.{domain}{suffix}/"

    def _router_address(self) -> tuple[str, str]:
        """The router's domain, and the ``:PORT`` its URLs carry (``""`` for port 80)."""
        domain = str(self._config.fence("router/domain"))
        port = int(self._config.fence("router/port"))
        return domain, "" if port == 80 else f":{port}"

    def _view(self, app: AppRecord, *, detail: bool) -> AppView:
        releases = self._store.releases(app.name)
        current = _current(releases, app)
        droplet = self._store.droplet(current.droplet) if current else None
        return self._assemble(app, releases, current, droplet, self._router_address(), detail=detail)

    def _assemble(self, app: AppRecord, releases: list[ReleaseRecord], current: ReleaseRecord | None,
                  droplet: DropletRecord | None, router: tuple[str, str], *, detail: bool,
                  instances: tuple[InstanceView, ...] | None = None) -> AppView:
        """The app's view from what the store holds (read by the caller) and its instances now
        (given, or asked of the manager)."""
        if instances is None:
            instances = tuple(self._manager.instances(app.name))
        domain, suffix = router
        url = f"http://{app.name}.{domain}{suffix}/"
        return AppView(
            name=app.name, url=url, urls=(url, *(f"http://{host}{suffix}/" for host in app.urls)),
            state="started" if app.started else "stopped", instances=app.instances,
            running=sum(1 for i in instances if i.state == "running" and i.release == app.release),
            memory_mib=app.memory_mib, release=app.release,
            droplet=current.droplet if current else None,
            stack_image=droplet.stack_image if droplet else None, env=dict(app.env),
            instance_list=instances if detail else (), releases=tuple(releases) if detail else ())

    # --- deploying -------------------------------------------------------------------------

    def deploy(self, droplet: DropletRecord, *, instances: int | None, memory_mib: int | None,
               env: Mapping[str, str], urls: tuple[str, ...], health_timeout: int | None,
               on_line: LineCallback, note: str = "push") -> AppView:
        """Make a staged droplet the app's new release and wait until its instances are healthy.

        Instance count and memory: given, else the manifest's (passed in), else the app's current,
        else 1 and ``container/memory``. Old instances keep serving until the new ones are healthy.

        Raises:
            HostTaken: the app's default host or one of its URLs is another app's (nothing changes).
            UsageError: more URLs than ``router/max_urls``.
            DeployFailed: the new instances did not become healthy in time (the old ones keep
                serving).
        """
        existing = self._store.app(droplet.app)
        urls = self._checked_urls(droplet.app, urls) if urls else (existing.urls if existing else ())
        # Refused here before any work; put_app below is what decides when two pushes race.
        self._store.check_hosts(droplet.app, urls, domain=self._domain())
        memory = memory_mib or (existing.memory_mib if existing else int(self._config.fence("container/memory")))
        # The droplet's image (stack + unpacked droplet) is made before the release exists: a
        # failure changes nothing, and the first instance then starts like `docker run`.
        began = time.monotonic()
        image = self._starter.prepare(droplet, memory)
        if image.made:
            on_line(f"-----> Droplet image {image.ref} made on {image.stack_ref} "
                    f"in {time.monotonic() - began:.1f} s")
        record = AppRecord(
            name=droplet.app,
            instances=_count(instances if instances is not None else existing.instances if existing else 1),
            memory_mib=memory,
            env=check_env({**(existing.env if existing else {}), **env}),
            started=True,
            release=existing.release if existing else None,
            health_timeout=health_timeout if health_timeout is not None else existing.health_timeout if existing else None,
            urls=urls,
            created_at=existing.created_at if existing else _now(),
        )
        self._put(record)
        release, dropped = self._store.add_release(record.name, droplet.id, _now(), note)
        self._forget_droplets(dropped)
        on_line(f"-----> Release {release.number}: starting {record.instances} instance"
                f"{'s' if record.instances != 1 else ''} of {record.name} ({record.memory_mib} MiB each)")
        self._manager.wake()
        return self._wait(record.name, release.number, on_line)

    def _wait(self, name: str, release: int, on_line: LineCallback) -> AppView:
        app = self.app(name)
        timeout = (app.health_timeout or int(self._config.fence("health/timeout"))) + 60
        deadline = time.monotonic() + timeout
        shown: set[tuple[int, str]] = set()
        while time.monotonic() < deadline:
            view = self._view(self.app(name), detail=True)
            current = [i for i in view.instance_list if i.release == release]
            for instance in current:
                key = (instance.index, instance.state)
                if key not in shown and instance.state in ("running", "crashed"):
                    shown.add(key)
                    why = f" ({instance.reason})" if instance.reason else ""
                    on_line(f"       instance {instance.index}: {instance.state}{why}")
            running = [i for i in current if i.state == "running"]
            leaving = [i for i in view.instance_list if i.index >= view.instances]
            routed = not self._routing or self._manager.routed(name, release) >= view.instances
            if len(running) >= view.instances and not leaving and routed:
                on_line(f"-----> {name} is running: {view.url}")
                return view
            crashed = [i for i in current if i.state == "crashed" and i.restarts >= 3]
            if crashed:
                raise DeployFailed(app=name, release=release, why=crashed[0].reason or "crashed")
            self._manager.wait_pass(0.2)
        view = self._view(self.app(name), detail=True)
        running = sum(1 for i in view.instance_list if i.release == release and i.state == "running")
        if running >= view.instances:
            raise DeployFailed(app=name, release=release, why="its instances run but the router did not take "
                               "them (see `kato status` for the router's last error)")
        raise DeployFailed(app=name, release=release, why=f"instances not healthy within {timeout} s")

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, name: str, on_line: LineCallback) -> AppView:
        """Start a stopped app and wait for it.

        Raises:
            AppNotFound: no such app.
            NoRelease: it was never staged.
        """
        app = self.app(name)
        if app.release is None:
            raise NoRelease(app=name)
        self._put(_replace(app, started=True))
        self._manager.wake()
        return self._wait(name, app.release, on_line)

    def stop(self, name: str) -> AppView:
        """Stop every instance (TERM, then KILL after 10 s) and wait until they are gone."""
        app = self.app(name)
        self._put(_replace(app, started=False))
        self._manager.wake()
        self._wait_gone(name, timeout=30)
        return self.view(name)

    def restart(self, name: str, on_line: LineCallback) -> AppView:
        """Replace every instance with a fresh one, each new one healthy before its old one stops.

        Raises:
            AppNotFound, NoRelease.
        """
        app = self.app(name)
        if app.release is None:
            raise NoRelease(app=name)
        current = next(r for r in self._store.releases(name) if r.number == app.release)
        return self._redeploy(name, current, note=f"restart of release {current.number}", on_line=on_line)

    def rollback(self, name: str, number: int | None, on_line: LineCallback) -> AppView:
        """Run an earlier release again (the one before the current, or ``number``).

        Raises:
            ReleaseNotFound: no such kept release.
        """
        app = self.app(name)
        releases = self._store.releases(name)
        if number is None:
            older = [r for r in releases if app.release is not None and r.number < app.release]
            if not older:
                raise ReleaseNotFound(app=name, release="before the current one")
            target = older[0]
        else:
            target = next((r for r in releases if r.number == number), None)
            if target is None:
                raise ReleaseNotFound(app=name, release=str(number))
        return self._redeploy(name, target, note=f"rollback to release {target.number}", on_line=on_line)

    def _redeploy(self, name: str, release: ReleaseRecord, *, note: str, on_line: LineCallback) -> AppView:
        app = self.app(name)
        self._put(_replace(app, started=True))
        new, dropped = self._store.add_release(name, release.droplet, _now(), note)
        self._forget_droplets(dropped)
        on_line(f"-----> Release {new.number} ({note})")
        self._manager.wake()
        return self._wait(name, new.number, on_line)

    def scale(self, name: str, instances: int, on_line: LineCallback) -> AppView:
        """Set the instance count and wait until that many run."""
        app = self.app(name)
        self._put(_replace(app, instances=_count(instances)))
        self._manager.wake()
        if not app.started or app.release is None:
            return self.view(name)
        return self._wait(name, app.release, on_line)

    def set_env(self, name: str, changes: Mapping[str, str], removals: tuple[str, ...],
                on_line: LineCallback) -> AppView:
        """Change the app's env, then restart it (if started) so instances see it."""
        app = self.app(name)
        env = {k: v for k, v in {**app.env, **check_env(changes)}.items() if k not in removals}
        self._put(_replace(app, env=env))
        if app.started and app.release is not None:
            return self.restart(name, on_line)
        return self.view(name)

    def add_route(self, name: str, host: str) -> AppView:
        """Let the app answer at another host name too (beside ``APP.<router/domain>``).

        Raises:
            InvalidName: not a DNS name.
            HostTaken: another app already answers at it.
            UsageError: the app would have more than ``router/max_urls`` URLs.
        """
        app = self.app(name)
        host = check_dns_name(host.strip().lower(), what="host name")
        if host not in app.urls:
            self._put(_replace(app, urls=self._checked_urls(name, (*app.urls, host))))
            self._manager.wake()
        return self.view(name)

    def remove_route(self, name: str, host: str) -> AppView:
        """Stop answering at an extra host name.

        Raises:
            UsageError: the app has no such extra host name.
        """
        app = self.app(name)
        host = host.strip().lower()
        if host not in app.urls:
            raise UsageError(detail=f"app {name} has no extra host name {host!r} (see `fence app {name}`)")
        self._put(_replace(app, urls=tuple(u for u in app.urls if u != host)))
        self._manager.wake()
        return self.view(name)

    def _checked_urls(self, name: str, urls: tuple[str, ...]) -> tuple[str, ...]:
        """The app's URLs, each a DNS name, at most ``router/max_urls`` of them.

        Raises:
            InvalidName: a URL is not a DNS name.
            UsageError: too many.
        """
        cap = int(self._config.fence("router/max_urls"))
        hosts = tuple(dict.fromkeys(check_dns_name(host, what="host name") for host in urls))
        if len(hosts) > cap:
            raise UsageError(detail=f"app {name} would have {len(hosts)} URLs besides {name}.{self._domain()}; "
                                    f"router/max_urls allows {cap}")
        return hosts

    def _domain(self) -> str:
        return str(self._config.fence("router/domain"))

    def _put(self, app: AppRecord) -> None:
        """Write the app's desired state; its new host names are claimed in the same transaction.

        Raises:
            HostTaken: another app holds one of them (nothing is written).
        """
        self._store.put_app(app, domain=self._domain())

    def delete(self, name: str) -> None:
        """Remove the app: its instances, releases, droplets, kept sources, build cache and logs."""
        app = self.app(name)
        self._put(_replace(app, started=False))
        self._manager.wake()
        self._wait_gone(name, timeout=30)
        for droplet in self._store.delete_app(name):
            self._droplets.delete(droplet)
        self._manager.forget(name)
        self._manager.wake()
        self._home.host_app_cache(name).unlink(missing_ok=True)
        shutil.rmtree(self._home.host_app_staging_logs(name), ignore_errors=True)
        shutil.rmtree(self._home.host_app_sources(name), ignore_errors=True)

    def _wait_gone(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._backend.list({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_INSTANCE,
                                       labels.APP: name}):
                return
            time.sleep(0.2)

    def _forget_droplets(self, droplet_ids: list[str]) -> None:
        """Remove droplets that no kept release (the last five) refers to any more."""
        for droplet in droplet_ids:
            self._store.delete_droplet(droplet)
            self._droplets.delete(droplet)

    # --- logs and tasks ----------------------------------------------------------------------

    def staging_log(self, name: str) -> Iterator[str]:
        """The app's last staging log.

        Raises:
            AppNotFound: no staging log for it.
        """
        check_app_name(name)
        host_dir = self._home.host_app_staging_logs(name)
        logs = sorted(host_dir.glob("*.log"), key=lambda p: p.stat().st_mtime) if host_dir.is_dir() else []
        if not logs:
            raise AppNotFound(app=name)
        return _file_lines(logs[-1])

    def instance_logs(self, name: str, *, follow: bool, tail: int = 100) -> Iterator[str]:
        """The app's instance logs, each line prefixed ``[web.INDEX]``; ``follow`` keeps
        streaming until every instance that ran when it was asked has stopped.

        Raises:
            AppNotFound: no such app.
        """
        self.app(name)
        containers = self._backend.list({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_INSTANCE,
                                         labels.APP: name})
        tagged = sorted(((c.info().labels.get(labels.INSTANCE, "?"), c) for c in containers),
                        key=lambda pair: pair[0])
        return self._log_lines(tagged, follow=follow, tail=tail)

    @staticmethod
    def _log_lines(tagged: list[tuple[str, Container]], *, follow: bool, tail: int) -> Iterator[str]:
        if not follow:
            for index, container in tagged:
                for line in container.logs(tail=tail):
                    yield f"[web.{index}] {line}"
            return
        lines: queue.Queue[str | None] = queue.Queue(maxsize=10_000)

        def pump(index: str, container: Container) -> None:
            try:
                for line in container.logs(follow=True, tail=tail):
                    lines.put(f"[web.{index}] {line}")
            except FenceError:
                pass
            finally:
                lines.put(None)

        for index, container in tagged:
            threading.Thread(target=pump, args=(index, container), daemon=True).start()
        open_streams = len(tagged)
        while open_streams:
            line = lines.get()
            if line is None:
                open_streams -= 1
            else:
                yield line

    def cancel_task(self, task_id: str) -> None:
        """End a one-off task whose client went away (its container is destroyed)."""
        with self._tasks_lock:
            container = self._tasks.pop(task_id, None)
        if container is not None:
            try:
                container.destroy()
            except FenceError:
                pass

    def run_task(self, name: str, argv: tuple[str, ...], on_line: LineCallback, task_id: str = "") -> int:
        """Run a one-off command in a fresh container from the app's current droplet.

        Returns:
            The command's exit code.

        Raises:
            NoRelease: the app was never staged.
            UsageError: no command given.
        """
        if not argv:
            raise UsageError(detail="give the command to run after --")
        app = self.app(name)
        release = next((r for r in self._store.releases(name) if r.number == app.release), None)
        droplet = self._store.droplet(release.droplet) if release else None
        if release is None or droplet is None:
            raise NoRelease(app=name)
        launch = Launch(app=app, release=release.number, droplet=droplet, index=0, role=labels.ROLE_TASK,
                        command_argv=argv)
        container = self._starter.launch(launch)
        with self._tasks_lock:
            self._tasks[task_id or container.id] = container
        try:
            ws = self._starter.workspace()
            result = container.run(ProcessSpec(argv=self._starter.task_argv(launch), user=f"{ws.uid}:{ws.uid}",
                                               cwd=ws.ctr_app), on_output=on_line)
            return result.exit_code
        finally:
            with self._tasks_lock:
                self._tasks.pop(task_id or container.id, None)
            try:
                container.destroy()
            except FenceError:
                pass


def _file_lines(host_file: Path) -> Iterator[str]:
    with host_file.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            yield line.rstrip("\n")


def _current(releases: list[ReleaseRecord], app: AppRecord) -> ReleaseRecord | None:
    """The app's current release among its kept ones."""
    return next((r for r in releases if r.number == app.release), None)


def _count(instances: int) -> int:
    if not 0 <= instances <= MAX_INSTANCES:
        raise UsageError(detail=f"instances must be from 0 to {MAX_INSTANCES}, not {instances}")
    return instances


def _replace(app: AppRecord, **changes: object) -> AppRecord:
    return dataclasses.replace(app, **changes)
