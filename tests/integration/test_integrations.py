"""The agent SDK integrations end to end, offline: the real SDKs run agents against scripted
models (no network), their callbacks emit through `EventProducer` to the real broker, the
real projector folds the topic, and the folded states and events are compared with what
the SDK itself reported (usage, tool calls and outputs, handoffs, final text, errors)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest

from behest.config import Settings
from behest.emit.producer import EventProducer
from behest.events import AgentEvent, KnownFinishReason, RunState, RunStatus
from behest.fold.projector import Projector
from behest.integrations._tracker import stable_uuid
from behest.read.query import RunStateQuery

agents = pytest.importorskip("agents", reason="the openai-agents extra is not installed")
pytest.importorskip("langgraph", reason="langgraph (the test extra) is not installed")


def fold(settings: Settings, group: str, run_id: uuid.UUID) -> tuple[RunState, list[AgentEvent]]:
    """Fold the topic with the real projector; the run's state and its events."""
    with Projector(settings, group_id=group) as projector:
        metrics = projector.run(until_caught_up=True)
    assert metrics.dead_letters == 0
    with RunStateQuery.open(settings) as query:
        state = query.get(run_id)
        events = query.list_events(run_id, from_sequence=0, limit=1000)
    assert state is not None, f"run {run_id} was not folded"
    assert [e.sequence for e in events] == list(range(len(events)))
    assert state.event_count == len(events)
    return state, events


def of_type(events: list[AgentEvent], name: str) -> list[Any]:
    return [e.payload for e in events if e.type == name]


@pytest.fixture
def producer(settings: Settings) -> Iterator[EventProducer]:
    with EventProducer(settings) as made:
        yield made


# --- the OpenAI Agents SDK ------------------------------------------------------------------


def chat_completions(script: list[tuple[dict[str, Any], tuple[int, int]]]) -> httpx.MockTransport:
    """A Chat Completions endpoint that answers `script`'s messages in turn (offline)."""
    answers = iter(script)

    def answer(_: httpx.Request) -> httpx.Response:
        message, (prompt, completion) = next(answers)
        reason = "tool_calls" if message.get("tool_calls") else "stop"
        return httpx.Response(
            200,
            json={
                "id": f"chatcmpl-{uuid.uuid4().hex[:8]}",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o",
                "choices": [{"index": 0, "message": message, "finish_reason": reason}],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            },
        )

    return httpx.MockTransport(answer)


def tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        ],
    }


@pytest.fixture
def openai_tracing(producer: EventProducer) -> Iterator[Any]:
    """behest's processor as the only one (nothing is exported to OpenAI), reset after."""
    from agents import set_trace_processors

    from behest.integrations.openai_agents import BehestTracingProcessor

    processor = BehestTracingProcessor(producer)
    set_trace_processors([processor])
    try:
        yield processor
    finally:
        set_trace_processors([])


def scripted_model(script: list[tuple[dict[str, Any], tuple[int, int]]]) -> Any:
    from agents import OpenAIChatCompletionsModel
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        api_key="offline",
        base_url="http://scripted.invalid/v1",
        http_client=httpx.AsyncClient(transport=chat_completions(script)),
    )
    return OpenAIChatCompletionsModel(model="gpt-4o", openai_client=client)


