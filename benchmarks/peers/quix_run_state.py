"""behest's RunState fold written as a Quix Streams stateful application: the peer.

The same topic, the same fold (`projections.run_state.apply`) and the same decode
(`behest.codec.decode_record`, through a custom Quix deserializer), so both sides pay the
same Avro cost and differ only in how they consume, keep state and commit: Quix polls one
message at a time and keeps the state per message key in its own RocksDB, backed by a
changelog topic unless told otherwise. The run stops itself once it has folded `count`
messages (a counter in the fold calls `app.stop()`), and is timed like the projector:
from `app.run()` to its return, the final checkpoint included.

quixstreams pins confluent-kafka below 2.13, so it lives in `.venv-bench` (`make bench`),
where behest runs on that same librdkafka.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from behest import codec
from behest.projections import run_state
from benchmarks.common import BenchContext, ChildResult, child_main, run_child

STATE_KEY = "run_state"


def available() -> bool:
    """Whether quixstreams is importable here (it is in `.venv-bench`, not in `.venv`)."""
    return importlib.util.find_spec("quixstreams") is not None


def _fold(args: dict[str, Any]) -> dict[str, Any]:
    """Fold `count` messages of a topic into per-run states with Quix Streams."""
    from quixstreams import Application, State
    from quixstreams.models.serializers import Deserializer, SerializationContext

    class EventDeserializer(Deserializer):
        """Values are behest's Avro single-object events: decode them as the projector does."""

        def __call__(self, value: bytes, ctx: SerializationContext) -> Any:
            return codec.decode_record(value)

    app = Application(
        broker_address=args["bootstrap"],
        consumer_group=args["group"],
        auto_offset_reset="earliest",
        state_dir=args["state_dir"],
        use_changelog_topics=bool(args["changelog"]),
        loglevel="WARNING",
    )
    topic = app.topic(
        args["topic"],
        key_deserializer="bytes",
        value_deserializer=EventDeserializer(),  # type: ignore[no-untyped-call]
    )
    wanted = int(args["count"])
    folded = 0
    runs: set[bytes] = set()

    def fold(
        event: Any, key: bytes, _timestamp: int, _headers: Any, state: State[str, Any]
    ) -> None:
        nonlocal folded
        state.set(STATE_KEY, run_state.apply(state.get(STATE_KEY), event))
        runs.add(key)
        folded += 1
        if folded >= wanted:
            app.stop()

    app.dataframe(topic).update(fold, stateful=True, metadata=True)
    start = time.perf_counter()
    app.run()
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "events": folded, "runs": len(runs)}


def fold_once(ctx: BenchContext, topic: str, count: int, *, changelog: bool) -> ChildResult:
    """One Quix Streams run over `topic` in a fresh process, group and state dir."""
    args = {
        "bootstrap": ctx.bootstrap,
        "topic": topic,
        "count": count,
        "group": ctx.unique("quix"),
        "state_dir": str(ctx.scratch("quix-state")),
        "changelog": changelog,
    }
    return run_child("benchmarks.peers.quix_run_state", "fold", args)


if __name__ == "__main__":
    child_main({"fold": _fold})
