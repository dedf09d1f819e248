"""Area under a patch curve and the k at which the prediction flips (issue 13, item 1).

The curve follows the probability of the *tracked* class (:attr:`PatchCurve.tracked_class`): for insertion
the adversarial class rising in the benign pass, for restoration the benign class recovering in the
adversarial pass. It is normalised per pair to the share of the attack's effect reached,

    q(k) = (p(k) − p_start) / (p_end − p_start), clipped to [0, 1],

where p_start is the tracked probability in the unpatched start pass (= p(0)) and p_end in the unpatched
pass of the other image (= p(all) at a layer that alone feeds the head). The area is the mean share over
the patched counts of the curve's span,

    AUC = mean of q(k) for k = k_first + 1, …, k_last,

with q linearly interpolated between the computed ks (:func:`grid_area`). For ks = 0, 1, …, K it is the
plain mean of q(1) … q(K): a ranking whose first channel alone reaches the whole effect scores 1; one that
reaches it only with its last channel scores 1/K. A coarser grid (:func:`~advlens.faithfulness.curves.default_ks`)
estimates the same quantity. A pair whose attack does not move the tracked probability
(p_end − p_start ≤ :data:`MIN_EFFECT`) gets NaN.
"""

from __future__ import annotations

import numpy as np

from advlens.errors import ConfigError
from advlens.faithfulness.curves import PatchCurve

MIN_EFFECT = 1e-6
"""Smallest p_end − p_start a normalised curve divides by."""


def normalised(curve: PatchCurve, clip: bool = True) -> np.ndarray:
    """q(k) per pair (NaN rows where the attack moves the tracked probability by ≤ :data:`MIN_EFFECT`).

    Shape: (P, n) float64.
    """
    tracked = curve.tracked().double().numpy()
    index = curve.tracked_class[:, None]
    start = curve.start_probs.double().gather(1, index).numpy()
    end = curve.end_probs.double().gather(1, index).numpy()
    effect = end - start
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(effect > MIN_EFFECT, (tracked - start) / effect, np.nan)
    return np.clip(q, 0.0, 1.0) if clip else q


def grid_area(ks: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of the values at k = k_first + 1 … k_last, linearly interpolated between the given ks, along the
    last axis (for consecutive ks: the right step rule Σ_{i≥1} v_i / (k_last − k_first)).

    Shape: ks (n,) strictly ascending, n ≥ 2; values (..., n) → (...).
    """
    ks = np.asarray(ks, dtype=np.float64)
    if ks.ndim != 1 or len(ks) < 2 or np.any(np.diff(ks) <= 0):
        raise ConfigError(f"an area needs at least two strictly ascending ks, got {ks.tolist()}"[:200])
    v = np.asarray(values, dtype=np.float64)
    width = np.diff(ks)  # per gap of w counts: Σ_{j=1..w} v_prev + (v_next − v_prev)·j/w
    gaps = width * v[..., :-1] + (v[..., 1:] - v[..., :-1]) * (width + 1) / 2
    return gaps.sum(axis=-1) / (ks[-1] - ks[0])


def patch_auc(curve: PatchCurve) -> np.ndarray:
    """Normalised area under each pair's curve (see the module docstring). Shape: (P,) float64 in [0, 1] or NaN."""
    return grid_area(curve.ks, normalised(curve))


def flip_k(curve: PatchCurve) -> np.ndarray:
    """The smallest k of the curve at which the prediction leaves the start class, else -1. Shape: (P,) int64."""
    flipped = curve.flipped().numpy()
    first = flipped.argmax(axis=1)
    return np.where(flipped.any(axis=1), curve.ks[first], -1).astype(np.int64)


def flipped_within(curve: PatchCurve, k: int) -> np.ndarray:
    """Whether the prediction leaves the start class at some patched k' ≤ ``k`` among the curve's ks.

    Shape: (P,) bool.
    """
    if int(k) not in set(curve.ks.tolist()):
        raise ConfigError(f"k = {k} is not among the curve's ks; compute the curve with it")
    first = flip_k(curve)
    return (first >= 0) & (first <= int(k))

