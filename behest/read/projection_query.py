"""Any projection's states, typed: a `ProjectionReader` plus the last step of each read.

with ProjectionQuery.open(Settings(), MyProjection()) as query:
    query.get(b"key")                          # the state, decoded by the projection
    query.get_many([b"a", b"b"])               # one RocksDB multi-get
    query.get_at(run_key, as_of=datetime(...))  # run-keyed projections: back then
    query.raw.get(b"key")                      # the same read, the stored bytes
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Generic, TypeVar

from behest.config import Settings
from behest.fold.projection import Projection
from behest.read.inputs import bounded, check_point
from behest.read.reader import DEFAULT_MAX_STALENESS, Absent, ProjectionReader
from behest.read.states import States

__all__ = ["ProjectionQuery"]

S = TypeVar("S")
T = TypeVar("T")
U = TypeVar("U")


class ProjectionQuery(Generic[T]):
    """A `ProjectionReader` plus the last step of every read: stored bytes to `T`."""

    def __init__(self, reader: ProjectionReader[Any], finish: Callable[[bytes], T]) -> None:
        self.reader = reader
        self.finish = finish

    @staticmethod
    def open(
        settings: Settings,
        projection: Projection[S],
        *,
        secondary: bool = True,
        max_staleness: float = DEFAULT_MAX_STALENESS,
    ) -> ProjectionQuery[S]:
        """States of `projection` as its own `decode_state` gives them back."""
        reader = ProjectionReader.open(
            settings, projection, secondary=secondary, max_staleness=max_staleness
        )
        return ProjectionQuery(reader, projection.decode_state)

    def then(self, finish: Callable[[bytes], U]) -> ProjectionQuery[U]:
        """The same reads with another last step (the store is shared)."""
        return ProjectionQuery(self.reader, finish)

    @property
    def raw(self) -> ProjectionQuery[bytes]:
        """The same reads, answering the stored bytes."""
        return self.then(_identity)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> ProjectionQuery[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, key: bytes) -> T | None:
        """The current state under `key`, or None."""
        data = self.reader.get(key)
        return None if data is None else self.finish(data)

    def get_many(self, keys: Iterable[bytes], *, as_of: datetime | None = None) -> States[bytes, T]:
        """States of up to `MAX_BATCH` keys in one multi-get (None when unknown), in the
        order asked; with `as_of`, each as of that time. Read the answer as a dict: each
        state is decoded when first read (`behest.read.states`)."""
        wanted = list(dict.fromkeys(bounded(keys, "keys")))
        micros, _ = check_point(as_of, None)
        values = self.reader.get_many(wanted, micros)
        finish = None if self.finish is _identity else self.finish
        return States(wanted, wanted, values, finish)

    def find_at(
        self, key: bytes, *, as_of: datetime | None = None, at_sequence: int | None = None
    ) -> T | Absent:
        """The state at the point asked, or why there is none (`Absent`)."""
        micros, sequence = check_point(as_of, at_sequence)
        data = self.reader.get_at(key, micros, sequence)
        return data if isinstance(data, Absent) else self.finish(data)

    def get_at(
        self, key: bytes, *, as_of: datetime | None = None, at_sequence: int | None = None
    ) -> T | None:
        """The state after every event with timestamp <= `as_of` (or sequence <=
        `at_sequence`); None if there was none by then. Neither: the current state."""
        found = self.find_at(key, as_of=as_of, at_sequence=at_sequence)
        return None if isinstance(found, Absent) else found

    def scan(
        self,
        prefix: bytes = b"",
        *,
        after: bytes | None = None,
        before: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, T]]:
        """`(key, state)` under `prefix`, strictly between `after` and `before`, in key
        order (descending with `reverse`)."""
        finish = self.finish
        for key, data in self.reader.scan(prefix, after=after, before=before, reverse=reverse):
            yield key, finish(data)

    def index(
        self,
        prefix: bytes,
        *,
        limit: int,
        after: bytes | None = None,
        before: bytes | None = None,
        reverse: bool = False,
    ) -> tuple[list[tuple[bytes, T]], bytes | None]:
        """A page of `(index key, state)` listed under the index `prefix`, and the index
        key to continue after (`after=`, or `before=` with `reverse`), None after the last."""
        keys = self.reader.index(prefix, after=after, before=before, reverse=reverse)
        found, last = self.reader.listed(keys, limit)
        finish = self.finish
        return [(k, finish(v)) for k, v in found], last


def _identity(data: bytes) -> bytes:
    return data
