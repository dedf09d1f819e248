"""Orderings of neurons (or images) by a score, shared by every measure that ranks."""

from __future__ import annotations

import numpy as np

from advlens.measures._tensors import ArrayLike, as_numpy


def rank_descending(scores: ArrayLike, tiebreak: ArrayLike | None = None) -> np.ndarray:
    """Indices that sort ``scores`` from largest to smallest.

    Ties are broken by ``tiebreak`` (also descending) when given, then by ascending index, so the
    order is deterministic. NaN scores go last.

    Shape:
        scores: (K,); tiebreak: (K,) or None; returns int64 (K,), a permutation of 0..K−1.
    """
    primary = as_numpy(scores).astype(np.float64).reshape(-1)
    # np.lexsort sorts ascending by the last key first: negate for descending, NaN → +inf (last).
    keys = [np.arange(primary.size)]
    if tiebreak is not None:
        secondary = as_numpy(tiebreak).astype(np.float64).reshape(-1)
        if secondary.shape != primary.shape:
            raise ValueError(f"tiebreak has shape {secondary.shape}, scores {primary.shape}")
        keys.append(_nan_last(-secondary))
    keys.append(_nan_last(-primary))
    keys.append(np.isnan(primary))  # NaN after everything, −inf included
    return np.lexsort(keys).astype(np.int64)


def top_k(scores: ArrayLike, k: int) -> np.ndarray:
    """The indices of the ``k`` largest scores, largest first (ties: lower index first).

    Shape:
        scores: (N,); returns int64 (min(k, N),).
    """
    if k < 0:
        raise ValueError(f"k must be ≥ 0, got {k}")
    return rank_descending(scores)[:k]


def _nan_last(keys: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(keys), np.inf, keys)
