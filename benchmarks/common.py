"""Shared helpers of the benchmark suite: rows and statistics, the broker, realistic topics,
and subprocess measurements.

Every number the suite prints is measured in the same run as its reference, so the helpers
here make each measurement cheap to repeat: topics are filled from pre-encoded payloads
(the Avro envelope is composed around them, byte-for-byte what `codec.encode` writes), and
consumers run in child processes, which gives each one a fresh interpreter and its own
peak RSS.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from behest import codec
from behest.events import (
    AgentEvent,
    AssistantMessageCommitted,
    ContextBuilt,
    KnownFinishReason,
    ModelStarted,
    Payload,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    ToolExecutionFinished,
    ToolExecutionStarted,
    ToolExecutionSuccess,
    ToolMessageCommitted,
    UsageRecorded,
)

RESULT_MARK = "BENCH-RESULT "
"""Prefix of the one stdout line a child process reports its result on (libraries log too)."""

DEFAULT_PARTITIONS = 4
CHECKOUT = Path(__file__).resolve().parent.parent
"""Children run here, so `python -m benchmarks...` resolves wherever the suite was started."""
CHILD_TIMEOUT = 600.0


# --- rows and statistics ----------------------------------------------------------------------


class Row(TypedDict):
    """One line of the results table: a figure beside the reference measured in the same run.

    `ratio` is `value / reference_value`: above 1 is faster for rates, slower for latencies.
    """

    name: str
    value: float
    unit: str
    reference: str | None
    reference_value: float | None
    ratio: float | None


def make_row(
    name: str,
    value: float,
    unit: str,
    reference: str | None = None,
    reference_value: float | None = None,
) -> Row:
    """A row whose ratio is computed, never typed in."""
    ratio = value / reference_value if reference_value else None
    return Row(
        name=name,
        value=value,
        unit=unit,
        reference=reference,
        reference_value=reference_value,
        ratio=ratio,
    )


def median(values: Sequence[float]) -> float:
    """The median; a benchmark repeated three times reports the middle one, not the best."""
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated between the closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def timed(action: Callable[[], object]) -> float:
    """Seconds one call takes, on the monotonic high-resolution clock."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def repeat_median(action: Callable[[], float], repeats: int) -> float:
    """Run a measurement `repeats` times and keep the median of what it returns."""
    return median([action() for _ in range(repeats)])


# --- formatting -------------------------------------------------------------------------------


def format_number(value: float | None) -> str:
    """Thousands separators for large figures, three significant digits for small ones."""
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}x"


TABLE_HEADERS = ("measurement", "value", "unit", "reference (same run)", "reference", "ratio")


def table_cells(row: Row) -> tuple[str, ...]:
    """A row as the six text cells both the terminal and the Markdown table show."""
    return (
        row["name"],
        format_number(row["value"]),
        row["unit"],
        row["reference"] or "—",
        format_number(row["reference_value"]),
        format_ratio(row["ratio"]),
    )


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a GitHub-flavoured Markdown table (numbers right-aligned)."""
    lines = [
        "| " + " | ".join(TABLE_HEADERS) + " |",
        "|---|--:|---|---|--:|--:|",
    ]
    for row in rows:
        cells = (cell.replace("|", "\\|") for cell in table_cells(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- the broker -------------------------------------------------------------------------------


@contextlib.contextmanager
def kafka_broker(progress: Callable[[str], None] = print) -> Iterator[tuple[str, str]]:
    """`(bootstrap, description)` of the broker to measure against.

    `BEHEST_BOOTSTRAP_SERVERS` if set; otherwise a `LocalBroker` on a free port in a temp
    data dir, stopped and deleted on exit whatever happens in between.
    """
    configured = os.environ.get("BEHEST_BOOTSTRAP_SERVERS")
    if configured:
        yield configured, f"given broker at {configured}"
        return
    from behest.local.broker import LocalBroker
    from behest.local.runtime import KAFKA_VERSION

    data_dir = Path(tempfile.mkdtemp(prefix="behest-bench-broker-"))
    broker = LocalBroker(data_dir, progress=progress)
    try:
        status = broker.start(port=0)
        progress(f"started a local Kafka {KAFKA_VERSION} at {status.bootstrap} (pid {status.pid})")
        yield str(status.bootstrap), f"local Apache Kafka {KAFKA_VERSION} (KRaft, 1 node)"
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def create_topic(bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS) -> None:
    """A topic with infinite retention, its dead-letter topic and its compacted writer-schema
    topic, as `behest topics create` makes them (producers warn when the last is missing)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [
        NewTopic(topic, num_partitions=partitions, config={"retention.ms": "-1"}),
        NewTopic(f"{topic}.dlq", num_partitions=1, config={"retention.ms": "-1"}),
        NewTopic(f"{topic}.schemas", num_partitions=1, config={"cleanup.policy": "compact"}),
    ]
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result()


