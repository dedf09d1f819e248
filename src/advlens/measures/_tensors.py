"""Small conversions shared by the measures (arrays from the store arrive as NumPy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ArrayLike = Any  # torch.Tensor | np.ndarray | sequence of numbers

LEVEL_TOLERANCE = 1e-6
"""Stored levels this close to a requested level count as equal (levels are often float32)."""


def as_tensor(value: ArrayLike, device: torch.device | str | None = None,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """``value`` as a tensor on ``device`` (unchanged device when None); NumPy arrays are not copied
    more than needed."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device if device is not None else value.device, dtype=dtype or value.dtype)
    if isinstance(value, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    else:
        tensor = torch.as_tensor(value)
    return tensor.to(device=device, dtype=dtype or tensor.dtype)


def as_numpy(value: ArrayLike) -> np.ndarray:
    """``value`` as a NumPy array (tensors are detached and moved to the CPU)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def interpolate_level(table: ArrayLike, levels: ArrayLike, level: float, what: str = "level") -> np.ndarray:
    """Row of ``table`` at ``level``: the stored row when ``level`` is one of ``levels``, else linearly
    interpolated between the two nearest stored levels; outside their range raises ``ValueError``.

    Shape:
        table: (Q, ...); levels: (Q,) strictly increasing; returns float64 (...).
    """
    values = as_numpy(table).astype(np.float64)
    grid = as_numpy(levels).astype(np.float64).reshape(-1)
    if values.shape[0] != grid.size:
        raise ValueError(f"{grid.size} {what}s but a table of shape {values.shape}")
    if np.any(np.diff(grid) <= 0):
        raise ValueError(f"the stored {what}s must be strictly increasing, got {grid.tolist()}")
    close = np.flatnonzero(np.abs(grid - level) <= LEVEL_TOLERANCE)  # levels stored as float32
    if close.size:
        return values[close[0]]
    if not grid[0] <= level <= grid[-1]:
        raise ValueError(f"{what} {level} is outside the stored {what}s [{grid[0]:g}, {grid[-1]:g}]")
    upper = int(np.searchsorted(grid, level, side="left"))
    lower = upper - 1
    weight = (level - grid[lower]) / (grid[upper] - grid[lower])
    return (1 - weight) * values[lower] + weight * values[upper]
