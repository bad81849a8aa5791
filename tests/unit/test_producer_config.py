"""How producer settings are assembled for each client; no broker needed."""

from __future__ import annotations

import pytest

from behest.config import Settings
from behest.emit.aio import JavaPartitioner, aiokafka_config
from behest.emit.partitioner import partition_for, run_key
from behest.emit.producer import EventProducer
from behest.errors import ConfigError


def test_librdkafka_defaults_then_user_config_then_overrides() -> None:
    settings = Settings(
        bootstrap_servers="127.0.0.1:1",
        kafka_config={"linger.ms": "20", "client.id": "svc", "security.protocol": "PLAINTEXT"},
    )
    with EventProducer(settings, {"linger.ms": 1, "message.timeout.ms": 1234}) as producer:
        config = producer.config
        assert config["bootstrap.servers"] == "127.0.0.1:1"
        assert config["partitioner"] == "murmur2_random"
        assert config["enable.idempotence"] is True
        assert config["acks"] == "all"
        assert config["client.id"] == "svc"
        assert config["security.protocol"] == "PLAINTEXT"
        assert config["linger.ms"] == 1
        assert producer.delivery_timeout == pytest.approx(1.234)


def test_a_bad_librdkafka_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="BEHEST_KAFKA_CONFIG"):
        EventProducer(Settings(bootstrap_servers="127.0.0.1:1"), {"no.such.setting": 1})


def test_aiokafka_gets_the_same_guarantees_and_the_security_settings() -> None:
    settings = Settings(
        bootstrap_servers="broker:9093",
        kafka_config={
            "security.protocol": "sasl_ssl",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": "alice",
            "sasl.password": "s3cret",
            "linger.ms": "20",
            "fetch.wait.max.ms": "10",  # a consumer setting: no producer equivalent
        },
    )
    kwargs = aiokafka_config(settings, {"message.timeout.ms": "3000", "max_batch_size": 4096})
    assert kwargs["bootstrap_servers"] == "broker:9093"
    assert kwargs["acks"] == "all"
    assert kwargs["enable_idempotence"] is True
    assert kwargs["compression_type"] == "zstd"  # aiokafka's lz4 is LZ4-HC: five times zstd
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("alice", "s3cret")
    assert kwargs["linger_ms"] == 20
    assert kwargs["request_timeout_ms"] == 3000
    assert kwargs["max_batch_size"] == 4096
    assert "partitioner" not in kwargs
    assert not any("." in name for name in kwargs)


def test_aiokafka_settings_that_cannot_work_are_config_errors() -> None:
    settings = Settings(kafka_config={"ssl.ca.location": "/nonexistent/ca.pem"})
    with pytest.raises(ConfigError, match=r"ssl\.\*\.location"):
        aiokafka_config(settings)
    with pytest.raises(ConfigError, match="not AIOKafkaProducer settings: lingerms"):
        aiokafka_config(Settings(), {"lingerms": 5})


def test_java_partitioner_for_aiokafka() -> None:
    partitioner = JavaPartitioner()
    for n in range(200):
        key = run_key(f"00000000-0000-4000-8000-{n:012d}")
        assert partitioner(key, [0, 1, 2, 3, 4, 5], []) == partition_for(key, 6)
        assert partitioner.partition(key, 7) == partition_for(key, 7)
    assert partitioner(None, [0, 1, 2], [2]) == 2


def test_a_configured_compression_is_the_asyncio_producers_too() -> None:
    settings = Settings(kafka_config={"compression.type": "lz4"})
    assert aiokafka_config(settings)["compression_type"] == "lz4"
    assert aiokafka_config(Settings(), {"compression.codec": "none"})["compression_type"] is None
