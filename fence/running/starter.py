"""Creates instance and task containers from a droplet's image and a rendered start script."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Mapping

from fence import labels
from fence.backend.base import Container, ContainerBackend
from fence.config import ConfigStore
from fence.errors import ImageNotFound, UsageError
from fence.image_apps import is_image_droplet
from fence.layout import CONTAINER_PATH, AppUser, Workspace
from fence.limits import container_limits
from fence.models import WEB_PROCESS, AppRecord, ContainerSpec, DropletRecord, PortSpec, ProcessSpec
from fence.running.images import DropletImage, DropletImages
from fence.running.networks import AppNetworks
from fence.running.script import SLOT_ENV, StartScript, render_start_script, slot_index_shell
from fence.tarstream import TarMember, tar_stream

CONTAINER_PORT = 8080
_SCRIPT_NAME = "fence-start"  # $0 of the start script
_MAX_ARG = 120 * 1024  # Linux refuses an argument or env string longer than 128 KiB (MAX_ARG_STRLEN)
# An instance's start script travels in this variable of its container's config; the command
# takes it out of the environment (the app never sees it) and runs it. Its text stays out of
# every process's command line (ps, pgrep -f).
SCRIPT_ENV = "FENCE_START_SCRIPT"
_BY_ENV = ("/bin/bash", "-c", f'fence_script=${SCRIPT_ENV}; unset {SCRIPT_ENV}; eval "$fence_script"',
           _SCRIPT_NAME)


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
        process: the process type an instance runs (``web`` gets $PORT and a published port).
    """

    app: AppRecord
    release: int
    droplet: DropletRecord
    index: int
    role: str = labels.ROLE_INSTANCE
    command_argv: tuple[str, ...] = ()
    process: str = WEB_PROCESS

    @property
    def web(self) -> bool:
        """Whether it runs the web process (or is a task, which gets the web env)."""
        return self.process == WEB_PROCESS

    @property
    def memory_mib(self) -> int:
        """The container's memory limit: its type's, else the app's."""
        return self.app.memory_for(self.process)

    @property
    def command(self) -> str:
        """The process type's command from the droplet's process table."""
        if self.web:
            return self.droplet.start_command or ""
        return str(self.droplet.process_types.get(self.process, ""))


