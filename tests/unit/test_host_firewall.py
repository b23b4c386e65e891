"""IptablesFirewall against an in-memory iptables: what it installs, that installing twice changes nothing,
and each way the protection can be missing, reported in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest

from fence.backend.firewall import BRIDGE_PREFIX, CHAIN, IptablesFirewall, bridge_interface

_DOCKER_CHAINS = ("DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2")


class FakeIptables:
    """Enough of iptables(-restore) for the firewall: -S, -C, -I, and a --noflush restore of one chain."""

    def __init__(self) -> None:
        self.chains: dict[str, list[tuple[str, ...]]] = {"INPUT": [], "FORWARD": [("-j", "DOCKER-ISOLATION-STAGE-1")]}
        self.chains.update({name: [] for name in _DOCKER_CHAINS})
        self.calls: list[list[str]] = []
        self.denied = False

    def bridge(self, name: str) -> None:
        """What the engine adds for a new user-defined bridge."""
        self.chains["DOCKER-ISOLATION-STAGE-1"].insert(0, ("-i", name, "!", "-o", name, "-j", "DOCKER-ISOLATION-STAGE-2"))
        self.chains["DOCKER-ISOLATION-STAGE-2"].insert(0, ("-o", name, "-j", "DROP"))

    def run(self, argv: Sequence[str], stdin: str | None) -> tuple[int, str]:
        argv = list(argv)
        self.calls.append(argv)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        if self.denied:
            return 4, "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"
        tool, args = argv[0], argv[1:]
        assert args[:2] == ["-w", "5"]
        args = args[2:]
        if tool.endswith("-restore"):
            assert args == ["--noflush"] and stdin is not None
            for line in stdin.splitlines():
                if line.startswith(":"):
                    self.chains[line[1:].split()[0]] = []
                elif line.startswith("-A "):
                    chain, *rule = line.split()[1:]
                    self.chains[chain].append(tuple(rule))
            return 0, ""
        verb, chain, *rule = args
        if chain not in self.chains:
            return 1, f"iptables: No chain/target/match by that name. ({chain})"
        if verb == "-S":
            return 0, "\n".join([f"-N {chain}", *(" ".join(["-A", chain, *r]) for r in self.chains[chain])])
        if verb == "-C":
            return (0, "") if tuple(rule) in self.chains[chain] else (1, "iptables: Bad rule")
        if verb == "-I":
            position, *rule = rule
            self.chains[chain].insert(int(position) - 1, tuple(rule))
            return 0, ""
        raise AssertionError(f"unexpected iptables call {argv}")


@pytest.fixture
def tables() -> FakeIptables:
    return FakeIptables()


def firewall(tables: FakeIptables, tmp_path: Path, *, tools: tuple[str, ...] = ("iptables", "iptables-restore"),
             bridges: tuple[str, ...] = ()) -> IptablesFirewall:
    host_net = tmp_path / "net"
    host_net.mkdir(exist_ok=True)
    for name in ("lo", "eth0", "docker0", *bridges):
        (host_net / name).mkdir(exist_ok=True)
    return IptablesFirewall(run=tables.run, which=lambda name: f"/usr/sbin/{name}" if name in tools else None,
                            host_net=host_net, ipv6=False)


def test_install_adds_the_chain_and_one_jump_for_fence_bridges(tables: FakeIptables, tmp_path: Path) -> None:
    status = firewall(tables, tmp_path).install()
    assert status.protected and status.problems == ()
    assert tables.chains[CHAIN] == [("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
                                    ("-j", "DROP")]
    assert tables.chains["INPUT"] == [("-i", f"{BRIDGE_PREFIX}+", "-j", CHAIN)]


def test_installing_again_changes_nothing_and_repairs_a_tampered_chain(tables: FakeIptables, tmp_path: Path) -> None:
    wall = firewall(tables, tmp_path)
    wall.install()
    tables.chains["INPUT"].insert(0, ("-i", "eth0", "-j", "ACCEPT"))
    tables.chains[CHAIN].pop()  # the DROP rule gone
    assert not wall.check().protected
    assert wall.install().protected
    assert tables.chains["INPUT"] == [("-i", "eth0", "-j", "ACCEPT"), ("-i", f"{BRIDGE_PREFIX}+", "-j", CHAIN)]
    assert len(tables.chains[CHAIN]) == 2


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda t: t.chains.pop(CHAIN), "the FENCE-INPUT chain is missing from iptables"),
    (lambda t: t.chains[CHAIN].pop(), "does not hold fence's rules"),
    (lambda t: t.chains[CHAIN].insert(0, ("-j", "ACCEPT")), "does not hold fence's rules"),
    (lambda t: t.chains["INPUT"].clear(), "INPUT does not send traffic from fnc-+ bridges"),
])
def test_each_missing_piece_is_one_line(tables: FakeIptables, tmp_path: Path, damage, expected: str) -> None:  # noqa: ANN001
    wall = firewall(tables, tmp_path)
    wall.install()
    damage(tables)
    status = wall.check()
    assert not status.protected
    [problem] = status.problems
    assert expected in problem and "\n" not in problem


def test_a_node_without_iptables_runs_and_says_it_is_unprotected(tables: FakeIptables, tmp_path: Path) -> None:
    status = firewall(tables, tmp_path, tools=()).install()
    assert not status.protected
    assert status.problems == ("iptables is not installed: app containers can reach services on the host "
                               "(install iptables and restart the daemon)",)
    assert tables.calls == []


def test_a_daemon_that_is_not_root_is_told_so(tables: FakeIptables, tmp_path: Path) -> None:
    tables.denied = True
    [problem] = firewall(tables, tmp_path).install().problems
    assert problem.startswith("cannot read the host firewall") and "run the daemon as root" in problem


def test_every_fence_bridge_must_be_isolated_by_the_engine(tables: FakeIptables, tmp_path: Path) -> None:
    isolated, bare = bridge_interface("fence-n1-shop"), bridge_interface("fence-n1-blog")
    tables.bridge(isolated)
    wall = firewall(tables, tmp_path, bridges=(isolated, bare))
    assert wall.bridges() == sorted([isolated, bare])
    [problem] = wall.install().problems
    assert problem.startswith(f"bridge {bare} has no Docker isolation rules")
    tables.bridge(bare)
    assert wall.check().protected
    tables.chains["FORWARD"].clear()
    assert "FORWARD does not jump to DOCKER-ISOLATION-STAGE-1" in wall.check().problems[0]


def test_ipv6_gets_the_same_rules_where_the_host_has_it(tables: FakeIptables, tmp_path: Path) -> None:
    wall = IptablesFirewall(run=tables.run, which=lambda name: f"/usr/sbin/{name}", host_net=tmp_path, ipv6=True)
    assert wall.install().protected
    assert {call[0] for call in tables.calls} == {"iptables", "iptables-restore", "ip6tables", "ip6tables-restore"}


def test_bridge_names_are_deterministic_and_fit_the_kernels_limit() -> None:
    names = {bridge_interface(f"fence-n{i:012x}-{'a' * 63}") for i in range(200)}
    assert len(names) == 200
    assert all(n.startswith(BRIDGE_PREFIX) and len(n) == 15 for n in names)
    assert bridge_interface("fence-n1-shop") == bridge_interface("fence-n1-shop")
