"""Checks of query input, shared by every reader: each error says what was wrong and what
is accepted. Also the opaque page cursor (a version byte and a position, base64url)."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Final, TypeVar

from behest.errors import InvalidQueryError
from behest.events import RunId, RunStatus, parse_run_id
from behest.times import to_micros

__all__ = [
    "MAX_BATCH",
    "MAX_LIMIT",
    "MAX_SEQUENCE",
    "bounded",
    "check_active",
    "check_limit",
    "check_point",
    "check_run_id",
    "check_sequence",
    "check_session_id",
    "check_status",
    "decode_cursor",
    "encode_cursor",
]

MAX_BATCH: Final = 1000
"""Most keys one multi-get (`get_many`, `POST /runs/batch`) may ask for."""

MAX_LIMIT: Final = 1000
"""Largest page a listing returns."""

MAX_SEQUENCE: Final = 2**63 - 1
"""Largest sequence a run can have (an Avro long)."""

_CURSOR_VERSION: Final = b"\x01"
T = TypeVar("T")


def check_run_id(value: str | uuid.UUID) -> RunId:
    if isinstance(value, uuid.UUID):
        return RunId(value)
    if not isinstance(value, str):
        raise InvalidQueryError(f"a run id must be a UUID or its text, not {type(value).__name__}")
    return parse_run_id(value)


def check_session_id(value: str | uuid.UUID) -> uuid.UUID:
    try:
        return check_run_id(value)
    except InvalidQueryError:
        raise InvalidQueryError(
            f"session_id {value!r} is not a UUID: expected e.g. "
            "'3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00'"
        ) from None


def check_sequence(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQueryError(f"{name} must be an integer, not {value!r}")
    if not 0 <= value <= MAX_SEQUENCE:
        raise InvalidQueryError(f"{name} must be between 0 and {MAX_SEQUENCE}, got {value}")
    return value


def check_limit(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidQueryError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {value!r}")
    return value


def check_status(value: RunStatus | str) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in RunStatus)
        raise InvalidQueryError(f"unknown status {value!r}: expected one of {known}") from None


def check_active(value: bool | None) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise InvalidQueryError(f"active must be true or false, not {value!r}")
    return value


def check_point(as_of: datetime | None, at_sequence: int | None) -> tuple[int | None, int | None]:
    """`(as_of in UTC µs, at_sequence)`, at most one of them given."""
    if as_of is not None and at_sequence is not None:
        raise InvalidQueryError("give as_of or at_sequence, not both")
    micros = None if as_of is None else to_micros(as_of, "as_of")
    sequence = None if at_sequence is None else check_sequence(at_sequence, "at_sequence")
    return micros, sequence


def bounded(items: Iterable[T], what: str = "run ids") -> list[T]:
    """The items of one batch, at most `MAX_BATCH` of them."""
    if isinstance(items, str | bytes):
        raise InvalidQueryError(f"{what} must be a list, not one string")
    found = list(items)
    if len(found) > MAX_BATCH:
        raise InvalidQueryError(
            f"{len(found)} {what} in one batch; at most {MAX_BATCH}: split the batch"
        )
    return found


def encode_cursor(position: bytes) -> str:
    """The opaque cursor of a page that ends at `position`."""
    return base64.urlsafe_b64encode(_CURSOR_VERSION + position).rstrip(b"=").decode()


def decode_cursor(cursor: str, size: int | None = None) -> bytes:
    """The position a cursor of `encode_cursor` holds (of `size` bytes, when given)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError, TypeError):
        raw = b""
    if raw[:1] != _CURSOR_VERSION or len(raw) < 2 or (size is not None and len(raw) != 1 + size):
        raise InvalidQueryError(
            f"cursor {cursor!r} is not one this API issued: pass back next_cursor exactly, "
            "or omit it to start from the first page"
        )
    return raw[1:]
