"""The daemon API's request bodies, error answer and response serialiser, as pydantic sees them."""

# Daemon side only: the CLI decodes answers with the hand-written fence.wire, since importing
# pydantic and building a TypeAdapter would cost the CLI's start more than its whole budget.

from __future__ import annotations

import functools
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from fence.errors import RequestInvalid

# Echoed input is cut to this many characters: a hostile value must not make the line long.
_SHOWN = 60


class _Body(BaseModel):
    # Strict: a number is not a string here, and a misspelt key is refused rather than ignored.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class EnvChange(_Body):
    """The body of ``POST /v1/apps/{name}/env``: variables to set and to remove."""

    set: dict[str, str] = Field(default_factory=dict, description="NAME → value to set")
    unset: list[str] = Field(default_factory=list, description="names to remove")


class TaskOrder(_Body):
    """The body of ``POST /v1/apps/{name}/run``: the one-off command."""

    argv: list[str] = Field(description="the program and its arguments")


class RouteChange(_Body):
    """The body of ``POST /v1/apps/{name}/routes``: one extra host name to add or remove."""

    add: str | None = Field(default=None, description="a host name the app should answer at too")
    remove: str | None = Field(default=None, description="an extra host name to drop")

    @model_validator(mode="after")
    def _exactly_one(self) -> RouteChange:
        if (self.add is None) == (self.remove is None):
            raise ValueError('send {"add": HOST} or {"remove": HOST}')
        return self


class ErrorDetail(BaseModel):
    """A fence error on the wire (``FenceError.to_wire``)."""

    type: str = Field(description="the fence error class, raised again by the client")
    message: str = Field(description="the one-line message")
    fields: dict[str, Any] = Field(description="the message's fields")


class ErrorAnswer(BaseModel):
    """What every failed request answers."""

    error: ErrorDetail


def request_invalid(errors: Sequence[Any]) -> RequestInvalid:
    """The one-line error for a request FastAPI found not to fit its endpoint.

    Args:
        errors: ``RequestValidationError.errors()``: pydantic's error dicts (``loc``, ``msg``,
            ``input``, ``type``, ``ctx``).

    Returns:
        A ``RequestInvalid`` naming where the first problem is and what it is, and how many more
        there are.
    """
    if not errors:
        return RequestInvalid(where="request", why="it does not fit this endpoint")
    first = errors[0]
    loc = [str(part) for part in first.get("loc") or ()]
    kind, why = str(first.get("type", "")), str(first.get("msg", "invalid"))
    if kind == "json_invalid":
        where = "body"
        why = f"not JSON ({(first.get('ctx') or {}).get('error', why)})"
    else:
        where = _where(loc)
        why = why.removeprefix("Value error, ")
        if kind not in ("missing", "extra_forbidden", "value_error") and "input" in first:
            why += f" (got {_shown(first['input'])})"
    if len(errors) > 1:
        why += f"; and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''}"
    return RequestInvalid(where=where, why=why)


def _where(loc: list[str]) -> str:
    if not loc:
        return "request"
    source, rest = loc[0], ".".join(loc[1:])
    if source == "body":
        return f"body field {rest}" if rest else "body"
    return f"{source} parameter {rest}" if rest else source


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."


def to_json_ready(value: Any) -> Any:
    """A model (a frozen dataclass) as JSON-ready data, by its type's schema; for streamed
    results, which FastAPI's response models do not cover.

    Args:
        value: what a facade call returned.

    Returns:
        Plain dicts, lists and scalars, as ``fence.wire.to_wire`` makes them.
    """
    return _adapter(type(value)).dump_python(value, mode="json")


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    # Building an adapter costs ~50 ms for AppView: once per type, not per event.
    return TypeAdapter(kind)
