"""An arrival-ordered map with O(log n) rank, removal from anywhere, and seek for paging.

Wait queues, a limit's holders and the table of all leases are each one of these: items keep
the order they arrived in, `rank()` says how many still stand before one (a waiter's position)
without walking the queue, and `after()` resumes a listing from a cursor key, so a page costs
the same at depth 40,000 as at depth 10.

Each item gets the next value of a counter as its key; keys only grow, so a cursor (the key of
the last item a page returned) stays meaningful after the items around it have left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from sortedcontainers import SortedList

T = TypeVar("T")


class Ranked(Mapping[str, T], Generic[T]):
    """Items by id, in arrival order; `rank`, `pop` and `after` cost O(log n).

    `id_of` gives an item's id (a lease's `lease_id`): items are stored once, not beside their
    ids, which matters at a million leases.
    """

    __slots__ = ("_by_key", "_id_of", "_keys", "_next", "_order")

    def __init__(self, id_of: Callable[[T], str]) -> None:
        self._id_of = id_of
        self._keys: dict[str, int] = {}
        self._by_key: dict[int, T] = {}
        self._order: SortedList[int] = SortedList()
        self._next = 0

    def __getitem__(self, item_id: str) -> T:
        return self._by_key[self._keys[item_id]]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        for key in self._order:
            yield self._id_of(self._by_key[key])

    def __bool__(self) -> bool:
        return bool(self._keys)

    def add(self, item: T) -> None:
        """Append at the back (an id already present keeps its place and gets the new item)."""
        item_id = self._id_of(item)
        key = self._keys.get(item_id)
        if key is None:
            key = self._next
            self._next += 1
            self._keys[item_id] = key
            self._order.add(key)
        self._by_key[key] = item

    def pop(self, item_id: str, default: T | None = None) -> T | None:
        key = self._keys.pop(item_id, None)
        if key is None:
            return default
        self._order.remove(key)
        return self._by_key.pop(key)

    def first(self) -> T | None:
        return self._by_key[self._order[0]] if self._order else None

    def rank(self, item_id: str) -> int:
        """How many items arrived before this one and are still here; -1 if it is absent."""
        key = self._keys.get(item_id)
        return -1 if key is None else self._order.bisect_left(key)

    def key(self, item_id: str) -> int:
        """The item's cursor key (KeyError if absent)."""
        return self._keys[item_id]

    def after(self, key: int | None, count: int) -> list[tuple[int, T]]:
        """Up to `count` (key, item) pairs that arrived after `key` (from the front if None)."""
        start = 0 if key is None else self._order.bisect_right(key)
        keys = self._order.islice(start, start + count)
        return [(k, self._by_key[k]) for k in keys]

    def rank_of_key(self, key: int) -> int:
        """How many items still here arrived before the one with this key."""
        return self._order.bisect_left(key)
