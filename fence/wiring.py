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


def node_service(home: NodeHome, *, backend: ContainerBackend | None = None):  # noqa: ANN201
    """The service facade for a node, with the real engine unless a backend is given.

    Returns:
        A ``fence.service.NodeService``.
    """
    from fence.droplets import DropletStore
    from fence.service import NodeService
    from fence.staging.buildpacks import BuildpackResolver, builtin_dir
    from fence.staging.stager import Stager
    from fence.staging.workspace import HostPaths
    from fence.store import StateStore

    home.ensure()
    config = config_store(home)
    engine = backend if backend is not None else docker_backend(config)
    store = StateStore(host_db=home.host_db)
    paths = HostPaths(host_root=home.host_root)
    droplets = DropletStore(host_dir=home.host_root / "droplets")
    stager = Stager(backend=engine, config=config, droplets=droplets, store=store, paths=paths,
                    node_id=home.node_id,
                    resolver=BuildpackResolver(host_builtin=builtin_dir(),
                                               host_cache=paths.host_buildpack_cache))
    return NodeService(home=home, config=config, backend=engine, store=store, stager=stager,
                       droplets=droplets)
