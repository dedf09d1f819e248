"""Layer View data: reductions over a set of images and per-unit scalars (paper 002 §4.4; spec-002 §1.7).

A reduction turns one layer's outputs for a set of images into data of the shape of a single output:
``mean`` and ``max`` (unit-wise over the set), ``difference`` (``L(x_i) − L(x_j)``: with i the
adversarial and j the control, positive = stronger in the adversarial, drawn blue in RdBu, G-16) and
``direct`` (``L(x_i)``). A unit scalar summarises one unit's map for the heatmap: its maximum (paper
§4.4), or the sum of its absolute values for layers that carry negative values (paper §5.3); ``auto``
picks the sum of absolute values exactly when the data has a negative value (G-14).
"""

from __future__ import annotations

import math

import numpy as np

from advlens.errors import ConfigError
from advlens.profiles._arrays import ArrayLike, as_array, positive_int

REDUCTIONS = ("mean", "max", "difference", "direct")
UNIT_SCALARS = ("max", "abs_sum", "auto")
TOP_MAPS = 20
ALL_MAPS_UP_TO = 32


def _outputs(activations: ArrayLike) -> np.ndarray:
    array = as_array(activations)
    if array.ndim < 2 or array.shape[0] == 0:
        raise ConfigError(f"activations must be a set of outputs (N, C[, H, W]) with N ≥ 1, got {array.shape}")
    return array


def _index(value, count: int, what: str) -> int:
    if value is None:
        raise ConfigError(f"this reduction needs {what} (an index into the set of {count} images)")
    index = positive_int(value, what, minimum=0)
    if index >= count:
        raise ConfigError(f"{what} = {index} but the set holds {count} images (0…{count - 1})")
    return index


def reduce(activations: ArrayLike, reduction: str, first: int | None = None, second: int | None = None) -> np.ndarray:
    """One layer's outputs over a set of images → data shaped like one output (paper 002 §4.4).

    Args:
        activations: the layer's outputs for the set.
        reduction: ``mean``, ``max`` (unit-wise over the set), ``difference`` (``first − second``)
            or ``direct`` (``first``).
        first, second: indices into the set for ``difference`` and ``direct``.

    Shape:
        activations: (N, C, H, W) or (N, D); returns (C, H, W) or (D,), in the input's dtype
        (``mean`` of integers: float64).
    """
    outputs = _outputs(activations)
    if reduction not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; use one of {', '.join(REDUCTIONS)}")
    if reduction == "mean":
        return outputs.mean(axis=0, dtype=np.float64).astype(np.result_type(outputs.dtype, np.float32))
    if reduction == "max":
        return outputs.max(axis=0)
    i = _index(first, len(outputs), "first")
    if reduction == "direct":
        return outputs[i].copy()
    j = _index(second, len(outputs), "second")
    return outputs[i] - outputs[j]


def resolve_unit_scalar(mode: str, *data: ArrayLike) -> str:
    """The unit scalar to use: ``mode``, or for ``auto`` ``abs_sum`` iff any value is negative (G-14)."""
    if mode not in UNIT_SCALARS:
        raise ConfigError(f"unknown unit scalar {mode!r}; use one of {', '.join(UNIT_SCALARS)}")
    if mode != "auto":
        return mode
    return "abs_sum" if any(np.min(as_array(d)) < 0 for d in data if as_array(d).size) else "max"


def unit_scalars(data: ArrayLike, mode: str = "auto") -> np.ndarray:
    """One value per unit: the maximum of its map (``max``) or the sum of its absolute values
    (``abs_sum``); ``auto`` decides on ``data`` (G-14). A vector layer's units are its values.

    Shape:
        data: (C, H, W) or (C,); returns float64 (C,).
    """
    array = as_array(data)
    if array.ndim == 0 or array.shape[0] == 0:
        raise ConfigError(f"unit scalars need data of shape (C, H, W) or (C,), got {array.shape}")
    mode = resolve_unit_scalar(mode, array)
    flat = array.reshape(array.shape[0], -1).astype(np.float64)
    return flat.max(axis=1) if mode == "max" else np.abs(flat).sum(axis=1)


def scalar_difference(a: ArrayLike, b: ArrayLike, mode: str = "auto") -> np.ndarray:
    """``unit_scalars(a) − unit_scalars(b)`` with one mode for both (``auto`` decides on both): the
    compared unit-maximum heatmaps of paper 002 Fig. 6. Shape: a, b (C, H, W) or (C,); returns (C,)."""
    mode = resolve_unit_scalar(mode, a, b)
    return unit_scalars(a, mode) - unit_scalars(b, mode)


def unit_grid(values: ArrayLike) -> np.ndarray:
    """Unit values on the heatmap's square grid: ceil(√C) × ceil(√C) cells, filled row by row in unit
    order, NaN after the last unit. Shape: values (C,); returns float64 (S, S)."""
    flat = as_array(values).astype(np.float64).reshape(-1)
    if flat.size == 0:
        raise ConfigError("unit_grid needs at least one unit value")
    side = math.isqrt(flat.size - 1) + 1
    grid = np.full(side * side, np.nan)
    grid[:flat.size] = flat
    return grid.reshape(side, side)


def top_units(values: ArrayLike, k: int = TOP_MAPS, all_up_to: int = ALL_MAPS_UP_TO) -> np.ndarray:
    """The units whose maps the Layer View shows: every unit when C ≤ ``all_up_to``, else the ``k``
    with the highest values, highest first (ties: lower index first) (G-15).

    Shape: values (C,); returns int64 (min(C, k) or C,).
    """
    flat = as_array(values).astype(np.float64).reshape(-1)
    if flat.size <= all_up_to:
        return np.arange(flat.size, dtype=np.int64)
    order = np.lexsort((np.arange(flat.size), -np.nan_to_num(flat, nan=-np.inf)))
    return order[:positive_int(k, "k")].astype(np.int64)

