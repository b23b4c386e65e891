"""Stack rollouts, surge and memory admission in the instance reconciler (fake engine, clock and health)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fence.backend.fake import FakeBackend
from fence.errors import ImageNotFound, RolloutFailed
from fence.layout import AppUser
from fence.models import AppRecord
from fence.running.manager import InstanceManager
from fence.running.images import DropletImages
from fence.running.starter import InstanceStarter
from fence.stack.rollout import StackRollout
from tests.unit.test_instance_manager import InlineExecutor, Node, RecordedRoutes

OLD, NEW = "fence/stack:bookworm", "fence/stack:next"


def make_node(tmp_path: Path, *, memory_total: int | None = None) -> Node:
    node = Node(tmp_path, backend=FakeBackend(images=(OLD, NEW)))
    if memory_total is not None:
        node.manager.shutdown()
        app_user = AppUser(config=node.config, backend=node.backend, host_file=tmp_path / "app-uid")
        starter = InstanceStarter(backend=node.backend, config=node.config, node_id=node.node_id,
                                  app_user=app_user,
                                  images=DropletImages(backend=node.backend, config=node.config,
                                                       droplets=node.droplets, node_id=node.node_id,
                                                       app_user=app_user))
        node.manager = InstanceManager(backend=node.backend, store=node.store, config=node.config, starter=starter,
                                       node_id=node.node_id, routes=RecordedRoutes(node.routes), clock=node.clock,
                                       health=node.health, drain_seconds=0, workers=2,
                                       memory_total=lambda: memory_total, health_executor=InlineExecutor())
    return node


def step(node: Node) -> None:
    node.manager.tick()
    node.manager.drain_jobs(10)


def images_of(node: Node, app: str) -> list[tuple[int, str, str]]:
    return sorted((v.index, v.state, v.image_id) for v in node.manager.instances(app))


def test_rollout_replaces_one_instance_at_a_time_new_healthy_before_old_stops(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.deploy("web", instances=3)
    node.settle()
    old_id, new_id = node.backend.image_info(OLD).id, node.backend.image_info(NEW).id
    assert {image for _, _, image in images_of(node, "web")} == {old_id}
    node.config.set("fence", "docker/image", NEW)
    node.health.all_ready = False
    node.manager.roll("web", image_id=new_id)
    for replaced in range(3):
        step(node)
        step(node)
        views = images_of(node, "web")
        starting = [v for v in views if v[1] == "starting"]
        assert len(starting) == 1 and starting[0][2] == new_id, views
        assert sum(1 for v in views if v[1] == "running") == 3  # every slot still serves
        serving = {node.backend.lookup(v.container).info().ip_address
                   for v in node.manager.instances("web") if v.state == "running"}
        assert {u.address for u in node.routes[-1][0].upstreams} == serving  # the starting one is not routed
        node.health.all_ready = True
        step(node)
        node.health.all_ready = False
        assert node.manager.rollout_progress("web").replaced == replaced + 1
    step(node)
    progress = node.manager.rollout_progress("web")
    assert progress.done and progress.failed is None and progress.remaining == ()
    assert images_of(node, "web") == [(0, "running", new_id), (1, "running", new_id), (2, "running", new_id)]
    assert [v.release for v in node.manager.instances("web")] == [1, 1, 1]  # no restaging: same release
    assert any("is healthy; stopping container" in line for line in progress.events)
    node.manager.end_rollout("web")


def test_unhealthy_replacement_stops_the_rollout_and_the_old_instances_keep_serving(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.deploy("web", instances=2)
    node.settle()
    old_containers = sorted(v.container for v in node.manager.instances("web"))
    node.config.set("fence", "docker/image", NEW)
    node.health.all_ready = False
    node.health.ready_addresses = {c.info().ip_address for c in node.backend.list({}) if c.info().running}
    node.manager.roll("web", image_id=node.backend.image_info(NEW).id)
    step(node)
    step(node)
    node.clock.t += 11  # past the app's health timeout (10 s)
    node.settle()
    progress = node.manager.rollout_progress("web")
    assert progress.failed.startswith("instance 0: unhealthy: nothing accepted connections")
    assert progress.replaced == 0 and not progress.done
    assert sorted(v.container for v in node.manager.instances("web")) == old_containers
    assert [(v.state, v.restarts) for v in node.manager.instances("web")] == [("running", 0), ("running", 0)]
    assert len(node.backend.list({})) == 2  # the failed replacement is gone
    node.manager.end_rollout("web")


def test_stack_rollout_reports_per_app_and_raises_for_failures(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.deploy("ok", instances=1)
    node.deploy("stopped", instances=1)
    app = node.store.app("stopped")
    node.store.put_app(AppRecord(**{**app.__dict__, "started": False}))
    node.settle()
    node.config.set("fence", "docker/image", NEW)
    node.manager.run_in_background(interval=0.05)
    try:
        lines: list[str] = []
        rollout = StackRollout(config=node.config, backend=node.backend, store=node.store, manager=node.manager,
                               restage=lambda name, out: pytest.fail("no restage asked"), poll=0.02)
        report = rollout.run(restage=False, on_line=lines.append)
        assert [(r.app, r.outcome, r.replaced) for r in report.apps] == [("ok", "moved", 1), ("stopped", "skipped", 0)]
        assert lines[0].startswith(f"-----> Rolling 2 apps onto {NEW}")
        assert "1 moved, 1 skipped; 1 instance replaced" in lines[-1]
        again = rollout.run(restage=False, on_line=lines.append)
        assert [r.outcome for r in again.apps] == ["already", "skipped"]
        node.health.all_ready = False
        node.config.set("fence", "docker/image", OLD)
        ticking = threading.Event()

        def move_clock() -> None:  # the fake clock moves on, so the new instance's health deadline passes
            while not ticking.wait(0.02):
                node.clock.t += 1

        mover = threading.Thread(target=move_clock, daemon=True)
        mover.start()
        try:
            with pytest.raises(RolloutFailed) as failed:
                rollout.run(restage=False, on_line=lines.append)
        finally:
            ticking.set()
            mover.join()
        assert "failed for 1 of 2 apps: ok: instance 0: unhealthy" in failed.value.message
        assert any("ok: FAILED: instance 0: unhealthy" in line for line in lines)
        assert [v.state for v in node.manager.instances("ok")] == ["running"]
    finally:
        node.manager.shutdown()


def test_rollout_without_a_stack_on_the_engine_is_refused(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.config.set("fence", "docker/image", "nowhere/stack:1")
    with pytest.raises(ImageNotFound):
        StackRollout(config=node.config, backend=node.backend, store=node.store, manager=node.manager,
                     restage=lambda name, out: None).run(restage=False, on_line=print)


def test_surge_limits_a_release_change_to_one_slot_at_a_time(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.deploy("web", instances=3)
    node.settle()
    node.manager.set_surge("web", 1)
    node.health.all_ready = False
    node.deploy("web", instances=3)
    step(node)
    step(node)
    states = sorted((v.release, v.state) for v in node.manager.instances("web"))
    assert states == [(1, "running")] * 3 + [(2, "starting")]
    node.health.all_ready = True
    node.settle(rounds=8)
    assert sorted((v.release, v.state) for v in node.manager.instances("web")) == [(2, "running")] * 3


def test_admission_refuses_a_start_beyond_the_memory_limit(tmp_path: Path) -> None:
    node = make_node(tmp_path, memory_total=1000)
    node.config.set("fence", "node/memory_overcommit", "0.2")  # 200 MiB for 64 MiB instances: 3 fit
    node.deploy("web", instances=4)
    node.settle()
    views = node.manager.instances("web")
    assert [v.state for v in views] == ["running", "running", "running", "crashed"]
    refused = views[3]
    assert refused.release == 1 and refused.restarts >= 3
    assert refused.reason == ("could not start: not enough memory on this node for instance 3 of web (64 MiB): "
                              "192 MiB of 200 MiB are already promised to instances "
                              "(node/memory_overcommit 0.2 x 1000 MiB RAM)")
    assert len(node.backend.list({})) == 3  # nothing was created for the refused start
    assert node.manager.promised_mib() == 192
    node.config.set("fence", "node/memory_overcommit", "1.0")
    node.clock.t += 60
    node.settle()
    assert [v.state for v in node.manager.instances("web")] == ["running"] * 4


def test_rollout_replacement_refused_by_admission_fails_the_rollout(tmp_path: Path) -> None:
    node = make_node(tmp_path, memory_total=1000)
    node.config.set("fence", "node/memory_overcommit", "0.13")  # 130 MiB: two 64 MiB instances, no surge
    node.deploy("web", instances=2)
    node.settle()
    node.config.set("fence", "docker/image", NEW)
    node.manager.roll("web", image_id=node.backend.image_info(NEW).id)
    step(node)
    progress = node.manager.rollout_progress("web")
    assert progress.failed.startswith("instance 0: could not start: not enough memory")
    assert [v.state for v in node.manager.instances("web")] == ["running", "running"]


def test_stack_rollout_skips_an_image_app_whose_base_is_not_the_stack_and_says_so(tmp_path: Path) -> None:
    import dataclasses

    node = make_node(tmp_path)
    for app, base in (("built", OLD), ("onnew", NEW)):
        node.deploy(app, instances=0)
        droplet = node.store.droplet(node.store.release(app, node.store.app(app).release).droplet)
        base_id = node.backend.image_info(base).id
        node.store.add_droplet(dataclasses.replace(droplet, builder="dockerfile", image_id=base_id,
                                                   base_image=base, base_image_id=base_id))
    node.config.set("fence", "docker/image", NEW)
    lines: list[str] = []
    report = StackRollout(config=node.config, backend=node.backend, store=node.store, manager=node.manager,
                          restage=lambda name, out: pytest.fail("no restage asked")).run(restage=False,
                                                                                        on_line=lines.append)
    assert [(r.app, r.outcome) for r in report.apps] == [("built", "skipped"), ("onnew", "already")]
    why = f"an image app whose base is {OLD}, not the stack: rebuild it with `fence restage built`"
    shown = [line.strip() for line in lines]
    assert f"built: skipped ({why})" in shown and f"built: skipped: {why}" in shown  # as it goes, and in the summary
    assert "1 already, 1 skipped" in lines[-2]
