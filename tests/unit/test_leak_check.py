"""The suite-level leak check names the test after which a daemon, nginx or container appeared."""

from __future__ import annotations

import subprocess

from tests.leaks import LeakWatch, Leftover, _process_kind, running_processes


def test_kinds_of_fence_started_processes() -> None:
    assert _process_kind(["nginx: master process /usr/sbin/nginx -p /h/router/ -c /h/router/nginx.conf"]) == "nginx"
    assert _process_kind(["/usr/bin/python3", "-m", "fence", "serve"]) == "daemon"
    assert _process_kind(["/work/.venv/bin/fence", "serve"]) == "daemon"
    assert _process_kind(["/usr/sbin/dockerd", "--data-root", "/tmp/x"]) == "engine"
    assert _process_kind(["/usr/bin/python3", "-m", "fence", "apps"]) is None
    assert _process_kind(["nginx: worker process"]) is None


def test_a_process_left_running_is_reported_with_the_test_that_left_it() -> None:
    items: set[Leftover] = {Leftover("engine", "1", "main engine")}
    watch = LeakWatch(snapshot=lambda: set(items))
    watch.start()
    watch.after("tests/a.py::test_clean")
    items.add(Leftover("nginx", "2", "nginx: master"))
    watch.after("tests/b.py::test_leaky")
    items.add(Leftover("daemon", "3", "fence serve"))
    watch.after("tests/c.py::test_fixture_start")
    items.discard(Leftover("daemon", "3", ""))  # stopped by its module's teardown: not a leak
    watch.after("tests/c.py::test_fixture_end")
    assert watch.leaks() == {Leftover("nginx", "2", ""): "tests/b.py::test_leaky"}


def test_a_real_nginx_titled_process_is_seen_and_stopped() -> None:
    proc = subprocess.Popen(["bash", "-c", 'exec -a "nginx: master process fake-for-test" sleep 60'])
    try:
        import time

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
                item.ident == str(proc.pid) for item in running_processes()):
            time.sleep(0.05)
        [item] = [item for item in running_processes() if item.ident == str(proc.pid)]
        assert item.kind == "nginx"
        LeakWatch.stop(item)
        assert proc.wait(timeout=15) is not None
    finally:
        proc.kill()


def test_only_what_lies_under_the_session_folder_is_this_sessions(tmp_path) -> None:
    from tests.leaks import in_scope, node_ids_under

    (tmp_path / "t1" / "fence-home").mkdir(parents=True)
    (tmp_path / "t1" / "fence-home" / "node-id").write_text("nabc\n")
    ids = node_ids_under(tmp_path)
    assert ids == {"nabc"}
    assert in_scope(Leftover("nginx", "1", "", str(tmp_path / "t1" / "fence-home" / "router") + "/"), tmp_path, ids)
    assert in_scope(Leftover("daemon", "2", "", str(tmp_path / "t1" / "fence-home")), tmp_path, ids)
    assert in_scope(Leftover("container", "c1", "", "nabc"), tmp_path, ids)
    # Another session's (or make demo's) things are never this session's.
    assert not in_scope(Leftover("daemon", "3", "", "/var/lib/fence"), tmp_path, ids)
    assert not in_scope(Leftover("nginx", "4", "", "/var/lib/fence/router/"), tmp_path, ids)
    assert not in_scope(Leftover("container", "c2", "", "nother"), tmp_path, ids)
    assert not in_scope(Leftover("daemon", "5", "", ""), tmp_path, ids)


def test_extra_engine_processes_registries_and_bridges_are_named() -> None:
    from tests.leaks import _owner

    assert _process_kind(["containerd", "--config", "/tmp/s/fct0n1/exec/containerd/containerd.toml"]) == "engine"
    assert _process_kind(["/usr/bin/containerd-shim-runc-v2", "-namespace", "fct0n1", "-address",
                          "/tmp/s/fct0n1/exec/containerd/containerd.sock"]) == "engine"
    assert _process_kind(["/usr/bin/docker-registry", "serve", "/h/registry/config.yml"]) == "registry"
    assert _owner(None, "registry", ["/usr/bin/docker-registry", "serve", "/h/registry/config.yml"]) \
        == "/h/registry/config.yml"


def test_a_bridge_marked_as_an_extra_engines_is_seen_and_removed(tmp_path) -> None:
    import os

    import pytest

    from tests.leaks import ENGINE_BRIDGE_ALIAS, engine_bridges, in_scope

    if os.geteuid() != 0:
        pytest.skip("making a bridge needs root")
    name = f"fctt{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", "dev", name, "alias", f"{ENGINE_BRIDGE_ALIAS} {tmp_path}"], check=True)
        [item] = [item for item in engine_bridges() if item.ident == name]
        assert item.kind == "bridge" and in_scope(item, tmp_path, set())
        LeakWatch.stop(item)
        assert not [item for item in engine_bridges() if item.ident == name]
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_an_extra_engines_folder_left_behind_is_seen_and_removed(tmp_path, monkeypatch) -> None:
    import tests.leaks as leaks

    roots = tmp_path / "roots"
    roots.mkdir()
    folder = tmp_path / "session" / "fct9n1"
    (folder / "data").mkdir(parents=True)
    (roots / "fct9n1").symlink_to(folder)
    monkeypatch.setattr(leaks, "ENGINE_ROOTS", roots)
    [item] = leaks.engine_roots()
    assert item.kind == "engine-root" and leaks.in_scope(item, tmp_path / "session", set())
    assert not leaks.in_scope(item, tmp_path / "another-session", set())
    import tests.cluster.engines as engines

    monkeypatch.setattr(engines, "KIT_STATE", tmp_path)
    LeakWatch.stop(item)
    assert not folder.exists() and not (roots / "fct9n1").exists() and leaks.engine_roots() == set()
