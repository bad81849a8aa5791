"""Run a projection over events without a broker, exactly as the Projector runs it.

`ProjectionDriver` encodes `AgentEvent`s with the codec, lays them out as the topic would
(key = run id text, partition by murmur2, offsets counting up per partition) and hands
each batch to the Projector's own `GenerationWriter` and `BatchFolder`, against real
RocksDB partition stores laid out as the Projector lays them out (`behest.fold.layout`),
so `RunStateQuery.open` reads them too. A projection's unit tests thus exercise the
production decode, sequence checks, fold, index and write:

    from behest.testing import run_projection

    states = run_projection(MyProjection(), events)          # {key: state}

    with ProjectionDriver(MyProjection(), tmp_path) as driver:
        driver.feed(events, batch_size=10)                   # any batch split
        driver.feed([Tombstone(run_id)])                      # delete a run
        driver.feed_raw([(b"not-a-run-id", b"junk")])         # poison: a dead letter
        driver.states(), driver.dead_letters, driver.store   # what the Projector would hold
"""

from __future__ import annotations

import random
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from behest.codec import encode
from behest.config import DEFAULT_TOPIC
from behest.emit.partitioner import partition_for
from behest.events import (
    AgentEvent,
    AssistantMessageCommitted,
    ContextBuilt,
    KnownFinishReason,
    ModelName,
    ModelStarted,
    Payload,
    ProviderId,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunId,
    RunStarted,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    ToolExecutionFailure,
    ToolExecutionFinished,
    ToolExecutionStarted,
    ToolExecutionSuccess,
    ToolMessageCommitted,
    UsageRecorded,
)
from behest.fold.engine import DEFAULT_SNAPSHOT_EVERY, BatchResult, DeadLetter
from behest.fold.generations import GenerationWriter, projection_version
from behest.fold.layout import Layout
from behest.fold.projection import Projection, combiner
from behest.fold.store import StateStore
from behest.fold.storeset import StoreSet

if TYPE_CHECKING:
    from behest.read.projection_query import ProjectionQuery

__all__ = ["ProjectionDriver", "Tombstone", "run_projection", "sample_run"]

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Tombstone:
    """Deletes a run, as a Kafka record with the run's key and a null value does."""

    run_id: uuid.UUID


class _Record:
    """A Kafka record as the driver lays it out (the `LogRecord` protocol)."""

    __slots__ = ("_key", "_offset", "_partition", "_value")

    def __init__(self, partition: int, offset: int, key: bytes | None, value: bytes | None):
        self._partition = partition
        self._offset = offset
        self._key = key
        self._value = value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


class ProjectionDriver(Generic[S]):
    """A projection's store in `directory`, fed batch by batch through the Projector's fold."""

    def __init__(
        self,
        projection: Projection[S],
        directory: Path | str,
        *,
        topic: str = DEFAULT_TOPIC,
        partitions: int = 1,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    ) -> None:
        self.projection = projection
        self.partitions = partitions
        self.layout = Layout.of(directory, projection.name)
        served = self.layout.current()
        if served is None:
            manifest = self.layout.create(
                version=projection_version(projection),
                topic=topic,
                partitions=partitions,
                run_keyed=projection.run_keyed,
            )
        else:
            manifest = self.layout.manifest(served)
        self._writer = GenerationWriter(
            self.layout, manifest, projection, member="testing", snapshot_every=snapshot_every
        )
        self._writer.switch()
        self._writer.add(range(partitions))
        self.store = StoreSet(
            self.layout, self._writer.stores, follow=False, combine=combiner(projection)
        )
        """The partition stores read as one, as the Projector's readers read them."""
        self.dead_letters: list[DeadLetter] = []
        self._next_offsets = self.store.stored_offsets(topic)

    def __enter__(self) -> ProjectionDriver[S]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._writer.close()

    def partition_store(self, partition: int = 0) -> StateStore:
        """One partition's own RocksDB (for tests of the raw layout)."""
        store = self._writer.stores.get(partition)
        if store is None:
            raise ValueError(f"no partition {partition}: the driver has {self.partitions}")
        return store

    def feed(
        self, events: Iterable[AgentEvent | Tombstone], *, batch_size: int | None = None
    ) -> list[BatchResult]:
        """Encode and fold `events` in order, `batch_size` records per write (None: one)."""
        pairs: list[tuple[bytes | None, bytes | None]] = []
        for event in events:
            key = str(event.run_id).encode()
            pairs.append((key, None if isinstance(event, Tombstone) else encode(event)))
        size = batch_size or max(len(pairs), 1)
        return [self.feed_raw(pairs[i : i + size]) for i in range(0, len(pairs), size)]

    def feed_raw(self, records: Sequence[tuple[bytes | None, bytes | None]]) -> BatchResult:
        """Fold one batch of raw `(key, value)` records: the way to test poison input."""
        batch = [self._record(key, value) for key, value in records]
        return self._writer.process(batch, dead_letter=self.dead_letters.extend)

    def _record(self, key: bytes | None, value: bytes | None) -> _Record:
        partition = 0 if key is None else partition_for(key, self.partitions)
        offset = self._next_offsets.get(partition, 0)
        self._next_offsets[partition] = offset + 1
        return _Record(partition, offset, key, value)

    def state(self, key: bytes) -> S | None:
        """The stored state of one entity (a run: `run_id.bytes`), decoded."""
        data = self.store.get_state(key)
        return None if data is None else self.projection.decode_state(data)

    def states(self) -> dict[bytes, S]:
        """Every stored state, decoded, by key."""
        decode = self.projection.decode_state
        return {key: decode(data) for key, data in self.store.iter_states()}

    def query(self) -> ProjectionQuery[S]:
        """The states as readers see them (point in time and scans too), over this store."""
        from behest.read.projection_query import ProjectionQuery
        from behest.read.reader import ProjectionReader

        reader = ProjectionReader(self.store, self.projection)
        return ProjectionQuery(reader, self.projection.decode_state)


