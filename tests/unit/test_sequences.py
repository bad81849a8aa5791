"""Per-run heads: a set of folded sequences kept as the highest one and the gaps below it."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from behest.fold.sequences import MAX_GAPS, HeadCursor, RunHead, decode_head, encode_head

SEQUENCES = st.integers(0, 200)


def folded(head: RunHead) -> set[int]:
    """The sequences a head says were folded."""
    return {s for s in range(head.last + 1) if not head.is_missing(s)}


@given(st.lists(SEQUENCES, min_size=1, max_size=60), st.lists(SEQUENCES, max_size=10))
def test_a_head_is_the_set_of_sequences_folded(arrivals: list[int], refused: list[int]) -> None:
    head = RunHead.first(arrivals[0])
    model = {arrivals[0]}
    for sequence in arrivals[1:]:
        if sequence > head.last:
            head = head.advance(sequence)
        elif head.is_missing(sequence):
            head = head.fill(sequence)
        model.add(sequence)
    for sequence in refused:
        head = head.reopen(sequence)
        if sequence <= head.last:
            model.discard(sequence)
    assert folded(head) == model
    assert head.last == max(arrivals)
    # gaps are disjoint, sorted, not adjacent: each is one missing range
    ranges = list(head.missing)
    assert all(a <= b for a, b in ranges)
    assert all(b + 1 < c for (_, b), (c, _) in itertools.pairwise(ranges))
    assert decode_head(encode_head(head)) == head


def test_a_late_event_closes_its_gap_or_splits_it() -> None:
    head = RunHead.first(0).advance(5)
    assert (head.missing, head.gaps) == (((1, 4),), 1)
    assert head.fill(1).missing == ((2, 4),)
    assert head.fill(3).missing == ((1, 2), (4, 4))
    assert head.fill(1).fill(2).fill(3).fill(4).gaps == 0
    assert RunHead.first(3).missing == ((0, 2),)


def test_a_head_of_an_older_store_reads_without_gap_ranges() -> None:
    old = (41).to_bytes(8, "big") + (2).to_bytes(8, "big")
    assert decode_head(old) == RunHead(41)


def test_only_the_newest_gaps_are_remembered() -> None:
    head = RunHead.first(0)
    for sequence in range(2, 2 * (MAX_GAPS + 10), 2):
        head = head.advance(sequence)
    assert head.gaps == MAX_GAPS
    assert head.missing[-1] == (head.last - 1, head.last - 1)


@given(st.one_of(st.none(), st.builds(RunHead.first, SEQUENCES)), st.lists(SEQUENCES, max_size=40))
def test_a_cursor_in_order_is_the_head_advanced(start: RunHead | None, arrivals: list[int]) -> None:
    """The engine's hot path (`last = sequence` when it is `last + 1`, a run without a head
    at -1) keeps the same head as `RunHead.first` / `advance` would."""
    cursor = HeadCursor(start)
    head = start
    for sequence in arrivals:
        if head is None:
            head = RunHead.first(sequence)
        elif sequence > head.last:
            head = head.advance(sequence)
        else:
            continue  # late or repeated: the engine leaves the hot path for RunHead's rules
        if sequence == cursor.last + 1:
            cursor.last = sequence
        else:
            cursor.move(RunHead(cursor.last, cursor.missing).advance(sequence))
        assert cursor.head() == head
    cursor.reset()
    assert (cursor.head(), cursor.epoch) == (None, 1)
