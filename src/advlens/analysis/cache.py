"""A small bounded least-recently-used cache owned by one session (no module-level state).

Thread-safe: the web app answers several requests at once. Bookkeeping happens under one lock;
a computation runs outside it, and concurrent requests for the same key wait for the first one
instead of computing it again (a vulnerability map costs seconds).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class BoundedCache:
    """Keeps the ``max_entries`` most recently used results."""

    def __init__(self, max_entries: int = 128) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[Hashable, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        while True:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return self._entries[key]
                pending = self._pending.get(key)
                if pending is None:  # this thread computes the value
                    pending = self._pending[key] = threading.Lock()
                    pending.acquire()
                    self.misses += 1
                    break
            with pending:  # another thread computes it: wait, then look again (it may have failed)
                pass
        try:
            value = compute()
            with self._lock:
                self._entries[key] = value
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return value
        finally:
            with self._lock:
                del self._pending[key]
            pending.release()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
