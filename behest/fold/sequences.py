"""Per-run sequence bookkeeping: which of a run's sequences were folded and which are missing.

The wire contract's rule (a run's events carry 0, 1, 2, …): an event whose sequence was
already folded, with the same bytes, is a duplicate and is skipped; one that arrives after
a higher sequence is late and is folded in its place; a different event under a folded
sequence is a conflict and is dead-lettered. To tell "late" from "duplicate" without
reading the run's events back, each run keeps a `RunHead`: the highest sequence seen and
the ranges below it that were never folded (its gaps). A late event fills (part of) a gap;
an event a fold refused reopens one, so a replay after a fix is late, not a duplicate.
"""

from __future__ import annotations

import bisect
import struct
from typing import Final, NamedTuple

__all__ = ["MAX_GAPS", "HeadCursor", "RunHead", "decode_head", "encode_head"]

MAX_GAPS: Final = 1024
"""Gaps remembered per run; beyond, the lowest are forgotten. A run-keyed projection still
folds a late event into a forgotten gap (no event is stored under its sequence); another
projection then counts it as a duplicate."""

_PAIR = struct.Struct(">QQ")
_ABOVE_ALL: Final = 1 << 64
_new_tuple = tuple.__new__

Gap = tuple[int, int]
"""An inclusive range of sequences never folded, `(first, last)`."""


class RunHead(NamedTuple):
    """The highest sequence seen of a run, and the gaps below it, lowest first."""

    last: int
    missing: tuple[Gap, ...] = ()

    @property
    def gaps(self) -> int:
        """Gaps still open (a late event that fills one closes it)."""
        return len(self.missing)

    @classmethod
    def first(cls, sequence: int) -> RunHead:
        """The head after a run's first event: sequences before it are missing."""
        return cls(sequence, ((0, sequence - 1),) if sequence else ())

    def is_missing(self, sequence: int) -> bool:
        """Whether `sequence` (at most `last`) lies in a gap."""
        missing = self.missing
        if not missing:
            return False
        at = bisect.bisect_right(missing, (sequence, _ABOVE_ALL)) - 1
        return at >= 0 and missing[at][0] <= sequence <= missing[at][1]

    def advance(self, sequence: int) -> RunHead:
        """The head after `sequence` > `last`; what lies between is a new gap."""
        if sequence == self.last + 1:  # the hot path: skip NamedTuple's slower __new__
            return _new_tuple(RunHead, (sequence, self.missing))
        return RunHead(sequence, _bounded((*self.missing, (self.last + 1, sequence - 1))))

    def fill(self, sequence: int) -> RunHead:
        """The head once `sequence`, missing until now, is folded."""
        missing = list(self.missing)
        at = bisect.bisect_right(missing, (sequence, _ABOVE_ALL)) - 1
        first, last = missing.pop(at)
        if sequence < last:
            missing.insert(at, (sequence + 1, last))
        if first < sequence:
            missing.insert(at, (first, sequence - 1))
        return RunHead(self.last, tuple(missing))

    def reopen(self, sequence: int) -> RunHead:
        """The head once `sequence` turned out not to be folded after all (a fold refused it)."""
        if sequence > self.last or self.is_missing(sequence):
            return self
        merged: list[Gap] = []
        for first, last in sorted((*self.missing, (sequence, sequence))):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        return RunHead(self.last, _bounded(tuple(merged)))


class HeadCursor:
    """A run's head while one batch is checked, and its epoch (the batch's tombstones of it
    so far). Mutable, so the hot path, the next sequence in order, is one comparison and
    one store (`last = sequence`) instead of a new `RunHead` per event. A run without a head
    (none stored, or reset by a tombstone) has `last` -1 and no gaps: the next sequence, 0,
    is then in order, and any other opens the gap below it, as `RunHead.first` does."""

    __slots__ = ("epoch", "last", "missing")

    def __init__(self, head: RunHead | None) -> None:
        self.last: int = -1
        self.missing: tuple[Gap, ...] = ()
        if head is not None:
            self.last, self.missing = head
        self.epoch = 0

    def head(self) -> RunHead | None:
        """The head as it is now (None: the run has none)."""
        return None if self.last < 0 else _new_tuple(RunHead, (self.last, self.missing))

    def move(self, head: RunHead) -> None:
        """Take `head` (from `RunHead`'s rules) as the run's head."""
        self.last, self.missing = head

    def reset(self) -> None:
        """The run's tombstone: no head, a new epoch."""
        self.last, self.missing = -1, ()
        self.epoch += 1


def _bounded(missing: tuple[Gap, ...]) -> tuple[Gap, ...]:
    return missing[-MAX_GAPS:] if len(missing) > MAX_GAPS else missing


def encode_head(head: RunHead) -> bytes:
    """`last ‖ gap count ‖ (first, last) per gap`, 8-byte big-endian integers."""
    pack = _PAIR.pack
    return pack(head.last, len(head.missing)) + b"".join(pack(a, b) for a, b in head.missing)


def decode_head(data: bytes) -> RunHead:
    """A head back from its bytes (a 16-byte head of an older store has no gap ranges)."""
    last, count = _PAIR.unpack_from(data)
    if len(data) != _PAIR.size * (count + 1):
        return RunHead(last)
    gaps = tuple(_PAIR.unpack_from(data, _PAIR.size * (i + 1)) for i in range(count))
    return RunHead(last, gaps)
