"""The composition root: builds fence's object graph (home, config, engine backend, store, service)."""

from __future__ import annotations

from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.home import NodeHome


def config_store(home: NodeHome) -> ConfigStore:
    """The config store of a node home."""
    return ConfigStore(host_file=home.host_config)


def docker_backend(config: ConfigStore) -> ContainerBackend:
    """The real engine backend; ``security/require_userns`` is read at every create."""
    from fence.backend.docker import DockerBackend

    return DockerBackend(require_userns=lambda: bool(config.fence("security/require_userns")))


# ``router=`` left out: the node's nginx; ``router=None``: no router at all (tests, tools).
NGINX = object()


def node_service(home: NodeHome, *, backend: ContainerBackend | None = None, router: object | None = NGINX,
                 manager_options: dict | None = None, firewall: object | None = None,
                 cluster: object | None = None):  # noqa: ANN201
    """The service facade for a node, with the real engine and nginx unless others are given.

    Args:
        home: the node's FENCE_HOME.
        backend: a container backend (default: the Docker Engine).
        router: a router (default: nginx under FENCE_HOME/router); ``None`` for none (nothing
            routes, no nginx is ever started: a unit test's node must not take the node's port).
        manager_options: extra InstanceManager arguments (tests: clock, health, drain).
        firewall: the host firewall (default: iptables with the Docker Engine; with another
            backend, an in-memory fake: a test backend never touches the host's tables).
        cluster: the ClusterBackend a controller schedules on (default: the Swarm of the
            node's engine); used only when ``cluster/role`` is ``controller``.

    Returns:
        A ``fence.service.NodeService``.
    """
    from fence.apps import AppOps
    from fence.droplets import DropletStore
    from fence.layout import AppUser
    from fence.running.images import DropletImages
    from fence.router.feed import RouteFeed
    from fence.running.starter import InstanceStarter
    from fence.kept_sources import KeptSources
    from fence.service import NodeService
    from fence.staging.buildpacks import BuildpackResolver, builtin_dir
    from fence.staging.session import StagingSession
    from fence.staging.stager import Stager
    from fence.store import StateStore

    home.ensure()
    config = config_store(home)
    engine = backend if backend is not None else docker_backend(config)
    store = StateStore(host_db=home.host_db)
    droplets = DropletStore(host_dir=home.host_droplets)
    app_user = AppUser(config=config, backend=engine, host_file=home.host_app_uid)
    stager = Stager(backend=engine, config=config, droplets=droplets, store=store, home=home,
                    node_id=home.node_id, app_user=app_user,
                    resolver=BuildpackResolver(host_builtin=builtin_dir(),
                                               host_cache=home.host_buildpack_cache, config=config))
    images = DropletImages(backend=engine, config=config, droplets=droplets, node_id=home.node_id,
                           app_user=app_user)
    starter = InstanceStarter(backend=engine, config=config, images=images, node_id=home.node_id,
                              app_user=app_user)
    node_router = nginx_router(home) if router is NGINX else router
    feed = RouteFeed(router=node_router, config=config) if node_router is not None else None
    manager = scheduler(config, engine=engine, store=store, starter=starter, node_id=home.node_id, routes=feed,
                        options=manager_options, cluster=cluster)
    from fence.drains.hub import DrainHub
    from fence.drains.ops import DrainOps, StoredDrains
    from fence.drains.taps import InstanceTaps

    drain_source = StoredDrains(store=store, config=config)  # issue 18: log drains
    hub = DrainHub(source=drain_source)
    drains = DrainOps(store=store, hub=hub, taps=InstanceTaps(backend=engine, hub=hub, node_id=home.node_id),
                      loopback_ok=drain_source.loopback_ok)
    apps = AppOps(store=store, config=config, manager=manager, starter=starter, backend=engine,
                  droplets=droplets, home=home, node_id=home.node_id, routing=node_router is not None, drains=hub)
    session = StagingSession(config=config, stager=stager, store=store,
                             sources=KeptSources(home=home), home=home, app_user=app_user, drains=hub)
    if firewall is None:
        from fence.backend.firewall import FakeFirewall, IptablesFirewall

        firewall = IptablesFirewall() if backend is None else FakeFirewall()
    from fence.running.cron import CronScheduler

    cron = CronScheduler(store=store, config=config, starter=starter, home=home, drains=hub)
    service = NodeService(home=home, config=config, backend=engine, store=store, session=session,
                          droplets=droplets, apps=apps, manager=manager, router=node_router,
                          firewall=firewall, cron=cron, drains=drains)
    service.services = service_ops(home, config=config, backend=engine, store=store, apps=apps)
    starter.service_env = service.services.env_for
    return service


def scheduler(config: ConfigStore, *, engine: ContainerBackend, store, starter, node_id: str, routes,  # noqa: ANN001, ANN201
              options: dict | None, cluster: object | None):
    """The scheduler seam (``fence.running.scheduler.Scheduler``): the local InstanceManager, or on
    a cluster's controller (``cluster/role`` controller) the SwarmScheduler (issue 17)."""
    if str(config.fence("cluster/role")) == "controller":
        from fence.cluster.scheduler import SwarmScheduler

        if cluster is None:
            from fence.backend.swarm import SwarmBackend

            cluster = SwarmBackend()
        extra = {k: v for k, v in (options or {}).items() if k in ("probe", "drain_seconds", "clock")}
        return SwarmScheduler(cluster=cluster, store=store, config=config, starter=starter, node_id=node_id,
                              routes=routes, **extra)
    from fence.running.manager import InstanceManager

    return InstanceManager(backend=engine, store=store, config=config, starter=starter,
                           node_id=node_id, routes=routes, **(options or {}))


def service_ops(home: NodeHome, *, config: ConfigStore, backend: ContainerBackend, store, apps):  # noqa: ANN001, ANN201
    """The backing services of a node (issue 16): ``fence.services.ops.ServiceOps``."""
    from fence.services.backups import ServiceBackups
    from fence.services.credentials import CredentialStore
    from fence.services.lifecycle import ServiceManager
    from fence.services.ops import ServiceOps
    from fence.services.records import ServiceRecords

    records = ServiceRecords(host_db=home.host_db)
    credentials = CredentialStore(home=home)
    manager = ServiceManager(backend=backend, config=config, records=records, credentials=credentials,
                             node_id=home.node_id, app_exists=lambda app: store.app(app) is not None)
    backups = ServiceBackups(home=home, manager=manager, records=records, config=config)

    def started(app: str) -> bool:
        record = store.app(app)
        return record is not None and record.started and record.release is not None

    return ServiceOps(manager=manager, backups=backups, records=records, credentials=credentials,
                      config=config, app_started=started,
                      restart_app=lambda app, on_line, note: apps.restart(app, on_line, note=note, release_phase=True))


def nginx_router(home: NodeHome):  # noqa: ANN201
    """The node's nginx router under FENCE_HOME/router."""
    from fence.router.nginx import NginxRouter

    return NginxRouter(host_dir=home.host_router)
