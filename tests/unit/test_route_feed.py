"""The route feed: the router is asked once per change of routes or router settings, again every
10 s (a router that died comes back), and a refusal is retried but logged once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fence.config import ConfigStore
from fence.errors import RouterConfigRefused
from fence.models import Route, Upstream
from fence.router.feed import RECHECK_SECONDS, RouteFeed


@dataclass
class FakeRouter:
    applied: list[tuple[tuple[Route, ...], int, str, str]] = field(default_factory=list)
    settled: list[bool] = field(default_factory=list)
    refuse: bool = False

    running: bool = True
    prechecked: list[tuple[tuple[Route, ...], int, str, str]] = field(default_factory=list)

    def apply(self, *, routes: Sequence[Route], port: int, domain: str, address: str,
              settle: bool = True) -> Sequence[Route]:
        self.applied.append((tuple(routes), port, domain, address))
        self.settled.append(settle)
        if self.refuse:
            raise RouterConfigRefused(detail="port 80 needs root")
        return routes

    def serving(self) -> bool:
        return self.running

    def precheck(self, *, routes: Sequence[Route], port: int, domain: str, address: str) -> None:
        self.prechecked.append((tuple(routes), port, domain, address))


def route(*addresses: str, app: str = "web", hosts: tuple[str, ...] = ("web.localhost",)) -> Route:
    return Route(app=app, hosts=hosts, upstreams=tuple(Upstream(address=a, port=8080) for a in addresses))


ROUTES = [route("172.17.0.2")]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[RouteFeed, FakeRouter, ConfigStore, list[float]]:
    router, config, now = FakeRouter(), ConfigStore(host_file=tmp_path / "config.yml"), [100.0]
    return RouteFeed(router=router, config=config, clock=lambda: now[0]), router, config, now


def test_the_router_is_asked_once_per_change(setup) -> None:  # noqa: ANN001
    feed, router, config, now = setup
    feed.publish(ROUTES)
    feed.publish(list(ROUTES))
    assert len(router.applied) == 1
    assert router.applied[0][1:] == (8080, "localhost", "127.0.0.1")
    feed.publish([])
    assert router.applied[-1][0] == ()
    config.set("fence", "router/port", "9090")
    feed.publish([])
    assert len(router.applied) == 3 and router.applied[-1][1] == 9090


def test_unchanged_routes_are_handed_again_every_recheck_interval(setup) -> None:  # noqa: ANN001
    feed, router, _, now = setup
    feed.publish(ROUTES)
    now[0] += RECHECK_SECONDS - 0.5
    feed.publish(ROUTES)
    assert len(router.applied) == 1
    now[0] += 1.0
    feed.publish(ROUTES)
    assert len(router.applied) == 2   # a router that died is started again from here


def test_a_refusal_is_raised_and_retried_every_publish_but_logged_once(setup, caplog) -> None:  # noqa: ANN001
    feed, router, _, _ = setup
    router.refuse = True
    with caplog.at_level(logging.ERROR, logger="fence.router"):
        for _ in range(3):
            with pytest.raises(RouterConfigRefused):
                feed.publish(ROUTES)
    assert len(router.applied) == 3
    assert [r.getMessage() for r in caplog.records].count(
        "router refused its config: " + RouterConfigRefused(detail="port 80 needs root").message) == 1
    router.refuse = False
    feed.publish(ROUTES)
    feed.publish(ROUTES)
    assert len(router.applied) == 4


def test_only_a_change_an_old_worker_still_answers_rightly_skips_waiting_for_them(setup) -> None:  # noqa: ANN001
    feed, router, config, _ = setup
    steps = [
        ([route()], True),                                    # first publish: always settles
        ([route("172.17.0.2")], True),                        # none -> some: old workers would say 503
        ([route("172.17.0.2", "172.17.0.3")], False),         # a scale-up: old workers still answer 200
        ([route("172.17.0.3")], True),                        # an upstream leaves
        ([route("172.17.0.3"), route(app="api", hosts=("api.localhost",))], True),  # a new app (old: 404)
        ([route("172.17.0.3", hosts=("web.localhost", "shop.test")),
          route(app="api", hosts=("api.localhost",))], True),  # a new host name
    ]
    for routes, settle in steps:
        feed.publish(routes)
        assert router.settled[-1] is settle, routes
    config.set("fence", "router/port", "9090")
    feed.publish([route("172.17.0.3", "172.17.0.4", hosts=("web.localhost", "shop.test")),
                  route(app="api", hosts=("api.localhost",))])
    assert router.settled[-1] is True   # another port: a restart, not a widening


def test_anticipated_routes_are_prechecked_off_the_caller_and_served_ones_are_not(setup) -> None:  # noqa: ANN001
    import time

    feed, router, config, now = setup
    feed.publish(ROUTES)
    feed.anticipate(ROUTES)  # what already serves: nothing to check
    soon = [route("172.17.0.2", "172.17.0.3")]
    feed.anticipate(soon)
    deadline = time.monotonic() + 10
    while not router.prechecked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert router.prechecked == [(tuple(soon), 8080, "localhost", "127.0.0.1")]
    assert len(router.applied) == 1  # a precheck serves nothing
