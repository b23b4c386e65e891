"""Turns fence's frozen dataclasses into JSON-ready data and back, for the CLI, the store and kept sources."""

# The daemon's API validates and serialises with pydantic instead (fence.api_schema: request
# bodies, response models, OpenAPI). This hand-written pair stays for the CLI, whose whole start
# has a 150 ms budget: `from pydantic import TypeAdapter` alone costs ~60-100 ms and building the
# adapter for AppView ~50 ms more, where importing this module costs ~2 ms and its first decode
# well under 1 ms. tests/unit/test_wire_and_errors.py checks the two agree on every API model.

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import PurePath
from typing import Any, Callable, TypeVar

T = TypeVar("T")

# Values that are JSON-ready as they are; checked by exact type, so subclasses (enums) take the long way.
_PLAIN = frozenset({str, int, float, bool, type(None)})


def to_wire(value: Any) -> Any:
    """A dataclass (or list/mapping of them) as JSON-ready data."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    names = _field_names(kind)
    if names is not None:
        return {name: to_wire(getattr(value, name)) for name in names}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    if isinstance(value, typing.Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, PurePath):
        return str(value)
    return value


def from_wire(cls: type[T], data: Any) -> T:
    """Rebuild a dataclass from ``to_wire`` data, following its type hints.

    Raises:
        ValueError: the data does not fit the dataclass.
    """
    return _decoder(cls)(data)


@functools.cache
def _field_names(kind: type) -> tuple[str, ...] | None:
    """A dataclass type's field names, ``None`` for any other type (asked once per type)."""
    if not dataclasses.is_dataclass(kind):
        return None
    return tuple(f.name for f in dataclasses.fields(kind))


def _same(data: Any) -> Any:
    return data


@functools.cache
def _decoder(hint: Any) -> Callable[[Any], Any]:
    """The function that rebuilds values of one type hint, made once per hint: resolving a
    dataclass's string annotations (``typing.get_type_hints``) costs far more than the rebuild."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        option = _decoder(options[0])
        return lambda data: None if data is None else option(data)
    if dataclasses.is_dataclass(hint):
        return _dataclass_decoder(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        item = _decoder(args[0] if args else Any)
        return lambda data: tuple(item(v) for v in data)
    if origin is list:
        (item_hint,) = typing.get_args(hint) or (Any,)
        item = _decoder(item_hint)
        return lambda data: [item(v) for v in data]
    if origin in (dict, typing.Mapping, typing.get_origin(typing.Mapping[str, str])):
        args = typing.get_args(hint)
        value = _decoder(args[1] if len(args) == 2 else Any)
        return lambda data: {k: value(v) for k, v in data.items()}
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return hint
    return _same


def _dataclass_decoder(cls: type) -> Callable[[Any], Any]:
    # Field decoders are looked up on first use, not here: a dataclass may refer to itself.
    fields: list[tuple[str, Callable[[Any], Any]]] | None = None

    def build(data: Any) -> Any:
        nonlocal fields
        if not isinstance(data, dict):
            raise ValueError(f"expected an object for {cls.__name__}")
        if fields is None:
            hints = typing.get_type_hints(cls)
            fields = [(f.name, _decoder(hints[f.name])) for f in dataclasses.fields(cls)]
        return cls(**{name: decode(data[name]) for name, decode in fields if name in data})
    return build
