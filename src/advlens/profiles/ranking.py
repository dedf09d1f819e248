"""The divergence ranking of a layer's units for a pair of images (paper 002 §5.3, Fig. 9a; spec-002 §1.7).

``score_k = Σ_{h,w} |L_k(a) − L_k(b)|``: how much unit k's map changes between the two images. The
Layer View lists the 20 units with the highest scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advlens.errors import ConfigError
from advlens.profiles._arrays import ArrayLike, as_array, positive_int

TOP_DIVERGING = 20


@dataclass(frozen=True, eq=False)
class DivergenceRanking:
    """The units that change most between two images.

    Attributes:
        units: the top units, highest score first (ties: lower index first).
        scores: every unit's score, in unit order.

    Shape:
        units: (min(top, C),) int64; scores: (C,) float64.
    """

    units: np.ndarray
    scores: np.ndarray


def divergence_scores(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """``Σ_hw |a_k − b_k|`` per unit. Shape: a, b (C, H, W) or (C,); returns float64 (C,)."""
    first, second = as_array(a).astype(np.float64), as_array(b).astype(np.float64)
    if first.shape != second.shape or first.ndim == 0:
        raise ConfigError(f"the two outputs must have one shape (C, H, W) or (C,), got {first.shape} and "
                          f"{second.shape}")
    return np.abs(first - second).reshape(first.shape[0], -1).sum(axis=1)


def divergence_ranking(a: ArrayLike, b: ArrayLike, top: int = TOP_DIVERGING) -> DivergenceRanking:
    """The ``top`` units with the largest ``Σ_hw |a − b|`` (identical inputs: every score 0)."""
    scores = divergence_scores(a, b)
    order = np.lexsort((np.arange(scores.size), -scores))
    return DivergenceRanking(order[:positive_int(top, "top")].astype(np.int64), scores)
