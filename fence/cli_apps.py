"""The `fence` commands that run apps: push, apps, app, start/stop/restart/restage/delete, scale, env, logs, run, releases, rollback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import click

from fence.client import FenceClient
from fence.console import debug_option, render
from fence.home import NodeHome

if TYPE_CHECKING:
    from fence.models import AppView

# Kept to what `fence apps --json` needs (click, the client, the console, home): fence.models,
# fence.wire and fence.rules are imported by the commands that use them, and `--json` prints the
# daemon's answer as it came rather than building dataclasses to turn them back into JSON.


def client() -> FenceClient:
    """A client for this node's daemon."""
    return FenceClient(host_socket=NodeHome.from_env().host_socket)


def _to_wire(value: Any) -> Any:
    """fence.wire's ``to_wire``, imported on first use."""
    from fence.wire import to_wire as encode

    return encode(value)


def absolute_buildpacks(buildpacks: tuple[str, ...]) -> tuple[str, ...]:
    """Local buildpack folders as absolute paths: the daemon resolves paths on its side."""
    return tuple(str(Path(b).expanduser().resolve()) if b.startswith(("./", "../", "~")) or b in (".", "..")
                 else b for b in buildpacks)


def _echo(line: str) -> None:
    click.echo(line)


def _name(name: str) -> str:
    from fence.rules import check_app_name

    return check_app_name(name)


@click.command()
@click.argument("source", default=".")
@click.option("--name", "app", help="App name [default: stackato.yml's name, else the folder's].")
@click.option("--buildpack", "buildpacks", multiple=True, help="Built-in name, folder or git URL[#ref]; repeatable.")
@click.option("--instances", type=click.IntRange(0, 100), help="Web instances [default: stackato.yml's, else 1].")
@click.option("--mem", help="Memory per instance, e.g. 256M or 1G [default: stackato.yml's, else container/memory].")
@click.option("--env", "env_pairs", multiple=True, help="NAME=VALUE for the app; repeatable.")
@click.option("--force", is_flag=True, help="Stage even when the inputs are unchanged (else their droplet is reused).")
@click.option("--builder", help="dockerfile or buildpack [default: stackato.yml's builder:, else dockerfile "
              "when SOURCE has a Dockerfile and no --buildpack is given].")
@click.option("--image", help="Deploy NAME[:TAG|@DIGEST], an image on the node's engine, as it is (SOURCE gives "
              "stackato.yml).")