async def test_openai_agents_run_with_a_tool_and_a_handoff(
    settings: Settings, unique_group: str, producer: EventProducer, openai_tracing: Any
) -> None:
    from agents import Agent, Runner, function_tool, trace

    from behest.integrations.openai_agents import run_id_of_trace

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = scripted_model(
        [
            (tool_call("call_1", "get_weather", {"city": "Paris"}), (100, 20)),
            (tool_call("call_2", "transfer_to_writer", {}), (150, 30)),
            ({"role": "assistant", "content": "It is sunny in Paris."}, (200, 40)),
        ]
    )
    writer = Agent(name="writer", instructions="Write the answer.", model=model)
    triage = Agent(
        name="triage", instructions="Help.", tools=[get_weather], handoffs=[writer], model=model
    )
    with trace("weather", group_id="conversation-17") as current:
        result = await Runner.run(triage, "What is the weather in Paris?")
    producer.flush(30)
    run_id = run_id_of_trace(current.trace_id)

    state, events = fold(settings, unique_group, run_id)

    usage = result.context_wrapper.usage  # what the SDK counted
    assert state.status is RunStatus.COMPLETED
    assert state.iteration == usage.requests == 3
    assert state.total_usage.input_tokens == usage.input_tokens == 450
    assert state.total_usage.output_tokens == usage.output_tokens == 90
    assert state.total_usage.total_tokens == usage.total_tokens
    assert state.last_finish == KnownFinishReason.STOP
    assert (state.provider, state.model) == ("openai", "gpt-4o")
    assert state.session_id == stable_uuid("openai-agents.group", "conversation-17")
    assert isinstance(state.metadata, dict)
    assert state.metadata["trace_id"] == current.trace_id

    assert events[0].type == "RunStarted" and events[-1].type == "RunCompleted"
    calls = {p.call.id: p.call for p in of_type(events, "ToolCallCompleted")}
    assert calls["call_1"].name == "get_weather" and calls["call_1"].arguments == {"city": "Paris"}
    assert calls["call_2"].name == "transfer_to_writer"
    finished = {p.call_id: p for p in of_type(events, "ToolExecutionFinished")}
    assert finished["call_1"].result.output == "sunny in Paris"
    assert finished["call_2"].tool_name == "transfer_to_writer"
    assert finished["call_2"].result.output == {"assistant": "writer"}
    text = "".join(p.delta for p in of_type(events, "TextDelta"))
    assert text == result.final_output == "It is sunny in Paris."
    assert len(of_type(events, "AssistantMessageCommitted")) == 3
    assert len(of_type(events, "ToolMessageCommitted")) == 2


async def test_openai_agents_failing_tool_then_max_turns_fails_the_run(
    settings: Settings, unique_group: str, producer: EventProducer, openai_tracing: Any
) -> None:
    from agents import Agent, MaxTurnsExceeded, Runner, function_tool, trace

    from behest.integrations.openai_agents import run_id_of_trace

    @function_tool
    def lookup(key: str) -> str:
        """Look a key up."""
        raise RuntimeError(f"no such key {key}")

    model = scripted_model([(tool_call("call_9", "lookup", {"key": "k"}), (10, 5))] * 2)
    agent = Agent(name="looper", instructions="Look it up.", tools=[lookup], model=model)
    with trace("lookup") as current, pytest.raises(MaxTurnsExceeded):
        await Runner.run(agent, "look up k", max_turns=1)
    producer.flush(30)

    state, events = fold(settings, unique_group, run_id_of_trace(current.trace_id))

    assert state.status is RunStatus.FAILED
    assert state.last_error is not None and "Max turns exceeded" in state.last_error
    (failed,) = of_type(events, "ToolExecutionFinished")
    assert (failed.call_id, failed.tool_name) == ("call_9", "lookup")
    # as the SDK's span reports it (it redacts the exception's text unless told otherwise)
    assert failed.result.error.startswith("Error running tool (non-fatal): Tool execution failed")
    assert state.total_usage.input_tokens == 10


def responses_endpoint(outputs: list[list[dict[str, Any]]]) -> httpx.MockTransport:
    """A Responses API endpoint answering `outputs` in turn, 100 in / 20 out each."""
    answers = iter(outputs)

    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "id": f"resp_{uuid.uuid4().hex[:8]}",
                "object": "response",
                "created_at": 0,
                "model": "gpt-4o-2024-08-06",
                "status": "completed",
                "output": next(answers),
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": {
                    "input_tokens": 100,
                    "output_tokens": 20,
                    "total_tokens": 120,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0},
                },
            },
        )

    return httpx.MockTransport(answer)


