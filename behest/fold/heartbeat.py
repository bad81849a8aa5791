"""A projector's heartbeat: a small JSON file in its state dir, rewritten every second, so a
reader in another process (`behest serve`, a probe, a script) can tell whether the projector
writing that store is alive, and how far behind the log it is.

    <state_dir>/<projection>.heartbeat.json
    {"projection": "run_state", "pid": 4242, "instance": "behest-…-run_state",
     "at": 1796170000.25, "started_at": 1796169000.0, "stopped": false,
     "assigned": [0, 1, 2], "lag": {"0": 0, "1": 3, "2": 0},
     "lag_seconds": {"0": 0.0, "1": 0.4, "2": 0.0}}

The projector beats from its consume loop, not from a thread of its own, so one that stops
consuming (a hung batch, a stuck dead-letter flush) stops beating too. A clean stop writes
a last beat with `"stopped": true`; a killed projector leaves its last beat to age. The
file is replaced atomically (write, then rename), so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

__all__ = [
    "HEARTBEAT_INTERVAL",
    "Heartbeat",
    "HeartbeatWriter",
    "heartbeat_path",
    "read_heartbeat",
]

HEARTBEAT_INTERVAL: Final = 1.0
"""Seconds between beats."""


def heartbeat_path(state_dir: Path, projection: str, worker: str | None = None) -> Path:
    """Where the projector of `projection` (and `worker`, if several share the dir) beats."""
    name = projection if worker is None else f"{projection}-{worker}"
    return state_dir / f"{name}.heartbeat.json"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One beat: who is projecting, when it beat, and its lag per owned partition.

    `lag` counts records on the log beyond what is folded; `lag_seconds` is how long ago
    the partition's folded state was last known complete (0 when caught up; absent while
    unknown, i.e. before the first batch after a start with records pending).
    """

    projection: str
    pid: int
    at: float
    started_at: float
    instance: str | None = None
    stopped: bool = False
    assigned: tuple[int, ...] = ()
    lag: dict[int, int] = field(default_factory=dict)
    lag_seconds: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "projection": self.projection,
                "pid": self.pid,
                "instance": self.instance,
                "at": self.at,
                "started_at": self.started_at,
                "stopped": self.stopped,
                "assigned": list(self.assigned),
                "lag": {str(p): n for p, n in sorted(self.lag.items())},
                "lag_seconds": {str(p): s for p, s in sorted(self.lag_seconds.items())},
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Heartbeat:
        """Parse a beat; ValueError (or KeyError, TypeError) if it is not one."""
        raw: dict[str, Any] = orjson.loads(data)
        return cls(
            projection=str(raw["projection"]),
            pid=int(raw["pid"]),
            at=float(raw["at"]),
            started_at=float(raw["started_at"]),
            instance=None if raw.get("instance") is None else str(raw["instance"]),
            stopped=bool(raw.get("stopped", False)),
            assigned=tuple(int(p) for p in raw.get("assigned", ())),
            lag={int(p): int(n) for p, n in raw.get("lag", {}).items()},
            lag_seconds={int(p): float(s) for p, s in raw.get("lag_seconds", {}).items()},
        )

    @property
    def max_lag(self) -> int:
        return max(self.lag.values(), default=0)

    def max_lag_seconds(self) -> float | None:
        """The worst owned partition's lag in seconds; None while one's is unknown (no
        fetch since the assignment, or behind and nothing folded since the start)."""
        if any(p not in self.lag_seconds for p in self.assigned):
            return None
        return max(self.lag_seconds.values(), default=0.0)


def read_heartbeat(path: Path) -> Heartbeat | None:
    """The last beat written at `path`; None if there is none (or it cannot be read)."""
    try:
        return Heartbeat.from_json(path.read_bytes())
    except (OSError, ValueError, KeyError, TypeError):
        return None


class HeartbeatWriter:
    """Writes a beat at most every `interval` seconds; `stop()` writes the last one."""

    def __init__(
        self,
        path: Path,
        *,
        interval: float = HEARTBEAT_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.interval = interval
        self.clock = clock
        self.started_at = clock()
        self._last = -float("inf")

    def due(self) -> bool:
        """Whether a beat is due now."""
        return self.clock() - self._last >= self.interval

    def beat(self, beat: Callable[[float, float], Heartbeat]) -> None:
        """Write `beat(now, started_at)` if one is due (so building it costs nothing else)."""
        if self.due():
            self.write(beat(self.clock(), self.started_at))

    def write(self, heartbeat: Heartbeat) -> None:
        """Replace the file atomically; a failure to write is not the projector's failure."""
        self._last = self.clock()
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with contextlib.suppress(OSError):
            temporary.write_bytes(heartbeat.to_json())
            os.replace(temporary, self.path)
