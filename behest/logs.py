"""Logging of the long-running commands: a level, text or JSON lines, and the Kafka clients'
retry noise collapsed.

`behest project`, `serve`, `simulate` and the others take `--log-level` and `--log-format`
(or `BEHEST_LOG_LEVEL`, `BEHEST_LOG_FORMAT`). `json` writes one object per line, for log
shippers:

    {"time": "2026-12-02T02:20:58.120Z", "level": "warning", "logger": "behest.fold.projector",
     "message": "...", "pid": 4242}

With the broker down, Kafka clients report every failed reconnect (aiokafka alone wrote
about 1,200 lines in 30 s of `behest simulate`). `RepeatCollapser` lets the first line of
each kind through, holds back its repeats for `REPEAT_WINDOW` seconds, then lets the next
one through saying how many it held back: one line per distinct message per window. It
looks only at the Kafka clients' loggers (`is_kafka_client`); behest's own lines (one per
dead letter, per gap) each say something new.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, TextIO

import orjson

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "REPEAT_WINDOW",
    "JsonFormatter",
    "LogFormat",
    "RepeatCollapser",
    "is_kafka_client",
    "setup_logging",
    "setup_logging_from_env",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
REPEAT_WINDOW: Final = 30.0
"""Seconds during which repeats of one Kafka client message are counted, not written."""
_MAX_KINDS: Final = 1000
_NUMBER = re.compile(r"\d+")


def is_kafka_client(name: str) -> bool:
    """Whether a logger speaks for a Kafka client (aiokafka, librdkafka, an error callback)."""
    return (
        name.startswith(("aiokafka", "kafka."))
        or name.endswith((".librdkafka", ".kafka"))
        or name == "kafka"
    )


@dataclass(slots=True)
class _Seen:
    since: float
    held: int = 0


class RepeatCollapser(logging.Filter):
    """One line per distinct Kafka client message per `window` seconds, with a count.

    Messages of one kind differ only in their numbers (ports, milliseconds, counts,
    node ids): those are blanked to tell kinds apart. The count of a kind's held-back
    repeats rides on its next line through (`"held"` in JSON).
    """

    def __init__(
        self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_kafka_client(record.name):
            return True
        message = record.getMessage()
        kind = (record.name, record.levelno, _NUMBER.sub("#", message))
        now = self.clock()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen.since < self.window:
                seen.held += 1
                return False
            if len(self._seen) >= _MAX_KINDS:
                self._seen.clear()
            self._seen[kind] = _Seen(now)
        held = 0 if seen is None else seen.held
        if held:
            record.msg = f"{message} (and {held} more like it in the last {now - seen.since:.0f} s)"  # type: ignore[union-attr]
            record.args = ()
            record.held = held
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, RFC 3339), level, logger, message, pid."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        data: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        held = getattr(record, "held", None)
        if held:
            data["held"] = held
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


_TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _level(level: str) -> int:
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LOG_LEVELS)}")
    return value


def setup_logging(
    level: str = "info",
    log_format: LogFormat = "text",
    *,
    stream: TextIO | None = None,
    handler: logging.Handler | None = None,
    window: float = REPEAT_WINDOW,
) -> logging.Handler:
    """Route every logger to one handler on `stream` (stderr) at `level`, in `log_format`.

    `handler` replaces the plain text one (e.g. a `rich` handler on a terminal); JSON
    ignores it. librdkafka's own log lines repeat what the clients' error callbacks report,
    so they show only at `debug`, or when fatal. Returns the handler installed.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: use text or json")
    threshold = _level(level)
    if log_format == "json" or handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
        else:
            formatter = logging.Formatter(_TEXT_FORMAT, "%Y-%m-%dT%H:%M:%S")
            formatter.converter = time.gmtime
            handler.setFormatter(formatter)
    if threshold > logging.DEBUG:
        handler.addFilter(_no_librdkafka_echo)
    handler.addFilter(RepeatCollapser(window))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    return handler


def setup_logging_from_env(level: str | None = None, log_format: str | None = None) -> None:
    """`setup_logging` with `BEHEST_LOG_LEVEL` and `BEHEST_LOG_FORMAT` filling what is not
    given, and written back to the environment so that child processes (a node's workers,
    spawned) log the same way when they call this."""
    level = level or os.environ.get("BEHEST_LOG_LEVEL") or "info"
    log_format = log_format or os.environ.get("BEHEST_LOG_FORMAT") or "text"
    setup_logging(level.lower(), log_format.lower())  # type: ignore[arg-type]
    os.environ["BEHEST_LOG_LEVEL"], os.environ["BEHEST_LOG_FORMAT"] = level, log_format


def _no_librdkafka_echo(record: logging.LogRecord) -> bool:
    """Drops librdkafka's log lines short of fatal: its error callbacks report the same."""
    return record.levelno >= logging.CRITICAL or not record.name.endswith(".librdkafka")
