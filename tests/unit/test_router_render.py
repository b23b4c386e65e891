"""The router's nginx config: what routes render to, and hostile names that never reach it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fence.errors import InvalidName, RouteInvalid, ToolMissing, UsageError
from fence.models import Route, Upstream
from fence.router.nginx import NginxRouter
from fence.router.render import render_config, usable_routes

PREFIX = Path("/var/lib/fence/router")


def render(routes: list[Route], *, port: int = 8080, domain: str = "localhost",
           host_prefix: Path = PREFIX, worker_user: str | None = None, address: str = "127.0.0.1") -> str:
    return render_config(routes=routes, port=port, domain=domain, host_prefix=host_prefix,
                         worker_user=worker_user, address=address)


DEMO = Route(app="demo", hosts=("demo.localhost", "www.example.com"),
             upstreams=(Upstream(address="127.0.0.1", port=40001),
                        Upstream(address="127.0.0.1", port=40002)))


def test_route_renders_server_names_upstreams_and_proxy_settings() -> None:
    text = render([DEMO])
    assert "upstream fence-app-demo {" in text
    assert "server 127.0.0.1:40001;" in text
    assert "server 127.0.0.1:40002;" in text
    assert "keepalive 16;" in text
    assert "server_name demo.localhost www.example.com;" in text
    assert "proxy_pass http://fence-app-demo;" in text
    assert "proxy_next_upstream error timeout http_502 http_503;" in text
    assert "non_idempotent" not in text
    assert "proxy_connect_timeout 2s;" in text
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"):
        assert f"proxy_set_header {header} " in text


def test_port_and_domain_are_used() -> None:
    text = render([Route(app="demo", hosts=())], port=18123, domain="apps.example.org")
    assert "listen 127.0.0.1:18123;" in text
    assert "listen 127.0.0.1:18123 default_server;" in text
    assert "listen 80" not in text and "0.0.0.0" not in text
    # The app's own name under the domain is always served, even when hosts omit it.
    assert "server_name demo.apps.example.org;" in text


@pytest.mark.parametrize(("address", "listen"), [("0.0.0.0", "0.0.0.0:8080"), ("10.1.2.3", "10.1.2.3:8080"),
                                                 ("::", "[::]:8080"), ("::1", "[::1]:8080")])
def test_the_bind_address_is_used(address: str, listen: str) -> None:
    text = render([DEMO], address=address)
    assert f"listen {listen};" in text and f"listen {listen} default_server;" in text
    assert "127.0.0.1:8080" not in text


@pytest.mark.parametrize("address", ["", "localhost", "0.0.0.0;", "1.2.3.4:80", "0.0.0.0 ssl", "::1]; x"])
def test_a_bad_bind_address_is_refused_in_one_line(address: str) -> None:
    with pytest.raises(UsageError) as caught:
        render([DEMO], address=address)
    assert "router bind address" in caught.value.message and "\n" not in caught.value.message


def test_default_server_answers_404_without_echoing_the_host() -> None:
    text = render([])
    default = text[text.index("default_server"):]
    assert "server_name _;" in default
    assert 'return 404 "' in default
    assert "No app on this node has that name." in default
    assert "$host" not in default and "$http_host" not in default


def test_app_without_upstreams_gets_the_503_page_and_no_upstream_block() -> None:
    text = render([DEMO, Route(app="idle", hosts=("idle.localhost",))])
    assert "upstream fence-app-idle" not in text
    assert "app idle has no running instance" in text
    assert 'return 503 "' in text
    assert "server_name idle.localhost;" in text


def test_every_path_is_under_the_prefix() -> None:
    text = render([DEMO], host_prefix=Path("/srv/fence_home-less/router"))
    for directive in ("pid", "error_log", "access_log", "client_body_temp_path",
                      "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path"):
        line = next(line for line in text.splitlines() if line.strip().startswith(directive + " "))
        assert '"/srv/fence_home-less/router/' in line, line
    assert "/etc/nginx" not in text and "\"/run/" not in text and "/var/log" not in text


def test_worker_user_only_when_given() -> None:
    assert "user www-data;" in render([], worker_user="www-data")
    assert "\nuser " not in render([])
    with pytest.raises(InvalidName):
        render([], worker_user="root; daemon off")


def test_rendering_is_deterministic_whatever_the_order() -> None:
    other = Route(app="api", hosts=("api.localhost",), upstreams=(Upstream("10.0.0.2", 5000),))
    reordered = Route(app="demo", hosts=DEMO.hosts, upstreams=tuple(reversed(DEMO.upstreams)))
    assert render([DEMO, other]) == render([other, reordered])


def test_ipv6_upstreams_are_bracketed() -> None:
    text = render([Route(app="demo", hosts=(), upstreams=(Upstream("::1", 5000),))])
    assert "server [::1]:5000;" in text


HOSTILE_NAMES = ["evil;}", "a b", "a\nb", "$(x)", "x" * 300, "Upper Case", "ünïcode", "",
                 "-lead", "trail-", "../x", "a\"b", "a{b", "a#b", "UPPER"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_app_names_are_refused_in_one_line(name: str) -> None:
    with pytest.raises(InvalidName) as caught:
        render([Route(app=name, hosts=(), upstreams=(Upstream("127.0.0.1", 5000),))])
    assert "\n" not in str(caught.value)
    assert "app name" in str(caught.value)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("host", [*HOSTILE_NAMES, "*.example.com", "a..b", "x.", ".x", "_",
                                  "a.b\n}", ("a" * 60 + ".") * 4 + "abcdefghijklmnopq"])
def test_hostile_host_names_are_refused_in_one_line(host: str) -> None:
    with pytest.raises(InvalidName) as caught:
        render([Route(app="demo", hosts=("demo.localhost", host))])
    assert "\n" not in str(caught.value)
    assert "host name" in str(caught.value)


@pytest.mark.parametrize("domain", ["evil;}", "a b", "Local Host", "$(x)", "", "x" * 300])
def test_hostile_domains_are_refused(domain: str) -> None:
    with pytest.raises(InvalidName) as caught:
        render([DEMO], domain=domain)
    assert "\n" not in str(caught.value)


def test_a_253_character_host_is_allowed() -> None:
    host = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(host) == 253
    assert host in render([Route(app="demo", hosts=(host,))])


@pytest.mark.parametrize("address", ["localhost", "1.2.3", "0.0.0.0", "::", "evil;}",
                                     "127.0.0.1; }", "fe80::1%eth0", "224.0.0.1", "", None])
def test_bad_upstream_addresses_are_refused(address: object) -> None:
    with pytest.raises(RouteInvalid) as caught:
        upstream = Upstream(address=address, port=5000)  # type: ignore[arg-type]
        render([Route(app="demo", hosts=(), upstreams=(upstream,))])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("port", [0, -1, 65536, "5000", True, 5000.0, None])
def test_bad_upstream_ports_are_refused(port: object) -> None:
    with pytest.raises(RouteInvalid):
        upstream = Upstream(address="127.0.0.1", port=port)  # type: ignore[arg-type]
        render([Route(app="demo", hosts=(), upstreams=(upstream,))])


@pytest.mark.parametrize("port", [0, 65536, "8080", True, None])
def test_bad_router_ports_are_refused(port: object) -> None:
    with pytest.raises(UsageError):
        render([DEMO], port=port)  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["relative/router", "/srv/a b", '/srv/a"b', "/srv/a;b",
                                    "/srv/$x", "/srv/a\nb", "/srv/{x}"])
def test_unsafe_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(UsageError):
        render([DEMO], host_prefix=Path(prefix))


def test_a_host_claimed_by_two_apps_is_refused() -> None:
    other = Route(app="other", hosts=("www.example.com",))
    with pytest.raises(RouteInvalid, match="www.example.com already belongs to app 'demo'"):
        render([DEMO, other])
    with pytest.raises(RouteInvalid, match="already belongs"):
        render([DEMO, Route(app="x", hosts=("demo.localhost",))])


def test_an_app_with_two_routes_is_refused() -> None:
    with pytest.raises(RouteInvalid, match="two routes"):
        render([DEMO, Route(app="demo", hosts=())])


def test_hosts_given_as_a_string_are_refused() -> None:
    with pytest.raises(RouteInvalid):
        render([Route(app="demo", hosts="demo.localhost")])  # type: ignore[arg-type]


def test_a_hostile_route_is_left_out_and_never_written(tmp_path: Path) -> None:
    # Before issue 13 item 5 a hostile route made the router refuse every route; now the router
    # leaves it out and serves the rest (the skip rules: tests/unit/test_route_skip.py).
    routes = [Route(app="evil;}", hosts=()), Route(app="demo", hosts=("demo.localhost", "a b", "www.example.com"))]
    served, skipped = usable_routes(routes, "localhost")
    text = render(served)
    assert "evil" not in text and "a b" not in text and "server_name demo.localhost www.example.com;" in text
    assert [(s.app, s.what) for s in skipped] == [("evil;}", "route"), ("demo", "host 'a b'")]
    host_dir = tmp_path / "router"
    router = NginxRouter(host_dir=host_dir, nginx=str(tmp_path / "no-nginx"))
    with pytest.raises(ToolMissing):  # rendered fine: only then is nginx looked for
        router.apply(routes=routes, port=8080, domain="localhost")
    assert not (host_dir / "nginx.conf").exists()
    with pytest.raises(InvalidName):
        router.apply(routes=routes, port=8080, domain="bad domain;")


def test_a_missing_nginx_is_a_tool_missing_error(tmp_path: Path) -> None:
    router = NginxRouter(host_dir=tmp_path / "router", nginx="fence-test-no-such-nginx")
    with pytest.raises(ToolMissing) as caught:
        router.apply(routes=[DEMO], port=8080, domain="localhost")
    assert "nginx is not installed" in str(caught.value)
    assert "apt-get install nginx-light" in str(caught.value)
    assert not (tmp_path / "router" / "nginx.conf").exists()


def test_status_before_anything_was_applied(tmp_path: Path) -> None:
    status = NginxRouter(host_dir=tmp_path / "router").status()
    assert (status.running, status.pid, status.routes) == (False, None, 0)
    assert (status.port, status.domain, status.address) == (8080, "localhost", "127.0.0.1")
    assert status.last_reload is None and status.last_error is None