async def test_openai_agents_responses_api_model(
    settings: Settings, unique_group: str, producer: EventProducer, openai_tracing: Any
) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, trace
    from openai import AsyncOpenAI

    from behest.integrations.openai_agents import run_id_of_trace

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    transport = responses_endpoint(
        [
            [
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_7",
                    "name": "get_weather",
                    "arguments": json.dumps({"city": "Lyon"}),
                    "status": "completed",
                }
            ],
            [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}],
                }
            ],
        ]
    )
    client = AsyncOpenAI(
        api_key="offline",
        base_url="http://scripted.invalid/v1",
        http_client=httpx.AsyncClient(transport=transport),
    )
    model = OpenAIResponsesModel(model="gpt-4o", openai_client=client)
    agent = Agent(name="weather", instructions="Help.", tools=[get_weather], model=model)
    with trace("weather") as current:
        result = await Runner.run(agent, "Weather in Lyon?")
    producer.flush(30)

    state, events = fold(settings, unique_group, run_id_of_trace(current.trace_id))

    usage = result.context_wrapper.usage
    assert state.status is RunStatus.COMPLETED
    assert state.model == "gpt-4o-2024-08-06"  # the model that answered, as the SDK reported
    assert state.iteration == usage.requests == 2
    assert state.total_usage.input_tokens == usage.input_tokens == 200
    assert state.total_usage.output_tokens == usage.output_tokens == 40
    (call,) = of_type(events, "ToolCallCompleted")
    assert (call.call.id, call.call.arguments) == ("call_7", {"city": "Lyon"})
    (finished,) = of_type(events, "ToolExecutionFinished")
    assert (finished.call_id, finished.result.output) == ("call_7", "sunny in Lyon")
    assert "".join(p.delta for p in of_type(events, "TextDelta")) == result.final_output


# --- LangChain / LangGraph ------------------------------------------------------------------


def scripted_chat_model(messages: Iterable[Any]) -> Any:
    from langchain_core.language_models.chat_models import LangSmithParams
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    class Scripted(GenericFakeChatModel):
        """LangChain's own fake chat model, answering `messages` in turn, with tools."""

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
            return LangSmithParams(ls_provider="openai", ls_model_name="gpt-4o")

    return Scripted(messages=iter(messages))


