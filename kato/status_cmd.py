"""`kato status`: the daemon, the engine, user namespaces, the stack and warnings, via the API."""

from __future__ import annotations

import click

from fence.client import FenceClient
from fence.console import debug_option, render, warn
from fence.home import NodeHome
from fence.models import AppUid, NodeStatus
from fence.wire import to_wire


def api_client() -> FenceClient:
    """A client for this node's daemon."""
    return FenceClient(host_socket=NodeHome.from_env().host_socket)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@debug_option
def status(as_json: bool) -> None:
    """Show the daemon, the Docker Engine, userns remapping, the stack image and warnings."""
    info = api_client().info()
    if as_json:
        click.echo(render(to_wire(info), "json"))
        return
    from kato.cluster_cmd import status_lines

    cluster_lines, cluster_warnings = status_lines()
    click.echo("\n".join([_text(info), *cluster_lines]))
    for message in [*info.warnings, *cluster_warnings]:
        warn(message)


def _app_uid(app_uid: AppUid) -> str:
    if app_uid.remapped:
        return f"{app_uid.uid} (container/uid; the engine maps it to an unprivileged host uid)"
    why = ("picked: no host account has it, and the engine does not remap"
           if app_uid.source == "picked" else "container/uid, set by the admin; the engine does not remap")
    owner = f"; it is host {app_uid.host_owner}!" if app_uid.host_owner else ""
    return f"{app_uid.uid} ({why}){owner}"


def _text(info: NodeStatus) -> str:
    lines = [
        f"daemon:        running (pid {info.daemon_pid}, since {info.started_at}), fence {info.version}",
        f"node:          {info.node_id} at {info.home} (state schema v{info.schema_version})",
    ]
    if info.engine is None:
        lines.append(f"engine:        NOT REACHABLE ({info.engine_error})")
    else:
        engine = info.engine
        lines.append(f"engine:        Docker {engine.version} (API {engine.api_version}), "
                     f"{engine.storage_driver}, cgroup v{engine.cgroup_version}")
        lines.append(f"userns remap:  {'on' if engine.userns_remap else 'OFF'}")
        lines.append(f"seccomp:       {'on' if engine.seccomp else 'OFF'}")
    if info.app_uid is not None:
        lines.append(f"app uid:       {_app_uid(info.app_uid)}")
    if info.stack is not None:
        stack = info.stack
        state = ("present" if stack.present else
                 f"MISSING, using fallback {stack.in_use}" if stack.fallback else "MISSING")
        image_id = f" ({stack.image_id[:19]})" if stack.image_id else ""
        lines.append(f"stack:         {stack.configured}: {state}{image_id}")
    if info.router is not None:
        from fence.router.render import listen_address  # here: it brings jinja2, which only this line needs

        router = info.router
        state = f"running (pid {router.pid})" if router.running else "NOT RUNNING"
        lines.append(f"router:        {state}, on {listen_address(router.address, router.port)}, "
                     f"domain {router.domain}, {router.routes} routes, "
                     f"last reload {router.last_reload or 'never'}")
    roles = ", ".join(f"{n} {role}" for role, n in info.containers.items()) or "none"
    lines.append(f"apps:          {info.apps}")
    lines.append(f"containers:    {roles}")
    for drain in info.drains:  # issue 18: log drains
        owner = drain.app or "node"
        error = f", last error: {drain.error} (at {drain.error_at})" if drain.error else ""
        lines.append(f"drain:         {owner}/{drain.name} {drain.state.upper() if drain.state == 'down' else drain.state}, "
                     f"{drain.sent} sent, {drain.dropped} dropped, {drain.queued} queued, to {drain.url}{error}")
    if info.services:  # issue 16
        states = ", ".join(f"{n} {state}" for state, n in info.services.items())
        backups = f"every {info.backup_interval} s" if info.backup_interval else "off (services/backup_interval)"
        lines.append(f"services:      {states}; periodic backups {backups}")
    return "\n".join(lines)
