"""Value types of config keys: parse a command-line string, check a value, say what is allowed."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from fence.rules import memory_allowed, size_mib


class BadValue(ValueError):
    """A value a type refuses; the store turns it into InvalidConfigValue with the key named."""


class KeyType(Protocol):
    """A config value type."""

    name: str

    def parse(self, raw: str) -> Any:
        """Turn a command-line string into a checked value.

        Raises:
            BadValue: the string is not a value of this type.
        """

    def check(self, value: Any) -> Any:
        """Check (and normalise) a value that came as JSON or from the file.

        Raises:
            BadValue: the value is not of this type.
        """

    def allowed(self) -> str:
        """A short phrase saying what values are allowed."""


def type_name_of(value: Any) -> str:
    """The type name fence reports for a stored value of an unschema'd key."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dict):
        return "struct"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null"
    return "string"


@dataclass(frozen=True)
class IntType:
    """A whole number within bounds."""

    minimum: int
    maximum: int
    unit: str = ""
    name: str = "int"

    def parse(self, raw: str) -> int:
        text = raw.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise BadValue(raw)
        return self.check(int(text))

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadValue(value)
        if not self.minimum <= value <= self.maximum:
            raise BadValue(value)
        return value

    def allowed(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"a whole number{unit} from {self.minimum} to {self.maximum}"


@dataclass(frozen=True)
class BoolType:
    """true or false."""

    name: str = "bool"

    def parse(self, raw: str) -> bool:
        text = raw.strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise BadValue(raw)

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise BadValue(value)
        return value

    def allowed(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class EnumType:
    """One of a fixed set of words."""

    choices: tuple[str, ...]
    name: str = "string"

    def parse(self, raw: str) -> str:
        return self.check(raw.strip())

    def check(self, value: Any) -> str:
        if value not in self.choices:
            raise BadValue(value)
        return value

    def allowed(self) -> str:
        return "one of " + ", ".join(self.choices)


@dataclass(frozen=True)
class PatternType:
    """A string matching a regular expression, with a length cap."""

    pattern: str
    description: str
    max_length: int = 255
    name: str = "string"

    def parse(self, raw: str) -> str:
        return self.check(raw.strip())

    def check(self, value: Any) -> str:
        if not isinstance(value, str) or len(value) > self.max_length:
            raise BadValue(value)
        if not re.fullmatch(self.pattern, value):
            raise BadValue(value)
        return value

    def allowed(self) -> str:
        return self.description


# A Docker image reference: [registry[:port]/]path[:tag][@digest], lower-case path components.
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?/)?"
IMAGE_REF_PATTERN = (
    rf"{_IMAGE_DOMAIN}{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)


def image_ref_type() -> PatternType:
    """The type of an image reference such as ``fence/stack:bookworm``."""
    return PatternType(
        pattern=IMAGE_REF_PATTERN,
        description="an image reference like fence/stack:bookworm (lower-case name, optional :tag)",
    )


@dataclass(frozen=True)
class IPAddressType:
    """An IPv4 or IPv6 address."""

    name: str = "string"

    def parse(self, raw: str) -> str:
        return self.check(raw.strip())

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise BadValue(value)
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise BadValue(value) from None

    def allowed(self) -> str:
        return "an IP address such as 127.0.0.1 or 0.0.0.0"


@dataclass(frozen=True)
class MemoryType:
    """A memory size, stored in MiB: ``256``, ``256M``, ``1G``, ``1.5G`` (the grammar is ``fence.rules.size_mib``)."""

    minimum_mib: int
    maximum_mib: int
    name: str = "int"

    def parse(self, raw: str) -> int:
        try:
            mib = size_mib(raw)
        except ValueError:
            raise BadValue(raw) from None
        return self.check(mib)

    def check(self, value: Any) -> int:
        if isinstance(value, str):
            return self.parse(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadValue(value)
        if not self.minimum_mib <= value <= self.maximum_mib:
            raise BadValue(value)
        return value

    def allowed(self) -> str:
        return memory_allowed(self.minimum_mib, self.maximum_mib)


@dataclass(frozen=True)
class ListType:
    """A list whose items all have one type."""

    item: KeyType
    max_items: int = 64
    name: str = "list"

    def parse(self, raw: str) -> list[Any]:
        text = raw.strip()
        if text.startswith("["):
            try:
                return self.check(json.loads(text))
            except ValueError:
                raise BadValue(raw) from None
        items = [part.strip() for part in text.split(",")] if text else []
        return self.check([self.item.parse(part) for part in items])

    def check(self, value: Any) -> list[Any]:
        if not isinstance(value, list) or len(value) > self.max_items:
            raise BadValue(value)
        return [self.item.check(v) for v in value]

    def allowed(self) -> str:
        return f"a list (comma-separated, or JSON with --json) of {self.item.allowed()}"


@dataclass(frozen=True)
class FloatType:
    """A number (fractions allowed) within bounds."""

    minimum: float
    maximum: float
    name: str = "float"

    def parse(self, raw: str) -> float:
        text = raw.strip()
        if not re.fullmatch(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", text):
            raise BadValue(raw)
        return self.check(float(text))

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadValue(value)
        if not self.minimum <= value <= self.maximum:  # also refuses NaN
            raise BadValue(value)
        return float(value)

    def allowed(self) -> str:
        return f"a number from {self.minimum:g} to {self.maximum:g}"


@dataclass(frozen=True)
class AddressType:
    """``IP:PORT`` (IPv4, port 1-65535; ``[IPv6]:PORT`` too when ``ipv6_ok``); an empty string too
    when ``empty_ok``."""

    empty_ok: bool = False
    ipv6_ok: bool = False
    name: str = "string"

    def parse(self, raw: str) -> str:
        return self.check(raw.strip())

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise BadValue(value)
        if value == "" and self.empty_ok:
            return value
        host, sep, port = value.rpartition(":")
        bracketed = self.ipv6_ok and host.startswith("[") and host.endswith("]")
        try:
            address = ipaddress.IPv6Address(host[1:-1]) if bracketed else ipaddress.IPv4Address(host)
        except ValueError:
            raise BadValue(value) from None
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadValue(value)
        return f"[{address}]:{int(port)}" if bracketed else f"{address}:{int(port)}"

    def allowed(self) -> str:
        if self.ipv6_ok:
            return ("an address and port such as 127.0.0.1:9101 or [::1]:9101"
                    + (" (or empty for off)" if self.empty_ok else ""))
        return "an IPv4 address and port such as 127.0.0.1:5000" + (" (or empty)" if self.empty_ok else "")
