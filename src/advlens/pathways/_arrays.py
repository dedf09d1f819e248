"""Input checks shared by the pathway measures (tables arrive as NumPy from the store or as tensors)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_float_array(value: Any, what: str, ndim: int | None = None) -> np.ndarray:
    """``value`` (tensor, array or sequence) as a float64 array; ``ValueError`` naming ``what`` when it has
    the wrong number of dimensions or holds NaN/inf."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float64)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimension(s), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{what} holds {bad} NaN or infinite value(s); recompute it from finite activations")
    return array


def ranked(scores: np.ndarray) -> np.ndarray:
    """Channel indices ordered by ``scores`` high → low; ties go to the lower channel index first.

    Shape:
        scores: (C,) → (C,) int64.
    """
    return np.argsort(-scores, kind="stable").astype(np.int64)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-scoring channels (all when ``k`` ≥ C), ties to the lower channel index, sorted by
    channel. Shape: (C,) → (min(k, C),) int64."""
    return np.sort(ranked(scores)[:k])


def check_count(k: Any, what: str) -> int:
    """``k`` as a non-negative int, else ``ValueError``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {k!r}")
    return int(k)
