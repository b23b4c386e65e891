"""The extra-engine kit itself: an engine comes up remapped with no-new-privileges, and goes without a trace."""

from __future__ import annotations

from pathlib import Path

from tests.cluster.engines import EngineKit, EngineOptions, engine_info
from tests.leaks import engine_bridges, engine_roots, running_processes


def test_an_extra_engine_is_remapped_and_leaves_nothing_behind(engine_kit: EngineKit, tmp_path: Path) -> None:
    kit = EngineKit(host_root=tmp_path)
    try:
        engine = kit.up(EngineOptions())
        info = engine_info(engine)
        assert "name=userns" in info["SecurityOptions"]
        assert Path(str(info["DockerRootDir"])).is_relative_to(tmp_path)
        status = engine.docker("run", "--rm", "--user", "1000", "--net", "none", "fence-test/busybox:1",
                               "cat", "/proc/self/status").stdout
        assert "NoNewPrivs:\t1" in status
        engine.docker("run", "-d", "--user", "1000", "--net", "none", "fence-test/busybox:1", "sleep", "600")
        engine.kill_hard()  # a crash: its containerd and the container's processes live on
    finally:
        kit.down()
    mine = str(tmp_path)
    assert not [p for p in running_processes() if p.owner.startswith(mine)]
    assert not [b for b in engine_bridges() if b.owner.startswith(mine)]
    assert not [r for r in engine_roots() if r.owner.startswith(mine)]
    import psutil

    assert not [p for p in psutil.process_iter(["cmdline"]) if any(mine in a for a in p.info["cmdline"] or ())]
