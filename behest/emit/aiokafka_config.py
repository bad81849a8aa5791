"""librdkafka settings → `AIOKafkaProducer` keywords, or a `ConfigError` naming the setting.

Both producers read the same `BEHEST_KAFKA_CONFIG` (librdkafka names). The asyncio one
translates every name aiokafka has an equivalent for. A name it cannot honour is refused
when the producer is built, so the two producers can never run with different security or
delivery guarantees: only librdkafka's own tuning and diagnostics (which change neither
what is delivered nor how it is secured) and consumer settings are passed over.
"""

from __future__ import annotations

import inspect
import logging
import ssl
from collections.abc import Mapping
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from behest.config import Settings
from behest.emit.producer import DEFAULT_DELIVERY_TIMEOUT_MS, PRODUCER_DEFAULTS
from behest.errors import ConfigError

__all__ = ["aiokafka_config"]

log = logging.getLogger("behest.emit.aio")

_DIRECT: Final[Mapping[str, str]] = {
    "bootstrap.servers": "bootstrap_servers",
    "client.id": "client_id",
    "acks": "acks",
    "request.required.acks": "acks",
    "enable.idempotence": "enable_idempotence",
    "linger.ms": "linger_ms",
    "queue.buffering.max.ms": "linger_ms",
    "compression.type": "compression_type",
    "compression.codec": "compression_type",
    "batch.size": "max_batch_size",
    "message.max.bytes": "max_request_size",
    "message.timeout.ms": "request_timeout_ms",
    "delivery.timeout.ms": "request_timeout_ms",
    "request.timeout.ms": "request_timeout_ms",
    "retry.backoff.ms": "retry_backoff_ms",
    "metadata.max.age.ms": "metadata_max_age_ms",
    "connections.max.idle.ms": "connections_max_idle_ms",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "sasl.kerberos.service.name": "sasl_kerberos_service_name",
}
"""librdkafka property → aiokafka keyword, for the settings both clients understand."""

_SSL_FILES: Final[Mapping[str, str]] = {
    "ssl.ca.location": "cafile",
    "ssl.certificate.location": "certfile",
    "ssl.key.location": "keyfile",
    "ssl.key.password": "password",
}
_SSL_CHECKS: Final = frozenset(
    {"ssl.endpoint.identification.algorithm", "enable.ssl.certificate.verification"}
)
_LIBRDKAFKA_ONLY: Final = frozenset(
    {
        "debug",
        "log_level",
        "log.queue",
        "log.thread.name",
        "log.connection.close",
        "statistics.interval.ms",
        "socket.timeout.ms",
        "socket.keepalive.enable",
        "socket.nagle.disable",
        "socket.send.buffer.bytes",
        "socket.receive.buffer.bytes",
        "socket.connection.setup.timeout.ms",
        "socket.max.fails",
        "reconnect.backoff.ms",
        "reconnect.backoff.max.ms",
        "retries",
        "message.send.max.retries",
        "topic.metadata.refresh.interval.ms",
        "topic.metadata.refresh.fast.interval.ms",
        "topic.metadata.refresh.sparse",
        "topic.metadata.propagation.max.ms",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "batch.num.messages",
        "sticky.partitioning.linger.ms",
        "api.version.request",
        "api.version.request.timeout.ms",
        "broker.version.fallback",
        "broker.address.family",
        "broker.address.ttl",
        "client.rack",
        "client.dns.lookup",
        "allow.auto.create.topics",
        "enable.random.seed",
    }
)
"""librdkafka's own tuning and diagnostics: passed over, as they change neither what is
delivered nor how it is secured."""
_CONSUMER_ONLY: Final = (
    "group.",
    "fetch.",
    "queued.",
    "auto.",
    "enable.auto.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "isolation.level",
    "max.poll.interval.ms",
    "enable.partition.eof",
    "check.crcs",
    "consume.callback.max.messages",
    "coordinator.query.interval.ms",
)
_INTS: Final = frozenset(
    {
        "linger_ms",
        "max_batch_size",
        "max_request_size",
        "request_timeout_ms",
        "retry_backoff_ms",
        "metadata_max_age_ms",
        "connections_max_idle_ms",
    }
)
_AIOKAFKA_DEFAULTS: Final[Mapping[str, Any]] = {"max_batch_size": 512 * 1024}
_AIOKAFKA_COMPRESSION: Final = "zstd"
"""The asyncio producer's compression unless configured: aiokafka compresses lz4 at level 9
(LZ4-HC, fixed), ~1.5 µs per event on the event loop, eight times librdkafka's lz4; its
zstd (level 3) costs a fifth of that and stores a third less. Every client reads both."""
_AIOKAFKA_KEYWORDS: Final = frozenset(inspect.signature(AIOKafkaProducer).parameters) - {
    "loop",
    "partitioner",  # behest's, so every client places runs alike
}


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)


