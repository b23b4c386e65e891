"""Hostile input: an upload corpus, hostile names and values (with a canary), and an API fuzzer."""

from __future__ import annotations

import io
import json
import random
import subprocess
import tarfile
import time
import urllib.parse
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from fence.errors import FenceError
from fence.home import NodeHome
from fence.wiring import node_service
from tests.integration.node_kit import Node
from tests.integration.staging_kit import stage, staging_containers, write_app, trust_test_folders
from tests.security.conftest import in_instance

CANARY = Path(f"/tmp/fence-canary-{uuid.uuid4().hex[:8]}")
SHELLY = [f"$(touch {CANARY})", f"`touch {CANARY}`", f"; touch {CANARY}", f"| touch {CANARY}",
          f"\ntouch {CANARY}\n", f"' ; touch {CANARY} ; '", "a\0b", "x" * 5000, "../../etc/passwd", "-rf"]


# --- the upload corpus -------------------------------------------------------------------------

def _tar(add: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        add(tar)
    return buffer.getvalue()


def _entry(tar: tarfile.TarFile, name: str, *, kind: bytes = tarfile.REGTYPE, data: bytes = b"x",
           link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.bin", b"\0" * (64 * 1024 * 1024))
    return buffer.getvalue()


def _many_files(tar: tarfile.TarFile) -> None:
    for n in range(100_001):
        _entry(tar, f"f/{n}", data=b"")


def _deep(tar: tarfile.TarFile) -> None:
    _entry(tar, "/".join(["d"] * 2000) + "/leaf.txt")


ESCAPE = f"fence-escape-{uuid.uuid4().hex[:8]}"
CORPUS: dict[str, bytes] = {
    "path traversal": _tar(lambda t: _entry(t, f"../../../../tmp/{ESCAPE}")),
    "absolute path": _tar(lambda t: _entry(t, f"/tmp/{ESCAPE}")),
    "symlink escape": _tar(lambda t: _entry(t, "up", kind=tarfile.SYMTYPE, link="/tmp")),
    "hardlink escape": _tar(lambda t: _entry(t, "hard", kind=tarfile.LNKTYPE, link=f"/tmp/{ESCAPE}")),
    "symlink then file": _tar(lambda t: (_entry(t, "tmpdir", kind=tarfile.SYMTYPE, link="/tmp"),
                                         _entry(t, f"tmpdir/{ESCAPE}"))),
    "device file": _tar(lambda t: _entry(t, "sda", kind=tarfile.BLKTYPE)),
    "zip bomb": _zip_bomb(),
    "100k files": _tar(_many_files),
    "depth 2000": _tar(_deep),
    "non-UTF-8 name": _tar(lambda t: _entry(t, b"caf\xe9.txt".decode("utf-8", "surrogateescape"))),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_hostile_upload_is_refused_and_writes_nothing_outside(home: NodeHome, engine: str, tmp_path: Path,
                                                               case: str) -> None:
    node = trust_test_folders(node_service(home), home)
    node.config.set("fence", "staging/max_upload", "32")  # MiB: the zip bomb inflates to 64
    suffix = ".zip" if case == "zip bomb" else ".tar.gz"
    upload = tmp_path / f"upload{suffix}"
    upload.write_bytes(CORPUS[case])
    try:
        with pytest.raises(FenceError) as caught:
            stage(node, upload, app="hostile", buildpacks=("procfile",))
    finally:
        node.close()
    message = caught.value.message
    assert caught.value.user_error and "\n" not in message and "Traceback" not in message, message
    assert not Path(f"/tmp/{ESCAPE}").exists() and not list(tmp_path.rglob(ESCAPE))
    assert staging_containers(node.node_id) == []  # refused before any container existed
    assert node.droplets.digests() == []


# --- hostile names and values ------------------------------------------------------------------

def test_hostile_names_and_values_are_refused_or_quoted(node: Node, app: str, tmp_path: Path) -> None:
    source = write_app(tmp_path / "quoted", {"Procfile": "web: python3 -m http.server $PORT\n"})
    for value in SHELLY:
        for args in (("fence", "push", str(source), "--name", value),
                     ("fence", "app", value),
                     ("fence", "push", str(source), "--name", "quoted", "--env", f"{value}=1"),
                     ("fence", "push", str(source), "--name", "quoted", "--buildpack", value),
                     ("fence", "push", str(source), "--name", "quoted", "--mem", value),
                     ("kato", "config", "set", "fence", "docker/image", value),
                     ("kato", "config", "set", "fence", "router/domain", value),
                     ("kato", "config", "set", value, "key", "v")):
            if "\0" in value:
                continue  # a NUL cannot even be passed in argv; the API fuzzer sends it instead
            result = node.cli(*args)
            assert result.exit_code != 0, args
            assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, (args, result.stderr)
    manifest = write_app(tmp_path / "manifest", {
        "Procfile": "web: python3 -m http.server $PORT\n",
        "stackato.yml": f"name: manifested\nurl: ['$(touch {CANARY}).test']\n",
    })
    refused = node.cli("fence", "push", str(manifest))
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    # Legitimate values full of shell syntax are stored and passed on verbatim, never run.
    env = [f"V{n}={value}" for n, value in enumerate(SHELLY) if "\0" not in value]
    pushed = node.cli("fence", "push", str(source), "--name", "quoted", *sum((["--env", e] for e in env), []))
    assert pushed.exit_code == 0, pushed.stderr
    # The web process's own environment (docker exec would not see what the start script exported).
    code, out = in_instance(node, "quoted", "python3 -c \"import json, subprocess; "
                            "pid = subprocess.check_output(['pgrep', '-f', 'http.server']).split()[0].decode(); "
                            "raw = open('/proc/' + pid + '/environ', 'rb').read().decode(); "
                            "print(json.dumps(dict(e.split('=', 1) for e in raw.split(chr(0)) if e.startswith('V'))))\"")
    assert code == 0, out
    seen = json.loads(out)
    for n, value in enumerate(SHELLY):
        if "\0" not in value:
            assert seen[f"V{n}"] == value, (n, value[:60], seen.get(f"V{n}", "")[:60])
    assert in_instance(node, "quoted", f"test -e {CANARY}; echo $?")[1] == "1"
    assert not CANARY.exists(), "a hostile value ran in a shell on the host"
    conf = (node.root / "router" / "nginx.conf").read_text()
    assert "touch" not in conf


# --- the API fuzzer ----------------------------------------------------------------------------

HOSTILE_STRINGS = ["", " ", "..", "../..", "%2e%2e", "a" * 3000, "\u0000", "\n", "'\"", "${x}", "$(id)",
                   "💥", "-1", "0", "99999999999999999999", "null", "true", "[]", "{}", "target", "Target",
                   "file:///etc", "https://127.0.0.1/x.git#..", "ext::sh -c id", "a/b", "%00", "\r\nX: y"]


def _value(rng: random.Random, schema: dict[str, Any]) -> Any:
    kind = schema.get("type") or (schema.get("anyOf") or [{}])[0].get("type")
    if kind == "integer":
        return rng.choice([0, 1, -1, 2**31, -(2**63), 101, rng.randint(-1000, 1000)])
    if kind == "boolean":
        return rng.choice([True, False, "maybe", 1])
    if kind == "array":
        return [_value(rng, schema.get("items", {})) for _ in range(rng.randint(0, 3))]
    return rng.choice(HOSTILE_STRINGS + ["".join(rng.choice("abc-_.;$/\\%&") for _ in range(rng.randint(1, 40)))])


def _json_body(rng: random.Random) -> Any:
    return rng.choice([{}, [], None, "x", 1, {"set": {"A": "1"}}, {"set": {"1A": "x"}}, {"unset": "x"},
                       {"argv": ["id"]}, {"argv": "id"}, {"add": "evil;}"}, {"remove": "x"},
                       {"set": {"A": 1}}, {"argv": [1, 2]}, {"x" * 100: ["y"] * 100}])


def test_api_fuzz_no_500s_and_nothing_privileged(node: Node, app: str) -> None:
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(node.root / "fence.sock")), base_url="http://fence",
                          timeout=60)
    spec = client.get("/openapi.json").json()
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    rng = random.Random(20261128)
    sent, statuses = 0, {}
    while sent < 520:
        path, method, op = rng.choice(operations)
        url = path
        params: list[tuple[str, Any]] = []
        for parameter in op.get("parameters", []):
            value = _value(rng, parameter.get("schema", {}))
            if parameter["in"] == "path":
                if value == "target" and method != "get":
                    value = "not-the-target"  # never stop or delete the app the other tests use
                url = url.replace("{" + parameter["name"] + "}", urllib.parse.quote(str(value), safe="") or "x")
            elif rng.random() < 0.8:
                params += [(parameter["name"], v) for v in (value if isinstance(value, list) else [value])]
        if "follow" in dict(params) and path.endswith("/logs"):
            params = [(k, v) for k, v in params if k != "follow"]
        kwargs: dict[str, Any] = {"params": [(k, str(v)) for k, v in params]}
        if method in ("post", "put", "patch"):
            if path == "/v1/stagings":
                kwargs["content"] = rng.choice([b"", b"not a tarball", bytes(rng.getrandbits(8) for _ in range(200))])
            elif rng.random() < 0.1:  # not JSON at all, though it says it is
                kwargs["content"] = rng.choice([b"{", b"{not json", b"\xff\xfe", b"[1,", b"nul"])
                kwargs["headers"] = {"content-type": "application/json"}
            else:
                kwargs["json"] = _json_body(rng)
        response = client.request(method.upper(), url, **kwargs)
        sent += 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (method, url, kwargs, response.text[:300])
        if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
            body = response.json()
            assert "error" in body or "detail" in body
        if response.status_code == 422:  # a request that does not fit: fence's one line, not FastAPI's list
            message = response.json()["error"]["message"]
            assert message.startswith("bad request: ") and "\n" not in message and len(message) < 300, message
    client.close()
    print(f"fuzzer: {sent} requests over {len(operations)} operations; statuses {sorted(statuses.items())}")
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=fence.node={node.home.node_id}"],
                         capture_output=True, text=True).stdout.split()
    assert ids, "the node should have its app's containers"
    for info in json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout):
        host = info["HostConfig"]
        assert host["Privileged"] is False and not host.get("CapAdd") and host["CapDrop"] == ["ALL"]
        own_network = f"fence-{node.home.node_id}-{info['Config']['Labels'].get('fence.app', '')}"
        assert host["NetworkMode"] in ("bridge", "none", "default", own_network) and host.get("PidMode", "") == ""
        assert host.get("IpcMode") in ("private", "shareable", "") and host.get("UTSMode", "") == ""
        assert not host.get("Binds") and info["Mounts"] == []
        assert host.get("UsernsMode", "") == ""


