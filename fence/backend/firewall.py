"""The host firewall that keeps app containers off the host: a FENCE-INPUT chain for fence's bridges."""

# Docker isolates user-defined bridges from each other (its DOCKER-ISOLATION chains in FORWARD),
# but never filters what a container sends to the host itself: the host answers on every
# address, the bridge's gateway included, so a container could reach sshd, the engine's TCP
# port or any service bound to 0.0.0.0. Packets a container sends to the host cross INPUT with
# the bridge as their in-interface; fence's bridges all start with BRIDGE_PREFIX, so one jump
# (`-i fnc-+`) covers every app network, present and future, without a rule per app. The
# router and the health checks still reach instances: they open the connections (OUTPUT), and
# the replies come back ESTABLISHED.

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

log = logging.getLogger(__name__)

BRIDGE_PREFIX = "fnc-"
CHAIN = "FENCE-INPUT"
_IFNAMSIZ = 15  # a Linux interface name holds at most 15 characters
_RULES = (("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
          ("-j", "DROP"))
_JUMP = ("INPUT", "-i", f"{BRIDGE_PREFIX}+", "-j", CHAIN)
_WAIT = ("-w", "5")  # wait for the xtables lock (the engine edits the tables too)
_TIMEOUT = 15


def bridge_interface(network_name: str) -> str:
    """The host interface name of a fence network's bridge: ``fnc-`` and 11 hex digits.

    Deterministic, so that the firewall can match every fence bridge by its prefix and an
    admin can tell which network an interface belongs to (``docker network inspect``).

    Args:
        network_name: the network's name.

    Returns:
        A name of at most 15 characters (the kernel's limit).
    """
    name = BRIDGE_PREFIX + hashlib.sha256(network_name.encode()).hexdigest()
    return name[:_IFNAMSIZ]


@dataclass(frozen=True)
class FirewallStatus:
    """Whether the host is closed to app containers.

    Attributes:
        protected: the rules are in place (and Docker's isolation of every fence bridge).
        problems: what is missing, one line each, for ``kato status``.
    """

    protected: bool
    problems: tuple[str, ...] = ()


class HostFirewall(Protocol):
    """The host's packet filter for traffic from fence's bridges to the host."""

    def install(self) -> FirewallStatus:
        """Put the rules in place (idempotent; the daemon calls it at start).

        Returns:
            What ``check`` reports afterwards (never raises: a node without iptables still runs,
            and its status says it is unprotected).
        """

    def check(self) -> FirewallStatus:
        """Whether the rules are in place, and every fence bridge is isolated by the engine.

        Returns:
            The status, with one line per problem.
        """


# (argv, stdin) → (exit status, combined output)
Runner = Callable[[Sequence[str], str | None], tuple[int, str]]


def run_argv(argv: Sequence[str], stdin: str | None) -> tuple[int, str]:
    """Run a program (argv list, no shell) and return its exit status and output."""
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                              timeout=_TIMEOUT, check=False)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: no answer within {_TIMEOUT} s"
    except OSError as exc:
        return 126, f"{argv[0]}: {exc.strerror}"
    return done.returncode, (done.stderr or done.stdout).strip()


@dataclass(frozen=True)
class _Family:
    """One address family's tool: ``iptables`` (IPv4) or ``ip6tables`` (IPv6)."""

    tool: str


