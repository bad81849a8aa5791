"""Logging of the long-running commands: JSON lines, levels, Kafka client repeats collapsed."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import orjson
import pytest

from behest.logs import (
    JsonFormatter,
    RepeatCollapser,
    is_kafka_client,
    setup_logging,
    setup_logging_from_env,
)


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def record(name: str, message: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, (), None)


def test_kafka_clients_are_told_from_behest_itself() -> None:
    for name in (
        "aiokafka",
        "aiokafka.conn",
        "kafka",
        "behest.librdkafka",
        "behest.emit.producer.librdkafka",
        "behest.fold.projector.kafka",
    ):
        assert is_kafka_client(name), name
    for name in ("behest.fold.projector", "behest.project", "uvicorn.error", "kafkaesque"):
        assert not is_kafka_client(name), name


def test_repeats_pass_once_a_window_with_how_many_were_held() -> None:
    now = [0.0]
    collapser = RepeatCollapser(window=30.0, clock=lambda: now[0])
    passed = []
    for second in range(95):  # one reconnect failure a second, ports and timings varying
        now[0] = float(second)
        line = record(
            "aiokafka", f"Unable connect to node with id 1: port {9000 + second} ({second} ms)"
        )
        if collapser.filter(line):
            passed.append(line.getMessage())
    assert len(passed) == 4  # at 0, 30, 60 and 90 s
    assert passed[0] == "Unable connect to node with id 1: port 9000 (0 ms)"
    assert passed[1].endswith("(and 29 more like it in the last 30 s)")
    other = record("aiokafka", "Unable to update metadata from [1]")
    assert collapser.filter(other)  # another kind goes through at once
    assert collapser.filter(record("behest.fold.projector", "dead-lettering t[0]@1"))
    assert collapser.filter(record("behest.fold.projector", "dead-lettering t[0]@2"))


def test_json_lines_carry_level_logger_message_and_held_count(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    logging.getLogger("behest.project").info("projecting %s", "topic")
    logging.getLogger("behest.project").debug("not shown at info")
    for _ in range(3):
        logging.getLogger("aiokafka").error("Unable connect to node with id 1")
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert (first["level"], first["logger"], first["message"]) == (
        "info",
        "behest.project",
        "projecting topic",
    )
    assert first["time"].endswith("Z") and isinstance(first["pid"], int)
    assert lines[1]["logger"] == "aiokafka" and "held" not in lines[1]


def test_librdkafka_echoes_show_only_at_debug_or_when_fatal(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging("warning", "text", stream=out)
    echo = logging.getLogger("behest.librdkafka")
    echo.warning("FAIL Connect to ipv4#127.0.0.1:9092 failed")
    echo.error("FAIL Connect to ipv4#127.0.0.1:9092 failed: Connection refused")
    echo.critical("FATAL fenced")
    text = out.getvalue()
    assert "FAIL" not in text and "FATAL fenced" in text
    out = io.StringIO()
    setup_logging("debug", "text", stream=out)
    echo.warning("FAIL Connect to ipv4#127.0.0.1:9092 failed")
    assert "FAIL" in out.getvalue()


def test_unknown_levels_and_formats_are_refused(restore_root: None) -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        setup_logging("loud")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        setup_logging("info", "xml")  # type: ignore[arg-type]


def test_the_environment_fills_in_and_is_passed_on(
    restore_root: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEHEST_LOG_LEVEL", "error")
    monkeypatch.delenv("BEHEST_LOG_FORMAT", raising=False)
    setup_logging_from_env(log_format="json")
    assert logging.getLogger().level == logging.ERROR
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)
    assert os.environ["BEHEST_LOG_FORMAT"] == "json"  # a spawned worker logs alike
