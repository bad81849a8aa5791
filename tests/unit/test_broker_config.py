"""The pure pieces of the local broker (behest.local.broker, .kraft, .runtime): rendered
files, ports, ids, errors before any JVM."""

from __future__ import annotations

import base64
import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from behest.errors import BrokerError
from behest.local import broker, kraft, ports, runtime
from behest.local.broker import BrokerStatus, LocalBroker, tail
from behest.local.kraft import new_cluster_id, render_log4j2_properties, render_server_properties
from behest.local.ports import free_port, port_in_use
from behest.local.runtime import (
    KAFKA_VERSION,
    LOG4J_VERSION,
    fetch_kafka_jars,
    parse_java_major,
    render_pom,
)

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def parse_properties(text: str) -> dict[str, str]:
    """Enough of Java's .properties syntax for what render_server_properties writes."""
    props = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key] = value.replace("\\:", ":").replace("\\=", "=").replace("\\ ", " ")
    return props


# --- server.properties ----------------------------------------------------------------------


def test_server_properties_is_a_single_kraft_node_on_loopback(tmp_path: Path) -> None:
    props = parse_properties(
        render_server_properties(port=19092, controller_port=19093, log_dir=tmp_path / "logs")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "logs")


def test_server_properties_suit_one_broker_and_explicit_topics(tmp_path: Path) -> None:
    props = parse_properties(render_server_properties(port=1, controller_port=2, log_dir=tmp_path))
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "default.replication.factor",
        "num.partitions",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"


def test_server_properties_escape_paths_java_would_misread() -> None:
    text = render_server_properties(port=1, controller_port=2, log_dir=Path("/data/a b:c=d"))
    assert "log.dirs=/data/a\\ b\\:c\\=d" in text
    assert parse_properties(text)["log.dirs"] == "/data/a b:c=d"


# --- pom and logging ------------------------------------------------------------------------


def test_pom_lists_the_broker_and_a_matching_slf4j_1x_binding() -> None:
    root = ET.fromstring(render_pom("4.3.1", "2.25.4"))  # noqa: S314 - our own text
    deps = {}
    for dep in root.iterfind("m:dependencies/m:dependency", POM_NS):
        group, artifact, version = (
            dep.findtext(f"m:{field}", namespaces=POM_NS)
            for field in ("groupId", "artifactId", "version")
        )
        deps[(group, artifact)] = version
    assert deps[("org.apache.kafka", "kafka_2.13")] == "4.3.1"
    assert deps[("org.apache.logging.log4j", "log4j-slf4j-impl")] == "2.25.4"
    assert deps[("org.apache.logging.log4j", "log4j-core")] == "2.25.4"
    assert ("org.apache.logging.log4j", "log4j-slf4j2-impl") not in deps
    assert root.findtext("m:packaging", namespaces=POM_NS) == "pom"


def test_default_versions_are_a_kafka_4_broker() -> None:
    assert KAFKA_VERSION.startswith("4.")
    assert LOG4J_VERSION.startswith("2.")


def test_log4j2_config_is_quiet_but_says_when_the_server_started() -> None:
    text = render_log4j2_properties()
    assert "rootLogger.level = WARN" in text
    assert "logger.started.name = kafka.server.KafkaRaftServer" in text


# --- small helpers --------------------------------------------------------------------------


def test_free_port_is_bindable_and_port_in_use_sees_listeners() -> None:
    port = free_port()
    assert 0 < port < 65536
    assert not port_in_use(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_in_use(port)
    assert not port_in_use(port)


def test_port_in_use_sees_a_wildcard_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))  # noqa: S104 - the point of the test
        sock.listen()
        assert port_in_use(sock.getsockname()[1])


def test_cluster_id_is_a_base64url_uuid() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "11.0.2" 2019-01-15', 11),
        ("no java here", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


def test_tail_gives_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 3) == "line 97\nline 98\nline 99"
    assert "does not exist" in tail(tmp_path / "missing.log")


def test_status_bootstrap_only_when_running(tmp_path: Path) -> None:
    assert BrokerStatus(running=True, data_dir=tmp_path, pid=1, port=9092).bootstrap == (
        "127.0.0.1:9092"
    )
    assert BrokerStatus(running=False, data_dir=tmp_path).bootstrap is None


# --- LocalBroker without a JVM --------------------------------------------------------------


def test_a_fresh_data_dir_is_not_running_and_stop_is_a_no_op(tmp_path: Path) -> None:
    local = LocalBroker(tmp_path / "broker")
    assert local.status() == BrokerStatus(running=False, data_dir=(tmp_path / "broker"))
    assert local.stop() is False


