"""Dead-letter messages: whole when they fit, a bounded prefix with the original sizes when not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from behest.fold.deadletter import (
    HEADER_ORIGINAL_KEY_SIZE,
    HEADER_ORIGINAL_SIZE,
    HEADER_TRUNCATED,
    MAX_WHOLE_BYTES,
    PREFIXES,
    _next_cut,
    dead_letter_message,
)
from behest.fold.engine import HEADER_ERROR, HEADER_OFFSET, DeadLetter


def letter(key: bytes | None, value: bytes | None) -> DeadLetter:
    return DeadLetter("events", 1, 7, key, value, "corrupt")


def test_a_record_that_fits_goes_whole() -> None:
    value = b"v" * (MAX_WHOLE_BYTES - 36)
    key, sent, headers = dead_letter_message(letter(b"k" * 36, value))
    assert (key, sent) == (b"k" * 36, value)
    assert dict(headers) == dict(letter(b"k", b"v").headers())


@given(st.integers(MAX_WHOLE_BYTES + 1, 6_000_000), st.integers(0, 5000))
def test_a_bigger_one_goes_as_a_prefix_with_its_sizes(size: int, key_size: int) -> None:
    value, key = bytes(size), b"k" * key_size
    sent_key, sent, headers = dead_letter_message(letter(key, value))
    assert sent == value[: PREFIXES[0]]
    assert sent_key == key[: PREFIXES[0]]
    found = dict(headers)
    assert found[HEADER_ORIGINAL_SIZE] == str(size).encode()
    assert found[HEADER_ORIGINAL_KEY_SIZE] == str(key_size).encode()
    assert found[HEADER_TRUNCATED] == b"true"
    assert (found[HEADER_OFFSET], found[HEADER_ERROR]) == (b"7", b"corrupt")


def test_the_prefix_shrinks_down_to_the_headers_alone() -> None:
    cuts = [_next_cut(None)]
    while cuts[-1] != PREFIXES[-1]:
        cuts.append(_next_cut(cuts[-1]))
    assert cuts == list(PREFIXES)
    assert _next_cut(PREFIXES[-1]) == PREFIXES[-1]
    key, value, headers = dead_letter_message(letter(b"key", b"small"), PREFIXES[-1])
    assert (key, value) == (b"", b"")
    assert dict(headers)[HEADER_ORIGINAL_SIZE] == b"5"
    assert dead_letter_message(letter(None, None), 0)[:2] == (None, None)