def agent_graph(model: Any, tools: list[Any]) -> Any:
    """The standard LangGraph tool loop: a model node, a ToolNode, `tools_condition`."""
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=True))  # errors go to the model
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def test_langgraph_run_with_tools(
    settings: Settings, unique_group: str, producer: EventProducer
) -> None:
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool

    from behest.integrations.langchain import BehestCallbackHandler

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    @tool
    def get_time(city: str) -> str:
        """The local time in a city."""
        raise RuntimeError(f"no clock in {city}")

    model = scripted_chat_model(
        [
            AIMessage(
                content="",
                tool_calls=[
                    {"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}},
                    {"id": "call_2", "name": "get_time", "args": {"city": "Paris"}},
                ],
                usage_metadata={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
                response_metadata={"finish_reason": "tool_calls"},
            ),
            AIMessage(
                content="It is sunny in Paris.",
                usage_metadata={"input_tokens": 160, "output_tokens": 8, "total_tokens": 168},
                response_metadata={"finish_reason": "stop"},
            ),
        ]
    )
    run_id = uuid.uuid4()
    result = agent_graph(model, [get_weather, get_time]).invoke(
        {"messages": [("user", "Weather and time in Paris?")]},
        config={
            "callbacks": [BehestCallbackHandler(producer)],
            "run_id": run_id,
            "configurable": {"thread_id": "thread-7"},
        },
    )
    producer.flush(30)

    state, events = fold(settings, unique_group, run_id)

    replies = [m for m in result["messages"] if isinstance(m, AIMessage)]
    assert state.status is RunStatus.COMPLETED
    assert state.iteration == len(replies) == 2
    assert state.total_usage.input_tokens == sum(m.usage_metadata["input_tokens"] for m in replies)
    assert state.total_usage.output_tokens == sum(
        m.usage_metadata["output_tokens"] for m in replies
    )
    assert (state.provider, state.model) == ("openai", "gpt-4o")
    assert state.last_finish == KnownFinishReason.STOP
    assert state.session_id == stable_uuid("langgraph.thread", "thread-7")

    assert events[0].type == "RunStarted" and events[-1].type == "RunCompleted"
    assert [p.message_count for p in of_type(events, "ContextBuilt")] == [1, 4]
    finished = {p.call_id: p for p in of_type(events, "ToolExecutionFinished")}
    assert finished["call_1"].result.output == "sunny in Paris"
    assert "no clock in Paris" in finished["call_2"].result.error
    text = "".join(p.delta for p in of_type(events, "TextDelta"))
    assert text == replies[-1].content


def test_langgraph_error_fails_the_run(
    settings: Settings, unique_group: str, producer: EventProducer
) -> None:
    from behest.integrations.langchain import BehestCallbackHandler

    def provider_down() -> Iterator[Any]:
        raise RuntimeError("the provider answered 500")
        yield  # a generator: the model's first call raises

    model = scripted_chat_model(provider_down())
    run_id = uuid.uuid4()
    with pytest.raises(RuntimeError, match="answered 500"):
        agent_graph(model, []).invoke(
            {"messages": [("user", "hello")]},
            config={"callbacks": [BehestCallbackHandler(producer)], "run_id": run_id},
        )
    producer.flush(30)

    state, _ = fold(settings, unique_group, run_id)

    assert state.status is RunStatus.FAILED
    assert state.last_error == "RuntimeError: the provider answered 500"
    assert state.iteration == 1


def test_langgraph_streamed_tokens_are_text_deltas(
    settings: Settings, unique_group: str, producer: EventProducer
) -> None:
    from langchain_core.messages import AIMessage

    from behest.integrations.langchain import BehestCallbackHandler

    reply = AIMessage(content="It is sunny in Paris today.")
    run_id = uuid.uuid4()
    tokens = [
        chunk.content
        for chunk, _ in agent_graph(scripted_chat_model([reply]), []).stream(
            {"messages": [("user", "Weather?")]},
            config={"callbacks": [BehestCallbackHandler(producer)], "run_id": run_id},
            stream_mode="messages",
        )
    ]
    producer.flush(30)

    state, events = fold(settings, unique_group, run_id)

    deltas = [p.delta for p in of_type(events, "TextDelta")]
    assert len(deltas) > 1 and deltas == [t for t in tokens if t]  # each token, once
    assert "".join(deltas) == reply.content
    assert state.status is RunStatus.COMPLETED
    assert state.iteration == 1
    assert len(of_type(events, "AssistantMessageCommitted")) == 1


async def test_langgraph_async_run_keeps_the_order_of_what_happened(
    settings: Settings, unique_group: str, producer: EventProducer
) -> None:
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool

    from behest.integrations.langchain import BehestCallbackHandler

    @tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        return f"value of {key}"

    calls = [{"id": f"call_{n}", "name": "lookup", "args": {"key": f"k{n}"}} for n in range(3)]
    model = scripted_chat_model(
        [AIMessage(content="", tool_calls=calls), AIMessage(content="Found them.")]
    )
    run_id = uuid.uuid4()
    await agent_graph(model, [lookup]).ainvoke(
        {"messages": [("user", "Look up k0, k1, k2")]},
        config={"callbacks": [BehestCallbackHandler(producer)], "run_id": run_id},
    )
    producer.flush(30)

    state, events = fold(settings, unique_group, run_id)

    assert state.status is RunStatus.COMPLETED and state.iteration == 2
    order = [(e.type, getattr(e.payload, "call_id", None)) for e in events]
    for call in calls:
        started = order.index(("ToolExecutionStarted", call["id"]))
        assert order.index(("ToolExecutionFinished", call["id"])) > started
    assert [t for t, _ in order[:3]] == ["RunStarted", "ContextBuilt", "ModelStarted"]
    assert order[-1][0] == "RunCompleted"
