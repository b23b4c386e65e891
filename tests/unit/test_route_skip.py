"""One app's bad route never blocks the others (the router serves what is valid and reports the
rest), and an instance is stopped only once the router serves a config without it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from fence.config import ConfigStore
from fence.models import Route, SkippedRoute, Upstream
from fence.router.feed import RouteFeed
from fence.router.render import render_config, usable_routes
from tests.unit.test_instance_manager import Node
from tests.unit.test_route_feed import FakeRouter


def _up(address: str, port: int = 8080) -> Upstream:
    return Upstream(address=address, port=port)


def _render(routes: list[Route]) -> str:
    return render_config(routes=routes, port=8080, domain="localhost", host_prefix=Path("/var/lib/fence/router"))


def test_a_url_that_is_another_apps_default_host_is_left_out_and_both_apps_are_served() -> None:
    squat = Route(app="squat", hosts=("squat.localhost", "shop.localhost", "www.squat.test"), upstreams=(_up("10.0.0.2"),))
    shop = Route(app="shop", hosts=("shop.localhost",), upstreams=(_up("10.0.0.3"),))
    served, skipped = usable_routes([squat, shop], "localhost")
    assert served == [Route(app="shop", hosts=("shop.localhost",), upstreams=(_up("10.0.0.3"),)),
                      Route(app="squat", hosts=("squat.localhost", "www.squat.test"), upstreams=(_up("10.0.0.2"),))]
    assert skipped == [SkippedRoute(app="squat", what="host shop.localhost",
                                    why="it is the default host of app shop")]
    text = _render(served)
    assert "server_name shop.localhost;" in text and "server_name squat.localhost www.squat.test;" in text


def test_a_url_two_apps_list_goes_to_neither() -> None:
    one = Route(app="one", hosts=("one.localhost", "www.both.test", "one.test"))
    two = Route(app="two", hosts=("two.localhost", "www.both.test"))
    served, skipped = usable_routes([one, two], "localhost")
    assert [r.hosts for r in served] == [("one.localhost", "one.test"), ("two.localhost",)]
    assert skipped == [SkippedRoute(app="one", what="host www.both.test", why="app two list it too; no app gets it"),
                       SkippedRoute(app="two", what="host www.both.test", why="app one list it too; no app gets it")]


def test_bad_hosts_upstreams_and_routes_are_left_out_one_by_one() -> None:
    routes = [Route(app="good", hosts=("good.localhost", "evil;}", "ok.test"),
                    upstreams=(_up("10.0.0.2"), _up("0.0.0.0"), _up("10.0.0.3", 0), _up("nonsense"))),
              Route(app="good", hosts=()),
              Route(app="Bad App", hosts=())]
    served, skipped = usable_routes(routes, "localhost")
    assert served == [Route(app="good", hosts=("good.localhost", "ok.test"), upstreams=(_up("10.0.0.2"),))]
    assert [(s.app, s.what) for s in skipped] == [
        ("good", "route"), ("Bad App", "route"), ("good", "host 'evil;}'"), ("good", "upstream 0.0.0.0:8080"),
        ("good", "upstream 10.0.0.3:0"), ("good", "upstream nonsense:8080")]
    assert all("\n" not in s.why for s in skipped)
    _render(served)  # what is left always renders


def test_routes_without_problems_are_served_as_given() -> None:
    routes = [Route(app="a", hosts=("a.localhost", "www.a.test"), upstreams=(_up("10.0.0.2"),)), Route(app="b", hosts=("b.localhost",))]
    assert usable_routes(routes, "localhost") == (routes, [])


# --- the feed: what the router serves -------------------------------------------------------------

def test_the_feed_knows_what_the_router_serves(tmp_path: Path) -> None:
    router = FakeRouter()
    feed = RouteFeed(router=router, config=ConfigStore(host_file=tmp_path / "config.yml"))
    assert feed.served() is None  # a running router with a config from before this feed: unknown
    routes = [Route(app="a", hosts=("a.localhost",), upstreams=(_up("10.0.0.2"),))]
    assert tuple(feed.publish(routes)) == tuple(routes) and tuple(feed.served()) == tuple(routes)
    router.refuse = True
    with pytest.raises(Exception):
        feed.publish([])
    assert tuple(feed.served()) == tuple(routes)  # the refused config left the old one serving
    router.running = False
    assert tuple(feed.served()) == ()


# --- the reconciler: stop only once the router no longer points there -------------------------

@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def _ticks_until(node: Node, done, rounds: int = 100) -> None:  # noqa: ANN001
    """Reconcile until ``done()`` (start jobs run on the manager's threads), then twice more."""
    for _ in range(rounds):
        node.manager.tick()
        if done():
            break
        time.sleep(0.05)
    assert done()
    for _ in range(2):
        node.manager.tick()
        time.sleep(0.1)


def _running_containers(node: Node, app: str) -> int:
    return sum(1 for c in node.backend.list({"fence.app": app}) if c.info().running)


def test_a_scale_down_waits_while_the_router_refuses_its_config(node: Node) -> None:
    node.deploy("web", instances=2)
    node.settle()
    assert _running_containers(node, "web") == 2
    sink = node.manager._route_sink
    sink.refuse = True  # nginx refuses every new config and keeps serving the old one
    app = node.store.app("web")
    node.store.put_app(dataclasses.replace(app, instances=1))
    _ticks_until(node, lambda: [v.state for v in node.manager.instances("web")] == ["running", "stopping"])
    assert _running_containers(node, "web") == 2  # instance 1 is still in the old config: kept
    assert [v.state for v in node.manager.instances("web")] == ["running", "stopping"]
    sink.refuse = False
    node.settle()
    assert _running_containers(node, "web") == 1
    assert [len(r.upstreams) for r in node.routes[-1]] == [1]


def test_a_redeploy_stops_the_old_instance_only_after_the_router_took_the_new_one(node: Node) -> None:
    node.deploy("web")
    node.settle()
    [old] = node.manager.instances("web")
    sink = node.manager._route_sink
    sink.refuse = True
    node.deploy("web")
    _ticks_until(node, lambda: [(v.release, v.state) for v in node.manager.instances("web")]
                 == [(1, "stopping"), (2, "running")])
    assert any(v.container == old.container for v in node.manager.instances("web"))
    assert _running_containers(node, "web") == 2
    sink.refuse = False
    node.settle()
    assert [v.release for v in node.manager.instances("web")] == [2]
    [route] = node.routes[-1]
    assert len(route.upstreams) == 1


@pytest.mark.parametrize("served, stops", [([], True), (None, False)])
def test_a_router_that_is_down_points_nowhere_and_an_unknown_one_anywhere(node: Node, served, stops) -> None:  # noqa: ANN001
    node.deploy("web", instances=2)
    node.settle()
    sink = node.manager._route_sink
    sink.refuse, sink.serving = True, served
    node.store.put_app(dataclasses.replace(node.store.app("web"), instances=1))
    for _ in range(3):
        node.manager.tick()
        node.manager.drain_jobs(1)
    assert _running_containers(node, "web") == (1 if stops else 2)
