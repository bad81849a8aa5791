"""The agent-run domain: run ids, statuses, provider types and the 17 `AgentEvent` variants.

Mirrors the Rust crate `behest` (run.rs, event.rs and its provider module): same names,
same fields, snake_case on the wire. One deliberate difference: `run_id` and
`timestamp` live once in the `AgentEvent` envelope instead of in every variant,
exactly as the Avro contract (`schemas/agent_event.avsc`) lays them out.
Pure data: no Kafka, no RocksDB.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NewType, TypeAlias, TypedDict

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from behest.errors import InvalidQueryError
from behest.times import format_time as format_time
from behest.times import utc_now as utc_now

RunId = NewType("RunId", uuid.UUID)
"""Unique identifier of an agent run (a UUID; on the wire its canonical lowercase text)."""

ProviderId = NewType("ProviderId", str)
"""Name of a model provider, e.g. `openai`."""

ModelName = NewType("ModelName", str)
"""Name of a model, e.g. `gpt-4o`."""


def new_run_id() -> RunId:
    """A fresh random run id (UUID v4), as `RunId::new()` makes one."""
    return RunId(uuid.uuid4())


def parse_run_id(text: str) -> RunId:
    """Parse a run id given as text; raises `InvalidQueryError` with a clear message."""
    try:
        return RunId(uuid.UUID(text))
    except (ValueError, AttributeError, TypeError):
        raise InvalidQueryError(
            f"{text!r} is not a run id: expected a UUID such as "
            "'3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00'"
        ) from None


class RunStatus(StrEnum):
    """Status of an agent run; the last three are terminal."""

    PENDING = "pending"
    SESSION_LOADED = "session_loaded"
    BUILDING_CONTEXT = "building_context"
    CALLING_MODEL = "calling_model"
    WAITING_FOR_TOOLS = "waiting_for_tools"
    PERSISTING = "persisting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and cancelled runs."""
        return self in _TERMINAL_STATUSES


_TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenUsage(_Model):
    """Token counts of one provider call, or their sum over a run."""

    input_tokens: Annotated[int, Field(ge=0)] = 0
    output_tokens: Annotated[int, Field(ge=0)] = 0
    total_tokens: Annotated[int, Field(ge=0)] = 0

    @classmethod
    def new(cls, input_tokens: int, output_tokens: int) -> TokenUsage:
        """Usage whose total is input + output, as `TokenUsage::new` computes it."""
        return cls(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage.new(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


class KnownFinishReason(StrEnum):
    """The finish reasons every provider maps to."""

    STOP = "stop"
    TOOL_CALLS = "tool_calls"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    ERROR = "error"


class UnknownFinishReason(_Model):
    """A provider's own finish reason that maps to none of the known ones (`Unknown(reason)`)."""

    unknown: str


FinishReason: TypeAlias = KnownFinishReason | UnknownFinishReason
"""Why a model stopped: a known reason, or `{"unknown": "<provider's reason>"}`."""


class ToolCall(_Model):
    """A tool call the model asked for; `arguments` is arbitrary JSON."""

    id: str
    name: str
    arguments: JsonValue = None


class ToolChoiceTool(_Model):
    """Force one named tool (`ToolChoice::Tool { name }`)."""

    tool: _ToolName


class _ToolName(_Model):
    name: str


ToolChoice: TypeAlias = Literal["auto", "none", "required"] | ToolChoiceTool
"""How the model may use tools: `auto` (default), `none`, `required` or one named tool."""


class ToolExecutionSuccess(_Model):
    """The tool ran; `output` is arbitrary JSON."""

    output: JsonValue = None


class ToolExecutionFailure(_Model):
    """The tool failed with an error message."""

    error: str


ToolExecutionResult: TypeAlias = ToolExecutionSuccess | ToolExecutionFailure


class RunRequest(_Model):
    """A request to start a new agent run."""

    session_id: uuid.UUID | None = None
    run_id: RunId | None = None
    provider: ProviderId
    model: ModelName
    input: str
    metadata: JsonValue = None
    tool_choice: ToolChoice = "auto"
    client_request_id: str | None = None


class RunRecord(_Model):
    """The static record of a run, as a run store keeps it."""

    id: RunId
    session_id: uuid.UUID
    status: RunStatus = RunStatus.PENDING
    provider: ProviderId
    model: ModelName
    metadata: JsonValue = None
    client_request_id: str | None = None
    created_at: datetime
    updated_at: datetime


# --- the 17 event variants (payloads; run_id and timestamp are in the envelope) -------------


class RunStarted(_Model):
    """The run started. Carries session, provider, model and metadata, so state can be
    rebuilt from events alone (`metadata` is behest's addition to the seed's fields)."""

    type: Literal["RunStarted"] = "RunStarted"
    session_id: uuid.UUID
    provider: ProviderId
    model: ModelName
    metadata: JsonValue = None


class ContextBuilt(_Model):
    """The context for the next model call was built."""

    type: Literal["ContextBuilt"] = "ContextBuilt"
    message_count: Annotated[int, Field(ge=0)]


class ModelStarted(_Model):
    """A model call started; `iteration` counts from 1."""

    type: Literal["ModelStarted"] = "ModelStarted"
    provider: ProviderId
    model: ModelName
    iteration: Annotated[int, Field(ge=0)]


class TextDelta(_Model):
    """A piece of streamed model text."""

    type: Literal["TextDelta"] = "TextDelta"
    delta: str


class ToolCallStarted(_Model):
    """The model began a tool call."""

    type: Literal["ToolCallStarted"] = "ToolCallStarted"
    call_id: str
    tool_name: str


class ToolCallDelta(_Model):
    """A piece of a tool call's streamed arguments."""

    type: Literal["ToolCallDelta"] = "ToolCallDelta"
    call_id: str
    delta: str


class ToolCallCompleted(_Model):
    """The model finished a tool call."""

    type: Literal["ToolCallCompleted"] = "ToolCallCompleted"
    call: ToolCall


class ToolExecutionStarted(_Model):
    """A tool began to execute."""

    type: Literal["ToolExecutionStarted"] = "ToolExecutionStarted"
    call_id: str
    tool_name: str


class ToolExecutionFinished(_Model):
    """A tool finished executing, with its result and duration."""

    type: Literal["ToolExecutionFinished"] = "ToolExecutionFinished"
    call_id: str
    tool_name: str
    result: ToolExecutionResult
    duration_ms: Annotated[int, Field(ge=0)]


class AssistantMessageCommitted(_Model):
    """An assistant message was committed to the store."""

    type: Literal["AssistantMessageCommitted"] = "AssistantMessageCommitted"
    message_id: uuid.UUID


class ToolMessageCommitted(_Model):
    """A tool message was committed to the store."""

    type: Literal["ToolMessageCommitted"] = "ToolMessageCommitted"
    message_id: uuid.UUID


class UsageRecorded(_Model):
    """Token usage of one provider call."""

    type: Literal["UsageRecorded"] = "UsageRecorded"
    usage: TokenUsage


class RunCompleted(_Model):
    """The run completed."""

    type: Literal["RunCompleted"] = "RunCompleted"
    finish_reason: FinishReason
    iterations: Annotated[int, Field(ge=0)]


class RunFailed(_Model):
    """The run failed."""

    type: Literal["RunFailed"] = "RunFailed"
    error: str


class RunCancelled(_Model):
    """The run was cancelled."""

    type: Literal["RunCancelled"] = "RunCancelled"


class DoomLoopDetected(_Model):
    """The runtime detected the agent repeating itself."""

    type: Literal["DoomLoopDetected"] = "DoomLoopDetected"
    description: str


class CompactionCircuitOpened(_Model):
    """Context compaction failed repeatedly and its circuit breaker opened."""

    type: Literal["CompactionCircuitOpened"] = "CompactionCircuitOpened"
    consecutive_failures: Annotated[int, Field(ge=0)]


Payload: TypeAlias = Annotated[
    RunStarted
    | ContextBuilt
    | ModelStarted
    | TextDelta
    | ToolCallStarted
    | ToolCallDelta
    | ToolCallCompleted
    | ToolExecutionStarted
    | ToolExecutionFinished
    | AssistantMessageCommitted
    | ToolMessageCommitted
    | UsageRecorded
    | RunCompleted
    | RunFailed
    | RunCancelled
    | DoomLoopDetected
    | CompactionCircuitOpened,
    Field(discriminator="type"),
]

PAYLOAD_TYPES: tuple[type[_Model], ...] = (
    RunStarted,
    ContextBuilt,
    ModelStarted,
    TextDelta,
    ToolCallStarted,
    ToolCallDelta,
    ToolCallCompleted,
    ToolExecutionStarted,
    ToolExecutionFinished,
    AssistantMessageCommitted,
    ToolMessageCommitted,
    UsageRecorded,
    RunCompleted,
    RunFailed,
    RunCancelled,
    DoomLoopDetected,
    CompactionCircuitOpened,
)
"""The variants in the order of the Avro payload union (the order is part of the wire format)."""

TERMINAL_TYPES = frozenset({"RunCompleted", "RunFailed", "RunCancelled"})

NAMESPACE = "behest"
"""The Avro namespace of every record in `schemas/agent_event.avsc`."""


class Variant(StrEnum):
    """The full Avro name of every record a decoded `EventRecord` names in a union: the
    17 payload variants, then the branches of `result` and `finish_reason`.

    Projections dispatch on these instead of comparing text (`behest.codec` checks at
    import that they are exactly the schema's union branches, so a schema change that
    adds a variant fails loudly here first). A member is its name's text, so it compares
    and hashes as the string the codec decodes:

        match Variant.of(event):
            case Variant.RUN_STARTED: ...
        failed = body["result"][0] == Variant.TOOL_EXECUTION_FAILURE
    """

    RUN_STARTED = "behest.RunStarted"
    CONTEXT_BUILT = "behest.ContextBuilt"
    MODEL_STARTED = "behest.ModelStarted"
    TEXT_DELTA = "behest.TextDelta"
    TOOL_CALL_STARTED = "behest.ToolCallStarted"
    TOOL_CALL_DELTA = "behest.ToolCallDelta"
    TOOL_CALL_COMPLETED = "behest.ToolCallCompleted"
    TOOL_EXECUTION_STARTED = "behest.ToolExecutionStarted"
    TOOL_EXECUTION_FINISHED = "behest.ToolExecutionFinished"
    ASSISTANT_MESSAGE_COMMITTED = "behest.AssistantMessageCommitted"
    TOOL_MESSAGE_COMMITTED = "behest.ToolMessageCommitted"
    USAGE_RECORDED = "behest.UsageRecorded"
    RUN_COMPLETED = "behest.RunCompleted"
    RUN_FAILED = "behest.RunFailed"
    RUN_CANCELLED = "behest.RunCancelled"
    DOOM_LOOP_DETECTED = "behest.DoomLoopDetected"
    COMPACTION_CIRCUIT_OPENED = "behest.CompactionCircuitOpened"
    TOOL_EXECUTION_SUCCESS = "behest.ToolExecutionSuccess"
    TOOL_EXECUTION_FAILURE = "behest.ToolExecutionFailure"
    UNKNOWN_FINISH_REASON = "behest.UnknownFinishReason"

    @classmethod
    def of(cls, event: EventRecord) -> Variant:
        """The variant of an event's payload; `ValueError` for a name behest does not know
        (an `EventRecord` built by hand with a wrong name)."""
        return cls(event["payload"][0])

    @property
    def short_name(self) -> str:
        """The record's name without its namespace, e.g. `RunStarted`."""
        return self.value.rpartition(".")[2]

    @property
    def model(self) -> type[BaseModel]:
        """The pydantic model of this record, e.g. `RunStarted` for `RUN_STARTED`."""
        return _MODELS[self]

    @property
    def is_terminal(self) -> bool:
        """True for the variants that end a run."""
        return self.short_name in TERMINAL_TYPES


_RECORD_TYPES: tuple[type[BaseModel], ...] = (
    *PAYLOAD_TYPES,
    ToolExecutionSuccess,
    ToolExecutionFailure,
    UnknownFinishReason,
)
_MODELS: dict[Variant, type[BaseModel]] = {
    Variant(f"{NAMESPACE}.{cls.__name__}"): cls for cls in _RECORD_TYPES
}
_VARIANTS: dict[str, Variant] = {v.short_name: v for v in Variant}


class AgentEvent(_Model):
    """One thing that happened in a run: the envelope written to Kafka, keyed by `run_id`."""

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    run_id: RunId
    sequence: Annotated[int, Field(ge=0)]
    timestamp: datetime = Field(default_factory=utc_now)
    payload: Payload

    @field_validator("timestamp")
    @classmethod
    def _utc_micros(cls, value: datetime) -> datetime:
        """Times are UTC at microsecond resolution, like Avro's timestamp-micros."""
        if value.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware (UTC)")
        return value.astimezone(UTC)

    @property
    def type(self) -> str:
        """The variant's name, e.g. `RunStarted`."""
        return self.payload.type

    @property
    def variant(self) -> Variant:
        """The payload's `Variant`, e.g. `Variant.RUN_STARTED`: dispatch on it, not on text."""
        return _VARIANTS[self.payload.type]

    @property
    def is_terminal(self) -> bool:
        """True when this event ends the run (completed, failed or cancelled)."""
        return self.payload.type in TERMINAL_TYPES


class RunState(_Model):
    """The projected state of a run: every event of it folded, in sequence order.

    Field names follow the seed's `RunState`, plus `sequence`, the last folded sequence.
    `session_id`, `provider` and `model` come from `RunStarted`: null (unknown) until it
    is folded.
    """

    run_id: RunId
    session_id: uuid.UUID | None
    status: RunStatus
    provider: ProviderId | None
    model: ModelName | None
    metadata: JsonValue = None
    iteration: int = 0
    total_usage: TokenUsage = Field(default_factory=TokenUsage)
    last_finish: FinishReason | None = None
    last_error: str | None = None
    event_count: int = 0
    created_at: datetime
    updated_at: datetime
    sequence: int

    @property
    def is_terminal(self) -> bool:
        """True once the run completed, failed or was cancelled."""
        return self.status.is_terminal

    def to_json_dict(self) -> dict[str, Any]:
        """The contract's JSON shape (RFC 3339 UTC times with microseconds)."""
        data = self.model_dump(mode="json")
        data["created_at"] = format_time(self.created_at)
        data["updated_at"] = format_time(self.updated_at)
        return data


ToolChoiceTool.model_rebuild()


class EventRecord(TypedDict):
    """An event as decoded from the wire, before any model is built: the fast form that
    projections fold. Ids are canonical UUID text, `timestamp` is UTC microseconds since
    the epoch, and `payload` is `(variant full name, fields)`, e.g.
    `("behest.UsageRecorded", {"usage": {"input_tokens": 3, ...}})`; JSON-valued fields
    (metadata, arguments, output) are still JSON text. Nested unions come the same way:
    `result` is `("behest.ToolExecutionSuccess", {"output": "<json>"})` or
    `("behest.ToolExecutionFailure", {"error": ...})`, and `finish_reason` is a known
    reason's text (`"stop"`) or `("behest.UnknownFinishReason", {"unknown": ...})`."""

    event_id: str
    run_id: str
    sequence: int
    timestamp: int
    payload: tuple[str, dict[str, Any]]
