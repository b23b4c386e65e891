"""Renders an instance's start script from a jinja2 template: a pure function of its inputs."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
import jinja2

from fence.errors import InternalError
from fence.rules import ENV_NAME

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("fence.running", "templates"),
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)
_ENVIRONMENT.filters["q"] = lambda value: shlex.quote(str(value))


@dataclass(frozen=True)
class StartScript:
    """What a start script does.

    Attributes:
        app: the app's name.
        role: ``instance`` or ``task``.
        index: the instance index.
        process: the process type (``web`` …).
        ctr_app: the app folder.
        env: exported in this order.
        hooks: pre-running hook commands (a leading ``-`` lets one fail).
        ctr_admin_hook: the stack's admin pre-running hook (run when executable).
        command: the process command, run with ``bash -c``.
        command_argv: an argv to exec directly instead of ``command`` (one-off tasks).
        slot_base: a Swarm task's (issue 17): its index is this plus its task slot less one
            (``SLOT_ENV``, 1-based, filled in by Swarm), in ``INSTANCE_INDEX`` and
            ``VCAP_APPLICATION``; ``None``: ``index`` as it is.
    """

    app: str
    role: str
    index: int
    process: str
    ctr_app: PurePosixPath
    env: tuple[tuple[str, str], ...]
    hooks: tuple[str, ...]
    ctr_admin_hook: PurePosixPath
    command: str = ""
    command_argv: tuple[str, ...] = ()
    slot_base: int | None = None


# A Swarm task's slot (1-based) in its service: the service's env sets it to ``{{.Task.Slot}}``.
SLOT_ENV = "FENCE_TASK_SLOT"


def slot_index_shell(base: int) -> str:
    """Shell that sets and exports ``INSTANCE_INDEX`` from a Swarm task's slot (``SLOT_ENV``)."""
    return f"INSTANCE_INDEX=$(( {int(base)} + ${{{SLOT_ENV}:-1}} - 1 )); export INSTANCE_INDEX"


def render_start_script(script: StartScript) -> str:
    """The bash start script: cd to the app (unpacked in the droplet's image), export env,
    source ``.profile.d``, run pre-running hooks (app's, then admin's), then ``exec`` the process.

    Raises:
        InternalError: an env name that is not an identifier (callers check names earlier).
    """
    for name, _ in script.env:
        if not ENV_NAME.fullmatch(name):
            raise InternalError(detail=f"env name {name!r} reached the start script")
    hooks = [{"tolerant": h.startswith("-"), "command": h[1:].lstrip() if h.startswith("-") else h}
             for h in script.hooks]
    return _ENVIRONMENT.get_template("start.sh.j2").render(
        app=script.app, role=script.role, index=script.index, process=script.process,
        app_dir=str(script.ctr_app), env=list(script.env), hooks=hooks,
        admin_hook=str(script.ctr_admin_hook), command=script.command,
        command_argv=list(script.command_argv), slot_base=script.slot_base, slot_env=SLOT_ENV)

