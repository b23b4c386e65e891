"""Cluster figures (issue 17), on three extra engines of this machine (never the main engine's swarm):

- ``cluster.scale30.fence``: `fence scale APP 30` of an app on 3 nodes → fence reports 30
  instances running and healthy (each task's port answered the controller); beside
  ``cluster.scale30.docker``: `docker service create --replicas 30` of the same image by digest
  with the same task template as fence's own service (user, caps, pids, memory, ulimits, init,
  log options, restart policy; at most 10 tasks per node, no published port: 30 host-mode tasks
  of one service cannot share a port on a node) → 30 tasks running. The baseline stops at
  "running"; fence's figure includes its own readiness check, so the ratio is conservative.
- ``cluster.redeploy.fence``: a redeploy (`fence push` of a new release) of a 6-instance app
  across the 3 nodes, with a poller through the router (``cluster.redeploy.failed`` counts its
  failed requests; the target is 0); beside ``cluster.redeploy.single``: the same redeploy of the
  same app and image on a single node (a plain fence node on the main engine).
- ``cluster.kill.full``: a worker engine killed hard (SIGKILL) → the 6-instance app at its full
  count again, healthy (Swarm's dispatcher heartbeat is set to 1 s, its default 5 s; a node is
  seen down a few heartbeats after it stops), with ``cluster.kill.failed`` the poller's failures.

Everything is taken down afterwards: the engines (tests/cluster/engines.py's kit), the
controller's daemon and nginx, the registry, the single node's containers and the image imported
into the main engine for it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from bench.node import BenchNode, http_get
from bench.stats import Summary, summary
from fence import labels

Say = Callable[[str], None]
SCALED = 30
REDEPLOYED = 6
_TIMEOUT = 600.0


class EngineNode(BenchNode):
    """A fence node whose daemon and CLIs talk to another engine (``docker_host``)."""

    def __init__(self, *, docker_host: str) -> None:
        super().__init__()
        self.docker_host = docker_host

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "DOCKER_HOST": self.docker_host}


class Poller:
    """GETs through a node's router every 50 ms in a thread while open, counting failures."""

    def __init__(self, port: int, app: str) -> None:
        self.port, self.app = port, app
        self.total = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, _ = http_get(self.port, host=f"{self.app}.localhost", timeout=5.0)
            self.total += 1
            self.failed += status != 200
            time.sleep(0.05)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _wait(predicate: Callable[[], bool], what: str, timeout: float = _TIMEOUT, interval: float = 0.2) -> float:
    """Poll until ``predicate``; returns time.monotonic() then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def _running(node: BenchNode, app: str) -> int:
    assert node.client is not None
    try:
        return node.client.app(app).running
    except Exception:  # noqa: BLE001 - the daemon busy or the app between releases: ask again
        return -1


def measure(*, reps: int, run_id: str, host_work: Path, say: Say) -> dict[str, Summary]:
    """The ``cluster.*`` figures (see the module's docstring)."""
    from tests.cluster.conftest import kit_problem
    from tests.cluster.engines import EngineKit

    if problem := kit_problem():
        say(f"       skipped: the cluster section needs extra engines, and {problem}")
        return {}
    kit = EngineKit(host_root=Path(tempfile.mkdtemp(prefix="fence-bench-engines-")))
    controller: EngineNode | None = None
    single: BenchNode | None = None
    image_main = f"fence-bench/cluster-web:{run_id}"
    try:
        engines = [kit.up() for _ in range(3)]
        controller = _form(engines, host_work=host_work, say=say)
        single = BenchNode()
        single.start()
        _import_web(None, image_main)
        return _measure(controller, single, engines, image_main=image_main, reps=reps, host_work=host_work, say=say)
    finally:
        if controller is not None:  # first: it needs the controller's FENCE_HOME (the registry's pid)
            _kato(controller, "cluster", "leave", "--force")
            from fence.cluster.registry import Registry

            Registry(home=controller.home).stop()
        for node in (controller, single):
            if node is not None:
                node.close()
        subprocess.run(["docker", "rmi", "-f", image_main], capture_output=True)
        kit.down()
        shutil.rmtree(kit.host_root, ignore_errors=True)


def _import_web(engine, tag: str) -> None:  # noqa: ANN001 - an ExtraEngine, or None: the main engine
    """The test tier's busybox web app image (tests/cluster/test_instances.py) as ``tag``."""
    from tests.cluster.engines import busybox_rootfs
    from tests.cluster.test_instances import WEB

    change = 'CMD ["sh", "-c", ' + json.dumps(WEB) + "]"
    with busybox_rootfs().open("rb") as host_tar:
        if engine is None:
            subprocess.run(["docker", "import", "--change", change, "-", tag], stdin=host_tar, check=True,
                           capture_output=True, timeout=300)
        else:
            engine.docker("import", "--change", change, "-", tag, stdin=host_tar)


def _kato(node: BenchNode, *args: str, home: Path | None = None, docker_host: str | None = None) -> str:
    env = dict(node.env)
    if home is not None:
        env["FENCE_HOME"] = str(home)
    if docker_host is not None:
        env["DOCKER_HOST"] = docker_host
    import sys

    done = subprocess.run([sys.executable, "-m", "kato", *args], env=env, text=True, capture_output=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    if done.returncode != 0 and args[:2] != ("cluster", "leave"):
        raise RuntimeError(f"kato {' '.join(args[:2])}: {done.stderr.strip()[-500:]}")
    return done.stdout


def _form(engines: list, *, host_work: Path, say: Say) -> EngineNode:  # noqa: ANN001
    """A controller fence node on engines[0], the other two joined as workers (through kato)."""
    from tests.cluster.engines import TEST_IMAGE
    from tests.cluster.test_instances import APP_IMAGE
    from bench.node import free_port

    registry = f"127.0.0.1:{free_port()}"
    controller = EngineNode(docker_host=engines[0].docker_host)
    homes = [controller.root, *(host_work / f"cluster-worker{i}" for i in (1, 2))]
    # A loaded 2-core machine starts 30 remapped tasks slowly: the deploy's wait is at its longest.
    _kato(controller, "config", "set", "fence", "health/timeout", "180", home=controller.root)
    for engine, home in zip(engines, homes):
        home.mkdir(parents=True, exist_ok=True)
        for key, value in (("docker/image", TEST_IMAGE), ("cluster/listen_address", engine.swarm_addr),
                           ("cluster/advertise_address", engine.swarm_addr), ("cluster/registry_address", registry)):
            _kato(controller, "config", "set", "fence", key, value, home=home, docker_host=engine.docker_host)
    _import_web(engines[0], APP_IMAGE)
    _kato(controller, "cluster", "init")
    engines[0].docker("swarm", "update", "--dispatcher-heartbeat", "1s")
    join = _kato(controller, "cluster", "join-command").split()
    for engine, home in zip(engines[1:], homes[1:]):
        _kato(controller, *join[1:], home=home, docker_host=engine.docker_host)
    for engine in engines:  # every local engine is seen at 127.0.0.1: where each publishes (--ip)
        node_id = json.loads(engine.docker("info", "--format", "{{json .Swarm.NodeID}}").stdout)
        engines[0].docker("node", "update", "--label-add", f"fence.address={engine.address}", node_id)
    controller.start()
    say(f"       cluster: controller {engines[0].name}, workers {engines[1].name} {engines[2].name}, "
        f"registry {registry}")
    return controller


def _push(node: BenchNode, meta: Path, app: str, image: str, count: int, *extra: str) -> float:
    began = time.monotonic()
    done = node.cli("fence", "push", str(meta), "--name", app, "--image", image, "--instances", str(count), *extra,
                    timeout=_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"fence push {app}: {(done.stdout[-800:] + done.stderr[-800:]).strip()}")
    return time.monotonic() - began


def _measure(controller: EngineNode, single: BenchNode, engines: list, *, image_main: str, reps: int,  # noqa: ANN001
             host_work: Path, say: Say) -> dict[str, Summary]:
    from fence.backend.swarm import SwarmBackend
    from tests.cluster.test_instances import APP_IMAGE

    swarm = SwarmBackend(base_url=engines[0].docker_host)
    meta = host_work / "cluster-meta"
    meta.mkdir(exist_ok=True)
    (meta / "stackato.yml").write_text("name: c30\n")
    figures: dict[str, list[float]] = {k: [] for k in ("scale30.fence", "scale30.docker", "redeploy.fence",
                                                       "redeploy.single", "redeploy.failed", "kill.full",
                                                       "kill.failed")}
    try:
        # --- 30 instances over 3 nodes, beside docker service create --replicas 30 -----------------
        _push(controller, meta, "c30", APP_IMAGE, 1)
        [service] = swarm.list_services({labels.NODE: controller.home.node_id, labels.APP: "c30"})
        template = engines[0].docker("service", "inspect", "--format", "{{json .Spec.TaskTemplate}}",
                                     service.id).stdout
        for n in range(reps):
            assert controller.client is not None
            began = time.monotonic()
            try:
                controller.client.scale("c30", SCALED, on_line=lambda _line: None)
                done = _wait(lambda: _running(controller, "c30") == SCALED, "30 instances healthy", interval=0.5)
            except Exception as exc:  # noqa: BLE001 - say what Swarm saw, then give up
                raise RuntimeError(f"{exc}\n{_services_text(engines[0])}") from None
            figures["scale30.fence"].append(done - began)
            controller.client.scale("c30", 1, on_line=lambda _line: None)
            _wait(lambda: _running(controller, "c30") == 1 and len(_live(swarm, controller, "c30")) == 1,
                  "back to 1 instance", interval=0.5)
            figures["scale30.docker"].append(_docker_service_30(swarm, json.loads(template), f"bench-c30-{n}"))
            say(f"       30 instances over 3 nodes: fence {figures['scale30.fence'][-1]:.1f} s, "
                f"docker service create --replicas 30 {figures['scale30.docker'][-1]:.1f} s")
        controller.cli("fence", "delete", "c30", timeout=_TIMEOUT)

        # --- redeploy of 6 instances: 3 nodes beside 1 node ------------------------------------------
        for node, image, key in ((controller, APP_IMAGE, "redeploy.fence"), (single, image_main, "redeploy.single")):
            _push(node, meta, "r6", image, REDEPLOYED, "--env", "V=0")
            for n in range(reps):
                with Poller(node.router_port, "r6") as poller:
                    took = _push(node, meta, "r6", image, REDEPLOYED, "--env", f"V={n + 1}")
                    time.sleep(1)
                figures[key].append(took)
                if key == "redeploy.fence":
                    figures["redeploy.failed"].append(float(poller.failed))
                say(f"       redeploy of {REDEPLOYED} instances, {'3 nodes' if node is controller else '1 node'}: "
                    f"{took:.1f} s, {poller.failed} of {poller.total} requests failed")

        # --- a worker engine's death → full count ----------------------------------------------------
        victim = engines[2]
        victim_node = json.loads(victim.docker("info", "--format", "{{json .Swarm.NodeID}}").stdout)
        with Poller(controller.router_port, "r6") as poller:
            killed = time.monotonic()
            victim.kill_hard()
            back = _wait(lambda: _running(controller, "r6") == REDEPLOYED
                         and all(node != victim_node for _, node in _live(swarm, controller, "r6"))
                         and len(_live(swarm, controller, "r6")) == REDEPLOYED,
                         "full count after the kill", interval=0.2)
            time.sleep(1)
        figures["kill.full"].append(back - killed)
        figures["kill.failed"].append(float(poller.failed))
        say(f"       worker engine killed → {REDEPLOYED} instances healthy again in {back - killed:.1f} s, "
            f"{poller.failed} of {poller.total} requests failed")
    finally:
        swarm.close()
    units = {"redeploy.failed": "requests", "kill.failed": "requests"}
    return {f"cluster.{k}": summary(v, units.get(k, "s")) for k, v in figures.items() if v}


def _live(swarm, node: BenchNode, app: str) -> list[tuple[str, str]]:  # noqa: ANN001
    return [(t.id, t.node_id) for s in swarm.list_services({labels.NODE: node.home.node_id, labels.APP: app})
            for t in s.tasks if t.running]


def _docker_service_30(swarm, template: dict, name: str) -> float:  # noqa: ANN001
    """`docker service create --replicas 30` of fence's task template (same image digest, user,
    caps, pids, memory, ulimits, init, log options, restart policy), ≤ 10 per node, no published
    port → seconds until 30 tasks run; the service is removed afterwards."""
    import docker.types

    api = swarm._api()  # noqa: SLF001 - the baseline is the engine itself
    template = dict(template)
    template.pop("ForceUpdate", None)
    template["Placement"] = {"MaxReplicas": SCALED // 3}
    spec = dict(template["ContainerSpec"])
    spec["Labels"] = {}
    template["ContainerSpec"] = spec
    began = time.monotonic()
    created = api.create_service(template, name=name, mode=docker.types.ServiceMode("replicated", replicas=SCALED))
    try:
        done = _wait(lambda: sum(1 for t in api.tasks(filters={"service": created["ID"], "desired-state": "running"})
                                 if (t.get("Status") or {}).get("State") == "running") == SCALED,
                     "30 docker service tasks running", interval=0.2)
        return done - began
    finally:
        api.remove_service(created["ID"])
        _wait(lambda: not _tasks_left(api, created["ID"]), "baseline tasks gone", timeout=120)


def _tasks_left(api, service: str) -> bool:  # noqa: ANN001
    import docker.errors

    try:
        return any((t.get("Status") or {}).get("State") not in ("shutdown", "complete", "failed", "rejected")
                   for t in api.tasks(filters={"service": service}))
    except docker.errors.NotFound:
        return False


def _services_text(engine) -> str:  # noqa: ANN001
    """`docker service ls` and the tasks that are not running (for a failure's message)."""
    listed = engine.docker("service", "ls", check=False).stdout
    ids = engine.docker("service", "ls", "-q", check=False).stdout.split()
    tasks = engine.docker("service", "ps", "--format", "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}} "
                          "{{.Error}}", *ids, check=False).stdout if ids else ""
    return listed + "\n".join(line for line in tasks.splitlines() if "Running" not in line)[:4000]
