"""Confluent Schema Registry framing, for consumers that expect it instead of single-object.

Layout: byte `00`, the schema id (4 bytes, big-endian), then the same Avro body as
`behest.codec` writes. The id comes from a registry server through confluent-kafka's
client (`pip install 'behest[registry]'`; imported only here, so behest runs without it).
Decoding asks the registry for the id's schema and accepts it only when its fingerprint
is one of `schemas/`, so the registry never has to be trusted with shapes we cannot fold.

With `BEHEST_REGISTRY_URL` set, the projector reads Confluent-framed records beside
single-object ones (`FramingDecoder`; it stores them in single-object form, so every
reader stays registry-free), and with `BEHEST_REGISTRY_WRITE=true` both producers write
Confluent framing (`registry_encoder`), so Kafka Connect, ksqlDB and Flink read the topic
with their standard Avro deserializers.

behest's tests run against confluent-kafka's in-memory client (`mock://` URL): no registry
server could be started on the development machine (none is on PyPI or Maven Central as
a runnable artifact).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from behest import codec
from behest.config import DEFAULT_TOPIC, Settings
from behest.errors import BehestError, CodecError, ConfigError, UnknownSchemaError
from behest.events import AgentEvent, EventRecord

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

MAGIC = b"\x00"


class RegistryUnavailableError(BehestError):
    """The registry could not be asked (down, unreachable, refused): a retryable failure."""


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
        return codec.decode_body(data, self.version(int.from_bytes(data[1:5], "big")), 5)

    def decode(self, data: bytes) -> AgentEvent:
        """The validated `AgentEvent` of Confluent-framed bytes."""
        return codec.to_event(self.decode_record(data))

    def version(self, schema_id: int) -> codec.SchemaVersion:
        """Our schema version the registry's id stands for (asked once, then cached)."""
        version = self._versions.get(schema_id)
        if version is None:
            try:
                registered = self._client.get_schema(schema_id)
            except Exception as error:  # the client raises SchemaRegistryError or I/O errors
                if getattr(error, "http_status_code", None) == 404:
                    raise UnknownSchemaError(
                        f"schema id {schema_id} is not in the registry: {error}"
                    ) from None
                # not the record's fault: fail the batch (read again later), never dead-letter
                raise RegistryUnavailableError(
                    f"the Schema Registry did not say what schema id {schema_id} is ({error}): "
                    "check BEHEST_REGISTRY_URL and that the registry is up"
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


_clients: dict[str, SchemaRegistryClient] = {}
_clients_lock = threading.Lock()


def registry_client(url: str) -> SchemaRegistryClient:
    """One client per registry URL in a process (its caches, and a `mock://` registry,
    are then shared by the producers and the projector)."""
    _schema_type()  # a clear error when the extra is missing
    from confluent_kafka.schema_registry import SchemaRegistryClient

    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = SchemaRegistryClient.new_client({"url": url})
        return client


def registry_encoder(settings: Settings, topic: str) -> Callable[[AgentEvent], bytes] | None:
    """The producers' encoder when `BEHEST_REGISTRY_WRITE` asks for Confluent framing."""
    if not settings.registry_write:
        return None
    if settings.registry_url is None:
        raise ConfigError(
            "BEHEST_REGISTRY_WRITE=true needs BEHEST_REGISTRY_URL (the Schema Registry that "
            "assigns the schema id)"
        )
    return RegistryCodec(registry_client(settings.registry_url), topic).encode


class FramingDecoder:
    """Reads both framings: Confluent's (`00` + id) through the registry, single-object
    (`C3 01` + fingerprint) as always. Returns the record and the bytes to store, which
    are single-object either way (the same Avro body under the fingerprint's header)."""

    def __init__(self, registry: RegistryCodec) -> None:
        self._registry = registry

    def __call__(self, data: bytes) -> tuple[EventRecord, bytes]:
        if data[:1] != MAGIC:
            return codec.decode_record(data), data
        record = self._registry.decode_record(data)
        version = self._registry.version(int.from_bytes(data[1:5], "big"))
        return record, codec.MAGIC + version.fingerprint + bytes(data[HEADER_SIZE:])


def framing_decoder(settings: Settings) -> FramingDecoder | None:
    """The projector's decoder when `BEHEST_REGISTRY_URL` is set (else None: single-object)."""
    if settings.registry_url is None:
        return None
    return FramingDecoder(RegistryCodec(registry_client(settings.registry_url), settings.topic))
