"""Creates instance and task containers from the stack, a droplet and a rendered start script."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from fence import labels
from fence.backend.base import Container, ContainerBackend
from fence.config import ConfigStore
from fence.droplets import DropletStore
from fence.models import AppRecord, ContainerSpec, DropletRecord, Limits, PortSpec
from fence.running.script import StartScript, render_start_script
from fence.stack.resolve import stack_image
from fence.staging.workspace import ADMIN_HOOKS, Workspace
from fence.tarstream import TarMember, tar_stream

CONTAINER_PORT = 8080
RELEASE_LABEL = "fence.release"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Launch:
    """One container to start from an app's droplet.

    Attributes:
        app: the app's desired state.
        release: the release number it runs.
        droplet: the droplet's record.
        index: the instance index (``0`` for a task).
        role: ``labels.ROLE_INSTANCE`` or ``labels.ROLE_TASK``.
        command_argv: for a task: the command to run (its container idles until then).
    """

    app: AppRecord
    release: int
    droplet: DropletRecord
    index: int
    role: str = labels.ROLE_INSTANCE
    command_argv: tuple[str, ...] = ()


class InstanceStarter:
    """Builds and starts containers for instances and one-off tasks.

    Args:
        backend: the engine.
        config: node config (read at every start).
        droplets: the droplet store.
        node_id: this node's id.
    """

    def __init__(self, *, backend: ContainerBackend, config: ConfigStore, droplets: DropletStore,
                 node_id: str) -> None:
        self._backend = backend
        self._config = config
        self._droplets = droplets
        self._node_id = node_id

    def workspace(self) -> Workspace:
        """The app user's paths (the same as staging's)."""
        return Workspace(ctr_home=PurePosixPath("/home") / str(self._config.fence("container/user")),
                         uid=int(self._config.fence("container/uid")))

    def env(self, launch: Launch) -> dict[str, str]:
        """The environment of an instance: the droplet's config_vars, the app's env, then fence's."""
        ws = self.workspace()
        app = launch.app
        domain = str(self._config.fence("router/domain"))
        uris = [f"{app.name}.{domain}", *app.urls]
        vcap = {
            "application_name": app.name, "name": app.name, "application_id": app.name,
            "application_version": f"{app.name}-r{launch.release}", "version": f"r{launch.release}",
            "instance_index": launch.index, "application_uris": uris, "uris": uris,
            "limits": {"mem": app.memory_mib}, "port": CONTAINER_PORT,
            "droplet": launch.droplet.id,
        }
        return {
            **launch.droplet.config_vars,
            **app.env,
            "HOME": str(ws.ctr_home),
            "USER": str(self._config.fence("container/user")),
            "PATH": _PATH,
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "PORT": str(CONTAINER_PORT),
            "VCAP_APP_PORT": str(CONTAINER_PORT),
            "INSTANCE_INDEX": str(launch.index),
            "STACKATO_APP_NAME": app.name,
            "MEMORY_LIMIT": f"{app.memory_mib}m",
            "VCAP_APPLICATION": json.dumps(vcap, sort_keys=True),
        }

    def launch(self, launch: Launch) -> Container:
        """Create the container, copy the droplet and start script in, and start it.

        A web instance publishes its port on ``container/bind_address``; a task gets no port.

        Returns:
            The started container (the caller owns its life from here).

        Raises:
            ImageNotFound: no stack image on the node.
            DropletNotFound: the droplet file is gone.
            EngineUnavailable, EngineError: the engine failed.
        """
        ws = self.workspace()
        env = self.env(launch)
        task = launch.role == labels.ROLE_TASK
        ctr_droplet = ws.ctr_home / ".fence-droplet.tgz"
        script = StartScript(
            app=launch.app.name, role=launch.role, index=launch.index, process="web",
            ctr_app=ws.ctr_app, env=tuple(sorted(env.items())), hooks=launch.droplet.pre_running,
            ctr_admin_hook=ADMIN_HOOKS / "pre-running",
            command=launch.droplet.start_command or "", command_argv=launch.command_argv,
            ctr_droplet=ctr_droplet)
        ctr_script = ws.ctr_home / ".fence-start.sh"
        spec = ContainerSpec(
            image=stack_image(config=self._config, backend=self._backend),
            labels={**labels.owned(self._node_id, launch.role, app=launch.app.name,
                                   droplet=launch.droplet.id, instance=str(launch.index)),
                    RELEASE_LABEL: str(launch.release)},
            user=f"{ws.uid}:{ws.uid}",
            command=None if task else ("/bin/bash", str(ctr_script)),
            env={"HOME": str(ws.ctr_home), "PATH": _PATH},
            workdir=ws.ctr_home,
            limits=self._limits(launch.app.memory_mib),
            ports=() if task else (PortSpec(container_port=CONTAINER_PORT,
                                            host_ip=str(self._config.fence("container/bind_address"))),),
            network="bridge",
        )
        host_droplet = self._droplets.host_path(launch.droplet.id)
        home = str(ws.ctr_home).lstrip("/")
        # One engine call copies the home folder, the start script and the droplet, still packed:
        # the engine writing the droplet's files one by one costs far more than unpacking it with
        # tar inside the container, which the start script does first.
        bundle = tar_stream([
            TarMember(name=home, mode=0o755, uid=ws.uid, directory=True),
            # A task's command runs in the app folder (as an exec) before the script unpacks it.
            TarMember(name=str(ws.ctr_app).lstrip("/"), mode=0o755, uid=ws.uid, directory=True),
            TarMember(name=f"{home}/{ctr_script.name}", mode=0o755, uid=ws.uid,
                      data=render_start_script(script).encode()),
            TarMember(name=f"{home}/{ctr_droplet.name}", mode=0o600, uid=ws.uid, host_file=host_droplet),
        ])
        container = self._backend.create(spec)
        try:
            container.stream_in(PurePosixPath("/"), bundle)
            container.start()
        except BaseException:
            container.destroy()
            raise
        return container

    def _limits(self, memory_mib: int) -> Limits:
        fence = self._config.fence
        return Limits(memory_bytes=memory_mib * 1024 * 1024, pids=int(fence("max_container_processes")),
                      cpu_shares=int(fence("container/cpu_shares")), nofile=int(fence("container/nofile")),
                      log_max_size=str(fence("container/log_max_size")),
                      log_max_files=int(fence("container/log_max_files")))

