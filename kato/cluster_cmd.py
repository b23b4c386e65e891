"""`kato cluster …` and `kato node list|drain|activate`: a Swarm cluster of fence nodes, on the engine directly.

Like `kato config` and `kato image build`, these work on the node's engine (DOCKER_HOST, else the
local socket) and config, so a node can be formed or joined before its daemon runs.
"""

from __future__ import annotations

import click

from fence.console import debug_option, render
from fence.errors import JoinRefused
from fence.home import NodeHome


def _config():  # noqa: ANN202 - ConfigStore, imported here to keep `import kato.cli` light
    from fence.wiring import config_store

    return config_store(NodeHome.from_env())


def _backend():  # noqa: ANN202 - the SwarmBackend (brings the docker SDK)
    from fence.backend.swarm import SwarmBackend

    return SwarmBackend()


def _set(store, key: str, value: str) -> None:  # noqa: ANN001
    store.set("fence", key, value)


@click.group()
@debug_option
def cluster() -> None:
    """Form, join and leave a Swarm cluster of fence nodes."""


@cluster.command("init")
@debug_option
def init_cmd() -> None:
    """Make this node the cluster's controller: Swarm init (or adopt) and start the registry."""
    from fence.cluster.registry import Registry

    store = _config()
    backend = _backend()
    listen = store.fence("cluster/listen_address")
    state = backend.swarm_init(listen_addr=listen, advertise_addr=store.fence("cluster/advertise_address") or None)
    advertise = store.fence("cluster/advertise_address") or next(iter(state.manager_addresses), listen)
    address = store.fence("cluster/registry_address")
    registry = Registry(home=NodeHome.from_env()).ensure(address=address)
    _set(store, "cluster/role", "controller")
    _set(store, "cluster/manager_address", advertise)
    click.echo(f"-----> Swarm {state.cluster_id[:12]} managed by this node ({state.node_id[:12]}), "
               f"on {advertise}")
    # The controller is a node too: one whose engine fails a join check takes no app task.
    checks = backend.engine_checks(probe_image=store.fence("docker/image"))
    if checks.problems:
        backend.set_availability(state.node_id, "drain")
        click.echo(f"-----> This node is drained, so no app instance runs here: {checks.problems[0]} "
                   "(`kato node activate` once it passes)")
    click.echo(f"-----> Registry on {registry.address} (pid {registry.pid})")
    click.echo("-----> Add nodes with the command `kato cluster join-command` prints")


@cluster.command("join-command")
@debug_option
def join_command_cmd() -> None:
    """Print what to run on a new node to join it as a worker."""
    store = _config()
    tokens = _backend().join_tokens()
    manager = store.fence("cluster/manager_address") or _backend().swarm_state().manager_addresses[0]
    click.echo(f"kato cluster join {tokens.worker} {manager}")


@cluster.command("join")
@click.argument("token")
@click.argument("address")
@debug_option
def join_cmd(token: str, address: str) -> None:
    """Check this node's engine, then join it to the cluster whose manager is at ADDRESS.

    Refused, in one line, when the engine does not remap user namespaces, does not set
    no-new-privileges daemon-wide (Swarm services on Engine 20.10 cannot ask for it), or cannot
    reach the controller's registry (cluster/registry_address).
    """
    from fence.cluster.registry import answers
    from fence.config.types import AddressType, BadValue
    from fence.errors import UsageError

    try:
        address = AddressType().check(address)
    except BadValue:
        raise UsageError(detail=f"ADDRESS {address!r} is not IP:PORT (the controller's Swarm address)") from None
    if not token.startswith("SWMTKN-"):
        raise UsageError(detail="TOKEN is not a Swarm join token (SWMTKN-…; `kato cluster join-command` prints one)")
    store = _config()
    backend = _backend()
    checks = backend.engine_checks(probe_image=store.fence("docker/image"))
    if checks.problems:
        raise JoinRefused(detail=checks.problems[0])
    registry = store.fence("cluster/registry_address")
    if not answers(registry):
        raise JoinRefused(detail=f"the cluster registry at {registry} does not answer from this node "
                                 "(set cluster/registry_address to the controller's registry)")
    state = backend.swarm_join(token=token, remote_addr=address, listen_addr=store.fence("cluster/listen_address"),
                               advertise_addr=store.fence("cluster/advertise_address") or None)
    _set(store, "cluster/role", "worker")
    _set(store, "cluster/manager_address", address)
    click.echo(f"-----> Joined the cluster at {address} as node {state.node_id[:12]} "
               f"(remapping on, no-new-privileges on, registry {registry} answers)")