@click.option("--json", "as_json", is_flag=True, help="Print the app as JSON at the end.")
@debug_option
def push(source: str, app: str | None, buildpacks: tuple[str, ...], instances: int | None, mem: str | None,
         env_pairs: tuple[str, ...], force: bool, builder: str | None, image: str | None, as_json: bool) -> None:
    """Stage SOURCE and run it; a redeploy keeps the old release serving until the new one is healthy."""
    from fence.errors import UsageError
    from fence.image_apps import BUILDERS, check_image_ref
    from fence.rules import check_app_name, env_from_pairs, parse_memory

    if builder is not None and builder not in BUILDERS:
        raise UsageError(detail=f"--builder {builder!r} is not a builder (one of: {', '.join(BUILDERS)})")
    if image is not None:
        check_image_ref(image)
    env_from_pairs(env_pairs)
    if app is not None:
        check_app_name(app)
    if mem is not None:
        parse_memory(mem)
    view = client().push(source=source, app=app, buildpacks=absolute_buildpacks(buildpacks), env_pairs=env_pairs,
                         instances=instances, mem=mem, force=force, builder=builder, image=image, on_line=lambda line: click.echo(line, err=as_json))
    if as_json:
        click.echo(render(_to_wire(view), "json"))
    else:
        click.echo(f"{view.name}: {view.url}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def apps(as_json: bool) -> None:
    """List apps: state, instances running/desired per process type, URL, droplet, stack."""
    if as_json:
        click.echo(render(client().apps_data(), "json"))
        return
    views = client().apps()
    counts = {view.name: type_summary(view) for view in views}
    width = max([len("INSTANCES"), *map(len, counts.values())]) + 2
    click.echo(f"{'NAME':<24}{'STATE':<9}{'INSTANCES':<{width}}{'MEM':>6}  {'RELEASE':<8}{'DROPLET':<14}URL")
    for view in views:
        click.echo(f"{view.name:<24}{view.state:<9}{counts[view.name]:<{width}}{view.memory_mib:>4}M  "
                   f"{('r' + str(view.release)) if view.release else '-':<8}{(view.droplet or '-')[:12]:<14}{view.url}")


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def app(name: str, as_json: bool) -> None:
    """Show one app: URL, instances (state, host port, restarts, uptime), releases."""
    if as_json:
        click.echo(render(client().app_data(_name(name)), "json"))
        return
    view = client().app(_name(name))
    click.echo(_describe(view))


def _describe(view: AppView) -> str:
    lines = [f"{view.name}: {view.state}, {view.running}/{view.instances} running, {view.memory_mib} MiB each",
             f"url:      {', '.join(view.urls)}",
             f"release:  {view.release or '-'} (droplet {(view.droplet or '-')[:12]}, staged on {view.stack_image or '-'})",
             f"types:    {type_summary(view)}"]
    lines.append("instances:")
    kinds = list(dict.fromkeys([*view.processes, *(i.process for i in view.instance_list)]))
    for kind in kinds:
        group = [i for i in view.instance_list if i.process == kind]
        lines.append(f"  {kind}: {view.running_by_process.get(kind, 0)}/{view.processes.get(kind, 0)} running")
        for inst in group:
            reason = f"  ({inst.reason})" if inst.reason else ""
            if not reason and inst.last_crash:  # health checks: why it was last replaced
                reason = f"  (last crash: {inst.last_crash})"
            stack = f"stack {inst.image_id.removeprefix('sha256:')[:12]} " if inst.image_id else ""
            lines.append(f"    {inst.name:<10} {inst.state:<9} r{inst.release:<3} container {inst.container or '-':<13} "
                         f"port {inst.host_port or '-':<6} restarts {inst.restarts:<3} up {inst.uptime:.0f}s "
                         f"{stack}{reason}".rstrip())
    return "\n".join(lines)


def type_summary(view: AppView) -> str:
    """``web 2/2, worker 1/1``: running/desired per process type (web always; others when wanted or running)."""
    return _counts(view.processes, view.running_by_process, instances=view.instances, running=view.running)


def _counts(processes: Mapping[str, int], running_by_process: Mapping[str, int], *, instances: int,
            running: int) -> str:
    parts = []
    for kind, want in (dict(processes) or {"web": instances}).items():
        have = (dict(running_by_process) or {"web": running}).get(kind, 0)
        if kind == "web" or want or have:
            parts.append(f"{kind} {have}/{want}")
    return ", ".join(parts)


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def ps(name: str, as_json: bool) -> None:
    """List every instance of the app: TYPE.INDEX, state, restarts, uptime, health, container."""
    view = client().app(_name(name))
    if as_json:
        click.echo(render([{"name": inst.name, **_to_wire(inst)} for inst in view.instance_list], "json"))
        return
    click.echo(f"{'INSTANCE':<14}{'STATE':<10}{'RELEASE':<9}{'RESTARTS':>8}  {'UPTIME':>7}  {'HEALTH':<18}CONTAINER")
    for inst in view.instance_list:
        click.echo(f"{inst.name:<14}{inst.state:<10}{'r' + str(inst.release):<9}{inst.restarts:>8}  "
                   f"{inst.uptime:>6.0f}s  {inst.health or '-':<18}{inst.container or '-'}")


def _summary(view: AppView) -> str:
    return f"{view.name}: {view.state}, {view.running}/{view.instances} running"


def _action(action: str, helptext: str, call: Callable[[FenceClient, str], AppView]) -> click.Command:
    @click.command(name=action, help=helptext)
    @click.argument("name")
    @debug_option
    def command(name: str) -> None:
        click.echo(_summary(call(client(), _name(name))))
    return command


start = _action("start", "Start a stopped app and wait until its instances are healthy.",
                lambda api, name: api.start(name, on_line=_echo))
stop = _action("stop", "Stop every instance of an app (TERM, KILL after 10 s).",
               lambda api, name: api.stop(name, on_line=_echo))
restart = _action("restart", "Replace every instance, each new one healthy before its old one stops.",
                  lambda api, name: api.restart(name, on_line=_echo))


@click.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Stage even when nothing changed (else the droplet staged from "
                                           "the same inputs is reused).")
@debug_option
def restage(name: str, force: bool) -> None:
    """Stage the app again from its kept source (today's stack and buildpacks), then replace its
    instances as a push does; unchanged inputs reuse their droplet unless --force."""
    click.echo(_summary(client().restage(_name(name), force=force, on_line=_echo)))


@click.command()
@click.argument("name")
@debug_option
def delete(name: str) -> None:
    """Delete an app: instances, releases, droplets, build cache and logs."""
    client().delete(_name(name))
    click.echo(f"deleted {name}")


@click.command(context_settings={"ignore_unknown_options": True})  # `web=-1` / `-1` reach parse_scale
@click.argument("name")
@click.argument("counts", nargs=-1, required=True)
@debug_option
def scale(name: str, counts: tuple[str, ...]) -> None:
    """Set instance counts: `fence scale APP 3` (web), or `fence scale APP web=3 worker=2`; TYPE=0
    stops a type."""
    from fence.rules import parse_scale

    wanted = parse_scale(counts)
    # The daemon's JSON as it came (see client.scale_data): this call is the one a user waits on.
    view = client().scale_data(_name(name), wanted if set(wanted) != {"web"} else wanted["web"], on_line=_echo)
    processes, running, instances = view["processes"], view["running"], view["instances"]
    if any(kind != "web" and want for kind, want in processes.items()):
        click.echo(f"{name}: {_counts(processes, view['running_by_process'], instances=instances, running=running)}")
    else:
        click.echo(f"{name}: {running}/{instances} running")


@click.command()
@click.argument("name")
@click.argument("changes", nargs=-1)
@click.option("--show-secrets", is_flag=True,
              help="Also show what bound services add (VCAP_SERVICES, DATABASE_URL … with passwords).")
@debug_option
def env(name: str, changes: tuple[str, ...], show_secrets: bool) -> None:
    """Show the app's env, or change it: `set K=V …` or `unset K …` (then the app restarts)."""
    _name(name)
    if not changes:
        current = dict(client().app(name).env)
        if show_secrets:  # issue 16: bound services' variables, hidden by default
            current.update(client().service_env(name))
        if current:
            click.echo(render(current, "yaml"))
        return
    verb, args = changes[0], changes[1:]
    if verb == "set" and args:
        from fence.rules import env_from_pairs

        view = client().set_env(name, changes=env_from_pairs(args), removals=(), on_line=_echo)
    elif verb == "unset" and args:
        view = client().set_env(name, changes={}, removals=args, on_line=_echo)
    else:
        raise click.UsageError("use `fence env NAME set K=V …` or `fence env NAME unset K …`")
    click.echo(render(dict(view.env), "yaml"))


@click.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--staging", is_flag=True, help="The last staging's log instead.")
@click.option("--release", "release", is_flag=True,
              help="The output of the last release command (the release phase) instead, prefixed [release].")
@click.option("--cron", "cron_jobs", is_flag=True, help="The output of its cron jobs instead (prefixed [cron]).")
@click.option("--since", help="Only lines written since: a duration back (30s, 10m, 2h, 1d) or a time "
                              "(2026-12-02T00:50:00Z).")
@click.option("--tail", type=click.IntRange(0, 100_000), help="Only the last N lines of all the instances' merged "
                                                             "log [default: each instance's last 100].")
@click.option("--type", "process", help="Only instances of this process type (web, worker …).")
@click.option("--instance", type=click.IntRange(0, 10_000), help="Only instances with this index.")
@click.option("--timestamps", "-t", is_flag=True, help="Start each line with its time (UTC).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object a line: time, app, type, instance, release, stream, line.")
@debug_option
def logs(name: str, follow: bool, staging: bool, release: bool, cron_jobs: bool, since: str | None,
         tail: int | None, process: str | None, instance: int | None, timestamps: bool, as_json: bool) -> None:
    """Print the app's instance logs (prefixed [TYPE.INDEX]: [web.0], [worker.0]), its last staging log, its last release-phase
    output or its cron jobs' output."""
    filtered = since is not None or tail is not None or process is not None or instance is not None \
        or timestamps or as_json
    if filtered:
        if follow or staging or release or cron_jobs:
            raise click.UsageError("--since, --tail, --type, --instance, --timestamps and --json filter the "
                                   "instance logs; they go with none of --follow, --staging, --release, --cron")
        _filtered_logs(name, since=since, tail=tail, process=process, instance=instance, timestamps=timestamps,
                       as_json=as_json)
        return
    if release and cron_jobs:
        raise click.UsageError("--release and --cron show different logs; give one of them")
    if cron_jobs:
        if follow or staging:
            raise click.UsageError("--cron cannot be combined with --follow or --staging")
        client().cron_logs(_name(name), on_line=_echo)
        return
    if release and (staging or follow):
        raise click.UsageError("--release shows the last release command's output; it goes with neither "
                               "--staging nor --follow")
    client().logs(_name(name), follow=follow, staging=staging, on_line=_echo, release=release)


def _filtered_logs(name: str, *, since: str | None, tail: int | None, process: str | None, instance: int | None,
                   timestamps: bool, as_json: bool) -> None:
    import json

    from fence.app_logs import LogQuery, check_query, parse_since

    try:
        query = check_query(LogQuery(since=parse_since(since) if since is not None else None, tail=tail,
                                     process=process, instance=instance))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for entry in client().log_entries(_name(name), since=query.since, tail=query.tail, process=query.process,
                                      instance=query.instance):
        if as_json:
            click.echo(json.dumps(entry, ensure_ascii=False))
        else:
            prefix = f"{entry['time']} " if timestamps else ""
            click.echo(f"{prefix}[{entry['type']}.{entry['instance']}] {entry['line']}")


# --- cron (issue 14) -------------------------------------------------------------------------

@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def cron(name: str, as_json: bool) -> None:
    """List the app's cron entries (stackato.yml cron:) with their next and last runs."""
    found = client().cron(_name(name))
    if as_json:
        click.echo(render(_to_wire(found), "json"))
        return
    if not found:
        click.echo(f"{name} has no cron entries")
        return
    for entry in found:
        click.echo(f"{entry.schedule:<16} {entry.command}")
        click.echo(f"    next run: {entry.next_run or '- (the app is stopped)'}")
        run = entry.last_run
        if run is None:
            click.echo("    last run: never")
        elif entry.running or run.outcome == "running":
            click.echo(f"    last run: {run.minute} running since {run.started_at}")
        else:
            code = "-" if run.exit_code is None else str(run.exit_code)
            took = "-" if run.duration is None else f"{run.duration:.1f} s"
            click.echo(f"    last run: {run.minute} {run.outcome}, exit code {code}, took {took}")


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("name")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@debug_option
def run(name: str, argv: tuple[str, ...]) -> None:
    """Run a one-off command (after --) in a fresh container from the app's current droplet."""
    command = argv[1:] if argv[:1] == ("--",) else argv
    if not command:
        raise click.UsageError("give the command after --, e.g. fence run myapp -- id -u")
    sys.exit(client().run(_name(name), command, on_line=_echo))


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def releases(name: str, as_json: bool) -> None:
    """List the app's kept releases (the last 5), newest first."""
    found = client().releases(_name(name))
    if as_json:
        click.echo(render(_to_wire(found), "json"))
        return
    for rel in found:
        click.echo(f"r{rel.number:<4} {rel.droplet[:12]}  {rel.created_at}  {rel.note}")


@click.command()
@click.argument("name")
@click.argument("release", required=False, type=int)
@debug_option
def rollback(name: str, release: int | None) -> None:
    """Run an earlier release again (the previous one, or RELEASE)."""
    client().rollback(_name(name), release, on_line=_echo)


@click.group()
@debug_option
def route() -> None:
    """Extra host names an app answers at (beside APP.<router/domain>)."""


@route.command("add")
@click.argument("name")
@click.argument("host")
@debug_option
def route_add(name: str, host: str) -> None:
    """Let app NAME answer at HOST too."""
    view = client().route(_name(name), "add", host)
    click.echo("\n".join(view.urls))


@route.command("remove")
@click.argument("name")
@click.argument("host")
@debug_option
def route_remove(name: str, host: str) -> None:
    """Stop app NAME answering at HOST."""
    view = client().route(_name(name), "remove", host)
    click.echo("\n".join(view.urls))


COMMANDS = (route, push, apps, app, ps, start, stop, restart, restage, delete, scale, env, logs, run, releases,
            rollback, cron)
