"""Verified reads of a store's Zarr arrays: chunk presence, chunk checksums and per-array digests.

Zarr returns the fill value for a chunk whose file is missing, silently. Every array advlens
writes (schema 2) has all its chunks written (``write_empty_chunks``) and a CRC32C checksum per
chunk, so a read here first checks that the chunk files of the selection exist and then lets Zarr
decode them; a missing file or a failed checksum raises :class:`StoreError` naming the array and
the command that rebuilds its stage. ``array_digest`` (SHA-256 of the values) is recorded when a
stage is written and compared by ``advlens info STORE --verify``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from advlens.errors import StoreError

# what Zarr and its codecs raise on a damaged chunk: checksum mismatch (ValueError), codec failure
# (RuntimeError), unreadable file (OSError), truncated data (EOFError)
READ_ERRORS = (ValueError, RuntimeError, OSError, EOFError)


def array_digest(array: zarr.Array) -> str:
    """SHA-256 over dtype, shape and the C-order bytes of an array's values, read one chunk row at a time."""
    digest = hashlib.sha256(f"{np.dtype(array.dtype).str}{tuple(array.shape)}".encode())
    if array.ndim == 0:
        digest.update(np.ascontiguousarray(array[...]).tobytes())
        return digest.hexdigest()
    step = max(1, int(array.chunks[0]))
    for start in range(0, array.shape[0], step):
        digest.update(np.ascontiguousarray(array[start:start + step]).tobytes())
    return digest.hexdigest()


def _dim_indices(selection: Any, size: int) -> np.ndarray:
    """The indices one axis of a selection touches (integer, slice, integer or boolean array)."""
    if isinstance(selection, slice):
        if selection.step is not None and selection.step < 1:
            raise IndexError(f"slice steps must be positive, got {selection.step}")
        return np.arange(*selection.indices(size))
    if isinstance(selection, (int, np.integer)):
        index = int(selection)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of bounds for an axis of size {size}")
        return np.array([index % size])
    values = np.asarray(selection)
    if values.dtype == bool:
        if values.shape != (size,):
            raise IndexError(f"a boolean index must have shape ({size},), got {values.shape}")
        return np.flatnonzero(values)
    if values.dtype.kind not in "iu":
        raise IndexError(f"unsupported index {selection!r}: use integers, slices or integer/boolean arrays")
    flat = values.ravel().astype(np.int64)
    if flat.size and (flat.min() < -size or flat.max() >= size):
        raise IndexError(f"indices out of bounds for an axis of size {size}")
    return flat % size if size else flat


def _expand(selection: Any, ndim: int) -> tuple[Any, ...]:
    """A selection as one entry per axis (Ellipsis expanded, missing axes filled with full slices)."""
    parts = selection if isinstance(selection, tuple) else (selection,)
    if sum(part is Ellipsis for part in parts) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if any(part is Ellipsis for part in parts):
        at = next(i for i, part in enumerate(parts) if part is Ellipsis)
        parts = parts[:at] + (slice(None),) * (ndim - len(parts) + 1) + parts[at + 1:]
    if len(parts) > ndim:
        raise IndexError(f"too many indices for an array of {ndim} dimensions")
    return parts + (slice(None),) * (ndim - len(parts))


def chunk_coords(shape: tuple[int, ...], chunks: tuple[int, ...], selection: Any = Ellipsis) -> Iterator[tuple]:
    """Grid coordinates of every chunk a selection reads (orthogonally; a superset for point selections)."""
    per_axis = [np.unique(_dim_indices(part, size) // max(1, chunk))
                for part, size, chunk in zip(_expand(selection, len(shape)), shape, chunks)]
    return itertools.product(*(axis.tolist() for axis in per_axis))


def _chunk_folder(array: zarr.Array) -> Path | None:
    root = getattr(array.store, "root", None)  # a LocalStore; other stores are not checked for presence
    return Path(root) / array.path if root is not None else None


def missing_chunks(array: zarr.Array, selection: Any = Ellipsis) -> list[str]:
    """Keys of the chunks a selection reads whose files do not exist."""
    folder = _chunk_folder(array)
    if folder is None:
        return []
    encode = array.metadata.encode_chunk_key
    return [key for key in map(encode, chunk_coords(array.shape, array.chunks, selection))
            if not (folder / key).is_file()]


class VerifiedArray:
    """A read-only view of a Zarr array whose reads fail loudly on a missing or damaged chunk.

    Supports ``[...]``, integer/slice/array indexing, ``get_orthogonal_selection``, ``shape``,
    ``dtype``, ``ndim``, ``chunks`` and ``len``. ``damaged(detail)`` builds the error to raise.
    """

    def __init__(self, array: zarr.Array, name: str, damaged: Callable[[str], StoreError]) -> None:
        self._array = array
        self.name = name
        self._damaged = damaged

    def __repr__(self) -> str:
        return f"VerifiedArray({self.name!r}, shape={self.shape}, dtype={self.dtype})"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self._array.chunks)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[...]
        return values.astype(dtype) if dtype is not None else values

    def _read(self, selection: Any, read: Callable[[], Any]) -> Any:
        missing = missing_chunks(self._array, selection)
        if missing:
            shown = ", ".join(missing[:5]) + (f" … ({len(missing)} in all)" if len(missing) > 5 else "")
            raise self._damaged(f"missing chunk files {shown}")
        try:
            return read()
        except IndexError:  # a bad selection, not damage (Zarr's index errors are also ValueErrors)
            raise
        except READ_ERRORS as exc:
            raise self._damaged(f"a chunk does not decode: {exc}") from exc

    def __getitem__(self, selection: Any) -> Any:
        return self._read(selection, lambda: self._array[selection])

    def get_orthogonal_selection(self, selection: Any) -> np.ndarray:
        return self._read(selection, lambda: self._array.get_orthogonal_selection(selection))


def verify_array(array: zarr.Array, expected: dict[str, Any]) -> str | None:
    """None when ``array`` matches its recorded ``{"sha256", "shape", "dtype"}``, else what is wrong."""
    if list(array.shape) != list(expected.get("shape", array.shape)):
        return f"shape {tuple(array.shape)} differs from the recorded {tuple(expected['shape'])}"
    if "dtype" in expected and np.dtype(array.dtype).str != expected["dtype"]:
        return f"dtype {np.dtype(array.dtype).str} differs from the recorded {expected['dtype']}"
    missing = missing_chunks(array)
    if missing:
        return f"{len(missing)} missing chunk file(s): {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}"
    try:
        digest = array_digest(array)
    except READ_ERRORS as exc:
        return f"a chunk does not decode: {exc}"
    if digest != expected.get("sha256"):
        return "its values differ from those written (SHA-256 mismatch)"
    return None