def delete_topic(bootstrap: str, topic: str) -> None:
    """Drop a topic the suite made, with its dead-letter and schema topics: nobody reads them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [topic, f"{topic}.dlq", f"{topic}.schemas"]
    for future in admin.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            future.result()


# --- realistic events, fast -------------------------------------------------------------------

_BASE_MICROS = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp()) * 1_000_000
_TEMPLATE_ID = uuid.UUID("00000000-0000-4000-8000-000000000000")
_UUID_TEXT = b"\x48"  # Avro string length 36, zig-zagged
_HEADER = codec.MAGIC + codec.CURRENT.fingerprint


def avro_long(n: int) -> bytes:
    """Avro's zig-zag varint encoding of a long."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _envelope_prefix(event_id: str, run_id: str, sequence: int, micros: int) -> bytes:
    return b"".join(
        (
            _UUID_TEXT,
            event_id.encode(),
            _UUID_TEXT,
            run_id.encode(),
            avro_long(sequence),
            avro_long(micros),
        )
    )


def payload_bytes(payload: Payload) -> bytes:
    """The Avro bytes of a payload union value, cut out of what `codec.encode_body` writes."""
    event = AgentEvent(
        event_id=_TEMPLATE_ID,
        run_id=_TEMPLATE_ID,
        sequence=0,
        timestamp=datetime(2026, 11, 20, tzinfo=UTC),
        payload=payload,
    )
    body = codec.encode_body(event)
    prefix = _envelope_prefix(str(_TEMPLATE_ID), str(_TEMPLATE_ID), 0, _BASE_MICROS)
    if not body.startswith(prefix):
        raise RuntimeError("the envelope layout changed: update benchmarks.common")
    return body[len(prefix) :]


