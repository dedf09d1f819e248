"""The diverging point of a control/adversarial pair's profiles (spec-002 §1.6, G-11).

Paper 002 defines it only visually: the pair of layers where the two lines drastically part, after
which the adversarial follows the class the model perceives. Here (G-11): on each axis the pair's gap
is measured in that axis' background interquartile range, ``d_i = |p_i(a) − p_i(b)| / IQR_i``; the
diverging point is the segment (i, i+1) with the largest increase ``d_{i+1} − d_i``, reported only
when that increase reaches ``threshold`` (default 1 IQR). Indices are 0-based positions in the layer
list.

Each axis also gets the checks the hover shows: the class whose background median is nearest to
each image on the axis, and, from the raw activations, the majority label of the image's nearest
background neighbours, the raw distance of the pair over the median background pairwise distance,
and the cosine distance (so a jump in 1-D can be told from a projection artefact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from advlens.errors import ConfigError
from advlens.profiles._arrays import ArrayLike, as_array, euclidean, layer_stack, positive_int, real, vector

DEFAULT_THRESHOLD = 1.0
"""Smallest jump of the IQR-scaled gap reported as a diverging point (G-11)."""
RAW_NEIGHBOURS = 15
"""Background neighbours whose majority label is an image's raw-space affinity (spec-002 §1.6)."""


@dataclass(frozen=True, eq=False)
class Divergence:
    """Where a pair's profiles part, and the per-axis evidence.

    Attributes:
        segment: ``(i, i + 1)``, the axes between which the scaled gap jumps most, or ``None`` when no
            jump reaches the threshold ("no clear divergence").
        jump: the largest jump (NaN when there is no finite one).
        gaps: ``d_i``, the pair's gap on each axis in background IQRs.
        jumps: ``d_{i+1} − d_i`` for each segment.
        threshold: the threshold used.
        affinity_a, affinity_b: per axis, the class whose background median is nearest to each image
            (``None`` without background labels).
        raw_affinity_a, raw_affinity_b: per layer, the majority label of the image's nearest background
            neighbours in the raw activations (``None`` without raw activations and labels).
        raw_distance: per layer, ``‖L(a) − L(b)‖`` over the median pairwise background distance
            (``None`` without raw activations).
        cosine_distance: per layer, ``1 − cos(L(a), L(b))`` (``None`` without raw activations).

    Shape:
        gaps: (L,); jumps: (L−1,); the per-axis arrays: (L,).
    """

    segment: tuple[int, int] | None
    jump: float
    gaps: np.ndarray
    jumps: np.ndarray
    threshold: float
    affinity_a: np.ndarray | None = None
    affinity_b: np.ndarray | None = None
    raw_affinity_a: np.ndarray | None = None
    raw_affinity_b: np.ndarray | None = None
    raw_distance: np.ndarray | None = None
    cosine_distance: np.ndarray | None = None

    def describe(self, layers: Sequence[str]) -> str:
        """The badge text: "diverges between A and B", or "no clear divergence"."""
        if self.segment is None:
            return "no clear divergence"
        return f"diverges between {layers[self.segment[0]]} and {layers[self.segment[1]]}"


def axis_scales(background: ArrayLike) -> np.ndarray:
    """Interquartile range of each axis over the background (NaN positions ignored).

    An axis whose IQR is 0 (most images on one spot) falls back to its full range, then to 1.

    Shape:
        background: (n, L); returns float64 (L,).
    """
    profiles = as_array(background).astype(np.float64)
    if profiles.ndim != 2 or profiles.shape[0] == 0:
        raise ConfigError(f"background profiles must have shape (n, L), got {profiles.shape}")
    q1, q3 = np.nanpercentile(profiles, [25, 75], axis=0)
    scale = q3 - q1
    spread = np.nanmax(profiles, axis=0) - np.nanmin(profiles, axis=0)
    scale = np.where(scale > 0, scale, spread)
    return np.where(scale > 0, scale, 1.0)


