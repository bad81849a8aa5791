"""Serving the HTTP API (`behest.read.http.create_app`) with uvicorn: `serve` in the
foreground of a process of its own (`behest serve`), `BackgroundServer` on a thread beside
a projector or in tests."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from behest.read.health import ProjectorWatch
from behest.read.http import create_app
from behest.read.metrics import MetricsSource
from behest.read.query import RunStateQuery
from behest.read.reader import ProjectionReader

__all__ = ["BackgroundServer", "serve"]


def _config(
    query: RunStateQuery[Any] | None,
    host: str,
    port: int,
    metrics_source: MetricsSource | None,
    log_level: str,
    projections: Sequence[ProjectionReader[Any]] = (),
    watch: ProjectorWatch | None = None,
    *,
    own_logging: bool = False,
    telemetry: bool = False,
    wrap: Callable[[ASGIApp], ASGIApp] | None = None,
) -> uvicorn.Config:
    extra: dict[str, Any] = {"log_config": None} if own_logging else {}
    app = create_app(query, metrics_source, projections, watch, telemetry=telemetry)
    for reader in [*([] if query is None else [query.reader]), *projections]:
        reader.keep_fresh()  # catch-ups off the event loop (until the reader closes)
    app.openapi()  # built now, so `serve` freezes it with the rest
    return uvicorn.Config(
        app if wrap is None else wrap(app),
        host=host,
        port=port,
        log_level=log_level,
        **extra,
        access_log=False,  # /metrics counts requests; a line per request costs throughput
        lifespan="off",
    )


def serve(
    query: RunStateQuery[Any] | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    metrics_source: MetricsSource | None = None,
    log_level: str = "info",
    projections: Sequence[ProjectionReader[Any]] = (),
    watch: ProjectorWatch | None = None,
    telemetry: bool = False,
    wrap: Callable[[ASGIApp], ASGIApp] | None = None,
) -> None:
    """Serve the API until interrupted (Ctrl-C); binds loopback unless told otherwise.
    Logs through the root logger (`behest.logs.setup_logging`), not uvicorn's own setup.
    `wrap` puts a layer in front of the app (`behest.cluster` routes requests so).

    Meant to own its process: it freezes everything allocated so far out of the garbage
    collector's reach, since a full collection over FastAPI's and pydantic's start-up
    objects pauses every request in flight for tens of milliseconds.
    """
    config = _config(
        query,
        host,
        port,
        metrics_source,
        log_level,
        projections,
        watch,
        own_logging=True,
        telemetry=telemetry,
        wrap=wrap,
    )
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run()


class BackgroundServer:
    """The API on a thread of this process, e.g. beside a projector or in tests.

        with BackgroundServer(query) as server:
            httpx.get(f"{server.url}/runs/{run_id}")

    `port=0` picks a free port; `url` says which.
    """

    def __init__(
        self,
        query: RunStateQuery[Any] | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics_source: MetricsSource | None = None,
        log_level: str = "warning",
        projections: Sequence[ProjectionReader[Any]] = (),
        watch: ProjectorWatch | None = None,
    ) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = _config(query, host, self.port, metrics_source, log_level, projections, watch)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the HTTP server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish in-flight requests and stop."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