class InstanceStarter:
    """Builds and starts containers for instances and one-off tasks.

    Attributes:
        networks: the apps' own networks (every container of an app joins only its app's).

    Args:
        backend: the engine.
        config: node config (read at every start).
        images: makes the droplet images instances start from.
        node_id: this node's id.
        app_user: decides the uid instances and tasks run as.
    """

    def __init__(self, *, backend: ContainerBackend, config: ConfigStore, images: DropletImages,
                 node_id: str, app_user: AppUser) -> None:
        self._backend = backend
        self._config = config
        self._images = images
        self._node_id = node_id
        self._app_user = app_user
        self.networks = AppNetworks(backend=backend, node_id=node_id)
        # The env of the app's bound services (issue 16; set by wiring): app name → variables.
        self.service_env: Callable[[str], Mapping[str, str]] = lambda app: {}

    def workspace(self) -> Workspace:
        """The app user's paths (the same in every container fence makes)."""
        return Workspace.of(self._config, self._app_user)

    def env(self, launch: Launch) -> dict[str, str]:
        """The environment of an instance: the droplet's config_vars, the app's env, then fence's
        (a type other than web gets no ``PORT``: nothing routes to it)."""
        ws = self.workspace()
        app = launch.app
        domain = str(self._config.fence("router/domain"))
        uris = [f"{app.name}.{domain}", *app.urls]
        vcap = {
            "application_name": app.name, "name": app.name, "application_id": app.name,
            "application_version": f"{app.name}-r{launch.release}", "version": f"r{launch.release}",
            "instance_index": launch.index, "application_uris": uris, "uris": uris,
            "limits": {"mem": launch.memory_mib}, "port": CONTAINER_PORT,
            "droplet": launch.droplet.id,
        }
        if not launch.web:
            del vcap["port"]
            vcap["process_type"] = launch.process
        env = {
            **launch.droplet.config_vars,
            **app.env,
            **self.service_env(app.name),
            "HOME": str(ws.ctr_home),
            "USER": str(self._config.fence("container/user")),
            "PATH": CONTAINER_PATH,
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "PORT": str(CONTAINER_PORT),
            "VCAP_APP_PORT": str(CONTAINER_PORT),
            "INSTANCE_INDEX": str(launch.index),
            "STACKATO_APP_NAME": app.name,
            "MEMORY_LIMIT": f"{launch.memory_mib}m",
            "VCAP_APPLICATION": json.dumps(vcap, sort_keys=True),
        }
        if not launch.web:
            del env["PORT"], env["VCAP_APP_PORT"]
            env["FENCE_PROCESS_TYPE"] = launch.process
        return env

    def prepare(self, droplet: DropletRecord, memory_mib: int) -> DropletImage:
        """Make the droplet's image on the current stack now (a deploy does, so that its first
        instance starts at once); see ``DropletImages.ensure``."""
        return self._images.ensure(droplet, memory_mib=memory_mib)

    def script(self, launch: Launch, *, slot_base: int | None = None) -> str:
        """The start script of a launch (rendered from the jinja2 template); ``slot_base``: a
        Swarm task's (``StartScript.slot_base``)."""
        ws = self.workspace()
        return render_start_script(StartScript(
            app=launch.app.name, role=launch.role, index=launch.index, process=launch.process,
            ctr_app=ws.ctr_app, env=tuple(sorted(self.env(launch).items())), hooks=launch.droplet.pre_running,
            ctr_admin_hook=ws.ctr_admin_hook("pre-running"),
            command=launch.command, command_argv=launch.command_argv, slot_base=slot_base))

    def task_argv(self, launch: Launch) -> tuple[str, ...]:
        """What a task container execs: its start script, which ends in the task's command (an
        image app's task runs its command as it is, in the env its container has)."""
        if is_image_droplet(launch.droplet.builder):
            return launch.command_argv
        return ("/bin/bash", "-c", self.script(launch), _SCRIPT_NAME)

    def task_process(self, launch: Launch, *, timeout: float) -> ProcessSpec:
        """The process a task container runs (``task_argv``) as the app's user, in its folder."""
        ws = self.workspace()
        if is_image_droplet(launch.droplet.builder):
            return ProcessSpec(argv=self.task_argv(launch), user=launch.droplet.run_user,
                               cwd=PurePosixPath(launch.droplet.workdir or "/"), timeout=timeout)
        return ProcessSpec(argv=self.task_argv(launch), user=f"{ws.uid}:{ws.uid}", cwd=ws.ctr_app, timeout=timeout)

    def image_env(self, launch: Launch) -> dict[str, str]:
        """An image app's env: ``env`` without fence's PATH (the image's own stays), HOME as
        ``run_as`` said (the image's own when it keeps its USER)."""
        env = self.env(launch)
        del env["PATH"]
        if launch.droplet.run_home:
            env["HOME"] = launch.droplet.run_home
        else:
            del env["HOME"], env["USER"]
        return env

    def service_parts(self, launch: Launch, *, slot_base: int = 0) -> tuple[DropletImage, str, tuple[str, ...] | None,
                                                                         dict[str, str], str]:
        """What a Swarm service of ``launch`` runs (issue 17): the droplet image (made first if
        missing), user, command, env and working directory, as ``launch`` would start them; each
        task's ``INSTANCE_INDEX`` is ``slot_base`` plus its slot less one (``SLOT_ENV``).

        Raises:
            UsageError: a start script too long for one environment string (no file can be
                copied into a service's containers).
        """
        ws = self.workspace()
        image = self._images.ensure(launch.droplet, memory_mib=launch.memory_mib)
        if is_image_droplet(launch.droplet.builder):
            command = f"{slot_index_shell(slot_base)}; {launch.command}"
            return (image, launch.droplet.run_user, ("/bin/sh", "-c", command),
                    {**self.image_env(launch), SLOT_ENV: "{{.Task.Slot}}"}, launch.droplet.workdir or "/")
        script = self.script(launch, slot_base=slot_base)
        if len(script.encode()) > _MAX_ARG:
            raise UsageError(detail=f"the start script of {launch.app.name} is over {_MAX_ARG // 1024} KiB "
                                    "(a very large env): a cluster instance cannot carry it")
        env = {**ws.base_env, SCRIPT_ENV: script, SLOT_ENV: "{{.Task.Slot}}"}
        return image, f"{ws.uid}:{ws.uid}", _BY_ENV, env, str(ws.ctr_home)

    def launch(self, launch: Launch) -> Container:
        """Create the container from the droplet's image (made first if missing) and start it.

        The start script travels in the container's config (``SCRIPT_ENV``): nothing is copied
        in, so an instance starts like ``docker run`` of a ready image. A script too long for
        one environment string (a very large app env) is copied in as a file instead. The
        container joins the app's own network (made first if missing), and no other. A web
        instance publishes its port on ``container/bind_address``; another type's instance and a
        task get no port, and a task idles until its command is exec'd (``task_argv``).

        Returns:
            The started container (the caller owns its life from here).

        Raises:
            ImageNotFound: no stack image on the node.
            DropletNotFound: the droplet file is gone.
            DropletImageFailed: the droplet could not be unpacked onto the stack.
            EngineUnavailable, EngineError: the engine failed.
        """
        ws = self.workspace()
        task = launch.role == labels.ROLE_TASK
        image = self._images.ensure(launch.droplet, memory_mib=launch.memory_mib)
        as_image = is_image_droplet(launch.droplet.builder)
        script = "" if task or as_image else self.script(launch)
        ctr_script = ws.ctr_home / ".fence-start.sh"
        by_file = len(script.encode()) > _MAX_ARG
        command = None if task else ("/bin/bash", str(ctr_script)) if by_file else _BY_ENV
        env = ws.base_env
        user, workdir = f"{ws.uid}:{ws.uid}", ws.ctr_home
        if as_image:  # issue 15: the image runs as it is, its command in its own shell
            env, user = self.image_env(launch), launch.droplet.run_user
            workdir = PurePosixPath(launch.droplet.workdir or "/")
            command = None if task else ("/bin/sh", "-c", launch.command)
        elif command is _BY_ENV:
            env[SCRIPT_ENV] = script
        network = self.networks.ensure(launch.app.name)

        def spec(image: DropletImage) -> ContainerSpec:
            return ContainerSpec(
                image=image.ref,
                labels=labels.owned(self._node_id, launch.role, app=launch.app.name, droplet=launch.droplet.id,
                                    instance=str(launch.index), release=str(launch.release),
                                    stack_id=image.stack_id, stack_ref=image.stack_ref,
                                    **({} if task else {"process": launch.process})),
                user=user,
                command=command,
                env=env,
                workdir=workdir,
                limits=container_limits(self._config, launch.memory_mib),
                ports=() if task or not launch.web else (PortSpec(container_port=CONTAINER_PORT,
                                                host_ip=str(self._config.fence("container/bind_address"))),),
                network=network,
            )
        try:
            container = self._backend.create(spec(image))
        except ImageNotFound:
            # Removed since it was last seen (gc, or by hand): make it again, once.
            self._images.forget(image.ref)
            container = self._backend.create(spec(self._images.ensure(launch.droplet,
                                                                      memory_mib=launch.memory_mib)))
        except UsageError:
            if not self.networks.missing(launch.app.name):
                raise
            # The network was removed since this process made it (by hand): make it again, once.
            network = self.networks.ensure(launch.app.name)
            container = self._backend.create(spec(image))
        try:
            if by_file:
                container.stream_in(PurePosixPath("/"), tar_stream([TarMember(
                    name=str(ctr_script).lstrip("/"), mode=0o700, uid=ws.uid, data=script.encode())]))
            container.start()
        except BaseException:
            container.destroy()
            raise
        return container

