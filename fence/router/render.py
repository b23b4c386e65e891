"""Renders the router's nginx config from routes, validating every name and address first."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from fence.errors import InvalidName, RouteInvalid, UsageError
from fence.models import Route, SkippedRoute, Upstream
from fence.rules import check_app_name, check_dns_name, is_app_name, is_dns_name

# Characters allowed in a path written into the config: nothing nginx would parse (quotes,
# `;`, braces, `$` variables, whitespace, backslashes) and no control characters.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+@:,=-]*")
_TEMPLATE = "nginx.conf.j2"
CONNECT_TIMEOUT = "2s"
LISTEN_ADDRESS = "127.0.0.1"  # router/bind_address's default


@dataclass(frozen=True)
class _RenderedRoute:
    """A route after validation, in the form the template writes it."""

    app: str
    hosts: tuple[str, ...]
    upstreams: tuple[str, ...]


def render_config(*, routes: Sequence[Route], port: int, domain: str, host_prefix: Path,
                  worker_user: str | None = None, address: str = LISTEN_ADDRESS) -> str:
    """Render the router's nginx.conf.

    Every value is validated before it reaches the template, so a hostile name can never add
    a directive. Routes are sorted by app, upstreams by address, so the same routes always give
    the same text (an unchanged config needs no reload). Each app also answers at
    ``APP.<domain>`` even if its hosts omit it.

    Args:
        routes: one per app; apps without upstreams answer 503 "app X has no running instance".
        port: the TCP port to listen on (``router/port``).
        domain: ``router/domain``.
        host_prefix: absolute folder for the pid file, logs and temp paths (``FENCE_HOME/router``).
        worker_user: the user nginx's workers run as (only when nginx starts as root), or
            ``None`` to leave them as the user that starts nginx.
        address: the IPv4 or IPv6 address to listen on (``router/bind_address``).

    Returns:
        The config text.

    Raises:
        InvalidName: an app name, host name, domain or worker user breaks its pattern.
        RouteInvalid: a bad upstream, or an app or host name that appears in two routes.
        UsageError: a bad port, address or prefix path.
    """
    _check_port(port, what="router port")
    listen = listen_address(address, port)
    domain = check_dns_name(domain, what="router domain")
    prefix = _check_prefix(host_prefix)
    if worker_user is not None and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", worker_user):
        raise InvalidName(what="worker user", value=_shorten(worker_user), why="not a user name")
    rendered = _validate_routes(routes, domain)
    template = _environment().get_template(_TEMPLATE)
    return template.render(routes=rendered, listen=listen, host_prefix=prefix,
                           worker_user=worker_user, connect_timeout=CONNECT_TIMEOUT)


def usable_routes(routes: Sequence[Route], domain: str) -> tuple[list[Route], list[SkippedRoute]]:
    """The part of each route the router can serve, and what it leaves out (one app's bad route
    never keeps the others from being served).

    Left out, each with its reason: a route whose app name is bad or that repeats an app (all
    of it); a host name that is not a DNS name; a URL that is another app's default host
    ``APP.<domain>`` (the default host wins: it comes with the app's name, which no two apps
    share); a URL that two apps list (neither gets it: serving either could send one app's
    traffic to the other); an upstream that is not an address and port nginx could connect to.
    What is left passes ``render_config``'s checks.

    Args:
        routes: one per app, as the reconciler built them.
        domain: ``router/domain`` (already checked).

    Returns:
        The routes to serve (each app's default host first), and what was left out.
    """
    skipped: list[SkippedRoute] = []
    kept: dict[str, Route] = {}
    for route in routes:
        app = getattr(route, "app", None)
        if not isinstance(route, Route) or not is_app_name(app):
            skipped.append(SkippedRoute(app=str(_shorten(app)), what="route", why="not an app name"))
        elif app in kept:
            skipped.append(SkippedRoute(app=app, what="route", why="the app has two routes (the first is served)"))
        else:
            kept[app] = route
    defaults = {f"{app}.{domain}": app for app in kept}
    listed: dict[str, set[str]] = {}
    extras: dict[str, list[str]] = {}
    for app, route in kept.items():
        hosts = route.hosts if isinstance(route.hosts, tuple) else ()
        if not isinstance(route.hosts, tuple):
            skipped.append(SkippedRoute(app=app, what="hosts", why="not a tuple of host names"))
        for host in dict.fromkeys(hosts):
            if host == f"{app}.{domain}":
                continue
            if not is_dns_name(host):
                skipped.append(SkippedRoute(app=app, what=f"host {_shorten(host)!r}", why="not a DNS name"))
            elif host in defaults:
                skipped.append(SkippedRoute(app=app, what=f"host {host}",
                                            why=f"it is the default host of app {defaults[host]}"))
            else:
                listed.setdefault(host, set()).add(app)
                extras.setdefault(app, []).append(host)
    served = []
    for app in sorted(kept):
        hosts = [f"{app}.{domain}"]
        for host in extras.get(app, []):
            others = sorted(listed[host] - {app})
            if others:
                skipped.append(SkippedRoute(app=app, what=f"host {host}",
                                            why=f"app{'s' if len(others) > 1 else ''} {', '.join(others)} "
                                                "list it too; no app gets it"))
            else:
                hosts.append(host)
        upstreams = []
        upstreams_given = kept[app].upstreams if isinstance(kept[app].upstreams, tuple) else ()
        for upstream in upstreams_given:
            try:
                _upstream_text(app, upstream)
            except RouteInvalid as exc:
                shown = (f"{_shorten(upstream.address)}:{_shorten(upstream.port)}"
                         if isinstance(upstream, Upstream) else repr(_shorten(upstream)))
                skipped.append(SkippedRoute(app=app, what=f"upstream {shown}", why=exc.fields["why"]))
            else:
                upstreams.append(upstream)
        served.append(Route(app=app, hosts=tuple(hosts), upstreams=tuple(upstreams)))
    return served, skipped


def listen_address(address: str, port: int) -> str:
    """``ADDRESS:PORT`` as nginx's ``listen`` takes it (an IPv6 address in brackets).

    Raises:
        UsageError: ``address`` is not an IP address.
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(detail=f"router bind address {_shorten(str(address))!r} is not an IP address") from None
    return f"[{parsed}]:{port}" if parsed.version == 6 else f"{parsed}:{port}"


def _validate_routes(routes: Sequence[Route], domain: str) -> list[_RenderedRoute]:
    owner_of_host: dict[str, str] = {}
    seen_apps: set[str] = set()
    rendered: list[_RenderedRoute] = []
    for route in routes:
        app = check_app_name(route.app)
        if app in seen_apps:
            raise RouteInvalid(app=app, why="the app has two routes")
        seen_apps.add(app)
        if isinstance(route.hosts, str):
            raise RouteInvalid(app=app, why="hosts must be a tuple of host names, not a string")
        hosts: list[str] = []
        for host in (f"{app}.{domain}", *route.hosts):
            check_dns_name(host)
            if host in hosts:
                continue
            if owner_of_host.get(host, app) != app:
                raise RouteInvalid(app=app, why=f"host {host} already belongs to app "
                                                f"{owner_of_host[host]!r}")
            owner_of_host[host] = app
            hosts.append(host)
        upstreams = sorted({_upstream_text(app, upstream) for upstream in route.upstreams})
        rendered.append(_RenderedRoute(app=app, hosts=tuple(hosts), upstreams=tuple(upstreams)))
    return sorted(rendered, key=lambda r: r.app)


def _upstream_text(app: str, upstream: Upstream) -> str:
    if not isinstance(upstream, Upstream):
        raise RouteInvalid(app=app, why=f"upstream {_shorten(upstream)!r} is not an Upstream")
    try:
        address = ipaddress.ip_address(upstream.address)
    except (TypeError, ValueError):
        raise RouteInvalid(app=app, why=f"upstream address {_shorten(upstream.address)!r} is not "
                                        "an IP address") from None
    if address.is_unspecified or address.is_multicast or "%" in str(address):
        raise RouteInvalid(app=app, why=f"upstream address {address} cannot be connected to")
    try:
        _check_port(upstream.port, what="upstream port")
    except UsageError as exc:
        raise RouteInvalid(app=app, why=exc.message) from None
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{upstream.port}"


def _check_port(port: object, *, what: str) -> int:
    # bool is an int in Python; True is no port.
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(detail=f"{what} {_shorten(port)!r} is not a TCP port (1-65535)")
    return port


def _check_prefix(host_prefix: Path) -> str:
    text = str(host_prefix)
    if not Path(text).is_absolute() or not _SAFE_PATH.fullmatch(text):
        raise UsageError(detail=f"router folder {_shorten(text)!r} must be an absolute path of "
                                "letters, digits and ._/+@:,=- only")
    return text.rstrip("/") or "/"


def _shorten(value: object) -> object:
    if isinstance(value, str) and len(value) > 64:
        return value[:60] + "..."
    return value


@functools.cache
def _environment() -> jinja2.Environment:
    # Not HTML: values are validated above instead of escaped; undefined names are bugs.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
