"""Profile histograms and class fingerprints (paper 002 §4.3, §5.2; spec-002 §1.5, G-9, G-10, G-12).

A profile histogram counts, per class, the background images in each of B equal bins of one axis;
every axis and every class uses the same bins, spread over one shared range (the Flow View's y-range,
G-12), so histograms compare across axes and classes. A class fingerprint joins one class's
histograms into a heatmap: ``F_c[b, i]`` = the fraction of class c's images (with a position on axis
i) that fall in bin b, so each column sums to 1 and a brighter cell means the class is condensed
there. Row 0 is the lowest bin, as on the Flow View's axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advlens.errors import ConfigError
from advlens.profiles._arrays import ArrayLike, as_array, positive_int

DEFAULT_BINS = 32


@dataclass(frozen=True, eq=False)
class ProfileHistograms:
    """Per-class histograms of every axis over shared bins.

    Attributes:
        classes: the labels, ascending (or as asked).
        counts: images of each class in each bin of each axis.
        edges: the B + 1 bin edges shared by every axis and class.
        dropped: images of each class without a position on an axis (NaN, G-25).
        sizes: images of each class.

    Shape:
        classes: (K,); counts: (K, L, B) int64; edges: (B + 1,); dropped: (K, L); sizes: (K,).
    """

    classes: np.ndarray
    counts: np.ndarray
    edges: np.ndarray
    dropped: np.ndarray
    sizes: np.ndarray


def shared_range(profiles: ArrayLike) -> tuple[float, float]:
    """(low, high) over every finite position of every axis: the Flow View's one y-range (G-12).

    A degenerate range (one value) is widened by 0.5 each side. Shape: profiles (n, L).
    """
    values = as_array(profiles).astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ConfigError("no finite profile position: the range of the axes is undefined")
    low, high = float(finite.min()), float(finite.max())
    return (low - 0.5, high + 0.5) if low == high else (low, high)


def histograms(profiles: ArrayLike, labels: ArrayLike, bins: int = DEFAULT_BINS,
               value_range: tuple[float, float] | None = None,
               classes: ArrayLike | None = None) -> ProfileHistograms:
    """Count each class's background positions in ``bins`` equal bins per axis (G-9).

    Args:
        profiles: background profiles (NaN positions are dropped and counted).
        labels: each image's label (true or predicted, G-13).
        bins: number of bins B.
        value_range: (low, high) of the bins; default :func:`shared_range` of ``profiles``. Values
            outside are clipped into the end bins, so every positioned image is counted.
        classes: the labels to report, in this order (default: those present, ascending); a class
            with no image gets zero counts.

    Shape:
        profiles: (n, L); labels: (n,).
    """
    values = as_array(profiles).astype(np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ConfigError(f"profiles must have shape (n, L) with n ≥ 1, got {values.shape}")
    label_array = as_array(labels).reshape(-1)
    if label_array.shape[0] != values.shape[0]:
        raise ConfigError(f"{label_array.shape[0]} labels for {values.shape[0]} profiles")
    bins = positive_int(bins, "bins")
    low, high = shared_range(values) if value_range is None else (float(value_range[0]), float(value_range[1]))
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ConfigError(f"value_range must be two finite numbers low < high, got {value_range!r}")
    class_array = np.unique(label_array) if classes is None else as_array(classes).reshape(-1)
    edges = np.linspace(low, high, bins + 1)
    index = np.clip(np.floor((values - low) / (high - low) * bins), 0, bins - 1)  # (n, L), NaN stays NaN
    counts = np.zeros((len(class_array), values.shape[1], bins), dtype=np.int64)
    dropped = np.zeros((len(class_array), values.shape[1]), dtype=np.int64)
    sizes = np.zeros(len(class_array), dtype=np.int64)
    for k, label in enumerate(class_array):
        rows = index[label_array == label]
        sizes[k] = rows.shape[0]
        for axis in range(values.shape[1]):
            column = rows[:, axis]
            finite = column[np.isfinite(column)].astype(np.int64)
            counts[k, axis] = np.bincount(finite, minlength=bins)
            dropped[k, axis] = column.size - finite.size
    return ProfileHistograms(class_array, counts, edges, dropped, sizes)


def fingerprints(hist: ProfileHistograms) -> np.ndarray:
    """Class fingerprints ``F_c[b, i]``: each class's share of its positioned images per bin (G-10).

    A column of a class with no positioned image on that axis is all zero. Share one colour scale,
    0 → ``F.max()``, across classes.

    Shape:
        returns float64 (K, B, L): class, bin (row 0 = lowest), axis.
    """
    counts = hist.counts.astype(np.float64)  # (K, L, B)
    totals = counts.sum(axis=2, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    return np.transpose(shares, (0, 2, 1))
