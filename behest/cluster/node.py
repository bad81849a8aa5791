"""`behest node`: one full instance — projector workers plus the HTTP API that answers for
every run (contract §6).

    main process ── HTTP API (uvicorn) ── Router ── Membership (describes the group)
         │                                              Ownership (what this node serves)
         └── worker processes 1..N: a Projector each, in the projection's consumer group,
             advertising this node's URL in its client.id; each reports what it holds

Workers are processes, not threads, so a node folds on every core. Each reports its
assigned partitions and folded offsets to the main process several times a second; an
assignment change there asks the membership for a fresh description at once.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Final

from behest.cluster.membership import Membership, client_id_for
from behest.config import Settings
from behest.errors import BehestError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from behest.cluster.standby import StandbyCopies
    from behest.read.query import RunStateQuery

__all__ = ["Node", "RoutedAPI", "WorkerReport", "node_settings", "run_node", "worker_count"]

log = logging.getLogger(__name__)

_REPORT_EVERY: Final = 0.05
_STOP_TIMEOUT: Final = 30.0
_HANDOVER_TIMEOUT: Final = 5.0
"""Seconds a worker giving partitions up waits for its node to stop serving them."""
_JOIN_TOGETHER_TIMEOUT: Final = 30.0
"""Seconds a worker waits for its siblings, and for the node's HTTP API and membership to be
up, before it joins the group (then joins)."""


@dataclass(frozen=True)
class WorkerReport:
    """What a worker holds right now (sent to the node's main process)."""

    worker: int
    assigned: tuple[int, ...]
    positions: dict[int, int]
    revision: int = 0
    """Non-zero: the worker waits until the node acknowledges this report (a revocation)."""


def node_settings(settings: Settings, url: str, **kafka: Any) -> Settings:
    """`settings` whose Kafka clients advertise `url` to the group (and any extra config)."""
    config = {**settings.kafka_config, "client.id": client_id_for(url), **kafka}
    return settings.model_copy(update={"kafka_config": config})


def _worker(
    settings_data: dict[str, Any],
    projection_name: str,
    group_id: str,
    index: int,
    reports: Any,
    stop: Any,
    acks: Any,
    ready: Any,
) -> None:
    """A worker process: one Projector in the group, reporting what it holds."""
    from behest.fold.catalog import load_projection
    from behest.fold.projector import Projector
    from behest.logs import setup_logging_from_env

    setup_logging_from_env()  # as the node's command set it up
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node's main process decides when to stop
    settings = Settings.model_validate(settings_data)

    revisions = itertools.count(1)

    class Reporting(Projector):
        """Tells the node of a revocation and waits (bounded) until the node stopped
        answering for those partitions, before giving them up: their next owner can fold
        nothing this node would still answer as current.

        Joins the group together with the node's other workers: the first one to join
        alone would be assigned every partition and fold them all, unevenly, until it
        heard of the next one's join (a heartbeat later), then give most of them up. And
        only once the node's main process is up (`Node.let_join`): its start-up (the HTTP
        API, the group describer's interpreter) would otherwise take CPU from the fold."""

        def _prepare(self, consumer: Any, partitions: list[int], *, rebuild: bool) -> Any:
            writer = super()._prepare(consumer, partitions, rebuild=rebuild)
            try:  # every worker is started and has its consumer: join now
                ready.wait(_JOIN_TOGETHER_TIMEOUT)
            except threading.BrokenBarrierError:
                log.warning("worker %d: joining without its siblings (not ready in time)", index)
            return writer

        def _on_revoke(self, consumer: Any, partitions: list[Any], *, lost: bool = False) -> None:
            gone = {tp.partition for tp in partitions}
            held = tuple(p for p in self.metrics.assigned if p not in gone)
            revision = next(revisions)
            reports.put(WorkerReport(index, held, dict(self.metrics.positions), revision))
            deadline = time.monotonic() + _HANDOVER_TIMEOUT
            while acks[index] < revision and time.monotonic() < deadline:
                time.sleep(0.002)
            super()._on_revoke(consumer, partitions, lost=lost)

    projector = Reporting(
        settings, load_projection(projection_name), group_id=group_id, worker=f"w{index}"
    )
    signal.signal(signal.SIGTERM, lambda _signum, _frame: projector.stop())
    stopping = threading.Event()

    parent = os.getppid()

    def report() -> None:
        last: tuple[tuple[int, ...], dict[int, int]] | None = None
        while not stopping.wait(_REPORT_EVERY):
            if stop.is_set() or os.getppid() != parent:  # asked to, or orphaned: leave
                projector.stop()
            metrics = projector.metrics
            current = (metrics.assigned, dict(metrics.positions))
            if current != last:
                reports.put(WorkerReport(index, *current))
                last = current

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    with projector:
        gc.collect()  # as `behest project` does: full collections over the start-up
        gc.freeze()  # objects paused the fold for 40-80 ms every few seconds
        projector.run()
    stopping.set()
    reports.put(WorkerReport(index, (), {}))


class Node:
    """Worker processes and what the main process knows of them."""

    def __init__(
        self,
        settings: Settings,
        *,
        url: str,
        workers: int,
        projection: str = "run_state",
        group_id: str | None = None,
    ) -> None:
        self.settings = node_settings(settings, url)
        self.url = url
        self.workers = workers
        self.projection = projection
        self.group_id = group_id or f"behest.{projection}"
        self._context = multiprocessing.get_context("spawn")
        self._reports: Any = self._context.Queue()
        self._stop = self._context.Event()
        self._acks: Any = self._context.Array("q", max(workers, 1))
        self._ready: Any = self._context.Barrier(max(workers, 1) + 1)  # + the main process
        self._processes: list[BaseProcess] = []
        self._held: dict[int, WorkerReport] = {}
        self._lock = threading.Lock()
        self.membership: Membership | None = None
        self.on_moved: Callable[[set[int]], None] | None = None
        """Told of partitions a worker lost or gained: they must catch up again."""
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._stopping = False

    def start(self) -> Node:
        for index in range(self.workers):
            process = self._context.Process(
                target=_worker,
                args=(
                    self.settings.model_dump(mode="json"),
                    self.projection,
                    self.group_id,
                    index,
                    self._reports,
                    self._stop,
                    self._acks,
                    self._ready,
                ),
                name=f"behest-worker-{index}",
                daemon=False,
            )
            process.start()
            self._processes.append(process)
        self._listener.start()
        return self

    def let_join(self) -> None:
        """The node is up: its workers may join the group (each waits for this, bounded by
        `_JOIN_TOGETHER_TIMEOUT`). Returns at once."""

        def release() -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                self._ready.wait(_JOIN_TOGETHER_TIMEOUT)

        threading.Thread(target=release, name="behest-let-join", daemon=True).start()

    def assigned(self) -> frozenset[int]:
        """Partitions this node's workers hold right now."""
        with self._lock:
            return frozenset(p for r in self._held.values() for p in r.assigned)

    def shares(self) -> dict[int, tuple[int, ...]]:
        """Partitions each worker (by index) holds right now, as it last reported."""
        with self._lock:
            return {worker: report.assigned for worker, report in self._held.items()}

    def folded(self) -> Mapping[int, int]:
        """Next offset folded per partition held, as the workers holding them report it."""
        with self._lock:
            return {
                p: o for r in self._held.values() for p, o in r.positions.items() if p in r.assigned
            }

    def dead_workers(self) -> list[int]:
        """Workers that exited while the node was not stopping."""
        if self._stopping:
            return []
        return [i for i, p in enumerate(self._processes) if not p.is_alive()]

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Ask every worker to finish its batch and leave the group; kill stragglers."""
        self._stopping = True
        self._stop.set()
        deadline = time.monotonic() + timeout
        for process in self._processes:
            process.join(max(deadline - time.monotonic(), 0.1))
        for process in self._processes:
            if process.is_alive():
                log.warning("worker %s did not stop in %.0f s: killed", process.name, timeout)
                process.kill()
                process.join(5)

    def _listen(self) -> None:
        while True:
            try:
                report: WorkerReport = self._reports.get(timeout=1.0)
            except queue.Empty:
                if self._stopping and not any(p.is_alive() for p in self._processes):
                    return
                continue
            except (EOFError, OSError):
                return
            with self._lock:
                before = self._held.get(report.worker)
                self._held[report.worker] = report
            moved = set(report.assigned) ^ set(() if before is None else before.assigned)
            if moved and self.on_moved is not None:
                self.on_moved(moved)
            if report.revision:
                self._acks[report.worker] = report.revision  # the worker may give them up now
            if self.membership is not None and (
                before is None or before.assigned != report.assigned
            ):
                self.membership.refresh_soon()


class RoutedAPI:
    """What makes an HTTP API answer for every run of the group: membership, ownership,
    and `wrap(app)`, the router in front of the app. Owns the membership thread.

    `folded` and `assigned` come from this node's workers (`Node`) or, beside a separate
    `behest project`, from the store alone.
    """

    def __init__(
        self,
        query: RunStateQuery,
        settings: Settings,
        *,
        url: str,
        group_id: str,
        standby_replicas: int = 0,
        folded: Callable[[], Mapping[int, int]] | None = None,
        assigned: Callable[[], frozenset[int]] | None = None,
    ) -> None:
        from behest.cluster.ownership import Ownership

        self.url = url.rstrip("/")
        self.membership = Membership(
            node_settings(settings, self.url), group_id, standby_replicas=standby_replicas
        )
        self.ownership = Ownership(
            self.url,
            self.membership,
            folded or (lambda: query.freshness().offsets),
            assigned,
            seen=None if folded is None else lambda: _caught_up_offsets(query),
        )
        self.membership.on_view = self.ownership.update
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per forwarded request
        self.standby: StandbyCopies | None = None
        if standby_replicas > 0:
            from behest.cluster.standby import StandbyCopies

            self.standby = StandbyCopies(settings, self.membership, self.url)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """`app` behind the router (which answers from the standby copies when it must)."""
        from behest.cluster.routing import Router
        from behest.read.http import create_app

        standby_app = None if self.standby is None else create_app(self.standby.query)
        return Router(
            app,
            url=self.url,
            membership=self.membership,
            ownership=self.ownership,
            standby=self.standby,
            standby_app=standby_app,
        )

    def start(self) -> RoutedAPI:
        self.membership.start()
        if self.standby is not None:
            self.standby.start()
        return self

    def close(self) -> None:
        if self.standby is not None:
            self.standby.close()
        self.membership.close()


def _caught_up_offsets(query: RunStateQuery) -> Mapping[int, int]:
    """The next offsets the HTTP API's reader sees, once it caught up with the workers."""
    query.reader.refresh(force=True)
    return query.reader.freshness().offsets


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, minus re-raising the signal that stopped it: the node still
        has to stop its workers (they would be left folding, as orphans, in the group)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def _open_query(settings: Settings, node: Node, deadline: float) -> RunStateQuery:
    """The workers' store as a reader, retried while the workers are still creating it."""
    from behest.read.query import RunStateQuery

    while True:
        try:
            return RunStateQuery.open(settings)
        except BehestError as error:
            if node.dead_workers() or time.monotonic() > deadline:
                raise BehestError(
                    f"the projector workers did not create a readable state in "
                    f"{settings.state_dir} ({error}): see their errors above"
                ) from None
            time.sleep(0.2)


def worker_count(asked: int) -> int:
    """Workers a node runs: as asked, or (0) one per core of the machine.

    They share the node's state dir, each partition's store held by the worker assigned
    it; one that gains a partition from another waits for it to close the store
    (`behest.fold.partitions.GenerationStores.open`)."""
    return asked or os.cpu_count() or 1


def run_node(
    settings: Settings,
    *,
    workers: int,
    host: str,
    port: int,
    advertise: str | None = None,
    standby_replicas: int = 0,
    group_id: str | None = None,
    ready_timeout: float = 120.0,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Run a node until SIGINT/SIGTERM (0) or until a worker dies (1): the exit status."""
    import uvicorn

    from behest.read.http import create_app

    url = (advertise or f"http://{host}:{port}").rstrip("/")
    node = Node(settings, url=url, workers=workers, group_id=group_id).start()
    routed: RoutedAPI | None = None
    query: RunStateQuery | None = None
    try:
        deadline = time.monotonic() + ready_timeout
        query = _open_query(settings, node, deadline)
        routed = RoutedAPI(
            query,
            node.settings,
            url=url,
            group_id=node.group_id,
            standby_replicas=standby_replicas,
            folded=node.folded,
            assigned=node.assigned,
        )
        node.membership = routed.membership
        node.on_moved = routed.ownership.forget
        routed.start()
        config = uvicorn.Config(
            routed.wrap(create_app(query)),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = _server_class()(config)
        failed = threading.Event()

        def watch() -> None:
            announced = False
            while not server.should_exit:
                if node.dead_workers():
                    log.error("a projector worker of %s died: stopping the node", url)
                    failed.set()
                    server.should_exit = True
                    return
                if not announced and server.started:
                    # the API answers; once the describer does too, the workers join the
                    # group: the node's own start-up is over before they fold
                    routed.membership.refresh()
                    node.let_join()
                    if on_ready is not None:
                        on_ready(url)
                    announced = True
                time.sleep(0.01 if not announced else 0.2)

        threading.Thread(target=watch, daemon=True).start()
        server.run()
        return 1 if failed.is_set() else 0
    finally:
        node.stop()
        if routed is not None:
            routed.close()
        if query is not None:
            query.close()
