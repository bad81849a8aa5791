"""The fold of one entity's events: where its snapshots fall."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from behest.fold.refold import Item, _snapshot_points


@given(st.sets(st.integers(0, 300), max_size=80), st.integers(0, 40))
def test_snapshots_fall_where_each_sequence_ends_a_stretch(sequences: set[int], every: int) -> None:
    """The stretch-wise fold snapshots exactly the items a per-event test would."""
    items: list[Item] = [(s, None, b"", None, b"", 0, False) for s in sorted(sequences)]  # type: ignore[misc]
    expected = [i for i, item in enumerate(items) if every and (item[0] + 1) % every == 0]
    assert _snapshot_points(items, every) == expected
