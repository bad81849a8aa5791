"""Batches and listings while a partition has no live owner: answered from standby copies.

A router gathering `POST /runs/batch` or `GET /runs` sends the part of an ownerless
partition to a node that keeps a standby copy of it, with `X-Behest-Scope: standby`
(and, for a listing, the partitions wanted in `X-Behest-Partitions`). That node answers
from its copy only, flagged like a single read: `X-Behest-Stale: true`,
`X-Behest-Lag-Records` and `X-Behest-Lag-Seconds`. The gathered answer carries the flags
of the stalest copy it used, so a client always knows that part of it may be behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from behest.cluster.asgi import header, read_body, replay
from behest.cluster.pages import parse_batch
from behest.emit.partitioner import partition_for

if TYPE_CHECKING:
    from behest.cluster.membership import Membership
    from behest.cluster.standby import Staleness, StandbyCopies

__all__ = [
    "HEADER_LAG_RECORDS",
    "HEADER_LAG_SECONDS",
    "HEADER_STALE",
    "SCOPE_STANDBY",
    "StandbyReads",
    "stale_flags",
    "staleness_of",
]

HEADER_STALE: Final = "x-behest-stale"
HEADER_LAG_RECORDS: Final = "x-behest-lag-records"
HEADER_LAG_SECONDS: Final = "x-behest-lag-seconds"
SCOPE_STANDBY: Final = "standby"
"""`X-Behest-Scope` of a part to answer from this node's standby copies only."""


def stale_flags(found: Iterable[Staleness]) -> list[tuple[bytes, bytes]]:
    """The staleness headers for an answer made of copies this stale (the worst of them);
    none when no copy was used."""
    copies = list(found)
    if not copies:
        return []
    records = max(r for r, _ in copies)
    seconds = max(s for _, s in copies)
    return [
        (HEADER_STALE.encode(), b"true"),
        (HEADER_LAG_RECORDS.encode(), str(records).encode()),
        (HEADER_LAG_SECONDS.encode(), f"{seconds:.3f}".encode()),
    ]


def staleness_of(headers: Mapping[str, str]) -> Staleness | None:
    """The staleness a node flagged its answer with (None: a current answer)."""
    if headers.get(HEADER_STALE) != "true":
        return None
    try:
        return int(headers[HEADER_LAG_RECORDS]), float(headers[HEADER_LAG_SECONDS])
    except (KeyError, ValueError):
        return 0, 0.0


class StandbyReads:
    """The standby node's half: answer a scattered part from the standby copies."""

    membership: Membership
    standby: StandbyCopies | None
    standby_app: ASGIApp | None

    async def _unavailable(
        self, send: Send, partition: int, owner: str | None, *, reason: str | None = None
    ) -> None:
        raise NotImplementedError

    async def _partition_listing(
        self,
        scope: Scope,
        send: Send,
        app: ASGIApp,
        partitions: frozenset[int],
        flags: list[tuple[bytes, bytes]],
    ) -> None:
        raise NotImplementedError

    def _copies(self, partitions: Iterable[int]) -> dict[int, Staleness]:
        """This node's copies of `partitions` that were at the log's end once."""
        found: dict[int, Staleness] = {}
        if self.standby is None:
            return found
        for partition in partitions:
            staleness = self.standby.staleness(partition)
            if staleness is not None:
                found[partition] = staleness
        return found

    async def _standby_batch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A part of a batch whose runs' partitions have no live owner: from the copies,
        flagged; a 503 if this node has no copy of one of them."""
        body = await read_body(receive)
        request = parse_batch(body)
        count = self.membership.view.partitions
        wanted = set() if request is None or not count else request[0]
        partitions = {partition_for(run_id, count) for run_id in wanted}
        copies = self._copies(partitions)
        lacking = sorted(partitions - set(copies))
        if lacking or self.standby_app is None:
            await self._unavailable(send, lacking[0] if lacking else 0, None)
            return
        flags = stale_flags(copies.values())

        async def flagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *flags]}
            await send(message)

        await self.standby_app(scope, replay(body), flagged)

    async def _standby_listing(self, scope: Scope, send: Send) -> None:
        """A listing's page over the partitions asked for (`X-Behest-Partitions`) that
        this node keeps copies of, flagged; it says which it answered for."""
        from behest.cluster.gather import HEADER_PARTITIONS

        asked = header(scope, HEADER_PARTITIONS) or ""
        wanted = {int(p) for p in asked.split(",") if p.strip().isdigit()}
        copies = self._copies(wanted)
        if not copies or self.standby_app is None:
            await self._unavailable(send, min(wanted, default=0), None)
            return
        await self._partition_listing(
            scope, send, self.standby_app, frozenset(copies), stale_flags(copies.values())
        )
