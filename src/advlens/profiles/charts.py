"""Data of the two charts paper 002 built from its exports (spec-002 §1.7, G-11b).

* Fig. 7: per unit, the pair's change ``Δpair_k = u_k(x_adv) − u_k(x)`` next to the class change
  ``Δclass_k = mean_{bg: pred = ŷ_adv} u_k − mean_{bg: pred = y} u_k``; a unit "matches" when both
  changes have the same sign and both magnitudes exceed their 75th percentile over the units (G-11b).
* Fig. 9b: for the units that diverge most between the two images, each image's Σ|·| output, to find
  units that are both strong and changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advlens.errors import ConfigError
from advlens.profiles._arrays import ArrayLike, as_array, real
from advlens.profiles.ranking import TOP_DIVERGING, divergence_ranking
from advlens.profiles.reductions import resolve_unit_scalar, unit_scalars

MATCH_PERCENTILE = 75.0


@dataclass(frozen=True, eq=False)
class ClassChange:
    """Fig. 7: the pair's per-unit change against the change between the two classes' means.

    Shape:
        pair, between_classes: (C,) float64; matching: (C,) bool.
    """

    pair: np.ndarray
    between_classes: np.ndarray
    matching: np.ndarray
    unit_scalar: str


@dataclass(frozen=True, eq=False)
class DivergingStrength:
    """Fig. 9b: the top diverging units and each image's Σ|·| output on them.

    Shape:
        units, a, b: (K,).
    """

    units: np.ndarray
    a: np.ndarray
    b: np.ndarray


def class_change(control: ArrayLike, adversarial: ArrayLike, true_class: ArrayLike, adversarial_class: ArrayLike,
                 unit_scalar: str = "auto", percentile: float = MATCH_PERCENTILE) -> ClassChange:
    """Fig. 7 data for one layer (G-11b).

    Args:
        control, adversarial: the pair's outputs of the layer.
        true_class: outputs of the background images predicted as the control's class.
        adversarial_class: outputs of the background images predicted as the adversarial's class.
        unit_scalar: how a unit's map becomes one value (one mode for all four sets; ``auto``
            decides on all of them).
        percentile: both |Δ| must exceed this percentile of their own |Δ| over the units.

    Shape:
        control, adversarial: (C, H, W) or (C,); true_class, adversarial_class: (N, C, H, W) / (N, C).
    """
    a, b = as_array(control), as_array(adversarial)
    first, second = as_array(true_class), as_array(adversarial_class)
    if a.shape != b.shape or first.shape[1:] != a.shape or second.shape[1:] != a.shape:
        raise ConfigError(f"outputs of one layer are needed: pair {a.shape}/{b.shape}, classes {first.shape[1:]}/"
                          f"{second.shape[1:]}")
    if len(first) == 0 or len(second) == 0:
        raise ConfigError("each class needs at least one background image predicted as it")
    percentile = real(percentile, "percentile", 0.0, 100.0)
    mode = resolve_unit_scalar(unit_scalar, a, b, first, second)
    pair = unit_scalars(b, mode) - unit_scalars(a, mode)
    means = [np.mean([unit_scalars(image, mode) for image in group], axis=0) for group in (second, first)]
    between = means[0] - means[1]
    big_pair = np.abs(pair) > np.percentile(np.abs(pair), percentile)
    big_class = np.abs(between) > np.percentile(np.abs(between), percentile)
    matching = big_pair & big_class & (np.sign(pair) == np.sign(between)) & (pair != 0)
    return ClassChange(pair, between, matching, mode)


def diverging_strength(a: ArrayLike, b: ArrayLike, top: int = TOP_DIVERGING) -> DivergingStrength:
    """Fig. 9b data: the ``top`` units by ``Σ_hw |a − b|`` and each image's ``Σ|·|`` on them.

    Shape: a, b (C, H, W) or (C,).
    """
    ranking = divergence_ranking(a, b, top)
    return DivergingStrength(ranking.units, unit_scalars(a, "abs_sum")[ranking.units],
                             unit_scalars(b, "abs_sum")[ranking.units])
