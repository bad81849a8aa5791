"""What a reader knows of the projector that writes its store: whether it is alive, and how
far behind the log it is, from the projector's heartbeat file (`behest.fold.heartbeat`).

`behest serve` runs apart from `behest project`, often in another container sharing the
state dir's volume, so it cannot ask the projector; it reads the beat the projector
rewrites every second. The HTTP endpoints mean:

- `/healthz` (liveness: should this server be restarted?) is 200 while the server can
  read its store. Its `status` is `ok` when the projector is alive too, `degraded` (with
  the reason) when not: restarting the server would not bring the projector back, so a
  dead projector does not fail liveness, but it never reads `ok` either. A store that
  cannot be read is a 503.
- `/readyz` (readiness: should this server get traffic?) is 200 only when the projector
  is alive (it beat within `stale_after` seconds and did not stop), owns partitions (it
  is not still joining its group), and none of them is more than `max_lag` seconds behind
  the log; 503 with the reason otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from behest.fold.heartbeat import HEARTBEAT_INTERVAL, Heartbeat, heartbeat_path, read_heartbeat

__all__ = ["DEFAULT_MAX_LAG", "STALE_AFTER", "ProjectorHealth", "ProjectorWatch"]

STALE_AFTER: Final = 5 * HEARTBEAT_INTERVAL
"""Seconds without a beat after which the projector counts as dead: five missed beats, so
a slow batch or a loaded machine does not flap readiness."""
DEFAULT_MAX_LAG: Final = 30.0
"""Seconds behind the log a ready server's store may be."""


@dataclass(frozen=True, slots=True)
class ProjectorHealth:
    """One look at the projector: alive, ready, and if not, why."""

    alive: bool
    ready: bool
    reason: str | None
    heartbeat: Heartbeat | None
    age: float | None
    """Seconds since the last beat (None: no beat at all)."""

    def to_json_dict(self) -> dict[str, Any]:
        beat = self.heartbeat
        return {
            "alive": self.alive,
            "ready": self.ready,
            "reason": self.reason,
            "pid": None if beat is None else beat.pid,
            "heartbeat_age_s": None if self.age is None else round(self.age, 3),
            "assigned": [] if beat is None else list(beat.assigned),
            "lag": {} if beat is None else {str(p): n for p, n in sorted(beat.lag.items())},
            "lag_seconds": {}
            if beat is None
            else {str(p): round(s, 3) for p, s in sorted(beat.lag_seconds.items())},
        }


class ProjectorWatch:
    """Reads the heartbeat at `path` and judges it against the bounds."""

    def __init__(
        self,
        path: Path,
        *,
        max_lag: float = DEFAULT_MAX_LAG,
        stale_after: float = STALE_AFTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_lag = max_lag
        self.stale_after = stale_after
        self.clock = clock

    @classmethod
    def of(
        cls, state_dir: Path, projection: str = "run_state", *, max_lag: float = DEFAULT_MAX_LAG
    ) -> ProjectorWatch:
        """The watch on the projector of `projection` writing under `state_dir`."""
        return cls(heartbeat_path(state_dir, projection), max_lag=max_lag)

    def check(self) -> ProjectorHealth:
        beat = read_heartbeat(self.path)
        if beat is None:
            why = (
                f"no projector heartbeat at {self.path}: is `behest project` running on "
                "this state dir?"
            )
            return ProjectorHealth(False, False, why, None, None)
        age = max(self.clock() - beat.at, 0.0)
        if beat.stopped:
            why = f"the projector (pid {beat.pid}) stopped {age:.0f} s ago"
            return ProjectorHealth(False, False, why, beat, age)
        if age > self.stale_after:
            why = (
                f"the projector (pid {beat.pid}) last beat {age:.1f} s ago (over "
                f"{self.stale_after:g} s): it died or hangs"
            )
            return ProjectorHealth(False, False, why, beat, age)
        return ProjectorHealth(True, *self._lag_verdict(beat), beat, age)

    def _lag_verdict(self, beat: Heartbeat) -> tuple[bool, str | None]:
        if not beat.assigned:
            return False, "the projector owns no partition yet (joining its consumer group)"
        worst = beat.max_lag_seconds()
        if worst is None:
            unknown = sorted(p for p in beat.assigned if p not in beat.lag_seconds)
            return False, f"the lag of partitions {unknown} is not known yet"
        if worst > self.max_lag:
            partition = max(beat.lag_seconds, key=beat.lag_seconds.__getitem__)
            return False, (
                f"partition {partition} is {worst:.1f} s ({beat.lag.get(partition, 0)} "
                f"records) behind the log, over the {self.max_lag:g} s bound"
            )
        return True, None
