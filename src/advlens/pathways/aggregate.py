"""Aggregation of per-image measures over a set of images (Bluff uses the median, paper 004 §3.2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from advlens.pathways._arrays import as_float_array


def median_over(influence: Any) -> np.ndarray:
    """The median over images (axis 0), e.g. of per-image influences.

    Shape:
        influence: (N, ...) with N ≥ 1 → (...) float64.
    """
    table = as_float_array(influence, "influence (N images × …)")
    if table.ndim == 0 or table.shape[0] == 0:
        raise ValueError(f"median_over needs at least one image along axis 0, got shape {table.shape}")
    return np.median(table, axis=0)
