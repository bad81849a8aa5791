"""Configuration from flags and `BEHEST_*` environment variables, in one place.

Every value is checked when `Settings` is built, and a bad one is a `ConfigError` of one
line that names the variable and says what it takes (the command line prints it and
exits 1): `BEHEST_KAFKA_CONFIG` must be a JSON object whose values are strings, numbers or
booleans, and librdkafka itself checks its names and values up front.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Final

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from behest.errors import ConfigError

DEFAULT_TOPIC = "behest.agent-events"
DEFAULT_BROKER_PORT = 9092
DEFAULT_SCHEMA_WAIT: Final = 30.0

KafkaValue = str | bool | int | float
"""A librdkafka setting's value, as JSON gives it (librdkafka reads each as text)."""

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,240}")
_SERVER = re.compile(r"(?:[A-Za-z_]+://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s:/,\[\]]+)(?::(\d{1,5}))?")
_quiet = logging.getLogger("behest.config.librdkafka")
_quiet.propagate = False  # the throw-away check client's notes (no bootstrap.servers, ...)
_quiet.addHandler(logging.NullHandler())


def project_home() -> Path:
    """Folder for cached jars, the local broker's data and the default state.

    Inside a source checkout it is the checkout's ignored `.cache/`, elsewhere
    `~/.cache/behest`; `BEHEST_HOME` overrides both.
    """
    if env := os.environ.get("BEHEST_HOME"):
        return Path(env)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists() and (checkout / "behest").is_dir():
        return checkout / ".cache"
    return Path.home() / ".cache" / "behest"