@dataclass(frozen=True)
class _Templates:
    """Pre-encoded payloads of one agent-run script; only a few fields vary per run."""

    started_head: bytes  # union index and Avro length of the session id
    started_tail: bytes  # provider, model, metadata
    iteration: tuple[bytes, ...]  # one tool-using model turn, ModelStarted excluded
    model_started: bytes  # without its trailing `iteration` long
    text_delta: bytes
    closing: tuple[bytes, ...]  # the last turn's events before the terminal one
    completed: bytes  # without its trailing `iterations` long
    failed: bytes
    cancelled: bytes

    @classmethod
    def build(cls) -> _Templates:
        started = payload_bytes(
            RunStarted(
                session_id=_TEMPLATE_ID,
                provider="openai",
                model="gpt-4o",
                metadata={"user": "u-1842", "channel": "web", "tags": ["bench"]},
            )
        )
        model = payload_bytes(ModelStarted(provider="openai", model="gpt-4o", iteration=0))
        completed = payload_bytes(RunCompleted(finish_reason=KnownFinishReason.STOP, iterations=0))
        usage = payload_bytes(UsageRecorded(usage=TokenUsage.new(1_250, 180)))
        iteration = (
            payload_bytes(ContextBuilt(message_count=7)),
            payload_bytes(TextDelta(delta="Let me look that up. ")),
            payload_bytes(ToolCallStarted(call_id="call_7Qx2", tool_name="search_docs")),
            payload_bytes(ToolCallDelta(call_id="call_7Qx2", delta='{"query": "kafka ')),
            payload_bytes(ToolCallDelta(call_id="call_7Qx2", delta='retention"}')),
            payload_bytes(
                ToolCallCompleted(
                    call=ToolCall(
                        id="call_7Qx2", name="search_docs", arguments={"query": "kafka retention"}
                    )
                )
            ),
            usage,
            payload_bytes(ToolExecutionStarted(call_id="call_7Qx2", tool_name="search_docs")),
            payload_bytes(
                ToolExecutionFinished(
                    call_id="call_7Qx2",
                    tool_name="search_docs",
                    result=ToolExecutionSuccess(output={"hits": 3, "top": "retention.ms=-1"}),
                    duration_ms=182,
                )
            ),
            payload_bytes(ToolMessageCommitted(message_id=_TEMPLATE_ID)),
        )
        closing = (
            payload_bytes(ContextBuilt(message_count=12)),
            payload_bytes(TextDelta(delta="Retention is infinite, ")),
            payload_bytes(TextDelta(delta="so the log can be replayed.")),
            usage,
            payload_bytes(AssistantMessageCommitted(message_id=_TEMPLATE_ID)),
        )
        return cls(
            started_head=started[:2],
            started_tail=started[2 + 36 :],
            iteration=iteration,
            model_started=model[:-1],
            text_delta=payload_bytes(TextDelta(delta="Thinking… ")),
            closing=closing,
            completed=completed[:-1],
            failed=payload_bytes(RunFailed(error="provider timed out after 3 retries")),
            cancelled=payload_bytes(RunCancelled()),
        )

    def script(self, events: int, ending: str) -> list[bytes]:
        """Payloads of a run of exactly `events` events (RunStarted's session left out).

        A run is RunStarted, tool-using turns (ModelStarted + 10 events each), a closing
        turn and a terminal event; text deltas pad it to the exact length.
        """
        if events < 3:
            raise ValueError("a run needs at least 3 events: start, model call, end")
        fixed = 1 + 1 + len(self.closing) + 1  # start, closing ModelStarted, closing, end
        turns = max(0, (events - fixed) // (1 + len(self.iteration)))
        body: list[bytes] = []
        for turn in range(1, turns + 1):
            body.append(self.model_started + avro_long(turn))
            body.extend(self.iteration)
        body.append(self.model_started + avro_long(turns + 1))
        body.extend(self.closing)
        while len(body) + 2 < events:  # pad with streamed text
            body.insert(len(body) - len(self.closing), self.text_delta)
        del body[events - 2 :]  # short runs: cut the script, keep the ending
        if ending == "completed":
            end = self.completed + avro_long(turns + 1)
        elif ending == "failed":
            end = self.failed
        else:
            end = self.cancelled
        return [b"", *body, end]


_TEMPLATES: _Templates | None = None


def _templates() -> _Templates:
    global _TEMPLATES
    if _TEMPLATES is None:
        _TEMPLATES = _Templates.build()
    return _TEMPLATES


def new_run_id(rng: random.Random) -> str:
    """A random version-4 run id in canonical text, reproducible from the seed."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class RunBatch:
    """`count` runs of `events` events each, all written to the same topic."""

    count: int
    events: int
    run_ids: list[str] = field(default_factory=list)


@dataclass
class Fill:
    """What `fill_topic` wrote: the batches (with their run ids) and the totals."""

    batches: list[RunBatch]
    events: int
    bytes: int
    seconds: float
    next_event: int
    """Global index of the next event: continues the time line when a topic grows."""


def iter_encoded(
    batches: Sequence[RunBatch],
    rng: random.Random,
    *,
    concurrency: int = 200,
    first_event: int = 0,
) -> Iterator[tuple[bytes, bytes]]:
    """`(key, value)` of every event of the batches, runs interleaved as live traffic is.

    Runs go in waves of `concurrency`; within a wave one event of each run in turn. Ids are
    random v4 UUIDs; an event id is its run id with the sequence in the last 12 hex digits
    (unique, and far cheaper than a fresh UUID per event). Event `i` happens at 1 ms x i
    after 2026-11-20T00:00Z. Each batch's `run_ids` is filled as its runs are made.
    """
    templates = _templates()
    endings = ("completed",) * 90 + ("failed",) * 7 + ("cancelled",) * 3
    index = first_event
    session = new_run_id(rng)
    for batch in batches:
        scripts = {ending: templates.script(batch.events, ending) for ending in set(endings)}
        for wave_start in range(0, batch.count, concurrency):
            wave = []
            for _ in range(min(concurrency, batch.count - wave_start)):
                run_id = new_run_id(rng)
                batch.run_ids.append(run_id)
                if rng.random() < 0.2:
                    session = new_run_id(rng)
                script = scripts[rng.choice(endings)]
                first = templates.started_head + session.encode() + templates.started_tail
                wave.append((run_id.encode(), run_id[:24], script, first))
            for sequence in range(batch.events):
                for key, id_stem, script, first in wave:
                    payload = first if sequence == 0 else script[sequence]
                    micros = _BASE_MICROS + index * 1_000
                    index += 1
                    value = b"".join(
                        (
                            _HEADER,
                            _UUID_TEXT,
                            f"{id_stem}{sequence:012x}".encode(),
                            _UUID_TEXT,
                            key,
                            avro_long(sequence),
                            avro_long(micros),
                            payload,
                        )
                    )
                    yield key, value


PRODUCER_CONFIG: Mapping[str, Any] = {
    # idempotence keeps each partition in order through retries: a reordered run would
    # show the projector gaps and duplicates, and the suite would compare different work
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",  # as behest's producer: Java's partitioner
    "compression.type": "lz4",  # as behest's producer
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}


def produce_all(bootstrap: str, topic: str, records: Iterator[tuple[bytes, bytes]]) -> int:
    """Produce `(key, value)` pairs as fast as librdkafka takes them; returns the bytes sent."""
    errors: list[str] = []

    def on_delivery(error: Any, _message: Any) -> None:
        if error is not None:
            errors.append(str(error))

    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONFIG})
    sent = 0
    for count, (key, value) in enumerate(records, 1):
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        sent += len(value)
        if count % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) or errors:
        raise RuntimeError(f"filling {topic} failed: {errors[:3] or 'flush timed out'}")
    return sent


def fill_topic(
    bootstrap: str,
    topic: str,
    batches: Sequence[RunBatch],
    *,
    seed: int = 8,
    first_event: int = 0,
) -> Fill:
    """Write realistic agent-run traffic to `topic` (which must exist)."""
    rng = random.Random(seed)
    start = time.perf_counter()
    records = iter_encoded(batches, rng, first_event=first_event)
    sent = produce_all(bootstrap, topic, records)
    events = sum(batch.count * batch.events for batch in batches)
    return Fill(
        batches=list(batches),
        events=events,
        bytes=sent,
        seconds=time.perf_counter() - start,
        next_event=first_event + events,
    )


# --- measurements in child processes ----------------------------------------------------------


@dataclass(frozen=True)
class ChildResult:
    """What a child process reported, and the most memory it ever held."""

    result: dict[str, Any]
    peak_rss_bytes: int


def peak_rss_bytes() -> int:
    """This process's peak resident set size (`VmHWM`).

    Not `getrusage().ru_maxrss`: Linux carries that over a fork and exec, so a child
    would report at least its parent's size at the fork.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status: peak RSS needs Linux")


def run_child(module: str, command: str, args: Mapping[str, Any]) -> ChildResult:
    """Run `python -m module command '<json args>'` in the suite's interpreter.

    The child times its own work (interpreter start-up and imports excluded) and reports
    its peak RSS, which covers librdkafka's and RocksDB's threads too.
    """
    completed = subprocess.run(
        [sys.executable, "-m", module, command, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=CHECKOUT,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    marked = [
        line[len(RESULT_MARK) :]
        for line in completed.stdout.splitlines()
        if line.startswith(RESULT_MARK)
    ]
    if completed.returncode != 0 or not marked:
        output = "\n".join((completed.stdout + completed.stderr).splitlines()[-40:])
        raise RuntimeError(
            f"`python -m {module} {command}` failed (exit {completed.returncode}):\n{output}"
        )
    result = json.loads(marked[-1])
    return ChildResult(result=result, peak_rss_bytes=int(result.pop("peak_rss_bytes")))


def child_main(commands: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """Entry point of a child: run the named command and print its result on one line."""
    if len(sys.argv) != 3 or sys.argv[1] not in commands:
        raise SystemExit(f"usage: python -m ... {{{','.join(commands)}}} '<json arguments>'")
    result = commands[sys.argv[1]](json.loads(sys.argv[2]))
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(RESULT_MARK + json.dumps(result), flush=True)


# --- the context every area gets --------------------------------------------------------------


@dataclass
class BenchContext:
    """The broker, the mode, scratch space and the topics shared by the areas of one run."""

    bootstrap: str
    quick: bool
    workdir: Path
    repeats: int = 3
    log: Callable[[str], None] = print
    notes: list[str] = field(default_factory=list)
    topics: dict[str, tuple[str, Fill]] = field(default_factory=dict)
    memo: dict[str, object] = field(default_factory=dict)
    """Measurements more than one area reports (e.g. the projector over the 1M-event log)."""
    started: float = field(default_factory=time.monotonic)
    budget: float = 720.0
    """Seconds the whole suite may take; optional work runs only if it fits."""
    _counter: int = 0

    def unique(self, stem: str) -> str:
        """A name no earlier measurement used (topics, groups, state dirs)."""
        self._counter += 1
        return f"bench-{stem}-{os.getpid()}-{self._counter}"

    def scratch(self, stem: str) -> Path:
        """A fresh folder under the suite's temp dir."""
        path = self.workdir / self.unique(stem)
        path.mkdir(parents=True)
        return path

    def note(self, text: str) -> None:
        """A line printed under the table (skips, targets, caveats)."""
        self.log(text)
        self.notes.append(text)

    def topic(self, label: str, batches: Sequence[RunBatch]) -> tuple[str, Fill]:
        """A filled topic shared by every area that asks for the same `label`."""
        if label not in self.topics:
            name = self.unique(label)
            create_topic(self.bootstrap, name)
            fill = fill_topic(self.bootstrap, name, batches)
            self.log(
                f"filled {name}: {fill.events:,} events, {fill.bytes / fill.events:.0f} B each, "
                f"in {fill.seconds:.1f} s"
            )
            self.topics[label] = (name, fill)
        return self.topics[label]

    def drop_topics(self) -> None:
        """Delete every topic this run filled (they matter on a broker that outlives us)."""
        for name, _ in self.topics.values():
            delete_topic(self.bootstrap, name)
        self.topics.clear()