def nearest_class_by_median(positions: ArrayLike, background: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Per axis, the label whose background median is nearest to each image (ties: smaller label).

    Shape:
        positions: (m, L) or (L,); background: (n, L); labels: (n,); returns int64 (m, L) or (L,).
    """
    profiles = as_array(background).astype(np.float64)
    points = as_array(positions).astype(np.float64)
    single = points.ndim == 1
    points = points.reshape(1, -1) if single else points
    label_array = as_array(labels).reshape(-1)
    if label_array.shape[0] != profiles.shape[0]:
        raise ConfigError(f"{label_array.shape[0]} labels for {profiles.shape[0]} background images")
    classes = np.unique(label_array)
    medians = np.stack([np.nanmedian(profiles[label_array == c], axis=0) for c in classes])  # (K, L)
    distance = np.abs(points[:, None, :] - medians[None, :, :])  # (m, K, L)
    distance = np.where(np.isnan(distance), np.inf, distance)
    result = classes[np.argmin(distance, axis=1)].astype(np.int64)
    return result[0] if single else result


def raw_affinity(image: np.ndarray, background: np.ndarray, labels: np.ndarray,
                 neighbours: int = RAW_NEIGHBOURS) -> int:
    """Majority label of the ``neighbours`` nearest background rows to ``image`` (Euclidean; ties: the
    label of the nearest among the tied). Shape: image (D,); background (n, D); labels (n,)."""
    distance = euclidean(image.reshape(1, -1), background)[0]
    k = min(neighbours, background.shape[0])
    nearest = np.argsort(distance, kind="stable")[:k]
    votes: dict = {}
    for label in labels[nearest]:
        votes[label] = votes.get(label, 0) + 1
    best = max(votes.values())
    return int(next(label for label in labels[nearest] if votes[label] == best))


def median_pairwise_distance(background: np.ndarray) -> float:
    """Median Euclidean distance over all pairs of distinct background rows. Shape: (n, D)."""
    distance = euclidean(background, background)
    upper = distance[np.triu_indices(len(background), k=1)]
    return float(np.median(upper)) if upper.size else float("nan")


def diverging_point(profile_a: ArrayLike, profile_b: ArrayLike, background: ArrayLike, *,
                    labels: ArrayLike | None = None, threshold: float = DEFAULT_THRESHOLD,
                    raw_a: Sequence[ArrayLike] | None = None, raw_b: Sequence[ArrayLike] | None = None,
                    raw_background: Sequence[ArrayLike] | None = None,
                    raw_scales: ArrayLike | None = None, neighbours: int = RAW_NEIGHBOURS) -> Divergence:
    """The segment where the profiles of ``a`` (control) and ``b`` (adversarial) part (G-11).

    Args:
        profile_a, profile_b: the pair's positions on the L axes.
        background: the background's profiles on the same axes.
        labels: the background's labels (true or predicted) for the per-axis class affinities.
        threshold: smallest jump, in IQRs, reported as a diverging point.
        raw_a, raw_b: the pair's raw activations, one (D_i,) vector (or (C, H, W) map) per layer.
        raw_background: the background's raw activations, one (n, D_i) matrix per layer; with
            ``raw_a``/``raw_b`` it gives the raw distances, and with ``labels`` the raw affinities.
        raw_scales: the median pairwise background distance of each layer
            (:func:`median_pairwise_distance`), when kept from earlier: computing it costs O(n² D).
        neighbours: background neighbours voting for the raw affinity.

    Shape:
        profile_a, profile_b: (L,); background: (n, L); labels: (n,); raw_*: L × (D_i,) / (n, D_i);
        raw_scales: (L,).
    """
    profiles = as_array(background).astype(np.float64)
    if profiles.ndim != 2:
        raise ConfigError(f"background profiles must have shape (n, L), got {profiles.shape}")
    axes = profiles.shape[1]
    a = vector(profile_a, "profile_a", axes)
    b = vector(profile_b, "profile_b", axes)
    threshold = real(threshold, "threshold", 0.0)
    neighbours = positive_int(neighbours, "neighbours")
    label_array = None
    if labels is not None:
        label_array = as_array(labels).reshape(-1)
        if label_array.shape[0] != profiles.shape[0]:
            raise ConfigError(f"{label_array.shape[0]} labels for {profiles.shape[0]} background images")
    raw = _raw_inputs(raw_a, raw_b, raw_background, axes, profiles.shape[0])

    gaps = np.abs(a - b) / axis_scales(profiles)
    jumps = np.diff(gaps)
    finite = np.isfinite(jumps)
    best = int(np.argmax(np.where(finite, jumps, -np.inf))) if finite.any() else None
    jump = float(jumps[best]) if best is not None else float("nan")
    segment = (best, best + 1) if best is not None and jump >= threshold else None

    extra: dict = {}
    if label_array is not None:
        extra["affinity_a"] = nearest_class_by_median(a, profiles, label_array)
        extra["affinity_b"] = nearest_class_by_median(b, profiles, label_array)
    if raw is not None:
        ra, rb, rbg = raw
        scales = (vector(raw_scales, "raw_scales", axes) if raw_scales is not None
                  else np.array([median_pairwise_distance(layer) for layer in rbg]))
        extra["raw_distance"] = np.array([np.linalg.norm(x.astype(np.float64) - y) for x, y in zip(ra, rb)]) / scales
        extra["cosine_distance"] = np.array([_cosine_distance(x, y) for x, y in zip(ra, rb)])
        if label_array is not None:
            extra["raw_affinity_a"] = np.array([raw_affinity(x, layer, label_array, neighbours)
                                                for x, layer in zip(ra, rbg)])
            extra["raw_affinity_b"] = np.array([raw_affinity(y, layer, label_array, neighbours)
                                                for y, layer in zip(rb, rbg)])
    return Divergence(segment, jump, gaps, jumps, threshold, **extra)


def _cosine_distance(x: np.ndarray, y: np.ndarray) -> float:
    """``1 − cos(x, y)``; 1 when exactly one vector is zero, 0 when both are."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    if norm == 0:
        return 0.0 if not (x.any() or y.any()) else 1.0
    return 1.0 - float(np.dot(x, y)) / norm


def _raw_inputs(raw_a, raw_b, raw_background, axes: int, rows: int):
    given = [x is not None for x in (raw_a, raw_b, raw_background)]
    if not any(given):
        return None
    if not all(given):
        raise ConfigError("the raw-space check needs raw_a, raw_b and raw_background together")
    background = layer_stack(raw_background, "raw_background", rows=rows)
    pair_a = [row[0] for row in layer_stack([as_array(x)[None] for x in raw_a], "raw_a", rows=1)]
    pair_b = [row[0] for row in layer_stack([as_array(x)[None] for x in raw_b], "raw_b", rows=1)]
    for name, pair in (("raw_a", pair_a), ("raw_b", pair_b)):
        if len(pair) != axes or len(background) != axes:
            raise ConfigError(f"{name} and raw_background need one entry per axis ({axes})")
        for index, (x, layer) in enumerate(zip(pair, background)):
            if x.shape[0] != layer.shape[1]:
                raise ConfigError(f"{name}[{index}] has {x.shape[0]} values, raw_background[{index}] "
                                  f"{layer.shape[1]} per image")
    return pair_a, pair_b, background
