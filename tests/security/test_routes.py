"""Routing can never be frozen or crossed (issue 13 item 5), against the real engine, daemon and nginx:
host-name squatting is refused in one line, of two pushes racing for one host exactly one wins, a
bad route in the store blocks no other app, and no stopped instance is left in the router."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.node_kit import Node, Poller, wait_for
from tests.integration.staging_kit import write_app

WEB = "web: python3 -m http.server $PORT\n"


def _app_source(root: Path, name: str, *, urls: tuple[str, ...] = (), text: str = "hello") -> Path:
    manifest = f"name: {name}\n" + (f"urls: [{', '.join(urls)}]\n" if urls else "")
    return write_app(root / f"{name}-{abs(hash((urls, text))) % 10**6}",
                     {"Procfile": WEB, "index.html": f"{text}\n", "stackato.yml": manifest})


def _get(node: Node, host: str, timeout: float = 5) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{node.router_port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")



def _push(node: Node, source: Path, *args: str):  # noqa: ANN202
    return node.cli("fence", "push", str(source), "--buildpack", "procfile", *args)


def _addresses(container_ids: list[str]) -> set[str]:
    out = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                          *container_ids], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _upstream_addresses(node: Node) -> set[str]:
    conf = (node.root / "router" / "nginx.conf").read_text()
    return set(re.findall(r"^\s*server (\d+\.\d+\.\d+\.\d+):\d+;", conf, re.MULTILINE))


def test_squatting_a_host_name_is_refused_in_one_line(node: Node, tmp_path: Path) -> None:
    squat = _push(node, _app_source(tmp_path, "squat", urls=("shop.localhost",)))
    assert squat.exit_code == 0, squat.stderr
    # Before this change the push of shop went through, and from then on the router refused its
    # config on every pass (shop.localhost in two server blocks): no app's new instance was routed.
    shop = _push(node, _app_source(tmp_path, "shop"))
    assert shop.exit_code == 2, shop.stdout + shop.stderr
    assert shop.stderr == "error: host name shop.localhost already routes to app squat\n"
    for host, holder in (("squat.localhost", "squat"), ("shop.localhost", "squat")):
        other = _push(node, _app_source(tmp_path, "other", urls=(host,)))
        assert other.exit_code == 2 and other.stderr == f"error: host name {host} already routes to app {holder}\n"
    assert node.cli("fence", "app", "shop").exit_code == 3
    assert _get(node, "shop.localhost")[0] == 200  # squat's, as it was
    status = json.loads(node.cli("kato", "status", "--json").stdout)
    assert status["router"]["last_error"] is None and status["router"]["skipped"] == []


def test_of_two_pushes_racing_for_one_host_exactly_one_wins(node: Node, tmp_path: Path) -> None:
    sources = [_app_source(tmp_path, f"race{n}", urls=("www.race.test",)) for n in (1, 2)]
    procs = [subprocess.Popen([sys.executable, "-m", "fence", "push", str(source), "--buildpack", "procfile"],
                              env=node.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for source in sources]
    results = [(proc.wait(timeout=600), proc.stdout.read(), proc.stderr.read()) for proc in procs]
    for proc in procs:
        proc.stdout.close()
        proc.stderr.close()
    print("race:", [(code, err.strip()) for code, _, err in results])
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    winner = "race1" if results[0][0] == 0 else "race2"
    [refusal] = [err for code, _, err in results if code == 2]
    assert refusal == f"error: host name www.race.test already routes to app {winner}\n"
    assert wait_for(lambda: _get(node, "www.race.test")[0] == 200)
    conf = (node.root / "router" / "nginx.conf").read_text()
    assert conf.count("www.race.test") == 1


def _force_route(node: Node, app: str, urls: list[str]) -> None:
    """Write URLs into an app's row as an old database (or a bug) could hold them, past every check."""
    conn = sqlite3.connect(node.home.host_db, timeout=30)
    try:
        conn.execute("UPDATE apps SET urls_json = ? WHERE name = ?", (json.dumps(urls), app))
        conn.commit()
    finally:
        conn.close()


def test_a_bad_route_blocks_no_other_app_and_no_stopped_instance_stays_routed(node: Node, tmp_path: Path) -> None:
    assert _push(node, _app_source(tmp_path, "victim")).exit_code == 0
    assert _push(node, _app_source(tmp_path, "bystander", text="v1"), "--instances", "2").exit_code == 0
    assert _push(node, _app_source(tmp_path, "bully")).exit_code == 0
    # bully now lists victim's default host and a name nginx cannot parse: before this change
    # the router refused every config from here on, and stopped instances stayed in it.
    before = [i["container"] for i in node.app("bystander")["instance_list"]]
    _force_route(node, "bully", ["victim.localhost", "evil;}.test", "www.bully.test"])
    time.sleep(1)  # a reconcile pass or two with the bad route
    with Poller(node, "bystander") as poll:
        scaled = node.cli("fence", "scale", "bystander", "1")
        assert scaled.exit_code == 0, scaled.stderr
        pushed = _push(node, _app_source(tmp_path, "bystander", text="v2"))
        assert pushed.exit_code == 0, pushed.stderr
        wait_for(lambda: _get(node, "bystander.localhost")[1].strip() == "v2")
        time.sleep(1)
    print(f"scale 2->1 and redeploy beside a bad route: {poll.total} requests, outcomes {dict(poll.outcomes)}")
    assert poll.failures == [] and poll.total > 20, poll.outcomes
    assert _get(node, "victim.localhost")[1].strip() == "hello"  # never bully's
    assert wait_for(lambda: _get(node, "www.bully.test")[0] == 200)
    status = json.loads(node.cli("kato", "status", "--json").stdout)
    assert {(s["app"], s["what"]) for s in status["router"].get("skipped", ())} == {
        ("bully", "host victim.localhost"), ("bully", "host 'evil;}.test'")}
    assert "the router left out host victim.localhost of app bully: it is the default host of app victim" \
        in status["warnings"]
    assert status["router"]["last_error"] is None
    # Every upstream in nginx.conf is a running instance; the stopped ones' addresses are gone.
    wait_for(lambda: not set(before) & {i["container"] for i in node.app("bystander")["instance_list"]})
    apps = [a["name"] for a in json.loads(node.cli("fence", "apps", "--json").stdout)]
    running = [i["container"] for name in apps for i in node.app(name)["instance_list"] if i["state"] == "running"]
    upstreams = _upstream_addresses(node)
    assert upstreams == _addresses(running), (upstreams, running)
