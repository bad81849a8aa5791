"""What a local Kafka broker runs on: Java 17 or newer, and Kafka's jars, which Maven
fetches from Maven Central once (a generated POM and `mvn dependency:copy-dependencies`)
into `project_home()/kafka/<version>/libs`, shared by every local broker and cluster.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.sax.saxutils import escape

from behest.config import project_home
from behest.errors import BrokerError

__all__ = [
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "MIN_JAVA",
    "fetch_kafka_jars",
    "find_java",
    "folder_lock",
    "jar_cache_dir",
    "parse_java_major",
    "render_pom",
]

# The newest 4.x whose whole dependency tree resolves from Maven Central (4.4.0 is listed but
# its kafka-tools-api jar is missing there). LOG4J_VERSION is the log4j2 release kafka-server
# 4.3.1 itself depends on; the SLF4J 1.x binding must match it.
KAFKA_VERSION = "4.3.1"
LOG4J_VERSION = "2.25.4"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 17
MAVEN_TIMEOUT = 900.0
MAVEN_OUTPUT_LINES = 30
"""Maven's last lines of output, shown when a download fails."""


def jar_cache_dir(kafka_version: str = KAFKA_VERSION) -> Path:
    """Where a Kafka version's jars are kept (`fetch_kafka_jars` fills it)."""
    return project_home() / "kafka" / kafka_version


def parse_java_major(version_output: str) -> int | None:
    """The major version in `java -version` output: `"1.8.0_292"` is 8, `"17.0.15"` is 17."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        return int(match.group(2))
    return major


def find_java(kafka_version: str = KAFKA_VERSION) -> str:
    """The `java` to use ($JAVA_HOME first, then PATH), checked to be 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if java is None:
        raise BrokerError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker, and `java` is not "
            "on PATH (nor in $JAVA_HOME/bin): install it, e.g. `sudo apt-get install "
            "openjdk-17-jre-headless`, or set BEHEST_BOOTSTRAP_SERVERS to use a Kafka you "
            "already run."
        )
    try:
        probe = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"`{java} -version` failed ({exc}); check the Java install.") from exc
    major = parse_java_major(probe.stderr + probe.stdout)
    if major is not None and major < MIN_JAVA:
        raise BrokerError(
            f"{java} is Java {major}, and Kafka {kafka_version} needs Java {MIN_JAVA}+: "
            "install a newer one (e.g. `sudo apt-get install openjdk-17-jre-headless`) "
            "or point JAVA_HOME at it."
        )
    return java


def render_pom(kafka_version: str = KAFKA_VERSION, log4j_version: str = LOG4J_VERSION) -> str:
    """A throwaway POM whose runtime dependencies are exactly the broker's classpath.

    The SLF4J binding is not a dependency of the broker, so it is added: the 1.x binding
    (`log4j-slf4j-impl`), because Kafka pins slf4j-api 1.7.36.
    """
    deps = [
        ("org.apache.kafka", "kafka_2.13", kafka_version),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", log4j_version),
        ("org.apache.logging.log4j", "log4j-api", log4j_version),
        ("org.apache.logging.log4j", "log4j-core", log4j_version),
    ]
    rendered = "\n".join(
        "    <dependency>"
        f"<groupId>{escape(group)}</groupId>"
        f"<artifactId>{escape(artifact)}</artifactId>"
        f"<version>{escape(version)}</version>"
        "</dependency>"
        for group, artifact, version in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>behest.local</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>{escape(kafka_version)}</version>
  <packaging>pom</packaging>
  <dependencies>
{rendered}
  </dependencies>
</project>
"""


@contextlib.contextmanager
def folder_lock(lock_path: Path) -> Iterator[None]:
    """Serialize processes working on the same folder (two starts, two downloads)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_kafka_jars(
    cache_dir: Path,
    kafka_version: str = KAFKA_VERSION,
    log4j_version: str = LOG4J_VERSION,
    *,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The folder of the broker's jars, downloaded with Maven on first use only.

    A marker file is written after the copy completes, so an interrupted download is redone.
    """
    libs = cache_dir / "libs"
    marker = cache_dir / "libs.complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            f"Maven (`mvn`) is needed once to download the Kafka {kafka_version} jars into "
            f"{libs}, and it is not on PATH: install it (e.g. `sudo apt-get install maven`), "
            "or set BEHEST_BOOTSTRAP_SERVERS to use a Kafka you already run."
        )
    with folder_lock(cache_dir / ".lock"):
        if marker.exists():  # another process finished the download while we waited
            return libs
        if progress:
            progress(f"Downloading Kafka {kafka_version} jars with Maven into {libs} (once)...")
        shutil.rmtree(libs, ignore_errors=True)
        pom = cache_dir / "pom.xml"
        pom.write_text(render_pom(kafka_version, log4j_version))
        command = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ]
        try:
            done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
                command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"Maven did not finish downloading the Kafka {kafka_version} jars within "
                f"{MAVEN_TIMEOUT:.0f} s; check access to Maven Central and run again."
            ) from exc
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-MAVEN_OUTPUT_LINES:])
            raise BrokerError(
                f"Maven could not download the Kafka {kafka_version} jars (exit "
                f"{done.returncode}); check access to Maven Central (or the mirrors in "
                f"~/.m2/settings.xml) and run again. Maven said:\n{output}"
            )
        jars = sorted(path.name for path in libs.glob("*.jar"))
        if f"kafka_2.13-{kafka_version}.jar" not in jars:
            raise BrokerError(f"Maven finished but {libs} lacks kafka_2.13-{kafka_version}.jar.")
        marker.write_text(json.dumps({"kafka": kafka_version, "jars": jars}, indent=1) + "\n")
    return libs