def test_a_stale_pid_file_does_not_count_as_running(tmp_path: Path) -> None:
    local = LocalBroker(tmp_path)
    local.pid_path.write_text("1\n")  # pid 1 exists, but is not this data dir's broker
    local.state_path.write_text(json.dumps({"pid": 1, "port": 9092, "controller_port": 9093}))
    assert local.status().running is False
    assert local.stop() is False
    assert not local.pid_path.exists()
    assert json.loads(local.state_path.read_text())["controller_port"] == 9093


def test_default_data_dir_is_under_project_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BEHEST_HOME", str(tmp_path))
    assert LocalBroker().data_dir == tmp_path.resolve() / "broker"
    assert LocalBroker().jar_cache_dir == tmp_path / "kafka" / KAFKA_VERSION


def test_taken_port_is_refused_before_java_or_maven_are_needed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            LocalBroker(tmp_path).start(port)


def test_missing_java_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(BrokerError, match="openjdk-17-jre-headless"):
        LocalBroker(tmp_path).start(free_port())


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_home = tmp_path / "jdk"
    (fake_home / "bin").mkdir(parents=True)
    java = fake_home / "bin" / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(fake_home))
    with pytest.raises(BrokerError, match=r"is Java 11, and Kafka .* needs Java 17"):
        LocalBroker(tmp_path / "data").start(free_port())


def test_missing_maven_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(BrokerError, match="apt-get install maven"):
        fetch_kafka_jars(tmp_path / "kafka")
    assert not (tmp_path / "kafka" / "libs.complete").exists()


def test_a_completed_download_is_reused_without_maven(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", "")
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs.complete").write_text("{}")
    assert fetch_kafka_jars(tmp_path) == tmp_path / "libs"


def test_an_interrupted_download_is_redone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Jars without the marker are a partial copy: Maven runs again over a clean folder."""
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "half-a-jar.jar").write_bytes(b"PK")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in -DoutputDirectory=*) out="${arg#*=}";; esac; done\n'
        'mkdir -p "$out" && touch "$out/kafka_2.13-' + KAFKA_VERSION + '.jar"\n'
    )
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")

    libs = fetch_kafka_jars(tmp_path)

    assert sorted(p.name for p in libs.iterdir()) == [f"kafka_2.13-{KAFKA_VERSION}.jar"]
    marker = json.loads((tmp_path / "libs.complete").read_text())
    assert marker["jars"] == [f"kafka_2.13-{KAFKA_VERSION}.jar"]
    assert (tmp_path / "pom.xml").read_text() == render_pom()


def test_a_failed_download_reports_maven_output_and_leaves_no_marker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text("#!/bin/sh\necho '[ERROR] Could not resolve dependencies'\nexit 1\n")
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    with pytest.raises(BrokerError, match="Could not resolve dependencies"):
        fetch_kafka_jars(tmp_path / "kafka")
    assert not (tmp_path / "kafka" / "libs.complete").exists()


def test_module_exports_are_real() -> None:
    for module in (broker, kraft, ports, runtime):
        assert all(hasattr(module, name) for name in module.__all__)


def test_a_cluster_node_joins_one_quorum_with_replication_three(tmp_path: Path) -> None:
    voters = "1@127.0.0.1:1001,2@127.0.0.1:1002,3@127.0.0.1:1003"
    props = parse_properties(
        render_server_properties(
            port=9093,
            controller_port=1002,
            log_dir=tmp_path,
            node_id=2,
            voters=voters,
            replication=3,
        )
    )
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == voters
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:1002"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert props[key] == "3", key
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"


def test_a_single_node_keeps_replication_one(tmp_path: Path) -> None:
    props = parse_properties(
        render_server_properties(port=9092, controller_port=9999, log_dir=tmp_path)
    )
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9999"
    assert props["default.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"


@pytest.mark.parametrize(
    ("brokers", "replication", "insync"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)]
)
def test_topics_fit_the_cluster_found(brokers: int, replication: int, insync: int) -> None:
    from behest.admin import fitting_replication, min_insync

    assert fitting_replication(brokers) == replication
    assert min_insync(replication) == insync


def test_a_cluster_plans_distinct_ports_and_one_quorum(tmp_path: Path) -> None:
    from behest.local.cluster import LocalCluster, is_cluster_dir

    cluster = LocalCluster(tmp_path / "c", nodes=3)
    plan = cluster._plan(0)
    ports = [*plan["ports"].values(), *plan["controller_ports"].values()]
    assert len(set(ports)) == 6
    assert plan["voters"].count("@") == 3
    assert not is_cluster_dir(tmp_path / "c")
    assert cluster.status().running is False