def test_api_fuzz_json_bodies_over_the_cap_get_413_in_one_line(node: Node) -> None:
    """Every endpoint but the upload caps its body (issue 13 item 9): declared or chunked."""
    from fence.api import MAX_JSON_BODY

    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(node.root / "fence.sock")), base_url="http://fence",
                          timeout=60)
    spec = client.get("/openapi.json").json()
    rng = random.Random(20261201)
    big = b'{"set": {"A": "' + b"x" * MAX_JSON_BODY + b'"}}'

    def chunked() -> Any:
        yield b'{"argv": ["'
        for _ in range(MAX_JSON_BODY // 65536 + 2):
            yield bytes(rng.choice(b"abc;$") for _ in range(65536))
        yield b'"]}'

    checked = 0
    for path, item in spec["paths"].items():
        for method in item:
            if path == "/v1/stagings":
                continue  # an upload: staging/max_upload caps it while it is spooled
            url = path.replace("{name}", "not-the-target").replace("{droplet_id}", "0" * 64).replace("{action}", "start")
            bodies = [big] + ([chunked()] if "requestBody" in item[method] else [])
            for content in bodies:
                response = client.request(method.upper(), url, content=content,
                                          headers={"content-type": "application/json"})
                assert response.status_code == 413, (method, url, response.text[:200])
                error = response.json()["error"]
                assert error["type"] == "RequestTooLarge" and "\n" not in error["message"], error
                assert error["message"].endswith(f"the body is larger than {MAX_JSON_BODY} bytes")
                checked += 1
    assert checked >= 15
    assert client.get("/v1/info").status_code == 200
    client.close()


def test_a_follow_whose_client_leaves_ends_its_daemon_threads(node: Node, app: str) -> None:
    """`fence logs --follow` threads end when the client leaves (issue 13 item 9)."""
    import psutil

    assert node.proc is not None
    daemon = psutil.Process(node.proc.pid)
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(node.root / "fence.sock")), base_url="http://fence",
                          timeout=60)

    def settle(target: int | None) -> int:
        deadline = time.monotonic() + 20
        while True:
            count = daemon.num_threads()
            if target is None or count <= target or time.monotonic() > deadline:
                return count
            time.sleep(0.2)

    def follow_and_leave() -> None:
        with client.stream("GET", f"/v1/apps/{app}/logs", params={"follow": "true", "tail": "1"}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()  # kept: the stream stays open while we look
            deadline = time.monotonic() + 10
            while daemon.num_threads() <= baseline and time.monotonic() < deadline:
                time.sleep(0.1)
            assert daemon.num_threads() > baseline, "the follower runs a pump per instance"
            del lines

    baseline = settle(None)
    follow_and_leave()  # the first one also starts the daemon's worker pools
    time.sleep(2)
    baseline = settle(None)
    for _ in range(20):
        follow_and_leave()
    # A leak is one thread or more per follow; a few more may be the daemon's worker pools growing.
    slack = 4
    assert settle(baseline + slack) <= baseline + slack, f"{daemon.num_threads()} threads, {baseline} before 20 follows"
    assert client.get("/v1/info").status_code == 200
    client.close()
