"""Reading both framings: Confluent's through a registry (stored as single-object), single
object as always; an unknown id is the record's fault, an unreachable registry is not."""

from __future__ import annotations

import uuid

import pytest

from behest import codec
from behest.config import Settings
from behest.errors import ConfigError, UnknownSchemaError
from behest.local.ports import free_port
from behest.registry import (
    FramingDecoder,
    RegistryCodec,
    RegistryUnavailableError,
    framing_decoder,
    registry_client,
    registry_encoder,
)
from behest.testing import sample_run

pytest.importorskip("confluent_kafka.schema_registry", reason="behest[registry] is missing")


def test_framed_records_are_stored_single_object() -> None:
    url = f"mock://unit-{uuid.uuid4().hex[:8]}"
    encode = registry_encoder(Settings(registry_url=url, registry_write=True), "t")
    decode = framing_decoder(Settings(registry_url=url, topic="t"))
    assert encode is not None and decode is not None
    for event in sample_run(events=20, seed=9):
        framed = encode(event)
        assert framed[:1] == b"\x00"
        record, stored = decode(framed)
        assert stored == codec.encode(event)  # the same bytes a plain producer writes
        assert record == codec.decode_record(stored)
        assert decode(stored) == (record, stored)  # single-object passes straight through


def test_an_id_the_registry_does_not_have_is_an_unknown_schema() -> None:
    decode = FramingDecoder(RegistryCodec(registry_client(f"mock://unit-{uuid.uuid4().hex}")))
    with pytest.raises(UnknownSchemaError, match="schema id 4242"):
        decode(b"\x00" + (4242).to_bytes(4, "big") + b"\x00")


def test_an_unreachable_registry_fails_the_batch_instead_of_dead_lettering() -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    client = SchemaRegistryClient(
        {"url": f"http://127.0.0.1:{free_port()}", "timeout": 2, "max.retries": 0}
    )
    decode = FramingDecoder(RegistryCodec(client))
    with pytest.raises(RegistryUnavailableError, match="BEHEST_REGISTRY_URL"):
        decode(b"\x00" + (1).to_bytes(4, "big") + b"\x00")


def test_writing_framing_needs_a_registry_url() -> None:
    with pytest.raises(ConfigError, match="BEHEST_REGISTRY_URL"):
        registry_encoder(Settings(registry_write=True), "t")
    assert registry_encoder(Settings(), "t") is None
    assert framing_decoder(Settings()) is None
