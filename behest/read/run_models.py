"""`RunState` models from a batch of stored run states, cheaper than validating each.

The store holds only what the run-state fold wrote, in the contract's JSON. Validating a
stored state with `RunState.model_validate_json` costs about as much as the multi-get that
fetched it, and most of that is pydantic's work per model (a model of 14 plain `str`
fields costs 2 µs from JSON), not parsing. So a batch is decoded by a typed msgspec decoder
(UUIDs, enums, times, bounds and nested objects checked in C), and each model is made as
pydantic's validator makes one (`__dict__`, a fresh fields set, no extras, no private
attributes) in C-level loops over the batch, with no Python frame per state. The models are
`RunState`s equal to the validated ones (tests/unit/test_run_models.py).

Anything the decoder refuses (a state of another layout, a wrong value) sends the batch
through `model_validate_json`, so a wrong state gets pydantic's own error. Two differences,
both outside what the fold writes: times carry `datetime.UTC` where pydantic puts its own
`TzInfo(0)` (equal: both UTC), and a time with more than six fraction digits would be
rounded where pydantic truncates (stored times have six, `format_micros`). On import,
`_check_plain` fails if a model gains what this path would skip (a validator, a private
attribute, a post-init) or a field it would miss.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from itertools import repeat
from operator import attrgetter
from typing import Annotated, Any, Final, TypeVar

import msgspec
from pydantic import BaseModel

from behest.events import (
    KnownFinishReason,
    RunState,
    RunStatus,
    TokenUsage,
    UnknownFinishReason,
)

__all__ = ["run_states"]

_Count = Annotated[int, msgspec.Meta(ge=0)]


class _Usage(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """`TokenUsage` as stored."""

    input_tokens: _Count
    output_tokens: _Count
    total_tokens: _Count


class _Unknown(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """`UnknownFinishReason` as stored."""

    unknown: str


class _Stored(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """`RunState` as stored, typed as its model's fields are."""

    run_id: uuid.UUID
    session_id: uuid.UUID | None
    status: RunStatus
    provider: str | None
    model: str | None
    metadata: Any
    iteration: int
    total_usage: _Usage
    last_finish: KnownFinishReason | _Unknown | None
    last_error: str | None
    event_count: int
    created_at: datetime
    updated_at: datetime
    sequence: int


M = TypeVar("M", bound=BaseModel)


def _check_plain(model: type[BaseModel], stored: type) -> frozenset[str]:
    """The model's fields; fails the import when building it from a decoded dict would
    skip something validation does (a validator, a private attribute, a post-init) or
    miss a field."""
    if list(stored.__annotations__) != list(model.model_fields):
        raise TypeError(f"{stored.__name__} must have {model.__name__}'s fields in its order")
    decorators = model.__pydantic_decorators__
    if (
        model.__private_attributes__
        or model.__pydantic_post_init__
        or model.model_config.get("extra") != "forbid"
        or any(getattr(decorators, f.name) for f in dataclasses.fields(decorators))
    ):
        raise TypeError(f"{model.__name__} is no longer plain data: update behest.read.run_models")
    return frozenset(model.model_fields)


_STATE_FIELDS: Final = _check_plain(RunState, _Stored)
_USAGE_FIELDS: Final = _check_plain(TokenUsage, _Usage)
_DECODE: Final = msgspec.json.Decoder(_Stored).decode
_VALIDATE: Final = RunState.__pydantic_validator__.validate_json
_as_dict = msgspec.structs.asdict
_usage_of = attrgetter("total_usage")
_finish_of = attrgetter("last_finish")
_new = object.__new__
_set = object.__setattr__
_put = dict.__setitem__


def _models(model: type[M], dicts: list[dict[str, Any]], fields: frozenset[str]) -> list[M]:
    """Models of fields already of their types, as pydantic's validator makes them."""
    n = len(dicts)
    out: list[M] = list(map(_new, repeat(model, n)))
    deque(map(_set, out, repeat("__dict__"), dicts), 0)
    deque(map(_set, out, repeat("__pydantic_fields_set__"), map(set, repeat(fields, n))), 0)
    deque(map(_set, out, repeat("__pydantic_extra__"), repeat(None, n)), 0)
    deque(map(_set, out, repeat("__pydantic_private__"), repeat(None, n)), 0)
    return out


def _set_all(dicts: list[dict[str, Any]], name: str, values: Iterable[Any]) -> None:
    deque(map(_put, dicts, repeat(name), values), 0)


def run_states(stored: list[bytes]) -> list[RunState]:
    """`RunState.model_validate_json` of each stored state, in order."""
    try:
        decoded = list(map(_DECODE, stored))
    except ValueError:  # msgspec's errors: another layout, or not a stored state at all
        return list(map(_VALIDATE, stored))  # pydantic's answer, or its error
    usages = _models(TokenUsage, list(map(_as_dict, map(_usage_of, decoded))), _USAGE_FIELDS)
    dicts = list(map(_as_dict, decoded))
    _set_all(dicts, "total_usage", usages)
    if _Unknown in set(map(type, map(_finish_of, decoded))):  # rare: a provider's own reason
        for state in dicts:
            if type(finish := state["last_finish"]) is _Unknown:
                state["last_finish"] = UnknownFinishReason(unknown=finish.unknown)
    return _models(RunState, dicts, _STATE_FIELDS)
