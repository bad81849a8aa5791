"""Tool usage across runs: calls, failures and durations per tool name.

A second real projection, keyed by tool name rather than by run, which is what proves
the projection API general: the projector folds it exactly once (per-run sequence heads
still dedupe), but stores no per-run events or snapshots, and a run's tombstone cannot take
that run's calls back out of the totals.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

import orjson

from behest.events import EventRecord, Variant


class ToolUsage(TypedDict):
    """One tool's totals over every run folded so far."""

    tool: str
    calls: int
    failures: int
    total_duration_ms: int
    max_duration_ms: int


class ToolUsageProjection:
    """Per tool: calls, failed calls, total and longest `duration_ms` of its executions."""

    name = "tool_usage"
    run_keyed = False

    def key(self, event: EventRecord) -> bytes | None:
        """The tool's name, for finished executions; every other event is skipped."""
        name, body = event["payload"]
        if name != Variant.TOOL_EXECUTION_FINISHED:
            return None
        tool: str = body["tool_name"]
        return tool.encode()

    def apply(self, state: ToolUsage | None, event: EventRecord) -> ToolUsage:
        body = event["payload"][1]
        duration: int = body["duration_ms"]
        failed = int(body["result"][0] == Variant.TOOL_EXECUTION_FAILURE)
        if state is None:
            return {
                "tool": body["tool_name"],
                "calls": 1,
                "failures": failed,
                "total_duration_ms": duration,
                "max_duration_ms": duration,
            }
        return {
            "tool": state["tool"],
            "calls": state["calls"] + 1,
            "failures": state["failures"] + failed,
            "total_duration_ms": state["total_duration_ms"] + duration,
            "max_duration_ms": max(state["max_duration_ms"], duration),
        }

    def combine(self, a: ToolUsage, b: ToolUsage) -> ToolUsage:
        """Two partitions' shares of one tool's totals, added up."""
        return {
            "tool": a["tool"],
            "calls": a["calls"] + b["calls"],
            "failures": a["failures"] + b["failures"],
            "total_duration_ms": a["total_duration_ms"] + b["total_duration_ms"],
            "max_duration_ms": max(a["max_duration_ms"], b["max_duration_ms"]),
        }

    def encode_state(self, state: ToolUsage) -> bytes:
        return orjson.dumps(state)

    def decode_state(self, data: bytes) -> ToolUsage:
        usage: ToolUsage = orjson.loads(data)
        return usage

    def index_keys(self, state: ToolUsage) -> Iterable[bytes]:
        """None: the tool names are the keys, and there are few of them."""
        return ()