def run_projection(
    projection: Projection[S],
    events: Iterable[AgentEvent | Tombstone],
    *,
    directory: Path | str | None = None,
    batch_size: int | None = None,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
) -> dict[bytes, S]:
    """The states a Projector would store after folding `events` (in a temporary RocksDB
    unless `directory` is given)."""
    with (
        tempfile.TemporaryDirectory(prefix="behest-test-") as scratch,
        ProjectionDriver(projection, directory or scratch, snapshot_every=snapshot_every) as driver,
    ):
        driver.feed(events, batch_size=batch_size)
        return driver.states()


_TOOLS = ("search", "read_file", "run_shell", "fetch_url")


def _iteration(rng: random.Random, iteration: int) -> list[Payload]:
    """One model call: context, the call, streamed text, maybe a tool, usage."""
    provider, model = ProviderId("openai"), ModelName("gpt-4o")
    payloads: list[Payload] = [
        ContextBuilt(message_count=2 * iteration),
        ModelStarted(provider=provider, model=model, iteration=iteration),
    ]
    payloads += [TextDelta(delta=f"part {n} ") for n in range(rng.randint(1, 4))]
    if rng.random() < 0.7:
        call_id, tool = f"call-{iteration}", rng.choice(_TOOLS)
        payloads += [
            ToolCallStarted(call_id=call_id, tool_name=tool),
            ToolCallDelta(call_id=call_id, delta='{"q": "x"}'),
            ToolCallCompleted(call=ToolCall(id=call_id, name=tool, arguments={"q": "x"})),
            ToolExecutionStarted(call_id=call_id, tool_name=tool),
            ToolExecutionFinished(
                call_id=call_id,
                tool_name=tool,
                result=ToolExecutionFailure(error="timed out")
                if rng.random() < 0.1
                else ToolExecutionSuccess(output={"hits": rng.randint(0, 9)}),
                duration_ms=rng.randint(1, 2000),
            ),
            ToolMessageCommitted(message_id=uuid.UUID(int=rng.getrandbits(128), version=4)),
        ]
    payloads.append(UsageRecorded(usage=TokenUsage.new(rng.randint(10, 2000), rng.randint(1, 500))))
    return payloads


def sample_run(
    run_id: uuid.UUID | None = None,
    *,
    events: int = 20,
    seed: int | None = None,
    start: datetime | None = None,
) -> list[AgentEvent]:
    """About `events` realistic events of one run (sequence 0, 1, 2, ...), for tests.

    RunStarted, then model calls with streamed text, tool calls and usage, then (mostly)
    RunCompleted, sometimes RunFailed or RunCancelled. Reproducible with `seed`.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    run = RunId(run_id or uuid.UUID(int=rng.getrandbits(128), version=4))
    payloads: list[Payload] = [
        RunStarted(
            session_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            provider=ProviderId("openai"),
            model=ModelName("gpt-4o"),
            metadata={"user": f"u{rng.randint(1, 99)}", "tags": ["test"]},
        )
    ]
    iteration = 0
    while len(payloads) < events - 2:
        iteration += 1
        payloads += _iteration(rng, iteration)
    payloads.append(AssistantMessageCommitted(message_id=uuid.UUID(int=rng.getrandbits(128))))
    ending = rng.random()
    if ending < 0.8:
        payloads.append(RunCompleted(finish_reason=KnownFinishReason.STOP, iterations=iteration))
    elif ending < 0.9:
        payloads.append(RunFailed(error="provider returned 500"))
    else:
        payloads.append(RunCancelled())
    moment = start or datetime(2026, 11, 20, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 9999))
    return [
        AgentEvent(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            run_id=run,
            sequence=sequence,
            timestamp=moment + timedelta(milliseconds=250 * sequence),
            payload=payload,
        )
        for sequence, payload in enumerate(payloads)
    ]