class Settings(BaseSettings):
    """Where Kafka is, which topic holds the events, and where state lives.

    Raises `ConfigError` (one line, naming the `BEHEST_*` variable) for a bad value.
    """

    model_config = SettingsConfigDict(env_prefix="BEHEST_", extra="ignore")

    bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers; unset means the local broker on 127.0.0.1.",
    )
    topic: str = DEFAULT_TOPIC
    state_dir: Path = Field(default_factory=lambda: project_home() / "state")
    session_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds a projector may go silent before its consumer group gives its partitions "
            "to others (librdkafka's session.timeout.ms; the broker accepts 6 to 1800 by "
            "default). A restarted projector with static membership takes its partitions "
            "back at once, whatever this is."
        ),
    )
    static_membership: bool = Field(
        default=True,
        description=(
            "Join the consumer group as a static member (group.instance.id kept in the state "
            "dir), so a restarted projector resumes its partitions in seconds."
        ),
    )
    kafka_config: dict[str, KafkaValue] = Field(
        default_factory=dict,
        description=(
            "Extra librdkafka settings (e.g. security.protocol, sasl.mechanism, "
            'sasl.username) as JSON: BEHEST_KAFKA_CONFIG=\'{"security.protocol": "SASL_SSL"}\'.'
        ),
    )
    schema_wait: float = Field(
        default=DEFAULT_SCHEMA_WAIT,
        ge=0,
        description=(
            "Seconds a projector holds a partition at a record whose writer schema it does "
            "not know yet, waiting for the schema on <topic>.schemas, before dead-lettering."
        ),
    )

    registry_url: str | None = Field(
        default=None,
        description=(
            "A Confluent-compatible Schema Registry: the projector then also reads records "
            "framed 00 + schema id (behest[registry])."
        ),
    )
    registry_write: bool = Field(
        default=False,
        description="Producers write Confluent framing (00 + schema id) instead of single-object.",
    )
    otel: bool = Field(
        default=False,
        description=(
            "Export behest's own spans (projector batches linked to the producers' spans, "
            "HTTP requests) over OTLP from its commands; needs behest[otel]."
        ),
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ConfigError(_one_line(error)) from None
        except SettingsError as error:  # a complex value (kafka_config) that is not JSON
            raise ConfigError(_not_json(error)) from None

    @field_validator("topic")
    @classmethod
    def _topic_name(cls, value: str) -> str:
        if not _TOPIC.fullmatch(value) or value in {".", ".."}:
            raise ValueError(
                "a Kafka topic name is 1 to 240 of the characters a-z A-Z 0-9 . _ - "
                "(behest adds .dlq and .schemas to it)"
            )
        return value

    @field_validator("registry_url")
    @classmethod
    def _registry(cls, value: str | None) -> str | None:
        if not value:
            return None  # unset: single-object framing only
        if not value.startswith(("http://", "https://", "mock://")):
            raise ValueError(
                "a Schema Registry URL starts with http:// or https:// (mock:// for tests)"
            )
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None  # unset: the local broker
        for server in value.split(","):
            match = _SERVER.fullmatch(server.strip())
            if match is None or (match.group(1) and not 0 < int(match.group(1)) < 65536):
                raise ValueError(
                    f"{server.strip()!r} is not host:port; give a comma-separated list such "
                    "as broker1:9092,broker2:9092"
                )
        return value

    @field_validator("kafka_config")
    @classmethod
    def _librdkafka_accepts(cls, value: dict[str, KafkaValue]) -> dict[str, KafkaValue]:
        check_librdkafka(value)
        return value

    @property
    def dlq_topic(self) -> str:
        """Dead letters of the event topic go beside it."""
        return f"{self.topic}.dlq"

    @property
    def schemas_topic(self) -> str:
        """Writer schemas of the event topic's records, keyed by fingerprint (compacted)."""
        return f"{self.topic}.schemas"

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers to use: configured ones, else the local broker's."""
        return self.bootstrap_servers or f"127.0.0.1:{DEFAULT_BROKER_PORT}"

    def librdkafka(self, **overrides: Any) -> dict[str, Any]:
        """A confluent-kafka config: bootstrap servers, the user's extras, then overrides."""
        return {"bootstrap.servers": self.bootstrap, **self.kafka_config, **overrides}


def check_librdkafka(config: dict[str, KafkaValue]) -> None:
    """Let librdkafka judge every name and value now, on a client that connects nowhere;
    ValueError naming the first setting it refuses."""
    if not config:
        return
    from confluent_kafka import KafkaException, Producer

    def refusal(settings: dict[str, KafkaValue]) -> str | None:
        try:
            Producer({**settings, "logger": _quiet})
        except KafkaException as error:
            return str(error.args[0].str())
        except (TypeError, ValueError) as error:
            return str(error)
        return None

    reason = refusal(config)
    if reason is None:
        return
    if reason.startswith("Failed to create"):  # each setting is fine, not all of them together
        raise ValueError(f"librdkafka refuses these settings: {reason.split(': ', 1)[-1]}")
    for name, value in config.items():  # name the one setting librdkafka refuses, if one
        alone = refusal({name: value})
        if alone is not None:
            raise ValueError(f"{name!r}: {value!r} is refused by librdkafka ({alone})")
    raise ValueError(f"librdkafka refuses these settings together: {reason}")


def _env_name(field: object) -> str:
    return f"BEHEST_{str(field).upper()}"


def _one_line(error: ValidationError) -> str:
    """`BEHEST_X: what is wrong (got ...)` for each problem, on one line."""
    problems = []
    for item in error.errors(include_url=False):
        field, *inner = item["loc"] or ("settings",)
        if field == "kafka_config":
            inner = inner[:1]  # the setting's name, not the union branch it failed
        where = _env_name(field) + "".join(f"[{part!r}]" for part in inner)
        message = str(item["msg"]).removeprefix("Value error, ")
        shown = item.get("input")
        got = "" if isinstance(shown, dict) or shown is None else f" (got {shown!r:.60})"
        if field == "kafka_config" and item["type"] == "dict_type":
            message = 'must be a JSON object, e.g. {"linger.ms": 10}'
        elif field == "kafka_config" and inner:
            message = "a librdkafka value is a string, number or boolean"
        problems.append(f"{where}: {message}{got}")
    return "; ".join(dict.fromkeys(problems))


def _not_json(error: SettingsError) -> str:
    match = re.search(r'field "(\w+)"', str(error))
    name = _env_name(match.group(1)) if match else "a BEHEST_* variable"
    cause = error.__cause__
    detail = f" ({cause})" if cause is not None else ""
    return f'{name} is not valid JSON{detail}: give an object such as {{"linger.ms": 10}}'
