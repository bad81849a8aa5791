"""behest: event sourcing for AI agent runs on Apache Kafka."""

from behest.config import Settings

__all__ = ["Settings"]