class IptablesFirewall:
    """``HostFirewall`` with iptables (the tool the engine uses: nft or legacy alike).

    Args:
        run: runs an argv list (tests give a fake).
        which: finds a program on PATH (tests give a fake).
        host_net: the host's ``/sys/class/net`` (the bridges to check).
        ipv6: whether the host has IPv6 (then ip6tables gets the same rules; default: whether
            ``/proc/net/if_inet6`` exists). Containers on fence's networks have IPv6 off, so
            this is a second wall, not the first.
    """

    def __init__(self, *, run: Runner = run_argv, which: Callable[[str], str | None] = shutil.which,
                 host_net: Path = Path("/sys/class/net"), ipv6: bool | None = None) -> None:
        self._run = run
        self._which = which
        self._host_net = host_net
        if ipv6 is None:
            ipv6 = Path("/proc/net/if_inet6").exists()
        self._families = (_Family("iptables"),) + ((_Family("ip6tables"),) if ipv6 else ())
        self._lock = threading.Lock()

    def install(self) -> FirewallStatus:
        """See ``HostFirewall.install``: the chain is replaced in one ``iptables-restore`` transaction."""
        with self._lock:
            for family in self._families:
                self._install(family)
        status = self.check()
        for problem in status.problems:
            log.warning("host firewall: %s", problem)
        return status

    def _install(self, family: _Family) -> None:
        if self._which(family.tool) is None or self._which(f"{family.tool}-restore") is None:
            return  # check() reports it
        # --noflush leaves every other chain alone; declaring FENCE-INPUT creates or empties it,
        # and its rules land in the same commit, so it is never seen half-written.
        table = "\n".join(["*filter", f":{CHAIN} - [0:0]",
                           *(" ".join(("-A", CHAIN, *rule)) for rule in _RULES), "COMMIT", ""])
        code, output = self._run([f"{family.tool}-restore", *_WAIT, "--noflush"], table)
        if code != 0:
            log.warning("host firewall: %s-restore failed: %s", family.tool, _first_line(output))
            return
        if self._tool(family, "-C", *_JUMP)[0] != 0:
            code, output = self._tool(family, "-I", _JUMP[0], "1", *_JUMP[1:])
            if code != 0:
                log.warning("host firewall: %s could not add the INPUT jump: %s", family.tool, _first_line(output))

    def check(self) -> FirewallStatus:
        """See ``HostFirewall.check``."""
        problems: list[str] = []
        for family in self._families:
            problems += self._check_family(family)
        if not problems:
            problems += self._check_isolation()
        return FirewallStatus(protected=not problems, problems=tuple(problems))

    def _check_family(self, family: _Family) -> list[str]:
        open_host = "app containers can reach services on the host"
        if self._which(family.tool) is None:
            return [f"{family.tool} is not installed: {open_host} (install iptables and restart the daemon)"]
        code, output = self._tool(family, "-S", CHAIN)
        if code != 0:
            if "denied" in output.lower() or "must be root" in output.lower():
                return [f"cannot read the host firewall ({family.tool}: {_first_line(output)}): "
                        "run the daemon as root"]
            return [f"the {CHAIN} chain is missing from {family.tool}: {open_host} "
                    "(the daemon installs it at start; it runs as root)"]
        appended = [line for line in output.splitlines() if line.startswith("-A ")]
        if len(appended) != len(_RULES) or any(self._tool(family, "-C", CHAIN, *rule)[0] != 0 for rule in _RULES):
            return [f"the {CHAIN} chain of {family.tool} does not hold fence's rules: {open_host} "
                    "(restart the daemon to put them back)"]
        if self._tool(family, "-C", *_JUMP)[0] != 0:
            return [f"{family.tool} INPUT does not send traffic from {BRIDGE_PREFIX}+ bridges to {CHAIN}: "
                    f"{open_host} (restart the daemon to put it back)"]
        return []

    def _check_isolation(self) -> list[str]:
        """Docker's own rules keep two user-defined bridges apart; fence relies on them, so it
        checks that every fence bridge has them (an engine with ``"iptables": false`` has none)."""
        ipv4 = self._families[0]
        problems = []
        for bridge in self.bridges():
            stage_1 = ("DOCKER-ISOLATION-STAGE-1", "-i", bridge, "!", "-o", bridge, "-j", "DOCKER-ISOLATION-STAGE-2")
            stage_2 = ("DOCKER-ISOLATION-STAGE-2", "-o", bridge, "-j", "DROP")
            if any(self._tool(ipv4, "-C", *rule)[0] != 0 for rule in (stage_1, stage_2)):
                problems.append(f"bridge {bridge} has no Docker isolation rules: other apps' containers can "
                                "reach it (is the engine's iptables management off?)")
        if problems or not self.bridges():
            return problems
        if self._tool(ipv4, "-C", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1")[0] != 0:
            problems.append("FORWARD does not jump to DOCKER-ISOLATION-STAGE-1: apps can reach each other's "
                            "containers (is the engine's iptables management off?)")
        return problems

    def bridges(self) -> list[str]:
        """The host's fence bridges (interfaces named ``fnc-…``), sorted."""
        try:
            return sorted(p.name for p in self._host_net.iterdir() if p.name.startswith(BRIDGE_PREFIX))
        except OSError:
            return []

    def _tool(self, family: _Family, *args: str) -> tuple[int, str]:
        return self._run([family.tool, *_WAIT, *args], None)


@dataclass
class FakeFirewall:
    """``HostFirewall`` in memory, for unit tests: ``available`` false behaves like a node
    without iptables (install does nothing, check reports it).

    Attributes:
        available: whether the fake host has iptables.
        installed: whether the rules are in place.
        installs: how many times ``install`` was called.
        extra_problems: further lines ``check`` reports (e.g. a bridge without isolation).
    """

    available: bool = True
    installed: bool = False
    installs: int = 0
    extra_problems: list[str] = field(default_factory=list)

    def install(self) -> FirewallStatus:
        """See ``HostFirewall.install``."""
        self.installs += 1
        if self.available:
            self.installed = True
        return self.check()

    def check(self) -> FirewallStatus:
        """See ``HostFirewall.check``."""
        if not self.available:
            problems = ["iptables is not installed: app containers can reach services on the host "
                        "(install iptables and restart the daemon)"]
        elif not self.installed:
            problems = [f"the {CHAIN} chain is missing from iptables: app containers can reach services "
                        "on the host (the daemon installs it at start; it runs as root)"]
        else:
            problems = []
        problems += self.extra_problems
        return FirewallStatus(protected=not problems, problems=tuple(problems))


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[0][:200]
