"""Background flow: curved, bundled lines through the axes (paper 002 §4.3; spec-002 §1.4, G-8).

Paper 002 bundles each pair of neighbouring axes by clustering on (label, p_i, p_{i+1}) and names no
algorithm. Here (G-8): inside each label, the segments' points ``(p_i, p_{i+1})`` are clustered by
k-means (``k = clamp(round(n / 25), 1, 12)``, seeded); each segment becomes a cubic Bézier from
``(x_i, p_i)`` to ``(x_{i+1}, p_{i+1})`` whose two inner control points, at ``x_i + Δ/3`` and
``x_i + 2Δ/3``, are pulled toward the cluster centroid ``(c_i, c_{i+1})`` with strength β:
``y₁ = β·c_i + (1−β)·(p_i + (p_{i+1} − p_i)/3)`` and ``y₂ = β·c_{i+1} + (1−β)·(p_i + 2(p_{i+1} − p_i)/3)``.
β = 0 gives the straight lines of parallel coordinates (the spec's stated β = 0 behaviour: its formula
pulls from the end points and would bend even unbundled lines), β = 1 draws every segment of a
cluster through its centroid.

The result holds one polyline per image and label, with NaN separators, ready for one Plotly
``Scattergl`` trace per label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advlens.errors import ConfigError
from advlens.profiles._arrays import ArrayLike, as_array, positive_int, real

DEFAULT_BUNDLING = 0.8
SEGMENTS_PER_CLUSTER = 25
MAX_CLUSTERS = 12
CURVE_SAMPLES = 16


@dataclass(frozen=True, eq=False)
class BundledLines:
    """Background lines of each label, as x/y point lists with NaN between images.

    Attributes:
        labels: the labels, ascending.
        x, y: per label, the points of its images' curves; an image's curve runs through all axes
            (axis i at x = i), a NaN breaks it where a position is missing and ends it.
        images: per label, how many images' curves it holds.

    Shape:
        x[k], y[k]: (P_k,) float64.
    """

    labels: np.ndarray
    x: list[np.ndarray]
    y: list[np.ndarray]
    images: np.ndarray


def cluster_count(segments: int, per_cluster: int = SEGMENTS_PER_CLUSTER, most: int = MAX_CLUSTERS) -> int:
    """``clamp(round(segments / per_cluster), 1, most)`` (G-8)."""
    return int(min(max(round(segments / per_cluster), 1), most))


def segment_centroids(first: np.ndarray, second: np.ndarray, random_state: int = 0) -> np.ndarray:
    """Each segment's k-means cluster centroid in the (p_i, p_{i+1}) plane.

    Shape:
        first, second: (s,) finite; returns (s, 2).
    """
    points = np.stack([first, second], axis=1)
    k = min(cluster_count(len(points)), len(np.unique(points, axis=0)))
    if k <= 1:
        return np.repeat(points.mean(axis=0, keepdims=True), len(points), axis=0)
    from sklearn.cluster import KMeans  # noqa: PLC0415 - scikit-learn's import is slow; only bundling needs it

    model = KMeans(n_clusters=k, n_init=1, random_state=random_state).fit(points)
    return model.cluster_centers_[model.labels_]


def bezier(y0: np.ndarray, y1: np.ndarray, y2: np.ndarray, y3: np.ndarray, samples: int) -> np.ndarray:
    """y of cubic Bézier curves at ``samples`` evenly spaced parameters t ∈ [0, 1].

    Shape:
        y0…y3: (s,); returns (s, samples).
    """
    t = np.linspace(0.0, 1.0, samples)[None, :]
    u = 1.0 - t
    return (u ** 3 * y0[:, None] + 3 * u ** 2 * t * y1[:, None] + 3 * u * t ** 2 * y2[:, None]
            + t ** 3 * y3[:, None])


def bundle(profiles: ArrayLike, labels: ArrayLike, beta: float = DEFAULT_BUNDLING, samples: int = CURVE_SAMPLES,
           random_state: int = 0) -> BundledLines:
    """Bundled background curves, one per image, grouped by label (G-8).

    Args:
        profiles: background profiles (axis i is drawn at x = i).
        labels: each image's label (true or predicted).
        beta: bundling strength in [0, 1] (0: straight lines).
        samples: points per curve between two axes (≥ 2).
        random_state: seed of the k-means.

    Shape:
        profiles: (n, L) with L ≥ 2; labels: (n,).
    """
    values = as_array(profiles).astype(np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ConfigError(f"profiles must have shape (n, L) with L ≥ 2 axes, got {values.shape}")
    label_array = as_array(labels).reshape(-1)
    if label_array.shape[0] != values.shape[0]:
        raise ConfigError(f"{label_array.shape[0]} labels for {values.shape[0]} profiles")
    beta = real(beta, "beta", 0.0, 1.0)
    samples = positive_int(samples, "samples", minimum=2)
    axes = values.shape[1]
    classes = np.unique(label_array)
    xs, ys, counts = [], [], []
    for label in classes:
        rows = values[label_array == label]
        rows = rows[np.isfinite(rows).any(axis=1)]
        curve = np.full((rows.shape[0], axes - 1, samples), np.nan)
        for i in range(axes - 1):
            a, b = rows[:, i], rows[:, i + 1]
            ok = np.isfinite(a) & np.isfinite(b)
            if not ok.any():
                continue
            centre = segment_centroids(a[ok], b[ok], random_state)
            a_ok, b_ok = a[ok], b[ok]
            c1 = beta * centre[:, 0] + (1 - beta) * (a_ok + (b_ok - a_ok) / 3)
            c2 = beta * centre[:, 1] + (1 - beta) * (a_ok + 2 * (b_ok - a_ok) / 3)
            curve[ok, i] = bezier(a_ok, c1, c2, b_ok, samples)
        x_one, y_one = _polylines(curve, samples)
        xs.append(x_one)
        ys.append(y_one)
        counts.append(rows.shape[0])
    return BundledLines(classes, xs, ys, np.asarray(counts, dtype=np.int64))


def _polylines(curve: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Join each image's segment curves into one polyline (shared joints once) and end it with NaN.

    A missing segment is a NaN run, so the line breaks there. Shape: curve (m, L−1, samples).
    """
    m, segments, _ = curve.shape
    x_segment = np.arange(segments)[:, None] + np.linspace(0.0, 1.0, samples)[None, :]
    y = np.concatenate([curve[:, :, :-1].reshape(m, -1), curve[:, -1, -1:]], axis=1)
    x = np.concatenate([x_segment[:, :-1].reshape(-1), x_segment[-1, -1:]])
    # where a segment is missing, the next one's start point is also unknown: keep the gap visible
    y = np.concatenate([y, np.full((m, 1), np.nan)], axis=1)
    x_all = np.broadcast_to(np.concatenate([x, [np.nan]]), y.shape)
    return x_all.reshape(-1).copy(), y.reshape(-1)
