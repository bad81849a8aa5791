"""`RunState`, folded from a run's events exactly as the seed's `RunState::apply` does.

The seed's rules (shared/seeds/state.rs.txt):

- `RunStarted` sets status `session_loaded`, provider and model (and, here, the
  session and metadata it carries, so a state is rebuilt from events alone);
- `ModelStarted` sets `iteration` and status `calling_model`;
- `UsageRecorded` adds its tokens (total = input + output);
- `RunCompleted` / `RunFailed` / `RunCancelled` set the terminal status, and
  `last_finish` / `last_error`;
- every event moves `updated_at` to its own time and counts in `event_count`;
  `sequence` is the last folded sequence.

A run whose first event is not `RunStarted` starts `pending` with session, provider and
model unknown (null) until its `RunStarted` is folded; `created_at` is its first event's
time.

There is one model of a run's state, `behest.events.RunState`: readers get it (or its
JSON). While folding, the state is that model's fields in a plain dict, times kept as UTC
microseconds (`_Folding`, private: building models would cost the fold most of its
speed); it is stored as the contract's JSON (RFC 3339 times), so the query layer can serve
stored bytes as they are. On import, `_same_fields` holds the dict's fields to the model's.
"""

from __future__ import annotations

import functools
import struct
import uuid
from collections.abc import Iterable
from itertools import chain
from typing import Any, Final, TypedDict

import orjson

from behest.events import EventRecord, RunState, RunStatus, TokenUsage, Variant
from behest.times import format_micros, parse_micros

_U64 = struct.Struct(">Q")
_TIME_BIAS: Final = 1 << 63
"""Added to times in keys, so byte order is time order before 1970 too."""

STATUS_CODES: Final = {status.value: bytes([code]) for code, status in enumerate(RunStatus)}
TERMINAL: Final = frozenset(s.value for s in RunStatus if s.is_terminal)

INDEX_ALL: Final = b"a"
INDEX_ACTIVE: Final = b"x"
INDEX_SESSION: Final = b"s"
INDEX_STATUS: Final = b"t"


class _Usage(TypedDict):
    """`TokenUsage`'s fields."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


class _Folding(TypedDict):
    """`RunState` while folding, as `EventRecord` is `AgentEvent` while decoding: its
    fields in its order, times as UTC microseconds, a known finish reason as its text."""

    run_id: str
    session_id: str | None
    status: str
    provider: str | None
    model: str | None
    metadata: Any
    iteration: int
    total_usage: _Usage
    last_finish: str | dict[str, str] | None
    last_error: str | None
    event_count: int
    created_at: int
    updated_at: int
    sequence: int


def _same_fields(folding: type, model: type[RunState | TokenUsage]) -> None:
    """Fail the import when the model and the folding form disagree on their fields, so a
    field added to `RunState` cannot be missing from stored states unnoticed."""
    if list(folding.__annotations__) != list(model.model_fields):
        raise TypeError(
            f"{folding.__name__} must have {model.__name__}'s fields in its order: "
            f"{list(model.model_fields)}, not {list(folding.__annotations__)}"
        )


_same_fields(_Folding, RunState)
_same_fields(_Usage, TokenUsage)


def _initial(event: EventRecord) -> _Folding:
    return {
        "run_id": event["run_id"],
        "session_id": None,
        "status": RunStatus.PENDING.value,
        "provider": None,
        "model": None,
        "metadata": None,
        "iteration": 0,
        "total_usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        "last_finish": None,
        "last_error": None,
        "event_count": 0,
        "created_at": event["timestamp"],
        "updated_at": event["timestamp"],
        "sequence": event["sequence"],
    }


# Module constants, not `Variant.X` in `apply`: an enum attribute costs ~70 ns per look-up.
_RUN_STARTED: Final = Variant.RUN_STARTED
_MODEL_STARTED: Final = Variant.MODEL_STARTED
_USAGE_RECORDED: Final = Variant.USAGE_RECORDED
_RUN_COMPLETED: Final = Variant.RUN_COMPLETED
_RUN_FAILED: Final = Variant.RUN_FAILED
_FOLDED: Final = frozenset(
    {
        _RUN_STARTED,
        _MODEL_STARTED,
        _USAGE_RECORDED,
        _RUN_COMPLETED,
        _RUN_FAILED,
        Variant.RUN_CANCELLED,
    }
)
"""The variants that change more than the counters."""


def apply(state: _Folding | None, event: EventRecord) -> _Folding:
    """The state after one more event (a new dict; `state` is left as it was)."""
    return _fold_into(_initial(event) if state is None else state.copy(), (event,))


def apply_many(state: _Folding | None, events: Iterable[EventRecord]) -> _Folding | None:
    """The state after `events`, in order (None if there are none and no `state`): what
    `apply` gives event by event, on ONE copy of `state` (left as it was), since nobody
    sees the states between them. The projector's fast path folds a batch's run this way."""
    if state is not None:
        return _fold_into(state.copy(), events)
    pending = iter(events)
    first = next(pending, None)
    return None if first is None else _fold_into(_initial(first), chain((first,), pending))


def _fold_into(new: _Folding, events: Iterable[EventRecord]) -> _Folding:
    """Fold `events` into `new` in place (a copy the caller owns)."""
    for event in events:
        variant, body = event["payload"]
        if variant not in _FOLDED:  # most events: only the counters move
            pass
        elif variant == _RUN_STARTED:
            new["status"] = RunStatus.SESSION_LOADED.value
            new["session_id"] = body["session_id"]
            new["provider"] = body["provider"]
            new["model"] = body["model"]
            new["metadata"] = orjson.loads(body.get("metadata", "null"))
        elif variant == _MODEL_STARTED:
            new["iteration"] = body["iteration"]
            new["status"] = RunStatus.CALLING_MODEL.value
        elif variant == _USAGE_RECORDED:
            usage = body["usage"]
            total = new["total_usage"]  # replaced, never changed: `state` may share it
            input_tokens = total["input_tokens"] + usage["input_tokens"]
            output_tokens = total["output_tokens"] + usage["output_tokens"]
            new["total_usage"] = {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            }
        elif variant == _RUN_COMPLETED:
            new["status"] = RunStatus.COMPLETED.value
            reason = body["finish_reason"]
            new["last_finish"] = dict(reason[1]) if isinstance(reason, tuple) else reason
        elif variant == _RUN_FAILED:
            new["status"] = RunStatus.FAILED.value
            new["last_error"] = body["error"]
        else:  # RunCancelled
            new["status"] = RunStatus.CANCELLED.value
        new["updated_at"] = event["timestamp"]
        new["event_count"] += 1
        new["sequence"] = event["sequence"]
    return new


def to_json_dict(state: _Folding) -> dict[str, Any]:
    """The contract's JSON shape (§2): times as RFC 3339 strings."""
    data: dict[str, Any] = dict(state)
    data["created_at"] = format_micros(state["created_at"])
    data["updated_at"] = format_micros(state["updated_at"])
    return data


