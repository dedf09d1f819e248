"""Class bands and band gaps of the neuron-perturbation measure (paper 001, §5.2.1, Fig. 4).

A class's band tells, per neuron, where the activation × weight of that class's correctly predicted
benign images lies. The benign band of a pair is that of the benign class; the adversarial band is
the class-level band of the *adversarial class* (its benign images × its weights), as the case study
of Fig. 6 reads. Two kinds of band (:data:`BAND_KINDS`), both parameterised by one ``level``:

* ``"ci"`` — confidence interval of the class *mean* at ``level`` (Student t; store:
  ``class_mean``, ``class_std``, ``class_count``). Its width shrinks with 1/√n, so on a large store
  almost every pair of bands is disjoint and region B of Fig. 4 all but vanishes.
* ``"percentile"`` — the central ``level`` share of the class *distribution*: between its
  ``50·(1−level)`` and ``50·(1+level)`` percentiles (store: ``class_percentiles``). Its width does not
  depend on the number of images, and a single image's curve is comparable with it.

Band gap (§5.2.1): ``CU_a − CL_b`` if ``CL_b > CU_a`` (negative: inhibited by the attack),
``CL_a − CU_b`` if ``CL_a > CU_b`` (positive: excited), else 0. Fig. 4's regions: **A** = gap > 0
(excited), **B** = gap = 0 (bands overlap or touch: not significantly affected), **C** = gap < 0
(inhibited).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats

from advlens.measures._tensors import ArrayLike, as_numpy, as_tensor, interpolate_level
from advlens.measures.ranking import rank_descending

logger = logging.getLogger(__name__)

BAND_KINDS = ("ci", "percentile")
"""``"ci"``: confidence interval of the class mean; ``"percentile"``: central interval of the class
distribution between two percentiles."""

DEFAULT_CONFIDENCE = 0.95
"""Default level of ``"ci"`` bands."""

DEFAULT_BAND_KIND = "percentile"
DEFAULT_BAND_LEVEL = 0.8
"""Default band: the 10th–90th percentiles of each class's activation × weight.

Measured on the full Fashion-MNIST store (demo model, PGD ε = 8/255, 6,428 pairs, 700–986 images per
class; ``benchmarks/band_regions.py``), the share of a pair's 256 neurons in Fig. 4's regions
A / B / C (mean over pairs) is 49 / 3 / 48 % with 95% CIs of the mean — region B, the paper's middle,
all but vanishes (99.99% CIs: 48 / 6 / 47 %) — against 38 / 24 / 37 % for the 25th–75th percentiles,
32 / 37 / 32 % for the 10th–90th and 29 / 41 / 30 % for the 5th–95th. The 10th–90th band shows the three
regions at similar sizes, as Fig. 4 draws them, and holds 80% of a class's images, so a benign curve
lies mostly inside its own band and the attack's shift towards the adversarial band is visible."""


BAND_LEVELS = {"ci": DEFAULT_CONFIDENCE, "percentile": DEFAULT_BAND_LEVEL}
"""The level each band kind uses when none is given."""


class Bands(NamedTuple):
    """Lower and upper band bounds per class and neuron.

    Shape:
        low, high: float32 (C, D), or (D,) after selecting a class.
    """

    low: torch.Tensor
    high: torch.Tensor


