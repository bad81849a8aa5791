"""Every bad BEHEST_* value is one clear line and exit 1; librdkafka values of any JSON
scalar type work; what the asyncio producer cannot honour is refused up front."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from behest.config import Settings
from behest.emit.aiokafka_config import aiokafka_config
from behest.errors import ConfigError

MISTAKES = [
    ("BEHEST_KAFKA_CONFIG", "{bad", "BEHEST_KAFKA_CONFIG is not valid JSON"),
    ("BEHEST_KAFKA_CONFIG", "[1, 2]", "BEHEST_KAFKA_CONFIG: must be a JSON object"),
    ("BEHEST_KAFKA_CONFIG", '{"no.such.property": 1}', 'No such configuration property: "no'),
    ("BEHEST_KAFKA_CONFIG", '{"linger.ms": "soon"}', "'linger.ms': 'soon' is refused by"),
    ("BEHEST_KAFKA_CONFIG", '{"linger.ms": {"ms": 1}}', "string, number or boolean"),
    ("BEHEST_TOPIC", "two words", "BEHEST_TOPIC: a Kafka topic name is"),
    ("BEHEST_BOOTSTRAP_SERVERS", "broker:99999", "BEHEST_BOOTSTRAP_SERVERS: 'broker:99999'"),
    (
        "BEHEST_KAFKA_CONFIG",
        '{"sasl.mechanism": "PLAIN", "security.protocol": "SASL_SSL"}',
        "refuses these settings: sasl.username and sasl.password must be set",
    ),
    ("BEHEST_SCHEMA_WAIT", "a while", "BEHEST_SCHEMA_WAIT: Input should be a valid number"),
]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BEHEST_")}
    return subprocess.run(
        [sys.executable, "-m", "behest.cli", *args],
        env={**clean, "BEHEST_BOOTSTRAP_SERVERS": "127.0.0.1:1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("name", "value", "expected"), MISTAKES)
def test_each_config_mistake_is_one_line_and_exit_1(name: str, value: str, expected: str) -> None:
    done = _cli({name: value}, "topics", "create", "--timeout", "1")
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]


def test_a_bad_flag_is_one_line_too() -> None:
    done = _cli({}, "topics", "create", "--topic", "no/slashes", "--timeout", "1")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: BEHEST_TOPIC: a Kafka topic name is 1 to 240 of the characters a-z A-Z 0-9 . _ - "
        "(behest adds .dlq and .schemas to it) (got 'no/slashes')"
    ]


def test_numbers_and_booleans_are_librdkafka_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "BEHEST_KAFKA_CONFIG", '{"linger.ms": 10, "socket.keepalive.enable": true, "x": 1}'
    )
    with pytest.raises(ConfigError, match="'x': 1 is refused by librdkafka"):
        Settings()
    monkeypatch.setenv("BEHEST_KAFKA_CONFIG", '{"linger.ms": 10, "socket.keepalive.enable": true}')
    settings = Settings()
    assert settings.kafka_config == {"linger.ms": 10, "socket.keepalive.enable": True}
    assert settings.librdkafka()["linger.ms"] == 10
    assert aiokafka_config(settings)["linger_ms"] == 10


def test_unset_and_empty_bootstrap_servers_mean_the_local_broker() -> None:
    assert Settings(bootstrap_servers="").bootstrap == "127.0.0.1:9092"
    assert Settings(bootstrap_servers="a:1, [::1]:9093,b").bootstrap_servers == "a:1, [::1]:9093,b"


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"sasl.oauthbearer.method": "oidc"}, "sasl.oauthbearer.method"),
        ({"transactional.id": "t1"}, "transactional.id"),
        ({"partitioner": "consistent_random"}, "partitioner"),
        ({"ssl.cipher.suites": "HIGH"}, "ssl.cipher.suites"),
    ],
)
def test_what_aiokafka_cannot_honour_is_refused_naming_it(
    config: dict[str, str], named: str
) -> None:
    settings = Settings.model_construct(
        bootstrap_servers=None, topic="t", kafka_config=config, schema_wait=1.0
    )
    with pytest.raises(ConfigError, match=f"cannot honour {named}"):
        aiokafka_config(settings)


def test_oauthbearer_is_refused_and_tuning_is_passed_over() -> None:
    oauth = Settings(
        kafka_config={"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"}
    )
    with pytest.raises(ConfigError, match=r"sasl\.mechanism=OAUTHBEARER"):
        aiokafka_config(oauth)
    tuning = Settings(
        kafka_config={"debug": "broker", "fetch.wait.max.ms": 5, "partitioner": "murmur2_random"}
    )
    assert "debug" not in aiokafka_config(tuning)


def test_tls_checks_are_honoured() -> None:
    settings = Settings(
        kafka_config={"security.protocol": "SSL", "enable.ssl.certificate.verification": False}
    )
    context = aiokafka_config(settings)["ssl_context"]
    assert context.check_hostname is False
    assert context.verify_mode == 0  # ssl.CERT_NONE
    secured = aiokafka_config(
        Settings(
            kafka_config={
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "PLAIN",
                "sasl.username": "u",
                "sasl.password": "p",
            }
        )
    )
    assert secured["ssl_context"].check_hostname is True
