"""Each built-in buildpack stages its sample app from examples/, offline, on the default stack."""

from __future__ import annotations

import base64
import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from fence.home import NodeHome
from fence.models import AppRecord
from fence.service import NodeService
from fence.wiring import node_service
from tests.integration.staging_kit import EXAMPLES, droplet_files, stage, staging_containers, staging_info, trust_test_folders


@pytest.fixture
def node(home: NodeHome, engine: str):  # noqa: ANN201
    service = trust_test_folders(node_service(home), home)
    assert service.config.fence("staging/network") == "none"  # every staging here is offline
    yield service
    service.close()
    assert staging_containers(service.node_id) == []


@pytest.mark.parametrize(("example", "buildpack", "start"), [
    ("python-hello", "python", "python app.py"),
    ("node-hello", "nodejs", "npm start"),
    ("static-hello", "static", None),
    ("procfile-hello", "procfile", None),
])
def test_example_stages_with_its_builtin_buildpack(node: NodeService, example: str, buildpack: str,
                                                   start: str | None) -> None:
    log: list[str] = []
    record = stage(node, EXAMPLES / example, app=example, log=log)
    info = staging_info(node, record)
    assert info["buildpacks"][-1]["origin"] == buildpack
    assert info["buildpack_version"].startswith("builtin-")
    assert info["start_command"], info
    if start is not None:
        assert info["start_command"] == start
    assert info["detected_buildpack"]
    assert any(line.startswith("-----> Detecting buildpack") for line in log)


def test_python_installs_vendored_wheels_offline_and_caches(node: NodeService, tmp_path: Path) -> None:
    app = tmp_path / "pyapp"
    shutil.copytree(EXAMPLES / "python-hello", app)
    # A real (pure-Python) wheel, written now, vendored the way the buildpack documents.
    (app / "vendor").mkdir(exist_ok=True)
    write_wheel(app / "vendor" / "tinypkg-1.0-py3-none-any.whl",
                {"tinypkg/__init__.py": "GREETING = 'hi from a vendored wheel'\n"})
    with (app / "requirements.txt").open("a") as requirements:
        requirements.write("tinypkg==1.0\n")
    first: list[str] = []
    record = stage(node, app, app="pyapp", log=first)
    files = droplet_files(node, record)
    assert any(name.startswith("app/.venv/") and "tinypkg" in name for name in files), "wheel not installed"
    assert any(name.startswith("app/.profile.d/") for name in files)
    second: list[str] = []
    stage(node, app, app="pyapp", log=second, force=True)
    assert any("pip install skipped" in line for line in second), second


def test_python_warm_restage_skips_pip_and_its_droplet_runs(node: NodeService, tmp_path: Path) -> None:
    app = tmp_path / "pyhello"
    shutil.copytree(EXAMPLES / "python-hello", app)
    stage(node, app, app="pyhello")
    warm: list[str] = []
    record = stage(node, app, app="pyhello", log=warm, force=True)
    assert any("pip install skipped" in line for line in warm), warm
    assert "-----> Build cache unchanged: kept as it is" in warm
    assert any("post-staging, greeting 0.1.0 is installed" in line for line in warm), warm
    node.store.put_app(AppRecord(name="pyhello", instances=0, memory_mib=128, env={}, started=False, release=None,
                                 health_timeout=None, urls=(), created_at="2024-01-01T00:00:00+00:00"))
    node.store.add_release("pyhello", record.id, "2024-01-01T00:00:00+00:00", "test")
    output: list[str] = []
    code = node.apps.run_task("pyhello", ("python", "-c", "import greeting; print(greeting.greet('7'))"),
                              output.append)
    assert code == 0 and "Hello from fence (instance 7)" in output, output

    # A local package named in requirements.txt is part of the fingerprint: changing it runs pip.
    package = app / "packages" / "greeting" / "greeting" / "__init__.py"
    package.write_text(package.read_text().replace("Hello from fence", "Changed greeting"))
    changed: list[str] = []
    stage(node, app, app="pyhello", log=changed, force=True)
    assert not any("pip install skipped" in line for line in changed)
    assert any("Installing requirements.txt" in line for line in changed), changed
    assert "-----> Saving the build cache" in changed


def write_wheel(host_wheel: Path, files: dict[str, str]) -> None:
    """A minimal valid wheel (PEP 427): the files, METADATA, WHEEL and a RECORD with hashes."""
    name, version = host_wheel.name.split("-")[:2]
    info = f"{name}-{version}.dist-info"
    entries = dict(files)
    entries[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    entries[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: fence-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, text in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    entries[f"{info}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(host_wheel, "w") as wheel:
        for path, text in entries.items():
            wheel.writestr(path, text)
