"""The `behest` command line: broker, topics, simulate, project, serve, state, dlq, demo."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from behest.cluster.command import node_command
from behest.commands.dlq import dlq_app
from behest.commands.generations import generations_app
from behest.commands.options import BootstrapServers, StateDir, Topic, fail, settings
from behest.config import DEFAULT_BROKER_PORT, Settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from behest.fold.engine import BatchResult
    from behest.read.query import RunStateQuery
    from behest.read.reader import ProjectionReader

app = typer.Typer(
    name="behest",
    help="Event sourcing for AI agent runs on Apache Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
broker_app = typer.Typer(
    help="Run a local Kafka (KRaft) on 127.0.0.1: one broker, or a cluster with --nodes 3.",
    no_args_is_help=True,
)
topics_app = typer.Typer(
    help="Manage the event topic and its dead-letter and schemas topics.", no_args_is_help=True
)
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(generations_app, name="generations")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"behest {version('behest')}")
        except PackageNotFoundError:  # a source checkout that was never installed
            typer.echo("behest 0+unknown")
        raise typer.Exit()


@app.callback()
def main(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print behest's version and exit.",
        ),
    ] = False,
) -> None:
    """Event sourcing for AI agent runs on Apache Kafka."""


class Level(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class Format(StrEnum):
    text = "text"
    json = "json"


LogLevel = Annotated[
    Level,
    typer.Option(
        "--log-level",
        envvar="BEHEST_LOG_LEVEL",
        case_sensitive=False,
        help="Least severe log lines shown (env BEHEST_LOG_LEVEL).",
    ),
]
LogFormat = Annotated[
    Format,
    typer.Option(
        "--log-format",
        envvar="BEHEST_LOG_FORMAT",
        case_sensitive=False,
        help="text, or json: one object per line for log shippers (env BEHEST_LOG_FORMAT).",
    ),
]


def setup_logging(level: Level, log_format: Format, console: Any = None) -> None:
    """Logging of a long-running command (`behest.logs`): rich text on a terminal."""
    from behest.logs import setup_logging as setup

    handler = None
    if log_format is Format.text and console is not None and console.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False)
    setup(level.value, log_format.value, handler=handler)


_PROJECTION_HELP = (
    "An installed projection's name (run_state, tool_usage, otel: each finished run exported "
    "as OpenTelemetry GenAI spans over OTLP, or one a package declares under "
    "the behest.projections entry points) or your own as package.module:Class."
)


Advertise = Annotated[
    str | None,
    typer.Option(
        "--advertise",
        help="URL of this process's HTTP API for the cluster's other nodes: the projector "
        "(`project`) puts it in its client.id, the API (`serve`) routes by it (see `behest node`).",
    ),
]
GroupId = Annotated[
    str | None, typer.Option("--group-id", help="Consumer group; default behest.<projection>.")
]


def _telemetry(config: Settings, service: str) -> None:
    """With `BEHEST_OTEL=true`, this command exports its spans over OTLP."""
    if config.otel:
        from behest.telemetry import configure

        configure(service)


def _span_export() -> Callable[[BatchResult], None]:
    """The otel projection's effect: each batch's finished runs, as GenAI spans, over OTLP
    (`OTEL_EXPORTER_OTLP_ENDPOINT`; behest[otel])."""
    from behest.errors import ConfigError
    from behest.projections.otel import export_runs

    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(
            "the otel projection exports over OTLP: pip install 'behest[otel]'"
        ) from None
    exporter = OTLPSpanExporter()

    def export(result: BatchResult) -> None:
        export_runs(result.states.values(), exporter)

    return export


# --- broker -----------------------------------------------------------------

_DATA_DIR_HELP = (
    "The broker's (or cluster's) data dir, which identifies it; default: .cache/broker "
    "(.cache/cluster with --nodes)."
)


def _echo_progress(message: str) -> None:
    """Progress of a slow step (the first jar download) goes to stderr."""
    typer.echo(message, err=True)


def _targets(data_dir: str | None) -> list[Any]:
    """The brokers and clusters a stop/status is about: the data dir's one, or by default
    the default broker, plus the default cluster if one was ever started."""
    from behest.local.broker import LocalBroker
    from behest.local.cluster import LocalCluster, default_cluster_dir, is_cluster_dir

    if data_dir is not None:
        folder = Path(data_dir)
        return [LocalCluster(folder) if is_cluster_dir(folder) else LocalBroker(folder)]
    found: list[Any] = [LocalBroker()]
    if is_cluster_dir(default_cluster_dir()):
        found.append(LocalCluster())
    return found


@broker_app.command("start")
def broker_start(
    port: int | None = typer.Option(
        None,
        "--port",
        help=f"Port on 127.0.0.1 for clients (default {DEFAULT_BROKER_PORT}; a cluster's nodes "
        "take this one and the next ones, from 9093 by default); 0 picks free ones.",
    ),
    data_dir: str | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    nodes: int = typer.Option(
        1, "--nodes", min=1, max=9, help="Brokers: 3 starts a local KRaft cluster (RF 3)."
    ),
    timeout: float = typer.Option(90.0, "--timeout", help="Seconds to wait for the broker."),
) -> None:
    """Start a local Kafka (idempotent); prints its bootstrap address on stdout."""
    import time

    from behest.errors import BehestError
    from behest.local.broker import KAFKA_VERSION, LocalBroker
    from behest.local.cluster import LocalCluster, is_cluster_dir

    started = time.monotonic()
    try:
        if nodes > 1 or (data_dir is not None and is_cluster_dir(Path(data_dir))):
            cluster = LocalCluster(data_dir, nodes=nodes, progress=_echo_progress)
            status: Any = cluster.start(port, timeout=timeout)
        else:
            broker = LocalBroker(data_dir, progress=_echo_progress)
            status = broker.start(DEFAULT_BROKER_PORT if port is None else port, timeout=timeout)
    except (BehestError, OSError) as exc:
        raise fail(exc) from None
    if status.already_running:
        note = "already running"
    else:
        note = f"Kafka {KAFKA_VERSION} started in {time.monotonic() - started:.1f} s"
    typer.echo(f"{note}: {_pids(status)}, data dir {status.data_dir}", err=True)
    typer.echo(status.bootstrap)


@broker_app.command("stop")
def broker_stop(
    data_dir: str | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
) -> None:
    """Stop the local Kafka of a data dir (SIGTERM, then SIGKILL after 20 s)."""
    from behest.errors import BehestError

    for target in _targets(data_dir):
        pids = _pids(target.status())
        try:
            stopped = target.stop()
        except (BehestError, OSError) as exc:
            raise fail(exc) from None
        if stopped:
            typer.echo(f"stopped: {pids}, data dir {target.data_dir}")
        else:
            typer.echo(f"not running: data dir {target.data_dir}")


def _pids(status: Any) -> str:
    """`pid N` of a broker, `node 1 pid N, node 2 down, ...` of a cluster."""
    if not hasattr(status, "nodes"):
        return f"pid {status.pid}"
    return ", ".join(
        f"node {n} pid {pid}" if pid else f"node {n} down" for n, pid in status.nodes.items()
    )


@broker_app.command("status")
def broker_status(
    data_dir: str | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
) -> None:
    """Say whether the local Kafka of a data dir runs (exit 0) or not (exit 1)."""
    running = False
    for target in _targets(data_dir):
        status = target.status()
        if not status.running:
            typer.echo(f"not running: data dir {status.data_dir}")
            continue
        running = True
        typer.echo(f"running at {status.bootstrap}: {_pids(status)}, data dir {status.data_dir}")
    if not running:
        raise typer.Exit(1)


# --- topics -----------------------------------------------------------------


@topics_app.command("create")
def topics_create(
    partitions: int = typer.Option(6, "--partitions", min=1, help="Partitions of new topics."),
    bootstrap_servers: BootstrapServers = None,
    topic: Topic = None,
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds to wait for the broker."),
) -> None:
    """Create the event topic, its dead-letter topic (infinite retention) and its compacted
    schemas topic; idempotent."""
    from behest.admin import create_topics
    from behest.errors import BehestError

    config = settings(bootstrap_servers, topic)
    try:
        results = create_topics(config, partitions=partitions, timeout=timeout)
    except BehestError as exc:
        raise fail(exc) from None
    for result in results:
        typer.echo(f"{result} at {config.bootstrap}")
    for result in results:
        if result.name == config.schemas_topic:
            continue  # one partition by design
        if not result.created and result.partitions != partitions:
            typer.echo(
                f"note: {result.name} keeps its {result.partitions} partitions "
                f"(asked for {partitions}); existing topics are not changed",
                err=True,
            )


# --- simulate ---------------------------------------------------------------


@app.command("simulate")
def simulate_command(
    runs: int = typer.Option(100, "--runs", min=0, help="How many agent runs to simulate."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Runs in progress at once."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for the same traffic again."),
    bootstrap_servers: BootstrapServers = None,
    topic: Topic = None,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    log_level: LogLevel = Level.info,
    log_format: LogFormat = Format.text,
) -> None:
    """Produce realistic agent-run traffic (half via confluent-kafka, half via aiokafka)."""
    from rich.console import Console
    from rich.table import Table

    from behest.errors import BehestError
    from behest.local.simulate import simulate

    config = settings(bootstrap_servers, topic)
    setup_logging(log_level, log_format, Console(stderr=True))
    try:
        summary = simulate(config, runs, concurrency=concurrency, seed=seed, progress=progress)
    except BehestError as exc:
        raise fail(exc) from None
    console = Console()
    console.print(
        f"produced [bold]{summary.events}[/] events of {summary.runs} runs to "
        f"{config.topic} at {config.bootstrap} in {summary.seconds:.1f} s "
        f"({summary.events_per_second:,.0f} events/s; seed {summary.seed})"
    )
    statuses = Table("status", "runs", title="runs by outcome", title_justify="left")
    for status, count in summary.statuses.items():
        statuses.add_row(status, str(count))
    console.print(statuses)
    positions = Table("partition", "last offset", title="last delivery", title_justify="left")
    for partition, delivery in summary.last_delivery.items():
        positions.add_row(str(partition), str(delivery.offset))
    console.print(positions)
    console.print("by producer: " + ", ".join(f"{k} {v}" for k, v in summary.by_producer.items()))
    if summary.run_ids:
        console.print(f"first run id: {summary.run_ids[0]}  (behest state RUN_ID)")


# --- project ----------------------------------------------------------------


@app.command("project")
def project(
    until_caught_up: bool = typer.Option(
        False, "--until-caught-up", help="Stop once the log, as it was at start, is folded."
    ),
    rebuild: bool = typer.Option(
        False,
        "--rebuild",
        help="Fold the log from offset 0 into a new generation beside the served one; "
        "readers switch to it once it has caught up (`behest generations` lists them).",
    ),
    projection: str = typer.Option("run_state", "--projection", help=_PROJECTION_HELP),
    bootstrap_servers: BootstrapServers = None,
    topic: Topic = None,
    state_dir: StateDir = None,
    group_id: str | None = typer.Option(
        None, "--group-id", help="Consumer group; default behest.<projection>."
    ),
    batch_size: int = typer.Option(2000, "--batch-size", min=1, help="Records per RocksDB write."),
    session_timeout: float | None = typer.Option(
        None,
        "--session-timeout",
        min=1.0,
        help="Seconds of silence before the group moves this projector's partitions "
        "(env BEHEST_SESSION_TIMEOUT; default 10).",
    ),
    static_membership: bool | None = typer.Option(
        None,
        "--static-membership/--dynamic-membership",
        help="Rejoin as the same group member after a restart, taking the partitions back at "
        "once (env BEHEST_STATIC_MEMBERSHIP; default static).",
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        envvar="BEHEST_METRICS_PORT",
        min=0,
        max=65535,
        help="Serve Prometheus metrics on this port at /metrics (env BEHEST_METRICS_PORT; "
        "default: off).",
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", "--metrics-host", help="Interface the metrics port binds."
    ),
    log_level: LogLevel = Level.info,
    log_format: LogFormat = Format.text,
    advertise: Advertise = None,
) -> None:
    """Fold the event log into RocksDB, exactly once; Ctrl-C stops after the batch in hand."""
    import logging
    import signal
    import time
    from contextlib import nullcontext

    from rich.console import Console
    from rich.live import Live
    from rich.markup import render

    from behest.errors import BehestError, ConfigError
    from behest.fold.catalog import load_projection
    from behest.fold.projector import Projector, ProjectorMetrics

    try:
        chosen = load_projection(projection)
    except BehestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    config = settings(bootstrap_servers, topic, state_dir)
    membership = {"session_timeout": session_timeout, "static_membership": static_membership}
    config = config.model_copy(update={k: v for k, v in membership.items() if v is not None})
    if advertise is not None:  # a split deployment: `behest serve --advertise` routes by it
        from behest.cluster.node import node_settings

        config = node_settings(config, advertise)
    try:
        _telemetry(config, f"behest-projector-{projection}")
    except BehestError as exc:
        raise fail(exc) from None
    console = Console(stderr=True)
    setup_logging(log_level, log_format, console)
    log = logging.getLogger("behest.project")
    # the live line and rich text on a terminal; log lines (text or JSON) elsewhere
    live = None
    if console.is_terminal and log_format is Format.text:
        live = Live(console=console, refresh_per_second=4)

    def say(markup: str) -> None:
        if live is not None:
            console.print(markup)
        else:
            log.info("%s", render(markup).plain)

    started = time.monotonic()
    rate = {"at": started, "folded": 0, "per_second": 0.0, "printed": started}

    def line(metrics: ProjectorMetrics) -> str:
        return (
            f"[bold]{metrics.projection}[/] folded {metrics.events_folded:,} events · "
            f"{rate['per_second']:,.0f} ev/s · lag {metrics.total_lag:,} · "
            f"dead letters {metrics.dead_letters:,} · duplicates {metrics.duplicates:,} · "
            f"gaps {metrics.gaps:,} · partitions {list(metrics.assigned)}"
        )

    def progress(metrics: ProjectorMetrics) -> None:
        """The live line on a terminal; elsewhere (logs, pipes) a line every 10 s."""
        now = time.monotonic()
        if now - rate["at"] >= 1.0:
            rate["per_second"] = (metrics.events_folded - rate["folded"]) / (now - rate["at"])
            rate["at"], rate["folded"] = now, metrics.events_folded
        if live is not None:
            live.update(line(metrics))
        elif now - rate["printed"] >= 10.0:
            rate["printed"] = now
            say(line(metrics))

    try:
        projector = Projector(
            config,
            chosen,
            group_id=group_id,
            batch_size=batch_size,
            on_progress=progress,
            on_batch=_span_export() if chosen.name == "otel" else None,
        )
    except BehestError as exc:
        raise fail(exc) from None
    exporter = None
    if metrics_port is not None:
        from behest.read.metrics import ProjectorExporter

        try:
            exporter = ProjectorExporter(lambda: projector.metrics, metrics_host, metrics_port)
        except OSError as exc:
            projector.close()
            why = f"cannot serve metrics on {metrics_host}:{metrics_port} ({exc.strerror})"
            raise fail(ConfigError(f"{why}: choose a free --metrics-port")) from None

    def stop(signum: int, _frame: object) -> None:
        say(f"{signal.Signals(signum).name}: finishing the batch in hand…")
        projector.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    member = f"static member {projector.instance_id}" if projector.instance_id else "dynamic member"
    try:
        with projector, live or nullcontext():
            say(
                f"projecting {config.topic!r} at {config.bootstrap} into {projector.path} "
                f"(group {projector.group_id}, {member}, "
                f"session timeout {config.session_timeout:g} s)"
                + (f"; metrics at {exporter.url}" if exporter else "")
            )
            if rebuild:
                metrics = projector.rebuild(until_caught_up=until_caught_up)
            else:
                metrics = projector.run(until_caught_up=until_caught_up)
    except BehestError as exc:
        raise fail(exc) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if exporter is not None:
            exporter.close()
    elapsed = time.monotonic() - started
    say(
        f"{'caught up' if until_caught_up else 'stopped cleanly'}: read "
        f"{metrics.records:,} records in {elapsed:.1f} s "
        f"({metrics.records / max(elapsed, 1e-9):,.0f}/s), folded "
        f"{metrics.events_folded:,} events; {metrics.dead_letters:,} dead letters, "
        f"{metrics.duplicates:,} duplicates, {metrics.gaps:,} gaps, "
        f"{metrics.late_repaired:,} late repaired"
    )


# --- serve / state ----------------------------------------------------------


def _wait_for_state(config: Settings, names: list[str], wait: float) -> None:
    """Wait until each projection's state exists: a server started beside a fresh projector
    (compose starts both at once) waits for it instead of exiting and being restarted."""
    import time

    deadline = time.monotonic() + wait
    for name in names:
        path = config.state_dir / name
        while not (path / "CURRENT").exists() and time.monotonic() < deadline:  # RocksDB's
            if wait:
                typer.echo(
                    f"waiting up to {wait:g} s for the projector's state at {path}", err=True
                )
                wait = 0.0  # say it once
            time.sleep(0.5)


def _open_readers(
    config: Settings, specs: list[str], wait: float
) -> tuple[RunStateQuery | None, list[ProjectionReader[Any]]]:
    """The run-state query (when run_state is among `specs`) and a reader per projection."""
    from behest.fold.catalog import load_projection
    from behest.read.query import RunStateQuery
    from behest.read.reader import ProjectionReader

    projections = [load_projection(spec) for spec in dict.fromkeys(specs)]
    _wait_for_state(config, [p.name for p in projections], wait)
    query = None
    readers: list[ProjectionReader[Any]] = []
    try:
        for projection in projections:
            if projection.name == "run_state" and query is None:
                query = RunStateQuery.open(config)
                readers.append(query.reader)
            else:
                readers.append(ProjectionReader.open(config, projection))
    except BaseException:
        for reader in readers:
            reader.close()
        raise
    return query, readers


@app.command("serve")
def serve_command(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to bind; the default keeps the API on this host."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port to listen on."),
    projection: Annotated[
        list[str] | None,
        typer.Option(
            "--projection",
            help=_PROJECTION_HELP + " Repeat to serve several (default: run_state, which "
            "also answers /runs).",
        ),
    ] = None,
    state_dir: StateDir = None,
    topic: Topic = None,
    wait: float = typer.Option(
        0.0,
        "--wait",
        min=0.0,
        help="Seconds to wait for the projector to create its state (0: fail at once).",
    ),
    ready_max_lag: float = typer.Option(
        30.0,
        "--ready-max-lag",
        envvar="BEHEST_READY_MAX_LAG",
        min=0.0,
        help="/readyz answers 503 when the projector is more seconds behind the log than "
        "this (env BEHEST_READY_MAX_LAG).",
    ),
    log_level: LogLevel = Level.info,
    log_format: LogFormat = Format.text,
    advertise: Advertise = None,
    group_id: GroupId = None,
    bootstrap_servers: BootstrapServers = None,
    standby_replicas: int = typer.Option(
        0, "--standby-replicas", min=0, help="With --advertise: partitions to keep warm copies of."
    ),
) -> None:
    """Serve the HTTP query API (OpenAPI at /openapi.json) beside a running projector;
    with --advertise, beside `behest project --advertise` processes of a cluster, answering
    for every run (see `behest node`)."""
    from rich.console import Console

    from behest.errors import BehestError
    from behest.read.health import ProjectorWatch
    from behest.read.http import serve

    config = settings(bootstrap_servers, topic, state_dir)
    setup_logging(log_level, log_format, Console(stderr=True))
    try:
        _telemetry(config, "behest-serve")
        query, readers = _open_readers(config, projection or ["run_state"], wait)
    except BehestError as exc:
        raise fail(exc) from None
    routed = None
    if advertise is not None and query is not None:
        from behest.cluster.node import RoutedAPI

        routed = RoutedAPI(
            query,
            config,
            url=advertise,
            group_id=group_id or "behest.run_state",
            standby_replicas=standby_replicas,
        ).start()
    try:
        served = ", ".join(f"{r.name} ({r.store.path})" for r in readers)
        typer.echo(
            f"serving {served} of {config.topic} on http://{host}:{port} "
            "(OpenAPI: /openapi.json, docs: /docs); Ctrl-C stops",
            err=True,
        )
        serve(
            query,
            host=host,
            port=port,
            projections=readers,
            log_level=log_level.value,
            telemetry=config.otel,
            watch=ProjectorWatch.of(config.state_dir, readers[0].name, max_lag=ready_max_lag),
            wrap=None if routed is None else routed.wrap,
        )
    finally:
        if routed is not None:
            routed.close()
        for reader in readers:
            reader.close()


app.command("node")(node_command)


@app.command("state")
def state_command(
    run_id: str = typer.Argument(..., help="The run id (a UUID), or another projection's key."),
    as_of: str | None = typer.Option(
        None, "--as-of", help="RFC 3339 time, e.g. 2026-11-20T14:03:07Z: the state back then."
    ),
    at_sequence: int | None = typer.Option(
        None, "--at-sequence", help="The state after folding events up to this sequence."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the contract's JSON instead."),
    projection: str = typer.Option("run_state", "--projection", help=_PROJECTION_HELP),
    state_dir: StateDir = None,
    topic: Topic = None,
) -> None:
    """Print one state: a run's (current, as of a time, or at a sequence), or, with
    --projection, the state of any projection under a key (printed as JSON)."""
    import orjson
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from behest.errors import BehestError
    from behest.events import KnownFinishReason, RunState
    from behest.fold.catalog import load_projection
    from behest.fold.projection import parse_key
    from behest.read.projection_query import ProjectionQuery
    from behest.read.reader import Absent, ProjectionReader
    from behest.times import format_time, parse_time

    config = settings(topic=topic, state_dir=state_dir)
    try:
        chosen = load_projection(projection)
        moment = None if as_of is None else parse_time(as_of)
        with ProjectionReader.open(config, chosen) as reader:
            query = ProjectionQuery(reader, reader.state_json or bytes)
            found = query.find_at(parse_key(chosen, run_id), as_of=moment, at_sequence=at_sequence)
    except BehestError as exc:
        raise fail(exc) from None
    if isinstance(found, Absent):
        point = f" as of {as_of}" if as_of else f" at sequence {at_sequence}"
        what = "run" if chosen.name == "run_state" else f"{chosen.name} key"
        why = (
            f"had no event{point}"
            if found is Absent.NOT_YET
            else f"is unknown in {config.state_dir}"
        )
        typer.echo(f"error: {what} {run_id} {why}", err=True)
        raise typer.Exit(1)
    if as_json or chosen.name != "run_state":
        typer.echo(found.decode())
        return
    data = found
    state = RunState.model_validate_json(data)
    colour = {"completed": "green", "failed": "red", "cancelled": "yellow"}
    usage = state.total_usage
    finish = state.last_finish
    if finish is None:
        finish_text = "-"
    elif isinstance(finish, KnownFinishReason):
        finish_text = finish.value
    else:
        finish_text = f"unknown: {finish.unknown}"
    table = Table(show_header=False, title=f"run {state.run_id}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("status", f"[{colour.get(state.status.value, 'cyan')}]{state.status.value}[/]"),
        ("session", str(state.session_id or "-")),
        ("provider / model", f"{state.provider or '-'} / {state.model or '-'}"),
        ("iteration", str(state.iteration)),
        (
            "tokens in / out / total",
            f"{usage.input_tokens:,} / {usage.output_tokens:,} / {usage.total_tokens:,}",
        ),
        ("last finish", finish_text),
        ("last error", state.last_error or "-"),
        ("events / last sequence", f"{state.event_count} / {state.sequence}"),
        ("created", format_time(state.created_at)),
        ("updated", format_time(state.updated_at)),
        ("metadata", orjson.dumps(state.metadata).decode()),
    ]
    for name, value in rows:
        table.add_row(name, value if name == "status" else escape(value))
    if as_of or at_sequence is not None:
        table.caption = f"as of {as_of}" if as_of else f"at sequence {at_sequence}"
    Console().print(table)


# --- demo -------------------------------------------------------------------


@app.command("watch")
def watch_command(
    run_id: str = typer.Argument(..., help="The run id (a UUID); it need not exist yet."),
    url: str | None = typer.Option(
        None, "--url", help="Watch through a behest server (e.g. http://127.0.0.1:8000)."
    ),
    from_sequence: int | None = typer.Option(
        None, "--from-sequence", min=0, help="Replay the stored events from this sequence on."
    ),
    state_dir: StateDir = None,
    topic: Topic = None,
) -> None:
    """A live terminal view of one run (status, iteration, tokens, the model's text, the
    latest events) until it ends; from the state dir, or through a server with --url."""
    from behest.commands.watch import show
    from behest.errors import BehestError
    from behest.events import parse_run_id

    try:
        run = parse_run_id(run_id)
        if url is not None:
            from behest.client import RunStateClient

            with RunStateClient(url) as client:
                show(str(run), client.watch(run, from_sequence=from_sequence))
        else:
            from behest.read.query import RunStateQuery

            with RunStateQuery.open(settings(topic=topic, state_dir=state_dir)) as query:
                show(str(run), query.watch(run, from_sequence=from_sequence))
    except BehestError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command("demo")
def demo_command(
    runs: int = typer.Option(300, "--runs", min=1, help="Agent runs to simulate."),
    concurrency: int = typer.Option(48, "--concurrency", min=1, help="Runs in flight at once."),
    partitions: int = typer.Option(6, "--partitions", min=1, help="Partitions of a new topic."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the simulated traffic."),
    port: int = typer.Option(8000, "--port", help="HTTP API port (a free one if taken)."),
    keep_running: bool = typer.Option(
        False, "--keep-running", help="Keep the broker, projector and API up until Ctrl-C."
    ),
    bootstrap_servers: BootstrapServers = None,
    topic: Topic = None,
    state_dir: StateDir = None,
) -> None:
    """The main job end to end: broker, topic, traffic, projection, queries, HTTP."""
    import logging

    from behest.errors import BehestError
    from behest.local.demo import run_demo

    for name in ("behest.librdkafka", "behest.emit.producer.librdkafka"):  # transient retries
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        run_demo(
            settings(bootstrap_servers, topic, state_dir),
            runs=runs,
            concurrency=concurrency,
            partitions=partitions,
            seed=seed,
            port=port,
            keep_running=keep_running,
        )
    except BehestError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: stopped what the demo started", err=True)
        raise typer.Exit(130) from None


if __name__ == "__main__":
    app()
