"""Time as behest stores and shows it: UTC microseconds inside, RFC 3339 outside.

The wire format stamps events in microseconds since the epoch (Avro timestamp-micros),
projections fold those integers, and every state and answer shows times as RFC 3339 UTC
strings with six fraction digits and a `Z` (contract §2). Every conversion between the
three forms (datetime, microseconds, text) lives here, once.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Final

from behest.errors import InvalidQueryError

__all__ = [
    "EPOCH",
    "MICROSECOND",
    "format_micros",
    "format_time",
    "from_micros",
    "parse_micros",
    "parse_time",
    "to_micros",
    "utc_now",
]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND: Final = timedelta(microseconds=1)
"""`(moment - EPOCH) // MICROSECOND` is a trusted aware datetime's microseconds (hot paths)."""
_EXAMPLE: Final = "2026-11-20T14:03:07.123456Z"


def utc_now() -> datetime:
    """The current UTC time at microsecond precision, the resolution of the wire format."""
    return datetime.now(UTC)


def to_micros(moment: datetime, name: str = "a time") -> int:
    """Microseconds since the epoch of an aware datetime; a naive one is refused, since
    guessing its zone would shift every answer by hours (`name` says which in errors)."""
    if not isinstance(moment, datetime):
        raise InvalidQueryError(f"{name} must be a datetime, not {type(moment).__name__}")
    if moment.utcoffset() is None:
        raise InvalidQueryError(
            f"{name} {moment.isoformat()} has no time zone: pass an aware datetime "
            f"(e.g. tzinfo=UTC) or a time like {_EXAMPLE}"
        )
    return (moment - EPOCH) // MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime of microseconds since the epoch."""
    return EPOCH + MICROSECOND * micros


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a `Z`, e.g. `2026-11-20T14:03:07.000000Z`.
    (`isoformat`, not `strftime`: glibc's `%Y` does not pad years before 1000 to 4 digits.)"""
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


@functools.lru_cache(maxsize=8192)
def _second_text(seconds: int) -> str:
    """The date and time of a whole second; cached, since a run's events share seconds and
    formatting costs more than the rest of encoding a state."""
    t = EPOCH + timedelta(seconds=seconds)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"


def format_micros(micros: int) -> str:
    """`format_time` of microseconds since the epoch, without building a datetime."""
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{_second_text(seconds)}.{fraction:06d}Z"


def parse_micros(text: str) -> int:
    """Microseconds since the epoch of a stored RFC 3339 time (trusted: as `format_micros`
    or `format_time` wrote it)."""
    return (datetime.fromisoformat(text) - EPOCH) // MICROSECOND


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with a zone (`2026-11-20T14:03:07.5Z`, `…+02:00`) as an aware
    datetime; raises `InvalidQueryError` for anything else (user input: URLs, flags)."""
    if not isinstance(text, str) or not text:
        raise InvalidQueryError(f"a time is required, e.g. {_EXAMPLE}")
    moment: datetime | None = None
    # In a URL query '+' decodes to a space, so '…T14:03:07 02:00' means '+02:00'.
    for candidate in (text, text.replace(" ", "+")):
        try:
            moment = datetime.fromisoformat(candidate)
            break
        except ValueError:
            continue
    if moment is None:
        raise InvalidQueryError(f"{text!r} is not an RFC 3339 time: expected e.g. {_EXAMPLE}")
    if moment.utcoffset() is None:
        raise InvalidQueryError(
            f"{text!r} has no time zone: add 'Z' for UTC or an offset such as +02:00"
        )
    return moment
