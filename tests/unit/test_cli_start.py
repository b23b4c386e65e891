"""The `fence` CLI's start: commands load lazily from one table, and `fence apps --json` imports only what it needs."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
import time
from typing import Iterator

import click
import pytest
import uvicorn
from click.testing import CliRunner

from fence import cli
from fence.api import create_app
from fence.backend.fake import FakeBackend
from fence.client import FenceClient
from fence.home import NodeHome
from fence.models import AppRecord
from fence.wire import to_wire
from fence.wiring import node_service

# What `fence apps --json` may load of fence: the group, the command's module, the client (and the
# errors it raises), printing, and FENCE_HOME for the socket's path. Not fence.models, fence.wire or
# fence.rules: the daemon's JSON is printed as it came.
APPS_JSON_LOADS = {"fence", "fence.cli", "fence.cli_apps", "fence.client", "fence.client_http", "fence.console",
                   "fence.errors", "fence.home"}
NEVER_AT_START = {"fence.models", "fence.wire", "fence.rules", "fence.labels", "yaml", "jinja2", "pydantic",
                  "fastapi", "httpx", "docker", "git", "fence.staging.sources", "http.client", "email", "ssl"}


def test_the_client_imports_neither_http_client_nor_email() -> None:
    # fence.client_http speaks HTTP/1.1 itself: http.client would bring email.parser and ssl (~30 ms a call).
    code = "import sys\nimport fence.client\nprint(' '.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "fence.client_http" in loaded
    assert not {m for m in loaded if m in ("http.client", "email", "ssl") or m.startswith("email.")}


def test_every_table_entry_is_a_command_of_its_name() -> None:
    for name, spec in cli.COMMAND_TABLE.items():
        module, _, attribute = spec.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command) and command.name == name, spec


def test_every_command_a_module_exposes_is_in_the_table() -> None:
    modules = {spec.partition(":")[0] for spec in cli.COMMAND_TABLE.values()}
    listed = {(spec.partition(":")[0], name) for name, spec in cli.COMMAND_TABLE.items()}
    for module in modules:
        for command in getattr(importlib.import_module(module), "COMMANDS", ()):
            assert (module, command.name) in listed, f"{module}:{command.name} is missing from COMMAND_TABLE"


def test_help_lists_every_command_with_its_short_help() -> None:
    done = CliRunner().invoke(cli.fence, ["--help"])
    assert done.exit_code == 0
    for name in cli.COMMAND_TABLE:
        assert f"  {name} " in done.output
    assert "List apps: state, instances" in done.output


def test_an_unknown_command_is_one_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "fence", "nope"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == "error: No such command 'nope'."


@pytest.fixture
def daemon(home: NodeHome) -> Iterator[FenceClient]:
    """The real API on the fake backend, on the node's socket, with two stopped apps."""
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    for name in ("one", "two"):
        service.store.put_app(AppRecord(name=name, instances=2, memory_mib=128, env={"K": name}, started=False,
                                        release=None, health_timeout=None, urls=(), created_at="2024-01-01"))
    server = uvicorn.Server(uvicorn.Config(create_app(service, service.apps), uds=str(home.host_socket),
                                           log_config=None, access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    client = FenceClient(host_socket=home.host_socket)
    try:
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=20)
        service.close()


def test_apps_json_loads_only_what_it_needs_and_prints_what_the_typed_path_would(daemon: FenceClient) -> None:
    code = ("import sys\nsys.argv = ['fence', 'apps', '--json']\nimport fence.cli\ntry:\n    fence.cli.main()\n"
            "finally:\n    print(' '.join(sorted(sys.modules)), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stderr.split())
    assert {m for m in loaded if m == "fence" or m.startswith("fence.")} == APPS_JSON_LOADS
    assert not loaded & NEVER_AT_START
    printed = json.loads(done.stdout)
    assert [app["name"] for app in printed] == ["one", "two"]
    assert printed == json.loads(json.dumps(to_wire(daemon.apps())))  # the same as decoding and re-encoding


def test_app_json_prints_the_daemon_s_answer_and_a_bad_name_is_refused_first(daemon: FenceClient) -> None:
    done = subprocess.run([sys.executable, "-m", "fence", "app", "one", "--json"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(json.dumps(to_wire(daemon.app("one"))))
    done = subprocess.run([sys.executable, "-m", "fence", "app", "No_Such", "--json"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "No_Such" in done.stderr


def test_scale_prints_its_counts_without_loading_the_models(daemon: FenceClient) -> None:
    code = ("import sys\nsys.argv = ['fence', 'scale', 'one', '3']\nimport fence.cli\ntry:\n    fence.cli.main()\n"
            "finally:\n    print(' '.join(sorted(sys.modules)), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "one: 0/3 running"  # a stopped app: its count is set, nothing starts
    loaded = set(done.stderr.split())
    assert {m for m in loaded if m.startswith("fence.")} == APPS_JSON_LOADS - {"fence"} | {"fence.rules"}
    assert daemon.app("one").instances == 3
