"""Turns fence's frozen dataclasses into JSON-ready data and back, for the daemon API."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import PurePath
from typing import Any, TypeVar

T = TypeVar("T")


def to_wire(value: Any) -> Any:
    """A dataclass (or list/mapping of them) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
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
    return _build(cls, data)


def _build(hint: Any, data: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _build(options[0], data)
    if dataclasses.is_dataclass(hint):
        if not isinstance(data, dict):
            raise ValueError(f"expected an object for {hint.__name__}")
        hints = typing.get_type_hints(hint)
        kwargs = {f.name: _build(hints[f.name], data[f.name])
                  for f in dataclasses.fields(hint) if f.name in data}
        return hint(**kwargs)
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_build(item, v) for v in data)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return [_build(item, v) for v in data]
    if origin in (dict, typing.Mapping, typing.get_origin(typing.Mapping[str, str])):
        args = typing.get_args(hint)
        value_hint = args[1] if len(args) == 2 else Any
        return {k: _build(value_hint, v) for k, v in data.items()}
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return hint(data)
    return data
