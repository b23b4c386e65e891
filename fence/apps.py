"""The app facade: deploy, start, stop, restart, scale, env, routes, rollback, delete, instance logs, one-off tasks."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import shutil
import time
from typing import Callable, Iterator, Mapping

from fence import labels
from fence.backend.base import Container, ContainerBackend
from fence.config import ConfigStore
from fence.droplets import DropletStore
from fence.errors import AppNotFound, DeployFailed, NoRelease, ReleaseNotFound, UsageError
from fence.follow import LogFollow
from fence.home import NodeHome
from fence.logfile import LogTap
from fence.models import AppRecord, AppView, DeploySettings, DropletRecord, InstanceView, ReleaseRecord
from fence.rules import check_app_name, check_dns_name, check_env
from fence.running.manager import InstanceManager
from fence.running.release import ReleasePhase
from fence.running.processes import counts_for, per_type, scaled
from fence.running.starter import InstanceStarter
from fence.running.tasks import TaskRunner
from fence.store import StateStore

LineCallback = Callable[[str], None]
MAX_INSTANCES = 100


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class AppOps:
    """Changes apps' desired state and waits for the instance manager to carry it out: the
    second facade beside ``NodeService``, which the API is given explicitly.

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
                 home: NodeHome, node_id: str, routing: bool = True, drains: LogTap | None = None) -> None:
        self._store = store
        self._config = config
        self._manager = manager
        self._starter = starter
        self._backend = backend
        self._droplets = droplets
        self._home = home
        self._node_id = node_id
        self._routing = routing
        self._tasks = TaskRunner(starter=starter)
        self._release = ReleasePhase(tasks=self._tasks, config=config, store=store, home=home, drains=drains)

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
        desired, running = per_type(app, instances, app.release)
        return AppView(
            name=app.name, url=url, urls=(url, *(f"http://{host}{suffix}/" for host in app.urls)),
            state="started" if app.started else "stopped", instances=app.instances,
            running=running.get("web", 0), processes=desired, running_by_process=running,
            memory_mib=app.memory_mib, release=app.release,
            droplet=current.droplet if current else None,
            stack_image=droplet.stack_image if droplet else None, env=dict(app.env),
            instance_list=instances if detail else (), releases=tuple(releases) if detail else ())

    # --- deploying -------------------------------------------------------------------------

    def deploy(self, droplet: DropletRecord, settings: DeploySettings, *, on_line: LineCallback,
               note: str = "push") -> AppView:
        """Make a staged droplet the app's new release and wait until its instances are healthy.

        Each of ``settings`` left unset keeps the app's current one (a new app: 1 instance of
        ``container/memory``); ``note`` says what made the release. Old instances keep serving
        until the new ones are healthy.

        Raises:
            ReleaseFailed: the droplet's release command failed (nothing of the new release
                was recorded or started).
            HostTaken: the app's default host or one of its URLs is another app's (nothing changes).
            UsageError: more URLs than ``router/max_urls``.
            DeployFailed: the new instances did not become healthy in time (the old ones keep
                serving).
        """
        existing = self._store.app(droplet.app)
        if settings.urls:
            settings = dataclasses.replace(settings, urls=self._checked_urls(droplet.app, settings.urls))
        urls = settings.urls or (existing.urls if existing else ())
        # Refused here before any work; put_app below is what decides when two pushes race.
        self._store.check_hosts(droplet.app, urls, domain=self._domain())
        memory = settings.memory_mib or (existing.memory_mib if existing else
                                         int(self._config.fence("container/memory")))
        # The droplet's image (stack + unpacked droplet) is made before the release exists: a
        # failure changes nothing, and the first instance then starts like `docker run`.
        began = time.monotonic()
        image = self._starter.prepare(droplet, memory)
        if image.made:
            on_line(f"-----> Droplet image {image.ref} made on {image.stack_ref} "
                    f"in {time.monotonic() - began:.1f} s")
        record = _next_record(droplet.app, existing, settings, memory)
        types = counts_for(droplet, existing, settings.process_scale)
        record = _replace(record, processes=types.processes, process_memory=types.process_memory)
        for warning in types.warnings:
            on_line(warning)
        # The release phase runs before the release is recorded: a failure changes nothing.
        self._release.run(record, droplet, on_line=on_line)
        self._put(record)
        release, dropped = self._store.add_release(record.name, droplet.id, _now(), note)
        self._forget_droplets(dropped)
        on_line(f"-----> Release {release.number}: starting {record.instances} instance"
                f"{'s' if record.instances != 1 else ''} of {record.name} ({record.memory_mib} MiB each)"
                + "".join(f", {count} {kind} ({record.memory_for(kind)} MiB each)"
                          for kind, count in record.processes.items() if count))
        self._manager.wake()
        return self._wait(record.name, release.number, on_line)

    def _wait(self, name: str, release: int, on_line: LineCallback) -> AppView:
        app = self.app(name)
        timeout = (app.health_timeout or int(self._config.fence("health/timeout"))) + 60
        deadline = time.monotonic() + timeout
        shown: set[tuple[str, str]] = set()
        while time.monotonic() < deadline:
            view = self._view(self.app(name), detail=True)
            current = [i for i in view.instance_list if i.release == release]
            for instance in current:
                key = (instance.name, instance.state)
                if key not in shown and instance.state in ("running", "crashed"):
                    shown.add(key)
                    why = f" ({instance.reason})" if instance.reason else ""
                    label = instance.index if instance.process == "web" else instance.name
                    on_line(f"       instance {label}: {instance.state}{why}")
            # Every type's count of the release runs, nothing beyond a type's count is left, and
            # the router carries the web instances.
            running = {kind: sum(1 for i in current if i.state == "running" and i.process == kind)
                       for kind in view.processes}
            leaving = [i for i in view.instance_list if i.index >= view.processes.get(i.process, 0)]
            routed = not self._routing or self._manager.routed(name, release) >= view.instances
            if all(running[kind] >= want for kind, want in view.processes.items()) and not leaving and routed:
                on_line(f"-----> {name} is running: {view.url}")
                return view
            crashed = [i for i in current if i.state == "crashed" and i.restarts >= 3]
            if crashed:
                raise DeployFailed(app=name, release=release, why=crashed[0].reason or "crashed")
            self._manager.wait_pass(0.2)
        view = self._view(self.app(name), detail=True)
        short = [kind for kind, want in view.processes.items()
                 if sum(1 for i in view.instance_list if i.release == release and i.state == "running"
                        and i.process == kind) < want]
        if not short:
            raise DeployFailed(app=name, release=release, why="its instances run but the router did not take "
                               "them (see `kato status` for the router's last error)")
        # Health checks (issue 14 item 4): say why, when an instance of the release crashed.
        why = next((i.last_crash for i in view.instance_list if i.release == release and i.last_crash), None)
        raise DeployFailed(app=name, release=release, why=f"instances not healthy within {timeout} s"
                                                          + (f" (last crash: {why})" if why else ""))

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

    def restart(self, name: str, on_line: LineCallback, *, note: str | None = None,
                release_phase: bool = False) -> AppView:
        """Replace every instance with a fresh one, each new one healthy before its old one stops.

        Args:
            name: the app.
            on_line: progress lines.
            note: the new release's note (default: ``restart of release N``); binding a service
                passes its own, since the release's env changed.
            release_phase: run the droplet's release command first (the env changed, as on
                Heroku when an add-on is attached).

        Raises:
            AppNotFound, NoRelease.
        """
        app = self.app(name)
        if app.release is None:
            raise NoRelease(app=name)
        current = self._store.release(name, app.release)
        if current is None:
            raise NoRelease(app=name)
        return self._redeploy(name, current, note=note or f"restart of release {current.number}", on_line=on_line,
                              release_phase=release_phase)

    def rollback(self, name: str, number: int | None, on_line: LineCallback) -> AppView:
        """Run an earlier release again (the one before the current, or ``number``).

        Like Heroku's rollback (which creates a release, and every new release runs the release
        phase), the target droplet's release command runs first, with the app's env now.

        Raises:
            ReleaseNotFound: no such kept release.
            ReleaseFailed: its release command failed (the current release keeps serving).
        """
        app = self.app(name)
        releases = self._store.releases(name)
        if number is None:
            older = [r for r in releases if app.release is not None and r.number < app.release]
            if not older:
                raise ReleaseNotFound(app=name, release="before the current one")
            target = older[0]
        else:
            target = self._store.release(name, number)
            if target is None:
                raise ReleaseNotFound(app=name, release=str(number))
        return self._redeploy(name, target, note=f"rollback to release {target.number}", on_line=on_line,
                              release_phase=True)

    def _redeploy(self, name: str, release: ReleaseRecord, *, note: str, on_line: LineCallback,
                  release_phase: bool = False) -> AppView:
        app = self.app(name)
        droplet = self._store.droplet(release.droplet)
        if droplet is not None:  # a rollback's process table may differ from the current one
            types = counts_for(droplet, app)
            app = _replace(app, processes=types.processes, process_memory=types.process_memory)
            for warning in types.warnings:
                on_line(warning)
            if release_phase:
                self._release.run(app, droplet, on_line=on_line)
        self._put(_replace(app, started=True))
        new, dropped = self._store.add_release(name, release.droplet, _now(), note)
        self._forget_droplets(dropped)
        on_line(f"-----> Release {new.number} ({note})")
        self._manager.wake()
        return self._wait(name, new.number, on_line)

    def scale(self, name: str, counts: int | Mapping[str, int], on_line: LineCallback) -> AppView:
        """Set instance counts per process type (an int: web's) and wait until that many run.

        Raises:
            UsageError: a type the app's current release does not have, or a count out of range.
        """
        app = self.app(name)
        if isinstance(counts, int):
            counts = {"web": counts}
        current = self._store.release(name, app.release)
        self._put(scaled(app, self._store.droplet(current.droplet) if current else None, counts))
        self._manager.wake()
        if not app.started or app.release is None:
            return self.view(name)
        return self._wait(name, app.release, on_line)

    def set_env(self, name: str, changes: Mapping[str, str], removals: tuple[str, ...],
                on_line: LineCallback) -> AppView:
        """Change the app's env, then restart it (if started) so instances see it.

        An env change on a started app makes a release, so the current droplet's release
        command runs first with the new env; if it fails, the env is left as it was.

        Raises:
            ReleaseFailed: the release command failed (env unchanged, the release keeps serving).
        """
        app = self.app(name)
        env = {k: v for k, v in {**app.env, **check_env(changes)}.items() if k not in removals}
        if app.started and app.release is not None:
            current = self._store.release(name, app.release)
            droplet = self._store.droplet(current.droplet) if current else None
            if droplet is not None:
                self._release.run(_replace(app, env=env), droplet, on_line=on_line)
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
        """Remove the app: its instances, releases, droplets, kept sources, build cache, logs and
        network (left to gc while a task of the app still runs on it)."""
        app = self.app(name)
        self._put(_replace(app, started=False))
        self._manager.wake()
        self._wait_gone(name, timeout=30)
        for droplet in self._store.delete_app(name):
            self._droplets.delete(droplet)
        self._manager.forget(name)
        self._manager.wake()
        self._starter.networks.remove(name)
        self._home.host_app_cache(name).unlink(missing_ok=True)
        shutil.rmtree(self._home.host_app_staging_logs(name), ignore_errors=True)
        shutil.rmtree(self._home.host_app_sources(name), ignore_errors=True)
        shutil.rmtree(self._home.host_app_release_logs(name), ignore_errors=True)
        for host_log in (self._home.host_app_cron_log(name), self._home.host_app_cron_log(name).with_suffix(".log.1")):
            host_log.unlink(missing_ok=True)  # cron (issue 14): its cron jobs' output

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

    # --- instance logs and tasks ----------------------------------------------------------------------

    def release_log(self, name: str) -> Iterator[str]:
        """The output of the app's last release-phase run, each line prefixed ``[release]``.

        The log outlives a failed first push (the app was never recorded, but its output is kept).

        Raises:
            InvalidName: a malformed name.
            AppNotFound: no release command has run for it.
        """
        return self._release.last_log(name)

    def instance_logs(self, name: str, *, tail: int = 100) -> Iterator[str]:
        """The app's instance logs so far, each line prefixed ``[TYPE.INDEX]`` (``[web.0]``, ``[worker.0]``).

        Raises:
            AppNotFound: no such app.
        """
        tagged = self._instances_by_index(name)

        def lines() -> Iterator[str]:
            for tag, container in tagged:
                for line in container.logs(tail=tail):
                    yield f"[{tag}] {line}"
        return lines()

    def follow_logs(self, name: str, *, tail: int, loop: asyncio.AbstractEventLoop) -> LogFollow:
        """Follow the app's instance logs (``[TYPE.INDEX]`` lines) until every instance that ran
        when it was asked has stopped, or the follower is closed (its client left).

        Raises:
            AppNotFound: no such app.
        """
        tagged = self._instances_by_index(name)
        return LogFollow(sources=[(tag, functools.partial(container.logs, follow=True, tail=tail))
                                  for tag, container in tagged], loop=loop).start()

    def _instances_by_index(self, name: str) -> list[tuple[str, Container]]:
        self.app(name)
        containers = self._backend.list({labels.NODE: self._node_id, labels.ROLE: labels.ROLE_INSTANCE,
                                         labels.APP: name})
        tagged = []
        for container in containers:
            found = container.info().labels
            process, index = found.get(labels.PROCESS) or "web", found.get(labels.INSTANCE, "?")
            order = (process != "web", process, int(index) if index.isdigit() else -1)
            tagged.append((order, f"{process}.{index}", container))
        return [(tag, container) for _, tag, container in sorted(tagged, key=lambda t: t[0])]

    def cancel_task(self, task_id: str) -> None:
        """End a one-off task whose client went away (its container is destroyed)."""
        self._tasks.cancel(task_id)

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
        release = self._store.release(name, app.release)
        droplet = self._store.droplet(release.droplet) if release else None
        if release is None or droplet is None:
            raise NoRelease(app=name)
        return self._tasks.run(app, release.number, droplet, argv, on_line=on_line, task_id=task_id)


