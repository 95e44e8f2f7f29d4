"""One small bounded cache: the latest entries of a per-process cache, least recently used dropped first.

Every per-process cache of the package is one of these (the kernel plans, the
traced splits of the fast path, the model copies in another dtype, the layer
features of reference inputs), each with its own documented size, so that none
grows without bound in a long-lived process (a cohort, a notebook).

Examples::

    >>> cache = LRUCache(2)
    >>> cache.put("a", 1); cache.put("b", 2); cache.get("a")
    1
    >>> cache.put("c", 3)  # drops "b", the least recently used
    >>> sorted(cache.keys()), len(cache)
    (['a', 'c'], 2)
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, List

__all__ = ["LRUCache"]


class LRUCache:
    """At most ``max_size`` entries; :meth:`get` and :meth:`put` make an entry the most recently used.

    Args:
        max_size (int): how many entries are kept (>= 1).
    """

    def __init__(self, max_size: int) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be an integer >= 1, got {max_size!r}")
        self.max_size = max_size
        self._entries: "OrderedDict[Hashable, Any]" = OrderedDict()

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value of ``key`` (now the most recently used), or ``default``."""
        if key not in self._entries:
            return default
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` under ``key``, dropping the least recently used entries beyond ``max_size``."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def pop(self, key: Hashable, default: Any = None) -> Any:
        return self._entries.pop(key, default)

    def keys(self) -> List[Hashable]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
