"""Identity and isolation of app, staging and one-off processes (real engine)."""

from __future__ import annotations

import re
import subprocess
import tarfile

import pytest

from tests.integration.node_kit import Node
from tests.security.conftest import in_instance, task


def _status_fields(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^(\w+):\s*(.*)$", text, re.M)}


def test_instance_runs_unprivileged(node: Node, app: str) -> None:
    code, out = in_instance(node, app, "grep -E '^(Uid|CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/1/status; id -u")
    assert code == 0, out
    fields = _status_fields(out)
    assert fields["CapEff"] == "0000000000000000" and fields["CapPrm"] == "0000000000000000"
    assert fields["NoNewPrivs"] == "1"
    assert fields["Uid"].split()[0] == "1000" and out.splitlines()[-1] == "1000"


def test_one_off_task_runs_unprivileged(node: Node, app: str) -> None:
    code, out = task(node, app, "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; id -u")
    assert code == 0
    fields = _status_fields(out)
    assert fields["CapEff"] == "0000000000000000" and fields["NoNewPrivs"] == "1"
    assert out.splitlines()[-1] == "1000"


def test_staging_ran_unprivileged(node: Node, app: str) -> None:
    droplet = node.app(app)["droplet"]
    with tarfile.open(node.root / "droplets" / f"{droplet}.tgz") as tar:
        member = tar.extractfile("app/staging-identity.txt")
        assert member is not None
        fields = _status_fields(member.read().decode())
    assert fields["Uid"].split()[0] == "1000"
    assert fields["CapEff"] == "0000000000000000" and fields["NoNewPrivs"] == "1"


def test_setuid_binaries_gain_nothing(node: Node, app: str) -> None:
    code, out = in_instance(node, app, "find /usr/bin /bin -perm -4000 -type f | head -5; "
                                       "su -c id root </dev/null; echo su=$?; "
                                       "/usr/bin/passwd --status root; echo passwd=$?")
    assert "su=0" not in out and "passwd=0" not in out, out
    assert "/usr/bin/mount" in out  # the stack has setuid-root binaries; they stay inert
    assert "You may not view or modify password information for root" in out


def test_container_root_is_not_host_root(node: Node, app: str) -> None:
    security = subprocess.run(["docker", "info", "--format", "{{json .SecurityOptions}}"], capture_output=True,
                              text=True).stdout
    if "name=userns" not in security:
        pytest.skip("the engine runs without userns-remap: container uid 0 is host uid 0 (kato status warns)")
    code, out = in_instance(node, app, "cat /proc/self/uid_map")
    inside, outside, count = out.split()[:3]
    assert code == 0 and inside == "0" and outside != "0" and int(outside) >= 65536


def test_sees_only_its_own_processes(node: Node, app: str) -> None:
    code, out = in_instance(node, app, "ps -eo pid=,comm=")
    commands = {line.split(None, 1)[1] for line in out.splitlines() if line.strip()}
    assert code == 0 and commands <= {"docker-init", "tini", "bash", "python3", "ps"}, commands
    host_daemon = subprocess.run(["pgrep", "-f", "fence serve"], capture_output=True, text=True).stdout.split()
    assert host_daemon and not any(f" {pid} " in f" {out} " for pid in host_daemon if int(pid) > 100)


def test_no_docker_socket_and_no_host_paths(node: Node, app: str) -> None:
    code, out = in_instance(node, app, "ls -la /var/run/docker.sock /run/docker.sock 2>&1; "
                                       f"ls {node.root} 2>&1; grep -c ' / ' /proc/self/mountinfo")
    assert "No such file or directory" in out and "docker.sock ->" not in out
    mounts = subprocess.run(["docker", "inspect", "--format", "{{json .Mounts}}",
                             node.app(app)["instance_list"][0]["container"]], capture_output=True, text=True).stdout
    assert mounts.strip() == "[]"


def test_cannot_write_sysrq_mount_or_unshare(node: Node, app: str) -> None:
    code, out = in_instance(node, app, "echo b > /proc/sysrq-trigger; echo sysrq=$?; "
                                       "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m; echo mount=$?; "
                                       "unshare --user --map-root-user true; echo unshare=$?")
    assert "sysrq=0" not in out and "mount=0" not in out and "unshare=0" not in out, out


def test_cannot_read_another_apps_files(node: Node, app: str, tmp_path) -> None:  # noqa: ANN001
    from tests.integration.staging_kit import write_app
    other = write_app(tmp_path / "other", {"Procfile": "web: python3 -m http.server $PORT\n", "mine.txt": "x\n"})
    assert node.cli("fence", "push", str(other), "--name", "other").exit_code == 0
    code, out = in_instance(node, "other", "cat /home/stackato/app/secret.txt 2>&1; "
                                           "find / -xdev -name 'secret.txt' 2>/dev/null; "
                                           "find / -xdev -name '*.tgz' -path '*droplets*' 2>/dev/null; echo done")
    assert "app-one-secret" not in out and out.splitlines()[-1] == "done" and "droplets" not in out
