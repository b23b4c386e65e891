"""The cgroup reader on made-up hosts: v1 with the cgroupfs driver, v2 with systemd's, and the mount table that tells them apart."""

from __future__ import annotations

from pathlib import Path

from fence.backend.cgroups import CgroupMounts, CgroupReader, find_mounts, net_counters

CID = "ab" * 32
V1_MOUNTS = """\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
36 25 0:32 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
"""
V2_MOUNTS = "26 30 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    5000      10    0    0    0     0          0         0     5000      10    0    0    0     0       0          0
  eth0:    1234       7    0    0    0     0          0         0      567       5    0    0    0     0       0          0
"""


def _write(host_dir: Path, files: dict[str, str]) -> None:
    host_dir.mkdir(parents=True)
    for name, text in files.items():
        (host_dir / name).write_text(text)


def _proc(tmp_path: Path) -> Path:
    (tmp_path / "proc" / "4242" / "net").mkdir(parents=True)
    (tmp_path / "proc" / "4242" / "net" / "dev").write_text(NET_DEV)
    return tmp_path / "proc"


def test_the_mount_table_gives_the_layout(tmp_path: Path) -> None:
    (tmp_path / "v1").write_text(V1_MOUNTS)
    (tmp_path / "v2").write_text(V2_MOUNTS)
    assert find_mounts(tmp_path / "v1") == CgroupMounts(version=1, host_cpu=Path("/sys/fs/cgroup/cpu,cpuacct"),
                                                        host_memory=Path("/sys/fs/cgroup/memory"))
    assert find_mounts(tmp_path / "v2") == CgroupMounts(version=2, host_cpu=Path("/sys/fs/cgroup"),
                                                        host_memory=Path("/sys/fs/cgroup"))
    assert find_mounts(tmp_path / "missing") is None


def test_v1_cgroupfs_counters_as_docker_stats_counts_them(tmp_path: Path) -> None:
    cpu, memory = tmp_path / "cpu", tmp_path / "memory"
    _write(cpu / "docker" / CID, {"cpuacct.usage": "2500000000\n"})
    _write(memory / "docker" / CID, {"memory.usage_in_bytes": "1000000\n", "memory.limit_in_bytes": "67108864\n",
                                     "memory.stat": "cache 9\ntotal_inactive_file 200000\n", "cgroup.procs": "4242\n"})
    reader = CgroupReader(mounts=CgroupMounts(version=1, host_cpu=cpu, host_memory=memory), host_proc=_proc(tmp_path))
    sample = reader.sample(CID)
    assert sample is not None
    assert (sample.cpu_seconds, sample.memory_bytes, sample.memory_limit_bytes) == (2.5, 800000, 64 << 20)
    assert (sample.net_rx_bytes, sample.net_tx_bytes) == (1234, 567)  # loopback left out
    (memory / "docker" / CID / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert reader.sample(CID).memory_limit_bytes == 0  # no limit
    assert reader.sample("cd" * 32) is None


def test_v2_systemd_counters(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _write(root / "system.slice" / f"docker-{CID}.scope",
           {"cpu.stat": "usage_usec 1500000\nuser_usec 1000000\n", "memory.current": "500000\n", "memory.max": "max\n",
            "memory.stat": "anon 1\ninactive_file 100000\n", "cgroup.procs": "4242\n"})
    reader = CgroupReader(mounts=CgroupMounts(version=2, host_cpu=root, host_memory=root), host_proc=_proc(tmp_path))
    sample = reader.sample(CID)
    assert sample is not None
    assert (sample.cpu_seconds, sample.memory_bytes, sample.memory_limit_bytes) == (1.5, 400000, 0)


def test_a_container_that_stopped_reads_as_none(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu"
    _write(cpu / "docker" / CID, {"cpuacct.usage": "1\n", "memory.usage_in_bytes": "1\n",
                                  "memory.limit_in_bytes": "1\n", "memory.stat": "", "cgroup.procs": ""})
    reader = CgroupReader(mounts=CgroupMounts(version=1, host_cpu=cpu, host_memory=cpu), host_proc=tmp_path)
    assert reader.sample(CID) is not None  # no process left: no network figures, still a sample
    for name in ("cpuacct.usage", "memory.usage_in_bytes", "memory.limit_in_bytes", "memory.stat", "cgroup.procs"):
        (cpu / "docker" / CID / name).unlink()
    (cpu / "docker" / CID).rmdir()
    assert reader.sample(CID) is None
    assert net_counters(tmp_path / "nowhere") == (0, 0)
