"""Drain URLs and names, checked once (stdlib only: the CLIs and the config schema import this)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from fence.errors import UsageError
from fence.rules import DNS_NAME_PATTERN, check_app_name

# syslog:// is TCP with octet-counted frames (RFC 6587 3.4.1, and RFC 5425 for TLS), so a
# line holding a newline stays one message; syslog+udp:// is one message per datagram (RFC 5426).
SCHEMES = ("syslog", "syslog+udp", "syslog+tls", "http", "https")
MAX_URL = 2048
MAX_APP_DRAINS = 16  # drains one app may have
_HOST = re.compile(DNS_NAME_PATTERN)


@dataclass(frozen=True)
class DrainUrl:
    """A checked drain URL.

    Attributes:
        url: the URL as given.
        scheme: one of ``SCHEMES``.
        host: the host name or address (IPv6 without brackets).
        port: the port (http/https: the scheme's default when not given).
    """

    url: str
    scheme: str
    host: str
    port: int

    @property
    def shown(self) -> str:
        """The URL without credentials (an HTTP drain's ``user:token@`` is a secret)."""
        return re.sub(r"^([a-z+]+://)[^/@]*@", r"\1***@", self.url)


def check_drain_name(name: object) -> str:
    """Refuse a drain name that is not 1-63 lower-case letters, digits and inner dashes.

    Raises:
        InvalidName: it breaks the pattern.
    """
    return check_app_name(name, what="drain name")


def parse_drain_url(text: object, *, what: str = "drain URL") -> DrainUrl:
    """Check a drain URL: ``syslog://HOST:PORT`` (TCP), ``syslog+udp://HOST:PORT``,
    ``syslog+tls://HOST:PORT`` or ``http(s)://HOST[:PORT][/PATH]`` (NDJSON posts).

    Args:
        text: the URL.
        what: what it is, for the error (``drain 'audit'``, ``logs/drains``, a manifest key).

    Returns:
        The parsed URL.

    Raises:
        UsageError: anything else, in one line saying what is wrong.
    """
    if not isinstance(text, str) or not text:
        raise UsageError(detail=f"{what}: give a URL like syslog://logs.example.com:514")
    shown = text if len(text) <= 80 else text[:77] + "..."
    if len(text) > MAX_URL or any(ord(ch) < 0x21 or ch == "\x7f" for ch in text):
        raise UsageError(detail=f"{what} {shown!r}: a URL may not hold spaces or control characters "
                                f"or exceed {MAX_URL} characters")
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme not in SCHEMES:
        raise UsageError(detail=f"{what} {shown!r}: the scheme must be one of "
                                + ", ".join(f"{s}://" for s in SCHEMES))
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise UsageError(detail=f"{what} {shown!r}: the port must be a number from 1 to 65535") from None
    host = _host(parts)
    if host is None:
        raise UsageError(detail=f"{what} {shown!r}: the host must be a DNS name or an IP address")
    if scheme.startswith("syslog"):
        if parts.username is not None or parts.password is not None:
            raise UsageError(detail=f"{what} {shown!r}: a syslog URL carries no user or password")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise UsageError(detail=f"{what} {shown!r}: a syslog URL is only syslog://HOST:PORT (no path or query)")
        if port is None:
            raise UsageError(detail=f"{what} {shown!r}: give the port (syslog://HOST:PORT)")
    elif parts.fragment:
        raise UsageError(detail=f"{what} {shown!r}: an HTTP drain URL has no #fragment")
    if port == 0:
        raise UsageError(detail=f"{what} {shown!r}: the port must be a number from 1 to 65535")
    default = 443 if scheme == "https" else 80
    return DrainUrl(url=text, scheme=scheme, host=host, port=port or default)


def _host(parts: SplitResult) -> str | None:
    host = parts.hostname or ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if "[" in parts.netloc or len(host) > 253 or not _HOST.fullmatch(host):
        return None
    return host
