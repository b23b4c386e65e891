"""Container output cannot grow the daemon or the disk: floods without newlines, alias bombs, oversize droplets."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path


from tests.integration.node_kit import Node
from tests.integration.staging_kit import write_app, write_buildpack
from tests.security.probe_kit import RSS_LIMIT, ApiProbe

MARK = "… [line cut at 65536 bytes]"


def _watch(node: Node) -> ApiProbe:
    """While open: calls the API every 100 ms (latency, errors) and samples the daemon's RSS."""
    return ApiProbe(node, timeout=10, rss_every=0.1)


def _check(watch: ApiProbe, what: str) -> None:
    watch.check(what, min_calls=10, rss_limit=RSS_LIMIT)


def _run_until(node: Node, watch: ApiProbe, args: list[str], seconds: float) -> tuple[int | None, str, str]:
    """Run a CLI command; stop it early when the daemon passes the RSS limit (so a regression
    fails in seconds rather than swapping the machine). Returns (exit code or None, out, err)."""
    # Its output goes to files, not pipes: a pipe nobody reads while it runs fills at 64 KiB and
    # blocks the CLI (a cut 64 KiB line is exactly that much).
    with tempfile.TemporaryFile() as host_out, tempfile.TemporaryFile() as host_err:
        proc = subprocess.Popen([sys.executable, "-m", *args], env=node.env, stdout=host_out, stderr=host_err,
                                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + seconds
        while proc.poll() is None and time.monotonic() < deadline and not watch.too_big:
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        host_out.seek(0)
        host_err.seek(0)
        out, err = host_out.read(), host_err.read()
    return proc.returncode if proc.returncode is not None and proc.returncode >= 0 else None, \
        out.decode(errors="replace"), err.decode(errors="replace")


def test_a_hook_printing_2_gb_without_a_newline_costs_one_cut_line(node: Node, tmp_path: Path) -> None:
    source = write_app(tmp_path / "zeros", {
        "Procfile": "web: python3 -m http.server $PORT\n",
        "stackato.yml": "name: zeros\nhooks:\n  pre-staging:\n    - head -c 2G /dev/zero; echo; echo hook-done\n",
    })
    started = time.monotonic()
    with _watch(node) as watch:
        code, out, err = _run_until(node, watch, ["fence", "push", str(source)], seconds=480)
    took = time.monotonic() - started
    print(f"2 GB hook: push took {took:.0f} s")
    _check(watch, "2 GB hook")
    assert code == 0, err
    log = node.cli("fence", "logs", "zeros", "--staging").stdout
    assert MARK in log and "hook-done" in log
    assert len(log) < 1024 * 1024
    node.cli("fence", "delete", "zeros")


def test_a_release_alias_bomb_from_an_app_buildpack_is_refused_in_one_line(node: Node, tmp_path: Path) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(9)]
    bomb = "\n".join(levels + ["config_vars:", "  BOMB: *j"])
    pack = write_buildpack(tmp_path / "bomb-pack", detect="echo bomb\n", compile="true\n",
                           release=f"cat <<'EOF'\n{bomb}\nEOF\n")
    source = write_app(tmp_path / "bombed", {"Procfile": "web: python3 -m http.server $PORT\n"})
    with _watch(node) as watch:
        code, out, err = _run_until(node, watch, ["fence", "push", str(source), "--name", "bombed",
                                                  "--buildpack", str(pack)], seconds=180)
    _check(watch, "release alias bomb")
    assert code not in (0, None)
    assert err.startswith("error: staging failed in release (buildpack ") and err.count("\n") == 1, err
    assert "output is not YAML fence accepts" in err and "are not allowed" in err
    node.cli("fence", "delete", "bombed")


def test_run_cat_dev_zero_with_a_log_follower_attached(node: Node, tmp_path: Path) -> None:
    # The instance itself writes 20 MB/s without a newline, so the follower reads a flood too.
    source = write_app(tmp_path / "noisy", {
        "Procfile": "web: python3 -m http.server $PORT >/dev/null 2>&1 & "
                    "while true; do head -c 1048576 /dev/zero; sleep 0.05; done\n",
    })
    assert node.cli("fence", "push", str(source), "--name", "noisy").exit_code == 0
    followed_to = tempfile.TemporaryFile()  # a file, not a pipe nobody reads (it would block the follower)
    follower = subprocess.Popen([sys.executable, "-m", "fence", "logs", "noisy", "--follow"], env=node.env,
                                stdout=followed_to, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        with _watch(node) as watch:
            code, out, _ = _run_until(node, watch, ["fence", "run", "noisy", "--", "cat", "/dev/zero"], seconds=20)
        _check(watch, "cat /dev/zero with a follower")
        assert code is None, "cat /dev/zero ended by itself"  # it ran until the client was stopped
        assert MARK in out
        assert follower.poll() is None, "the follower stopped"
    finally:
        follower.kill()
        follower.wait(timeout=60)
        followed_to.seek(0)
        followed = followed_to.read()
        followed_to.close()
    assert MARK in followed.decode(errors="replace")
    deadline = time.monotonic() + 60
    while node.containers("task") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert node.containers("task") == [], "the task container outlived its client"
    node.cli("fence", "delete", "noisy")


def test_a_droplet_over_staging_max_droplet_fails_in_one_line_and_leaves_no_droplet(node: Node,
                                                                                   tmp_path: Path) -> None:
    source = write_app(tmp_path / "fat", {"Procfile": "web: python3 -m http.server $PORT\n"})
    (source / "blob.bin").write_bytes(bytes(3 * 1024 * 1024))
    before = sorted(p.name for p in (node.root / "droplets").glob("*")) if (node.root / "droplets").is_dir() else []
    assert node.cli("kato", "config", "set", "fence", "staging/max_droplet", "1").exit_code == 0
    try:
        result = node.cli("fence", "push", str(source), "--name", "fat", timeout=300)
    finally:
        node.cli("kato", "config", "del", "fence", "staging/max_droplet")
    assert result.exit_code != 0
    assert result.stderr == ("error: staging failed in packaging: the droplet is larger than "
                             "staging/max_droplet (1 MiB): nothing was kept\n"), result.stderr
    after = sorted(p.name for p in (node.root / "droplets").glob("*")) if (node.root / "droplets").is_dir() else []
    assert after == before, "a droplet or a partial file was left"
    assert "fat" not in node.cli("fence", "droplets").stdout
    node.cli("fence", "delete", "fat")
