"""Confluent Schema Registry framing, for consumers that expect it instead of single-object.

Layout: byte `00`, the schema id (4 bytes, big-endian), then the same Avro body as
`behest.codec` writes. The id comes from a registry server through confluent-kafka's
client (`pip install 'behest[registry]'`; imported only here, so behest runs without it).
Decoding asks the registry for the id's schema and accepts it only when its fingerprint
is one of `schemas/`, so the registry never has to be trusted with shapes we cannot fold.

behest's tests run against confluent-kafka's in-memory client (`mock://` URL): there is
no registry server in this project.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from behest import codec
from behest.config import DEFAULT_TOPIC
from behest.errors import CodecError, ConfigError, UnknownSchemaError
from behest.events import AgentEvent, EventRecord

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

MAGIC = b"\x00"
HEADER_SIZE = 5


def _schema_type() -> type:
    try:
        from confluent_kafka.schema_registry import Schema
    except ImportError:
        raise ConfigError(
            "Schema Registry framing needs confluent-kafka's registry client: "
            "pip install 'behest[registry]'"
        ) from None
    return Schema


class RegistryCodec:
    """Encode and decode events in Confluent's framing, registering our schema under
    `<topic>-value` (the registry's default TopicNameStrategy) on first use."""

    def __init__(self, client: SchemaRegistryClient, topic: str = DEFAULT_TOPIC) -> None:
        self._schema = _schema_type()
        self._client = client
        self.subject = f"{topic}-value"
        self._schema_id: int | None = None
        self._versions: dict[int, codec.SchemaVersion] = {}

    @property
    def schema_id(self) -> int:
        """The registry's id of the current schema (registered once, then cached)."""
        if self._schema_id is None:
            text = json.dumps(codec.CURRENT.raw)
            self._schema_id = self._client.register_schema(self.subject, self._schema(text, "AVRO"))
            self._versions[self._schema_id] = codec.CURRENT
        return self._schema_id

    def encode(self, event: AgentEvent) -> bytes:
        """`00`, the schema id, then the event's Avro body."""
        return MAGIC + self.schema_id.to_bytes(4, "big") + codec.encode_body(event)

    def decode_record(self, data: bytes) -> EventRecord:
        """The plain record (as `codec.decode_record` returns it) of Confluent-framed bytes."""
        if len(data) < HEADER_SIZE or data[:1] != MAGIC:
            raise CodecError(
                f"not a Schema Registry framed event: {len(data)} bytes starting with "
                f"{bytes(data[:HEADER_SIZE]).hex() or 'nothing'}, expected 00 and a 4-byte id"
            )
        return codec.decode_body(data, self._version(int.from_bytes(data[1:5], "big")), 5)

    def decode(self, data: bytes) -> AgentEvent:
        """The validated `AgentEvent` of Confluent-framed bytes."""
        return codec.to_event(self.decode_record(data))

    def _version(self, schema_id: int) -> codec.SchemaVersion:
        version = self._versions.get(schema_id)
        if version is None:
            try:
                registered = self._client.get_schema(schema_id)
            except Exception as error:  # the client raises SchemaRegistryError or I/O errors
                raise UnknownSchemaError(
                    f"schema id {schema_id} is not available from the registry: {error}"
                ) from None
            version = _known_version(registered.schema_str)
            if version is None:
                raise UnknownSchemaError(
                    f"schema id {schema_id} is not a behest event schema known here "
                    f"(its fingerprint matches nothing in {codec.SCHEMA_DIR})"
                )
            self._versions[schema_id] = version
        return version


def _known_version(schema_text: str | None) -> codec.SchemaVersion | None:
    """Our schema version with the fingerprint of a registry schema, if any."""
    try:
        return codec.VERSIONS.get(codec.schema_fingerprint(schema_text or ""))
    except Exception:  # not JSON, not Avro (the registry also holds Protobuf and JSON Schema)
        return None
