"""Which neurons of a layer a highlight mode keeps opaque (Bluff, paper 004 §3.3; spec-004 §4).

Modes: most **activated** (highest importance at the shown strength), most **changed** (highest
|excitation|), most **excited** (highest positive excitation), most **inhibited** (most negative
excitation). Only channels with excitation > 0 can be excited, < 0 inhibited, ≠ 0 changed.

Count: ``ceil(top_fraction · C)`` channels (at least 1 when ``top_fraction`` > 0; a product within
1e-9 of an integer counts as that integer, so 0.3 × 10 is 3, not 4), or fewer when fewer channels
qualify. Ties at the cut go to the lower channel index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from advlens.pathways._arrays import as_float_array, ranked

HIGHLIGHT_MODES = ("activated", "changed", "excited", "inhibited")

_ROUNDING = 1e-9


def highlight_count(top_fraction: float, channels: int) -> int:
    """How many of ``channels`` the top ``top_fraction`` keeps: ``ceil(x · C)``, ≥ 1 when x > 0."""
    if isinstance(top_fraction, bool) or not isinstance(top_fraction, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(top_fraction) <= 1.0:
        raise ValueError(f"top_fraction must be a number in [0, 1] (0.2 = the top 20%), got {top_fraction!r}")
    if top_fraction == 0 or channels == 0:
        return 0
    return max(1, math.ceil(float(top_fraction) * channels - _ROUNDING))


def _scores(values: Mapping[str, Any], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(score to rank high → low, which channels qualify) for ``mode``."""
    key = "importance" if mode == "activated" else "excitation"
    if key not in values:
        raise ValueError(f"highlight mode {mode!r} needs values[{key!r}] (C,); got keys {sorted(values)}")
    table = as_float_array(values[key], f"values[{key!r}]", ndim=1)
    if mode == "activated":
        return table, np.ones(table.shape, dtype=bool)
    if mode == "changed":
        return np.abs(table), table != 0
    if mode == "excited":
        return table, table > 0
    return -table, table < 0


def highlight(values: Mapping[str, Any], mode: str, top_fraction: float = 0.2) -> np.ndarray:
    """Whether each channel of one layer is in the top ``top_fraction`` for ``mode``.

    Args:
        values: ``{"importance": (C,), "excitation": (C,)}`` at the shown strength; a mode needs only
            its own key (activated: importance; the others: excitation).
        mode: one of :data:`HIGHLIGHT_MODES`.
        top_fraction: fraction of the layer's channels to keep, in [0, 1].

    Shape:
        returns (C,) bool.
    """
    if mode not in HIGHLIGHT_MODES:
        raise ValueError(f"unknown highlight mode {mode!r}; use one of {', '.join(HIGHLIGHT_MODES)}")
    if not isinstance(values, Mapping):
        raise ValueError(f"values must map 'importance'/'excitation' to (C,) arrays, got {type(values).__name__}")
    scores, eligible = _scores(values, mode)
    count = highlight_count(top_fraction, scores.size)
    order = ranked(scores)
    chosen = order[eligible[order]][:count]
    mask = np.zeros(scores.size, dtype=bool)
    mask[chosen] = True
    return mask
