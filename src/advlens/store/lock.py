"""A lock file so that two ``prepare`` runs never write (or clean up) one store at the same time.

The lock is ``STORE/.advlens.lock``, created with ``O_CREAT | O_EXCL`` and holding the holder's pid and
host. A lock whose holder is no longer running on this host (a killed ``prepare``) is stale and is
taken over; a lock held by a running process, or by another host, is refused with what to do.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from advlens.errors import StoreError
from advlens.store.manifest import LOCK_FILE

logger = logging.getLogger(__name__)
FRESH_SECONDS = 10.0  # a lock file still without content younger than this is being written right now


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class StoreLock:
    """Exclusive lock of one store folder; use as a context manager or call ``acquire``/``release``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.held = False

    def _holder(self, path: Path) -> dict | None:
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None

    def _stale(self, holder: dict | None) -> bool:
        if holder is None:  # empty or garbled: stale unless it is being written this very moment
            try:
                return time.time() - self.path.stat().st_mtime > FRESH_SECONDS
            except FileNotFoundError:
                return True
        return holder.get("host") == socket.gethostname() and not _alive(holder["pid"])

    def acquire(self) -> None:
        """Take the lock; take over a stale one; refuse one that a running ``prepare`` holds."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder(self.path)
                if not self._stale(holder):
                    who = f"pid {holder['pid']} on {holder.get('host')}" if holder else "another process"
                    raise StoreError(
                        f"the store at {self.root} is being written by another `advlens prepare` ({who}); wait "
                        f"for it to finish. If no such process is running, delete {self.path} and run again"
                    ) from None
                self._take_over(holder)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self.held = True
            return
        raise StoreError(f"could not lock the store at {self.root} (its lock file {self.path} keeps changing); "
                         "is another `advlens prepare` starting on it?")

    def _take_over(self, holder: dict | None) -> None:
        """Remove a stale lock, without removing a fresh one another process created meanwhile."""
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else removed it first
        if self._holder(aside) != holder:  # not the lock we judged stale: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        logger.warning("took over the stale lock of %s (pid %s is no longer running)", self.root,
                       holder["pid"] if holder else "unknown")

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if not self.held:
            return
        holder = self._holder(self.path)
        if holder is not None and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