def _current(releases: list[ReleaseRecord], app: AppRecord) -> ReleaseRecord | None:
    """The app's current release among its kept ones."""
    return next((r for r in releases if r.number == app.release), None)


def _next_record(name: str, existing: AppRecord | None, settings: DeploySettings, memory_mib: int) -> AppRecord:
    """The app's desired state once ``settings`` are deployed over what it has (if it exists)."""
    instances = settings.instances if settings.instances is not None else existing.instances if existing else 1
    health = settings.health_timeout if settings.health_timeout is not None else \
        existing.health_timeout if existing else None
    return AppRecord(name=name, instances=_count(instances), memory_mib=memory_mib,
                     env=check_env({**(existing.env if existing else {}), **settings.env}), started=True,
                     release=existing.release if existing else None, health_timeout=health,
                     urls=settings.urls or (existing.urls if existing else ()),
                     created_at=existing.created_at if existing else _now(),
                     health=settings.health or (existing.health if existing else None))


def _count(instances: int) -> int:
    if not 0 <= instances <= MAX_INSTANCES:
        raise UsageError(detail=f"instances must be from 0 to {MAX_INSTANCES}, not {instances}")
    return instances


def _replace(app: AppRecord, **changes: object) -> AppRecord:
    return dataclasses.replace(app, **changes)
