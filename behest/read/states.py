"""`States`: the answer of a batch read, building each state only when it is read.

A multi-get of 1,000 stored states takes about a millisecond; turning each into a pydantic
model takes several microseconds more per state, several times the read itself. A caller
of a batch read often looks at a few of the states, or only at which runs are known, so
`get_many` answers the stored bytes wrapped in a mapping that builds a state (e.g. a
`RunState`) the first time it is read, once. Reading them all (`values()`, `items()`,
`pairs()`) builds every state not built yet in one call of `finish_many`: no Python frame
and look-ups per state, and a finisher that builds a batch cheaper than each alone
(`behest.read.run_models`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, ItemsView, Iterator, Mapping, ValuesView
from itertools import compress, repeat
from operator import is_not
from typing import Any, Generic, TypeVar, cast

__all__ = ["States"]

K = TypeVar("K")
V = TypeVar("V")


class States(Mapping[K, V | None], Generic[K, V]):
    """Key -> state (None: nothing stored, or nothing by the point asked), in the order
    asked, duplicates once. Read it as a dict; each state is built on first read."""

    __slots__ = ("_built", "_finish", "_finish_many", "_ids", "_key_of", "_stored")

    def __init__(
        self,
        ids: list[K],
        keys: list[bytes],
        stored: list[bytes | None],
        finish: Callable[[bytes], V] | None,
        key_of: Callable[[Any], Hashable] | None = None,
        finish_many: Callable[[list[bytes]], list[V]] | None = None,
    ) -> None:
        """`ids[i]` is asked as `keys[i]` (its store key, all distinct) and has `stored[i]`;
        `finish` builds a state from stored bytes (None: the stored bytes are the state);
        `key_of` turns an id into its store key (None: ids are store keys); `finish_many`
        builds the states of a list of stored bytes, in order, as `finish` would each
        (None: `finish` on each)."""
        self._ids = ids
        self._stored = dict(zip(keys, stored, strict=True))
        self._finish = finish
        self._finish_many = finish_many
        self._key_of = key_of
        self._built: dict[bytes, V] = {}

    def _state(self, key: bytes, data: bytes | None) -> V | None:
        finish = self._finish
        if data is None or finish is None:
            return cast(V | None, data)
        try:
            return self._built[key]
        except KeyError:
            state = self._built[key] = finish(data)
            return state

    def __getitem__(self, item: K) -> V | None:
        try:
            key = item if self._key_of is None else self._key_of(item)
            data = self._stored[cast(bytes, key)]
        except (KeyError, TypeError, AttributeError):
            raise KeyError(item) from None
        return self._state(cast(bytes, key), data)

    def __contains__(self, item: object) -> bool:
        try:
            key = item if self._key_of is None else self._key_of(item)
            return key in self._stored
        except (TypeError, AttributeError):
            return False

    def __iter__(self) -> Iterator[K]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def _every(self) -> list[V | None]:
        """Every state in the order asked, those not built yet built in one go."""
        stored = self._stored
        finish = self._finish
        if finish is None:
            return cast(list[V | None], list(stored.values()))
        built = self._built
        if built:  # some read one by one already
            wanted = [key for key, data in stored.items() if data is not None and key not in built]
        else:
            wanted = list(compress(stored, map(is_not, stored.values(), repeat(None))))
        if wanted:
            datas = cast(list[bytes], list(map(stored.__getitem__, wanted)))
            many = self._finish_many
            states = list(map(finish, datas)) if many is None else many(datas)
            built.update(zip(wanted, states, strict=True))
        return list(map(built.get, stored))

    def pairs(self) -> Iterator[tuple[K, V | None]]:
        """`(id, state)` in the order asked: `items()` without a look-up per id."""
        return zip(self._ids, self._every(), strict=True)

    def items(self) -> ItemsView[K, V | None]:
        return _Items(self)

    def values(self) -> ValuesView[V | None]:
        return _Values(self)

    def __repr__(self) -> str:
        return f"States({dict(self.pairs())!r})"


class _Items(ItemsView[K, V | None]):
    def __init__(self, states: States[K, V]) -> None:
        super().__init__(states)
        self._states = states

    def __iter__(self) -> Iterator[tuple[K, V | None]]:
        return self._states.pairs()


class _Values(ValuesView[V | None]):
    def __init__(self, states: States[Any, V]) -> None:
        super().__init__(states)
        self._states = states

    def __iter__(self) -> Iterator[V | None]:
        return iter(self._states._every())