def _honoured_elsewhere(name: str, value: Any) -> bool:
    """Whether aiokafka may pass over a librdkafka setting without changing behaviour."""
    if name in _LIBRDKAFKA_ONLY or name.startswith(_CONSUMER_ONLY):
        return True
    return name == "partitioner" and value == PRODUCER_DEFAULTS["partitioner"]


def aiokafka_config(
    settings: Settings, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`AIOKafkaProducer` keywords from behest's defaults, `Settings.kafka_config` and
    `overrides`, in that order. librdkafka names are translated; aiokafka keywords
    (`request_timeout_ms`) are taken from `overrides` as they are. A setting aiokafka
    cannot honour is a `ConfigError` that names it."""
    kwargs: dict[str, Any] = dict(_AIOKAFKA_DEFAULTS)
    ssl_files: dict[str, str] = {}
    ssl_checks: dict[str, Any] = {}
    refused: list[str] = []
    layers = [PRODUCER_DEFAULTS, settings.librdkafka(), overrides or {}]
    for depth, layer in enumerate(layers):
        for name, value in layer.items():
            if depth == 0 and name == "compression.type":
                kwargs["compression_type"] = _AIOKAFKA_COMPRESSION
            elif name in _DIRECT:
                kwargs[_DIRECT[name]] = value
            elif "." not in name and depth == len(layers) - 1 and name != "partitioner":
                kwargs[name] = value  # an aiokafka keyword, given as an override
            elif name in _SSL_FILES:
                ssl_files[_SSL_FILES[name]] = value
            elif name in _SSL_CHECKS:
                ssl_checks[name] = value
            elif depth == 0 or _honoured_elsewhere(name, value):
                log.debug("setting %s has no aiokafka equivalent; passed over", name)
            else:
                refused.append(name)
    if refused:
        raise ConfigError(
            f"the asyncio producer (aiokafka) cannot honour {', '.join(sorted(refused))}: "
            "remove it from BEHEST_KAFKA_CONFIG or use the confluent-kafka EventProducer"
        )
    _normalise(kwargs)
    _tls(kwargs, ssl_files, ssl_checks)
    kwargs.setdefault("request_timeout_ms", DEFAULT_DELIVERY_TIMEOUT_MS)
    unknown = sorted(kwargs.keys() - _AIOKAFKA_KEYWORDS)
    if unknown:
        raise ConfigError(
            f"not AIOKafkaProducer settings: {', '.join(unknown)}; pass aiokafka keywords "
            "(e.g. request_timeout_ms) or librdkafka names (e.g. message.timeout.ms)"
        )
    return kwargs


def _normalise(kwargs: dict[str, Any]) -> None:
    """librdkafka's spellings of values → aiokafka's types and spellings."""
    try:
        for name in _INTS & kwargs.keys():
            kwargs[name] = int(kwargs[name])
        if "enable_idempotence" in kwargs:
            kwargs["enable_idempotence"] = _bool(kwargs["enable_idempotence"])
        if str(kwargs.get("acks")) in {"all", "-1"}:
            kwargs["acks"] = "all"
        elif "acks" in kwargs:
            kwargs["acks"] = int(kwargs["acks"])
    except (TypeError, ValueError) as error:
        raise ConfigError(f"a numeric producer setting is not a number: {error}") from None
    if kwargs.get("compression_type") in {"none", ""}:
        kwargs["compression_type"] = None
    if "security_protocol" in kwargs:
        kwargs["security_protocol"] = str(kwargs["security_protocol"]).upper()
    if "sasl_mechanism" in kwargs:
        kwargs["sasl_mechanism"] = str(kwargs["sasl_mechanism"]).upper()
        if kwargs["sasl_mechanism"] == "OAUTHBEARER":
            raise ConfigError(
                "the asyncio producer (aiokafka) cannot honour sasl.mechanism=OAUTHBEARER "
                "from BEHEST_KAFKA_CONFIG (it needs a token provider object): pass "
                "sasl_oauth_token_provider in the overrides, or use the EventProducer"
            )


def _tls(kwargs: dict[str, Any], files: dict[str, str], checks: dict[str, Any]) -> None:
    """A TLS context as librdkafka would build it: the system's CAs unless a CA file is
    given, hostname and certificate checks on unless turned off."""
    secured = str(kwargs.get("security_protocol", "")).endswith("SSL")
    if "ssl_context" in kwargs or not (files or checks or secured):
        return
    try:
        context = create_ssl_context(**files)
    except (OSError, ValueError, ssl.SSLError) as error:
        raise ConfigError(
            f"cannot build a TLS context from {sorted(files)}: {error}; check the "
            "ssl.*.location paths in BEHEST_KAFKA_CONFIG"
        ) from None
    if str(checks.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        context.check_hostname = False
    if not _bool(checks.get("enable.ssl.certificate.verification", True)):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    kwargs["ssl_context"] = context
