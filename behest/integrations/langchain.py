"""LangChain and LangGraph runs recorded as behest runs: one callback handler.

    from behest.integrations.langchain import BehestCallbackHandler

    graph.invoke(inputs, config={"callbacks": [BehestCallbackHandler(producer)]})

Every root run the handler sees (a graph or chain invoked without a parent) is one behest
run with the same id; what happens inside it becomes its events
(`pip install 'behest[langchain]'`):

- the first chat model start: `RunStarted` (provider and model from LangChain's
  `ls_provider` / `ls_model_name`);
- each chat model start: `ContextBuilt` (the messages sent), `ModelStarted`;
- each streamed token: `TextDelta`;
- the model's end: its text (unless streamed), `ToolCallStarted` + `ToolCallCompleted`
  per tool call, `AssistantMessageCommitted`, `UsageRecorded` (`usage_metadata`);
- a tool's start, end or error: `ToolExecutionStarted`, then `ToolExecutionFinished` (a
  failure on error) + `ToolMessageCommitted`, under the model's call id;
- the root run's end or error: `RunCompleted` (the last finish reason) or `RunFailed`.

The handler only queues records (`EventProducer.emit` does not block), so it runs inline.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from behest.emit.producer import EventProducer
from behest.events import TextDelta
from behest.integrations._tracker import RunTracker, RunTrackers, stable_uuid

__all__ = ["BehestCallbackHandler"]


class BehestCallbackHandler(BaseCallbackHandler):
    """A LangChain callback handler that records each root run as behest events."""

    raise_error = False  # a recording problem must never break the agent
    run_inline = True  # in order, on the caller's thread: an event's sequence is its order

    def __init__(self, producer: EventProducer, *, provider: str = "langchain") -> None:
        self.producer = producer
        self.provider = provider
        self._runs = RunTrackers()
        self._root: dict[uuid.UUID, uuid.UUID] = {}  # any LangChain run -> its root run
        self._streamed: set[uuid.UUID] = set()  # model calls whose text came as tokens
        self._tools: dict[uuid.UUID, tuple[str, str, float]] = {}  # call id, name, start
        self._lock = threading.Lock()  # tools of one graph step run on several threads

    # --- the run tree -----------------------------------------------------------------------

    def _track(self, run_id: uuid.UUID, parent_run_id: uuid.UUID | None) -> RunTracker | None:
        with self._lock:
            root = run_id if parent_run_id is None else self._root.get(parent_run_id, parent_run_id)
            self._root[run_id] = root
        return self._runs.get(root)

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if parent_run_id is not None:
            self._track(run_id, parent_run_id)
            return
        with self._lock:
            self._root[run_id] = run_id
        name = kwargs.get("name") or (serialized or {}).get("name")
        thread = (metadata or {}).get("thread_id")
        self._runs.add(
            run_id,
            RunTracker(
                self.producer,
                run_id,
                provider=self.provider,
                session_id=_session(thread),
                metadata={"source": "langchain", "name": name, "thread_id": thread},
            ),
        )

    def on_chain_end(
        self, outputs: Any, *, run_id: uuid.UUID, parent_run_id: uuid.UUID | None = None, **_: Any
    ) -> None:
        if parent_run_id is None:
            self._finish(run_id, error=None)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **_: Any,
    ) -> None:
        if parent_run_id is None:
            self._finish(run_id, error=f"{type(error).__name__}: {error}")

    def _finish(self, run_id: uuid.UUID, *, error: str | None) -> None:
        run = self._runs.pop(run_id)
        with self._lock:
            self._root = {k: v for k, v in self._root.items() if v != run_id}
        if run is not None:
            run.end(error=error)

    # --- model calls ------------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._track(run_id, parent_run_id)
        if run is None:
            return
        metadata = metadata or {}
        params: Mapping[str, Any] = kwargs.get("invocation_params") or {}
        model = (
            metadata.get("ls_model_name")
            or params.get("model")
            or params.get("model_name")
            or (serialized or {}).get("name")
            or "unknown"
        )
        provider = metadata.get("ls_provider") or self.provider
        count = sum(len(batch) for batch in messages)
        run.model_started(str(model), str(provider), message_count=count)

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **_: Any,
    ) -> None:
        text = token if isinstance(token, str) else "".join(_part_text(p) for p in token)
        run = self._track(run_id, parent_run_id)
        if run is not None and text:
            self._streamed.add(run_id)
            run.emit(TextDelta(delta=text))

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **_: Any,
    ) -> None:
        run = self._track(run_id, parent_run_id)
        streamed = run_id in self._streamed
        self._streamed.discard(run_id)
        if run is None:
            return
        for generations in response.generations:
            for generation in generations:
                if isinstance(generation, ChatGeneration):
                    _model_output(run, generation.message, str(run_id), streamed=streamed)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **_: Any,
    ) -> None:
        self._streamed.discard(run_id)
        run = self._track(run_id, parent_run_id)
        if run is not None:
            run.error = f"{type(error).__name__}: {error}"

    # --- tools ------------------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._track(run_id, parent_run_id)
        if run is None:
            return
        name = str((serialized or {}).get("name") or kwargs.get("name") or "unknown")
        call_id = kwargs.get("tool_call_id")
        if call_id is None:
            found = run.take_call(name)
            call_id = found[0] if found is not None else str(run_id)
        else:
            run.take_call(name)  # it runs now: no longer waiting
        self._tools[run_id] = (str(call_id), name, time.monotonic())
        run.tool_started(str(call_id), name)

    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **_: Any,
    ) -> None:
        self._tool_done(run_id, parent_run_id, output=getattr(output, "content", output))

    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **_: Any,
    ) -> None:
        self._tool_done(run_id, parent_run_id, error=f"{type(error).__name__}: {error}")

    def _tool_done(
        self,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None,
        *,
        output: Any = None,
        error: str | None = None,
    ) -> None:
        run = self._track(run_id, parent_run_id)
        started = self._tools.pop(run_id, None)
        if run is None or started is None:
            return
        call_id, name, at = started
        elapsed = int((time.monotonic() - at) * 1000)
        run.tool_finished(call_id, name, output=output, error=error, duration_ms=elapsed)


def _part_text(part: str | dict[str, Any]) -> str:
    return part if isinstance(part, str) else str(part.get("text", ""))


def _session(thread: Any) -> uuid.UUID | None:
    """A LangGraph thread is the natural session: its id, or a UUID made from it."""
    if thread is None:
        return None
    try:
        return uuid.UUID(str(thread))
    except ValueError:
        return stable_uuid("langgraph.thread", str(thread))


def _model_output(run: RunTracker, message: BaseMessage, key: str, *, streamed: bool) -> None:
    calls: Sequence[Any] = message.tool_calls if isinstance(message, AIMessage) else ()
    usage = message.usage_metadata if isinstance(message, AIMessage) else None
    metadata = message.response_metadata or {}
    reason = metadata.get("finish_reason") or metadata.get("stop_reason")
    run.model_output(
        text="" if streamed else message.text,
        calls=[(str(c.get("id")), str(c.get("name")), c.get("args")) for c in calls],
        usage=(usage["input_tokens"], usage["output_tokens"]) if usage else None,
        reason=str(reason) if reason else None,
        message_key=message.id or key,
    )