def from_json_dict(data: dict[str, Any]) -> _Folding:
    """A folding state back from the contract's JSON shape."""
    state = dict(data)
    state["created_at"] = parse_micros(data["created_at"])
    state["updated_at"] = parse_micros(data["updated_at"])
    return state  # type: ignore[return-value]


@functools.lru_cache(maxsize=8192)
def _uuid_bytes(text: str) -> bytes:
    """The 16 bytes of a UUID's text; cached, since the projector asks for a run's index
    keys twice per batch it folds (a batch names at most a few thousand runs and their
    sessions), and parsing cost more than the rest of `index_keys`."""
    return uuid.UUID(text).bytes


class RunStateProjection:
    """The run-state projection: one `RunState` per run, indexed by session and status."""

    name = "run_state"
    run_keyed = True

    def key(self, event: EventRecord) -> bytes:
        return uuid.UUID(event["run_id"]).bytes

    apply = staticmethod(apply)
    """The fold itself, no method frame around it (one call per event)."""
    apply_many = staticmethod(apply_many)
    """Many events on one copy of the state (`behest.fold.projection`'s optional hook)."""

    def encode_state(self, state: _Folding) -> bytes:
        return orjson.dumps(to_json_dict(state))

    def decode_state(self, data: bytes) -> _Folding:
        return from_json_dict(orjson.loads(data))

    def index_keys(self, state: _Folding) -> Iterable[bytes]:
        """All runs, active runs, runs of a session, runs per status; each list ordered by
        creation time: `prefix ‖ (created_at µs + 2^63, 8 bytes BE) ‖ run id (16 bytes)`."""
        suffix = _U64.pack(state["created_at"] + _TIME_BIAS) + _uuid_bytes(state["run_id"])
        keys = [INDEX_ALL + suffix, INDEX_STATUS + STATUS_CODES[state["status"]] + suffix]
        if state["session_id"] is not None:  # unknown until RunStarted
            keys.append(INDEX_SESSION + _uuid_bytes(state["session_id"]) + suffix)
        if state["status"] not in TERMINAL:
            keys.append(INDEX_ACTIVE + suffix)
        return keys


def index_run_id(key: bytes) -> uuid.UUID:
    """The run an index key of this projection lists (its last 16 bytes)."""
    return uuid.UUID(bytes=key[-16:])


INDEX_SUFFIX_SIZE: Final = 8 + 16
"""`created_at ‖ run id`, the tail of every index key: the order of every run listing."""


def listing_prefixes(
    session: uuid.UUID | None, status: RunStatus | None, active: bool | None
) -> tuple[list[bytes], bool]:
    """The index prefixes whose entries, merged newest first, list the runs asked for, and
    whether each state's status must still be checked (a session's list holds every status)."""
    if session is not None:
        return [INDEX_SESSION + session.bytes], status is not None or active is not None
    if status is not None:
        return [INDEX_STATUS + STATUS_CODES[status.value]], False
    if active:
        return [INDEX_ACTIVE], False
    if active is False:
        return [INDEX_STATUS + STATUS_CODES[s] for s in sorted(TERMINAL)], False
    return [INDEX_ALL], False
