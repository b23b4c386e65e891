"""What the reconciler's records look like from outside: instance views, and the routes they give."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from fence.models import AppRecord, InstanceView, Route, Upstream
from fence.running.instance import WEB, Instance, Slot, SlotKey
from fence.running.starter import CONTAINER_PORT
from fence.states import InstanceState

S = InstanceState


class RouteSink(Protocol):
    """Where the reconciler sends its routes after every pass (``fence.router.feed.RouteFeed``)."""

    def publish(self, routes: Sequence[Route]) -> Sequence[Route]:
        """Route apps to exactly these upstreams.

        Returns:
            The routes now served (what the router could not serve left out).

        Raises:
            FenceError: the router refused them; it serves ``served()``.
        """

    def served(self) -> Sequence[Route] | None:
        """The routes the router serves now; ``None`` when unknown (it may point at any instance)."""

    def anticipate(self, routes: Sequence[Route]) -> None:
        """Routes a coming publish will likely carry (instances booting): the router may prepare
        them (check their config) now; nothing served changes. Returns at once."""


class NoRouter:
    """A node without a router: routes go nowhere."""

    def publish(self, routes: Sequence[Route]) -> Sequence[Route]:
        """Serve nothing."""
        return ()

    def served(self) -> Sequence[Route]:
        """Nothing."""
        return ()

    def anticipate(self, routes: Sequence[Route]) -> None:
        """Nothing to prepare."""


def instance_views(instances: Iterable[Instance], slots: Mapping[str, Mapping[SlotKey, Slot]],
                   now: float) -> dict[str, list[InstanceView]]:
    """Every app's instances by process type (web first), index, then release, with a slot whose
    start failed shown as a crashed instance unless a container of that release or newer fills it.

    Args:
        instances: the manager's instance records.
        slots: the manager's slot records, by app.
        now: the manager's clock now.
    """
    views: dict[str, list[InstanceView]] = collections.defaultdict(list)
    for i in instances:
        slot = slots.get(i.app, {}).get(i.slot)
        views[i.app].append(InstanceView(
            index=i.index, state=i.state.value, container=i.container_id[:12], host_port=i.host_port,
            restarts=slot.crashes.crashes if slot else 0, release=i.release,
            uptime=round(now - i.healthy_since, 1) if i.healthy_since is not None else 0.0,
            reason=i.reason, last_crash=slot.last_crash if slot else None, image_id=i.image_id,
            process=i.process, health=health_of(i)))
    for app, app_slots in slots.items():
        for key, slot in app_slots.items():
            if slot.refused is None:
                continue
            reason, release = slot.refused
            # A refused start of a new release shows beside the old release's instance.
            if not any(v.process == key.process and v.index == key.index and v.release >= release
                       for v in views[app]):
                views[app].append(InstanceView(index=key.index, state=S.CRASHED.value, container="",
                                               host_port=None, restarts=slot.crashes.crashes,
                                               release=release, reason=reason, process=key.process,
                                               health=f"{_check(key.process)}: failing"))
    return {app: sorted(found, key=lambda v: (v.process != WEB, v.process, v.index, v.release))
            for app, found in views.items() if found}


def _check(process: str) -> str:
    """The health check a process type gets: the port check for web, the process check otherwise."""
    return "port" if process == WEB else "process"


def health_of(instance: Instance) -> str:
    """Where the instance's health check stands, as ``fence ps`` shows it (``port: passing`` …)."""
    status = {S.STARTING: "waiting", S.RUNNING: "passing", S.CRASHED: "failing"}.get(instance.state, "-")
    return f"{_check(instance.process)}: {status}"


def routes_for(apps: Mapping[str, AppRecord], by_app: Mapping[str, Sequence[Instance]], domain: str, *,
               starting: bool = False) -> list[Route]:
    """One route per app, by name: its default host and URLs to its running web instances (no
    other process type is ever routed).

    Args:
        apps: the apps in the store, by name.
        by_app: the instance records, by app.
        domain: ``router/domain``.
        starting: count starting web instances with an address as running (the routes their
            readiness will bring: ``RouteSink.anticipate``).
    """
    routed = (S.RUNNING, S.STARTING) if starting else (S.RUNNING,)
    routes = []
    for name in sorted(apps):
        upstreams = sorted({Upstream(address=i.address, port=CONTAINER_PORT) for i in by_app.get(name, ())
                            if i.state in routed and i.web and i.address},
                           key=lambda u: (u.address, u.port))
        routes.append(Route(app=name, hosts=(f"{name}.{domain}", *apps[name].urls), upstreams=tuple(upstreams)))
    return routes


def routed_ids(served: Sequence[Route] | None, instances: Iterable[Instance]) -> set[str]:
    """The containers the router may point at: every instance with an address in ``served``
    (all instances with an address when that is unknown, ``None``).

    Args:
        served: the routes the router serves now (``RouteSink.served``), or ``None``.
        instances: the manager's instance records.
    """
    if served is None:
        return {i.container_id for i in instances if i.address}
    pointed = {(route.app, u.address) for route in served for u in route.upstreams}
    return {i.container_id for i in instances if i.address and (i.app, i.address) in pointed}


def routed_count(routes: Iterable[Route], instances: Iterable[Instance], app: str, release: int) -> int:
    """How many running web instances of the app's ``release`` the given routes point at."""
    addresses = {u.address for route in routes if route.app == app for u in route.upstreams}
    return sum(1 for i in instances if i.app == app and i.release == release and i.web
               and i.state is S.RUNNING and i.address in addresses)
