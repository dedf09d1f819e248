"""Results computed on demand after ``prepare`` and kept in the store: ``STORE/derived/<kind>/<digest>.npz``.

Some results are too many to precompute for every selection — a class pair's pathway graph, a pair's
datapaths, a targeted sweep of one class pair, a profiles fit of a new layer selection — so they are
computed when a user first asks (in the app, a notebook or a CLI command) and written here, so the
next request (also after a restart, or on a copy of the store) reads them instead.

Each result is identified by its ``kind`` (a folder) and a JSON-able ``key`` (the settings that
produced it: its SHA-256 names the file). The sidecar ``<digest>.json`` records the key, the
result's attrs, the SHA-256 of the ``.npz`` and a stamp of every stage the result was computed from.
A read returns ``None`` — "compute it again" — when the file is missing, damaged (digest mismatch:
logged) or stale (one of those stages was redone since). Writes go to a temporary file renamed into
place, so a reader never sees half a result; a read-only store keeps results in memory only (the
caller's cache), which is logged once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advlens.errors import StoreError
from advlens.store.manifest import DERIVED, file_digest

logger = logging.getLogger(__name__)

_KIND = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass
class DerivedResult:
    """One stored result: its arrays (loaded) and attrs (JSON values)."""

    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)


def key_digest(key: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``key``; the result's file name."""
    try:
        text = json.dumps(key, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a derived-result key must be JSON data (numbers, strings, lists, dicts): {exc}") from None
    return hashlib.sha256(text.encode()).hexdigest()


class DerivedResults:
    """The on-demand results of one ``kind`` in the store at ``root``.

    Args:
        root: the store folder.
        kind: lower-case letters, digits, ``-`` and ``_`` (e.g. ``pathway-graph``, ``datapaths``).
        stage_stamps: ``{stage: stamp}`` of the store's finished stages (see
            :meth:`advlens.store.AnalysisStore.derived`); a result records the stamps of the stages it
            was computed from and is stale once one of them changes.
    """

    def __init__(self, root: str | Path, kind: str, stage_stamps: Mapping[str, str]) -> None:
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise ValueError(f"derived-result kind {kind!r}: use lower-case letters, digits, '-' and '_'")
        self.root = Path(root)
        self.kind = kind
        self.folder = self.root / DERIVED / kind
        self._stamps = dict(stage_stamps)
        self._read_only_logged = False

    def __repr__(self) -> str:
        return f"DerivedResults({str(self.root)!r}, {self.kind!r})"

    def _stamps_of(self, depends_on: Sequence[str]) -> dict[str, str]:
        missing = [s for s in depends_on if s not in self._stamps]
        if missing:
            raise StoreError(f"the store at {self.root} has no finished stage {', '.join(map(repr, missing))}, "
                             f"which {self.kind} results are computed from")
        return {s: self._stamps[s] for s in depends_on}

    def path(self, key: Mapping[str, Any]) -> Path:
        """The ``.npz`` file of ``key`` (it may not exist)."""
        return self.folder / f"{key_digest(key)}.npz"

    def get(self, key: Mapping[str, Any], depends_on: Sequence[str] = ()) -> DerivedResult | None:
        """The stored result of ``key``, or None when it is missing, damaged or computed from other stage data."""
        data = self.path(key)
        sidecar = data.with_suffix(".json")
        if not data.is_file() or not sidecar.is_file():
            return None
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning("%s result %s: unreadable record (%s); computing it again", self.kind, sidecar.name, exc)
            return None
        if record.get("key") != json.loads(json.dumps(key, sort_keys=True)):
            logger.warning("%s result %s records another key; computing it again", self.kind, data.name)
            return None
        if record.get("stages") != self._stamps_of(depends_on):
            logger.info("%s result %s is stale (a stage it was computed from was redone)", self.kind, data.name)
            return None
        try:
            if file_digest(data) != record.get("sha256"):
                logger.warning("%s result %s is damaged (SHA-256 differs); computing it again", self.kind, data.name)
                return None
            with np.load(data, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (OSError, ValueError) as exc:
            logger.warning("%s result %s is unreadable (%s); computing it again", self.kind, data.name, exc)
            return None
        return DerivedResult(arrays, dict(record.get("attrs", {})))

    def put(self, key: Mapping[str, Any], arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] | None = None,
            depends_on: Sequence[str] = ()) -> bool:
        """Store a result (replacing an older one of the same key). False when the store is not writable.

        ``attrs`` must be JSON data; arrays are stored as they are (no pickled objects).
        """
        record = {"kind": self.kind, "key": json.loads(json.dumps(key, sort_keys=True)),
                  "attrs": json.loads(json.dumps(dict(attrs or {}), allow_nan=False)),
                  "stages": self._stamps_of(depends_on)}
        data = self.path(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".tmp-", suffix=".npz", delete=False) as handle:
                np.savez(handle, **{name: np.asarray(value) for name, value in arrays.items()})
                tmp = Path(handle.name)
            record["sha256"] = file_digest(tmp)
            side_tmp = tmp.with_suffix(".json")
            side_tmp.write_text(json.dumps(record, sort_keys=True))
            os.replace(tmp, data)  # the data first: a sidecar never points at an older file's digest
            os.replace(side_tmp, data.with_suffix(".json"))
        except OSError as exc:
            for leftover in self.folder.glob(".tmp-*") if self.folder.is_dir() else ():
                leftover.unlink(missing_ok=True)
            if not self._read_only_logged:
                logger.warning("%s results cannot be written into %s (%s); they are kept in memory only",
                               self.kind, self.folder, exc.strerror or exc)
                self._read_only_logged = True
            return False
        return True

    def keys(self) -> list[dict[str, Any]]:
        """The keys of every stored result of this kind (whatever their state)."""
        found = []
        for sidecar in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else ():
            try:
                found.append(json.loads(sidecar.read_text())["key"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found


def stage_stamp(entry: Mapping[str, Any]) -> str:
    """A stamp of a finished stage's data: its array digests (schema 2), else its finish time. A redo that
    writes other data changes it; one that writes the same data keeps the results computed from it."""
    basis = entry.get("arrays") or {"finished": entry.get("finished")}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]