def check_band(kind: str, level: float) -> None:
    """Raise ``ValueError`` unless ``kind`` is one of :data:`BAND_KINDS` and ``0 < level < 1``."""
    if kind not in BAND_KINDS:
        raise ValueError(f"band kind must be one of {BAND_KINDS}, got {kind!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"band level must be in (0, 1) (e.g. 0.95 for a 95% CI, 0.8 for the 10th–90th "
                         f"percentiles), got {level}")


def central_percentiles(level: float) -> tuple[float, float]:
    """The percentiles bounding the central ``level`` share of a distribution: 0.8 → (10, 90)."""
    check_band("percentile", level)
    return round(50.0 * (1.0 - level), 9), round(50.0 * (1.0 + level), 9)  # 0.8 → 10.0, not 9.999…


def class_bands(class_mean: ArrayLike, class_std: ArrayLike, class_count: ArrayLike,
                level: float = DEFAULT_CONFIDENCE) -> Bands:
    """Confidence intervals of the class means: ``mean ± t_{(1+level)/2, n−1} · std / √n``.

    ``class_std`` is taken as the sample standard deviation (ddof = 1). Classes with fewer than two
    images carry no interval: their band is (−inf, +inf), so their band gaps are 0.

    Shape:
        class_mean, class_std: (C, D); class_count: (C,); returns :class:`Bands` float32 (C, D).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    mean = as_numpy(class_mean).astype(np.float64)
    std = as_numpy(class_std).astype(np.float64)
    count = as_numpy(class_count).astype(np.float64).reshape(-1)
    if mean.shape != std.shape or mean.ndim != 2 or count.size != mean.shape[0]:
        raise ValueError(f"class_mean {mean.shape}, class_std {std.shape} and class_count ({count.size},) "
                         "do not match (C, D), (C, D), (C,)")
    valid = count >= 2
    if not valid.all():
        logger.warning("classes %s have fewer than 2 images: their bands are unbounded",
                       np.flatnonzero(~valid).tolist())
    dof = np.where(valid, count - 1, 1.0)
    half = stats.t.ppf((1.0 + level) / 2.0, dof)[:, None] * std / np.sqrt(np.where(valid, count, 1.0))[:, None]
    half = np.where(valid[:, None], half, np.inf)
    return Bands(torch.from_numpy((mean - half).astype(np.float32)), torch.from_numpy((mean + half).astype(np.float32)))


def percentile_bands(class_percentiles: ArrayLike, percentile_levels: Sequence[float] | ArrayLike,
                     low: float | None = None, high: float | None = None) -> Bands:
    """Bands between two percentiles of the class contributions.

    ``low`` and ``high`` are in the units of ``percentile_levels`` (default: the lowest and the
    highest stored level); levels between stored ones are linearly interpolated.

    Shape:
        class_percentiles: (P, C, D); percentile_levels: (P,); returns :class:`Bands` float32 (C, D).
    """
    levels = as_numpy(percentile_levels).astype(np.float64).reshape(-1)
    low = float(levels[0]) if low is None else low
    high = float(levels[-1]) if high is None else high
    if low > high:
        raise ValueError(f"low percentile {low} is above high percentile {high}")
    table = as_numpy(class_percentiles)
    if table.ndim != 3:
        raise ValueError(f"class_percentiles must be (P, C, D), got shape {table.shape}")
    lower = interpolate_level(table, levels, low, what="percentile level")
    upper = interpolate_level(table, levels, high, what="percentile level")
    return Bands(torch.from_numpy(lower.astype(np.float32)), torch.from_numpy(upper.astype(np.float32)))


def bands_of_kind(statistics: Mapping[str, ArrayLike], kind: str = DEFAULT_BAND_KIND,
                  level: float = DEFAULT_BAND_LEVEL, percentile_levels: Sequence[float] | None = None) -> Bands:
    """Class bands of one of :data:`BAND_KINDS` from the class statistics the store holds.

    ``statistics`` maps ``class_mean``, ``class_std``, ``class_count`` (for ``"ci"``) or
    ``class_percentiles`` (for ``"percentile"``, with its ``percentile_levels``) to arrays. A
    percentile the store lacks is interpolated between the two nearest stored ones (logged).

    Shape:
        class_mean, class_std: (C, D); class_count: (C,); class_percentiles: (P, C, D);
        returns :class:`Bands` float32 (C, D).
    """
    check_band(kind, level)
    if kind == "ci":
        return class_bands(statistics["class_mean"], statistics["class_std"], statistics["class_count"], level)
    if percentile_levels is None:
        raise ValueError("percentile bands need the stored percentile_levels")
    low, high = central_percentiles(level)
    stored = np.asarray(percentile_levels, dtype=np.float64)
    missing = [p for p in (low, high) if not np.any(np.abs(stored - p) <= 1e-6)]
    if missing:
        logger.warning("percentiles %s are not stored (stored: %s): interpolating linearly", missing,
                       stored.tolist())
    return percentile_bands(statistics["class_percentiles"], stored, low, high)


def band_gap(adv_low: ArrayLike, adv_high: ArrayLike, benign_low: ArrayLike, benign_high: ArrayLike) -> torch.Tensor:
    """Band gap of paper 001, §5.2.1, elementwise.

    ``CU_a − CL_b`` if ``CL_b > CU_a`` (adversarial band below the benign one: negative, inhibited);
    ``CL_a − CU_b`` if ``CL_a > CU_b`` (above: positive, excited); 0 when the bands overlap.

    Shape:
        all inputs broadcastable, typically (D,); returns float32 of the broadcast shape.
    """
    cl_a = as_tensor(adv_low, dtype=torch.float32)
    cu_a = as_tensor(adv_high, cl_a.device, torch.float32)
    cl_b = as_tensor(benign_low, cl_a.device, torch.float32)
    cu_b = as_tensor(benign_high, cl_a.device, torch.float32)
    zero = torch.zeros((), device=cl_a.device)
    return torch.where(cl_b > cu_a, cu_a - cl_b, torch.where(cl_a > cu_b, cl_a - cu_b, zero))


def pair_band_gap(bands: Bands, benign_class: int, adversarial_class: int) -> torch.Tensor:
    """Band gap of a pair: the adversarial class's band against the benign class's band.

    Shape:
        bands: :class:`Bands` (C, D); returns float32 (D,).
    """
    return band_gap(bands.low[adversarial_class], bands.high[adversarial_class],
                    bands.low[benign_class], bands.high[benign_class])


def band_regions(gap: ArrayLike) -> np.ndarray:
    """Shares of neurons in Fig. 4's regions: A (gap > 0, excited), B (gap = 0), C (gap < 0, inhibited).

    Shape:
        gap: (D,) or (N, D) band gaps; returns float64 (3,) or (N, 3), each row summing to 1.
    """
    values = as_numpy(gap).astype(np.float64)
    return np.stack([(values > 0).mean(-1), (values == 0).mean(-1), (values < 0).mean(-1)], axis=-1)


def rank_band_gap(gap: ArrayLike, by: str = "signed", tiebreak: ArrayLike | None = None) -> np.ndarray:
    """Neuron order for the Neuron Vulnerability View.

    ``"signed"`` (Fig. 4): largest positive gap first (excited), zeros in the middle, most negative
    last (inhibited); ``"magnitude"``: largest |gap| first. Ties (e.g. the zero region) follow
    ``tiebreak`` descending (e.g. adversarial curve − benign curve), then neuron index.

    Shape:
        gap: (D,); tiebreak: (D,) or None; returns int64 (D,).
    """
    if by not in ("signed", "magnitude"):
        raise ValueError(f"by must be 'signed' or 'magnitude', got {by!r}")
    scores = as_numpy(gap).astype(np.float64)
    return rank_descending(np.abs(scores) if by == "magnitude" else scores, tiebreak)
