"""Configuration from flags and `BEHEST_*` environment variables, in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TOPIC = "behest.agent-events"
DEFAULT_BROKER_PORT = 9092


def project_home() -> Path:
    """Folder for cached jars, the local broker's data and the default state.

    Inside a source checkout it is the checkout's ignored `.cache/`, elsewhere
    `~/.cache/behest`; `BEHEST_HOME` overrides both.
    """
    import os

    if env := os.environ.get("BEHEST_HOME"):
        return Path(env)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists() and (checkout / "behest").is_dir():
        return checkout / ".cache"
    return Path.home() / ".cache" / "behest"


class Settings(BaseSettings):
    """Where Kafka is, which topic holds the events, and where state lives."""

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
    kafka_config: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra librdkafka settings (e.g. security.protocol, sasl.mechanism, "
            'sasl.username) as JSON: BEHEST_KAFKA_CONFIG=\'{"security.protocol": "SASL_SSL"}\'.'
        ),
    )

    @property
    def dlq_topic(self) -> str:
        """Dead letters of the event topic go beside it."""
        return f"{self.topic}.dlq"

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers to use: configured ones, else the local broker's."""
        return self.bootstrap_servers or f"127.0.0.1:{DEFAULT_BROKER_PORT}"

    def librdkafka(self, **overrides: Any) -> dict[str, Any]:
        """A confluent-kafka config: bootstrap servers, the user's extras, then overrides."""
        return {"bootstrap.servers": self.bootstrap, **self.kafka_config, **overrides}
