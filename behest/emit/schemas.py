"""Publishing the writer schema: what both producers send to `<topic>.schemas` first.

Each producer, when it starts, writes one record to the event topic's compacted schemas
topic: key = the 8 fingerprint bytes of the single-object header as 16 lowercase hex
characters, value = the current schema's JSON (`codec.SchemaVersion.record`). Projectors
read it when they meet a fingerprint they do not ship, so events written by a newer behest
(or any producer that publishes the same way) are folded instead of dead-lettered. It goes
in the background: `emit` never waits for it, and a projector waits for a late schema.
"""

from __future__ import annotations

import logging
from typing import Final

from behest import codec

__all__ = ["Publication"]

log = logging.getLogger("behest.emit.schemas")

SUFFIX: Final = ".schemas"


class Publication:
    """The schema record behest's producers publish for one event topic, and the warnings
    about it."""

    __slots__ = ("key", "topic", "value")

    def __init__(self, event_topic: str) -> None:
        self.topic = event_topic + SUFFIX
        self.key, self.value = codec.CURRENT.record()

    def missing(self, bootstrap: str) -> None:
        log.warning(
            "topic %r does not exist at %s, so this producer's writer schema is not published "
            "(projectors of an older behest cannot read its events): run `behest topics create`",
            self.topic,
            bootstrap,
        )

    def failed(self, reason: str) -> None:
        log.warning("the writer schema was not published to %r: %s", self.topic, reason)
