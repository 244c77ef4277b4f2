"""A least-recently-used cache bounded in bytes, not entries.

Streamlit's caches count entries; one prediction of a large study holds
hundreds of megabytes of images and Grad-CAM maps, so 64 entries could keep
gigabytes resident. This one charges every value its size and drops the least
recently used values until the total fits; a value larger than the whole
budget is not kept at all. Pure Python (no streamlit), safe across the
server's session threads.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable


class ByteBudgetCache:
    """A thread-safe LRU map whose values are charged ``nbytes`` each.

    Args:
        max_bytes: the most the values may take together (0 keeps nothing).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value under ``key`` (now the most recently used), else ``default``."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return default
            self._items.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> bool:
        """Keep ``value``, dropping the least recently used until it fits.

        Returns:
            False when ``nbytes`` alone is over the budget (nothing is kept or dropped).
        """
        nbytes = max(0, int(nbytes))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if nbytes > self.max_bytes:
                return False
            while self._items and self._bytes + nbytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
            self._items[key] = (value, nbytes)
            self._bytes += nbytes
            return True

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes the kept values take together."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items
