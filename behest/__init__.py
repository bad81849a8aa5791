"""behest: event sourcing for AI agent runs on Apache Kafka.

Produce typed `AgentEvent`s from any service (`EventProducer`, `AsyncEventProducer`),
fold them exactly once into RocksDB (`Projector`), and read run states now or at any
point in time (`RunStateQuery`, or `behest serve` over HTTP).

Names load lazily (PEP 562): `import behest` or `import behest.events` starts no Kafka
client, RocksDB or web framework; each name imports its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from behest.client import RunStateClient
    from behest.config import Settings
    from behest.emit.aio import AsyncEventProducer
    from behest.emit.delivery import Delivery
    from behest.emit.producer import EventProducer
    from behest.emit.recorder import (
        AsyncRunRecorder,
        RunRecorder,
    )
    from behest.errors import (
        BehestError,
        BrokerError,
        CodecError,
        ConfigError,
        InvalidQueryError,
        KafkaUnavailableError,
        PartitionUnavailableError,
        ProduceError,
        QueryError,
        RunNotFoundError,
        StateLockedError,
        StoreError,
        TopicMissingError,
        UnknownSchemaError,
        WaitTimeoutError,
    )
    from behest.events import (
        AgentEvent,
        AssistantMessageCommitted,
        CompactionCircuitOpened,
        ContextBuilt,
        DoomLoopDetected,
        EventRecord,
        KnownFinishReason,
        ModelName,
        ModelStarted,
        ProviderId,
        RunCancelled,
        RunCompleted,
        RunFailed,
        RunId,
        RunRecord,
        RunRequest,
        RunStarted,
        RunState,
        RunStatus,
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
        UnknownFinishReason,
        UsageRecorded,
        Variant,
        new_run_id,
    )
    from behest.fold.projection import Projection
    from behest.fold.projector import Projector
    from behest.read.feed import RunDeleted
    from behest.read.projection_query import ProjectionQuery
    from behest.read.query import RunStateQuery
    from behest.watching import RunUpdate

_ORIGIN: dict[str, str] = {
    "AgentEvent": "behest.events",
    "AssistantMessageCommitted": "behest.events",
    "AsyncEventProducer": "behest.emit.aio",
    "AsyncRunRecorder": "behest.emit.recorder",
    "BehestError": "behest.errors",
    "BrokerError": "behest.errors",
    "CodecError": "behest.errors",
    "CompactionCircuitOpened": "behest.events",
    "ConfigError": "behest.errors",
    "ContextBuilt": "behest.events",
    "Delivery": "behest.emit.delivery",
    "DoomLoopDetected": "behest.events",
    "EventProducer": "behest.emit.producer",
    "EventRecord": "behest.events",
    "InvalidQueryError": "behest.errors",
    "KafkaUnavailableError": "behest.errors",
    "KnownFinishReason": "behest.events",
    "MemberFencedError": "behest.errors",
    "ModelName": "behest.events",
    "ModelStarted": "behest.events",
    "ProduceError": "behest.errors",
    "Projection": "behest.fold.projection",
    "ProjectionQuery": "behest.read.projection_query",
    "Projector": "behest.fold.projector",
    "ProviderId": "behest.events",
    "QueryError": "behest.errors",
    "RunCancelled": "behest.events",
    "RunCompleted": "behest.events",
    "RunDeleted": "behest.read.feed",
    "RunFailed": "behest.events",
    "RunId": "behest.events",
    "RunNotFoundError": "behest.errors",
    "RunRecord": "behest.events",
    "RunRecorder": "behest.emit.recorder",
    "RunRequest": "behest.events",
    "RunStarted": "behest.events",
    "RunState": "behest.events",
    "RunStateQuery": "behest.read.query",
    "RunStatus": "behest.events",
    "Settings": "behest.config",
    "StateLockedError": "behest.errors",
    "StoreError": "behest.errors",
    "TextDelta": "behest.events",
    "TokenUsage": "behest.events",
    "ToolCall": "behest.events",
    "ToolCallCompleted": "behest.events",
    "ToolCallDelta": "behest.events",
    "ToolCallStarted": "behest.events",
    "ToolExecutionFailure": "behest.events",
    "ToolExecutionFinished": "behest.events",
    "ToolExecutionStarted": "behest.events",
    "ToolExecutionSuccess": "behest.events",
    "ToolMessageCommitted": "behest.events",
    "TopicMissingError": "behest.errors",
    "UnknownFinishReason": "behest.events",
    "UnknownSchemaError": "behest.errors",
    "UsageRecorded": "behest.events",
    "Variant": "behest.events",
    "WaitTimeoutError": "behest.errors",
    "PartitionUnavailableError": "behest.errors",
    "RunStateClient": "behest.client",
    "RunUpdate": "behest.watching",
    "new_run_id": "behest.events",
}

__all__ = [
    "AgentEvent",
    "AssistantMessageCommitted",
    "AsyncEventProducer",
    "AsyncRunRecorder",
    "BehestError",
    "BrokerError",
    "CodecError",
    "CompactionCircuitOpened",
    "ConfigError",
    "ContextBuilt",
    "Delivery",
    "DoomLoopDetected",
    "EventProducer",
    "EventRecord",
    "InvalidQueryError",
    "KafkaUnavailableError",
    "KnownFinishReason",
    "MemberFencedError",
    "ModelName",
    "ModelStarted",
    "PartitionUnavailableError",
    "ProduceError",
    "Projection",
    "ProjectionQuery",
    "Projector",
    "ProviderId",
    "QueryError",
    "RunCancelled",
    "RunCompleted",
    "RunDeleted",
    "RunFailed",
    "RunId",
    "RunNotFoundError",
    "RunRecord",
    "RunRecorder",
    "RunRequest",
    "RunStarted",
    "RunState",
    "RunStateClient",
    "RunStateQuery",
    "RunStatus",
    "RunUpdate",
    "Settings",
    "StateLockedError",
    "StoreError",
    "TextDelta",
    "TokenUsage",
    "ToolCall",
    "ToolCallCompleted",
    "ToolCallDelta",
    "ToolCallStarted",
    "ToolExecutionFailure",
    "ToolExecutionFinished",
    "ToolExecutionStarted",
    "ToolExecutionSuccess",
    "ToolMessageCommitted",
    "TopicMissingError",
    "UnknownFinishReason",
    "UnknownSchemaError",
    "UsageRecorded",
    "Variant",
    "WaitTimeoutError",
    "new_run_id",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, then keep the name here."""
    module = _ORIGIN.get(name)
    if module is None:
        raise AttributeError(f"module 'behest' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