@cluster.command("leave")
@click.option("--force", is_flag=True, help="Also when this node is the controller (the swarm ends).")
@debug_option
def leave_cmd(force: bool) -> None:
    """Leave the cluster (the controller also stops its registry)."""
    from fence.cluster.registry import Registry
    from fence.errors import ClusterError

    store = _config()
    backend = _backend()
    state = backend.swarm_state()
    if state.manager and not force:
        raise ClusterError(detail="this node is the cluster's controller: `kato cluster leave --force` "
                                  "ends the cluster for every node")
    backend.swarm_leave(force=force)
    if store.fence("cluster/role") == "controller":
        Registry(home=NodeHome.from_env()).stop()
    _set(store, "cluster/role", "none")
    _set(store, "cluster/manager_address", "")
    click.echo("-----> Left the cluster; this node is a single node again")


COMMANDS = [cluster]


# --- kato node list|drain|activate (added to kato/node_cmd.py's group) -------------------------

@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def node_list_cmd(as_json: bool) -> None:
    """The cluster's nodes: role, state, availability, running tasks and engine checks.

    The checks are read on every ready, active node by a probe task (a global job, removed
    afterwards): remapping on, and NoNewPrivs 1 in a task that did not ask for it.
    """
    from fence.wire import to_wire

    backend = _backend()
    nodes = backend.list_nodes()
    local = backend.swarm_state().node_id
    checks = node_checks(backend)
    if as_json:
        rows = []
        for n in nodes:
            found = checks.get(n.id)
            rows.append(dict(to_wire(n)) | {"checks": None if found is None else
                                            dict(to_wire(found)) | {"problems": list(found.problems)}})
        click.echo(render(rows, "json"))
        return
    click.echo(f"{'ID':<13} {'ROLE':<8} {'STATE':<12} {'AVAILABILITY':<12} {'TASKS':>5}  {'ENGINE':<16} CHECKS")
    for n in nodes:
        mark = "*" if n.id == local else " "
        found = checks.get(n.id)
        check_text = ("unknown (no probe task reported: node not ready, not active, or without the image)" if found is None else
                      "ok" if not found.problems else "FAILED: " + "; ".join(found.problems))
        click.echo(f"{n.id[:12]}{mark} {n.role:<8} {n.state:<12} {n.availability:<12} {n.tasks:>5}  "
                   f"{n.engine_version[:16]:<16} {check_text}")


def node_checks(backend) -> dict:  # noqa: ANN001
    """Every ready, active node's engine checks, by node id (probe image: the stack, from the
    registry by digest when it answers, so every node can pull it)."""
    from fence.cluster.registry import answers

    store = _config()
    image = store.fence("docker/image")
    registry = store.fence("cluster/registry_address")
    if answers(registry):
        image = backend.push_image(image, registry=registry, repository="fence/probe", tag="latest")
    return backend.probe_nodes(probe_image=image)


def _availability(availability: str, verb: str):  # noqa: ANN202
    @click.command(verb)
    @click.argument("name")
    @debug_option
    def command(name: str) -> None:
        updated = _backend().set_availability(name, availability)
        click.echo(f"-----> Node {updated.id[:12]} ({updated.hostname}) is {updated.availability}")

    command.help = {"drain": "Drain node NAME (id, id prefix or host name): Swarm moves its tasks away.",
                    "active": "Let node NAME (id, id prefix or host name) take tasks again."}[availability]
    return command


NODE_COMMANDS = [node_list_cmd, _availability("drain", "drain"), _availability("active", "activate")]


def status_lines() -> tuple[list[str], list[str]]:
    """`kato status`'s cluster lines and warnings (none on a single node)."""
    from fence.cluster.registry import answers
    from fence.errors import FenceError

    store = _config()
    try:
        role = store.fence("cluster/role")
    except PermissionError:  # a `fence` group member: the daemon answers it, config.yml is root's
        return ["cluster:       not shown (FENCE_HOME/config.yml is readable by root only)"], []
    if role == "none":
        return ["cluster:       none (single node)"], []
    lines, warnings = [f"cluster:       {role}, manager {store.fence('cluster/manager_address')}"], []
    registry = store.fence("cluster/registry_address")
    if not answers(registry):
        warnings.append(f"the cluster registry at {registry} does not answer")
    lines.append(f"registry:      {registry} ({'answers' if not warnings else 'NOT ANSWERING'})")
    backend = _backend()
    if role != "controller":
        checks = backend.engine_checks(probe_image=store.fence("docker/image"))
        warnings.extend(f"this node fails a cluster check: {p}" for p in checks.problems)
        return lines, warnings
    try:
        nodes = backend.list_nodes()
        checks_by_node = node_checks(backend)
    except FenceError as exc:
        return lines, [*warnings, f"the swarm cannot be listed: {exc.message}"]
    warnings.extend(f"cluster node {node[:12]} fails a check: {p}"
                    for node, found in checks_by_node.items() for p in found.problems)
    lines.append(f"nodes:         {len(nodes)} ({sum(n.state == 'ready' for n in nodes)} ready, "
                 f"{sum(n.availability == 'drain' for n in nodes)} drained)")
    warnings.extend(f"cluster node {n.id[:12]} ({n.hostname}) is {n.state}" for n in nodes if n.state != "ready")
    return lines, warnings

