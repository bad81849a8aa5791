"""Every error behest raises, in one tree, so callers can catch at the depth they need.

    BehestError
    ├── ConfigError            bad configuration (flag, environment, file)
    │   └── MemberFencedError  another group member took this one's static id
    ├── BrokerError            the local broker could not be set up, started or stopped
    ├── KafkaUnavailableError  no broker answered at the configured bootstrap servers
    ├── TopicMissingError      the event topic does not exist yet
    ├── CodecError             bytes that are not a valid behest event
    │   ├── UnknownSchemaError the writer schema's fingerprint is not one we know
    │   └── IncompatibleSchemaError  the writer schema cannot be read as the current one
    ├── ProduceError           an event could not be delivered to Kafka
    ├── StoreError             the RocksDB state directory cannot be used
    │   └── StateLockedError   another process holds the state directory
    └── QueryError             a query that cannot be answered as asked
        ├── InvalidQueryError  malformed input (run id, time, sequence, limit, ...)
        ├── RunNotFoundError   the run is unknown (or had no event by the asked point)
        ├── WaitTimeoutError   the projection did not reach a position in time
        └── PartitionUnavailableError  no node can answer for a partition right now

Every message says what was wrong and, where it can, what to do about it.
"""

from __future__ import annotations


class BehestError(Exception):
    """Base of every error raised by behest."""


class ConfigError(BehestError):
    """Configuration that cannot be used."""


class MemberFencedError(ConfigError):
    """The broker fenced this static group member off: another member joined with its
    `group.instance.id` (or, after a coordinator change, the broker took it for one)."""


class BrokerError(BehestError):
    """The local Kafka broker could not be prepared, started or stopped."""


class KafkaUnavailableError(BehestError):
    """No Kafka broker answered at the configured bootstrap servers."""


class TopicMissingError(BehestError):
    """The event topic does not exist; `behest topics create` makes it."""


class CodecError(BehestError):
    """Bytes that do not decode to a behest event, or an event that cannot be encoded."""


class UnknownSchemaError(CodecError):
    """The writer schema's fingerprint matches none of the schemas in `schemas/`."""


class IncompatibleSchemaError(CodecError):
    """A published writer schema the current schema cannot read (Avro resolution rules)."""


class ProduceError(BehestError):
    """An event was not delivered to Kafka.

    From an `emit_many` future, `failed` holds the positions (in the batch) of the events
    that were not delivered; every other event of the batch was.
    """

    def __init__(self, message: str, failed: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.failed = failed


class StoreError(BehestError):
    """The RocksDB state directory cannot be opened or written."""


class StateLockedError(StoreError):
    """Another process holds the RocksDB state directory open for writing."""


class QueryError(BehestError):
    """A query that cannot be answered as asked."""


class InvalidQueryError(QueryError, ValueError):
    """Malformed query input: a bad run id, time, sequence, status or limit."""


class RunNotFoundError(QueryError, LookupError):
    """The run is unknown, or had no event by the point asked for."""


class WaitTimeoutError(QueryError, TimeoutError):
    """The projection did not fold up to the awaited position in time."""


class PartitionUnavailableError(QueryError):
    """No node answers for the run's partition now (it is between owners); retry shortly."""
