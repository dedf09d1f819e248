"""Profile histograms, class fingerprints (spec-002 §1.5, §6 A11) and bundled background lines (§1.4),
checked against plain loops and hand-solved Bézier curves."""

from __future__ import annotations

import numpy as np
import pytest

from advlens.errors import ConfigError
from advlens.profiles import bundle, fingerprints, histograms, shared_range


@pytest.fixture
def profiles() -> tuple[np.ndarray, np.ndarray]:
    """90 images × 4 axes, three classes, a few missing positions."""
    rng = np.random.default_rng(11)
    labels = np.repeat([2, 5, 9], 30)
    values = rng.normal(labels[:, None] * np.arange(1, 5)[None, :] * 0.3, 1.0)
    values[3, 1] = np.nan
    values[40, 0] = values[41, 0] = np.nan
    return values, labels


# ----------------------------------------------------------------------------------- A11 histograms

def test_bin_counts_sum_to_each_class_size_minus_missing_positions(profiles):
    values, labels = profiles
    hist = histograms(values, labels, bins=8)
    assert hist.classes.tolist() == [2, 5, 9] and hist.counts.shape == (3, 4, 8)
    for k, label in enumerate([2, 5, 9]):
        for axis in range(4):
            column = values[labels == label, axis]
            assert hist.counts[k, axis].sum() == np.isfinite(column).sum() == 30 - hist.dropped[k, axis]
    assert hist.dropped[0].tolist() == [0, 1, 0, 0] and hist.dropped[1].tolist() == [2, 0, 0, 0]


def test_bins_are_shared_equal_bins_over_the_range_of_all_axes(profiles):
    values, labels = profiles
    hist = histograms(values, labels, bins=8)
    low, high = np.nanmin(values), np.nanmax(values)
    assert shared_range(values) == (low, high)
    np.testing.assert_allclose(hist.edges, low + (high - low) * np.arange(9) / 8)
    for k, label in enumerate([2, 5, 9]):  # a plain loop over images, bin by comparison with the edges
        for axis in range(4):
            expected = np.zeros(8, dtype=int)
            for value in values[labels == label, axis]:
                if np.isfinite(value):
                    expected[min(int(np.searchsorted(hist.edges, value, side="right")) - 1, 7)] += 1
            assert hist.counts[k, axis].tolist() == expected.tolist()


def test_a_fixed_range_clips_outliers_into_the_end_bins():
    hist = histograms(np.array([[-5.0], [0.1], [0.6], [7.0]]), np.zeros(4), bins=2, value_range=(0.0, 1.0))
    assert hist.counts[0, 0].tolist() == [2, 2]
    with pytest.raises(ConfigError, match="low < high"):
        histograms(np.ones((3, 1)), np.zeros(3), value_range=(1.0, 1.0))


def test_classes_can_be_listed_even_when_absent(profiles):
    values, labels = profiles
    hist = histograms(values, labels, bins=4, classes=[9, 0, 2])
    assert hist.classes.tolist() == [9, 0, 2] and hist.sizes.tolist() == [30, 0, 30]
    assert hist.counts[1].sum() == 0


def test_fingerprint_columns_are_each_class_share_per_bin(profiles):
    values, labels = profiles
    hist = histograms(values, labels, bins=6)
    prints = fingerprints(hist)
    assert prints.shape == (3, 6, 4)  # class, bin (row 0 lowest), axis
    np.testing.assert_allclose(prints.sum(axis=1), np.ones((3, 4)))
    for k in range(3):
        for axis in range(4):
            for b in range(6):
                assert prints[k, b, axis] == hist.counts[k, axis, b] / hist.counts[k, axis].sum()


def test_a_condensed_class_has_a_brighter_fingerprint():
    rng = np.random.default_rng(0)
    spread, tight = rng.uniform(0, 10, 50), rng.normal(5, 0.05, 50)
    prints = fingerprints(histograms(np.stack([spread, tight], axis=1), np.zeros(50), bins=10, value_range=(0, 10)))
    assert prints[0, :, 1].max() > 2 * prints[0, :, 0].max()


# ------------------------------------------------------------------------------------------- bundling

def _curves(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    breaks = np.flatnonzero(np.isnan(x))
    starts = np.concatenate([[0], breaks[:-1] + 1])
    return [(x[s:e], y[s:e]) for s, e in zip(starts, breaks)]


def test_without_bundling_lines_are_straight_between_axes(profiles):
    values, labels = profiles
    lines = bundle(values[:, :3], labels, beta=0.0, samples=5)
    assert lines.labels.tolist() == [2, 5, 9] and lines.images.tolist() == [30, 30, 30]
    curves = _curves(lines.x[0], lines.y[0])
    assert len(curves) == 30
    rows = values[labels == 2, :3]
    for (x, y), row in zip(curves, rows):
        np.testing.assert_allclose(x, np.linspace(0, 2, 9))
        if np.isnan(row[1]):  # image 3 has no position on the middle axis: nothing to draw
            assert np.isnan(y).all()
            continue
        expected = np.interp(x, [0, 1, 2], row)  # parallel coordinates: straight segments
        np.testing.assert_allclose(y, expected, atol=1e-12)


def test_bundling_pulls_each_segment_toward_its_cluster_centroid():
    # one label with 10 images (≤ 25 segments → one cluster): the centroid is the mean of (p0, p1)
    rng = np.random.default_rng(7)
    values = rng.normal(0, 3, (10, 2))
    beta = 0.8
    lines = bundle(values, np.zeros(10), beta=beta, samples=3)  # samples at t = 0, 0.5, 1
    c0, c1 = values.mean(axis=0)
    for (x, y), (p0, p1) in zip(_curves(lines.x[0], lines.y[0]), values):
        y1 = beta * c0 + (1 - beta) * (p0 + (p1 - p0) / 3)
        y2 = beta * c1 + (1 - beta) * (p0 + 2 * (p1 - p0) / 3)
        midpoint = (p0 + 3 * y1 + 3 * y2 + p1) / 8  # cubic Bézier at t = ½
        np.testing.assert_allclose(y, [p0, midpoint, p1])
        np.testing.assert_allclose(x, [0, 0.5, 1])


def test_bundling_draws_clusters_apart_inside_a_label():
    # 60 segments of one label in two tight groups → 2 clusters; each curve bends toward its own group
    values = np.concatenate([np.tile([[0.0, 0.0]], (30, 1)), np.tile([[10.0, 10.0]], (30, 1))])
    values += np.random.default_rng(1).normal(0, 0.01, values.shape)
    lines = bundle(values, np.zeros(60), beta=1.0, samples=3)
    mids = np.array([y[1] for _, y in _curves(lines.x[0], lines.y[0])])
    np.testing.assert_allclose(mids[:30], values[:30].mean(), atol=0.05)
    np.testing.assert_allclose(mids[30:], values[30:].mean(), atol=0.05)


def test_a_missing_position_breaks_the_line_and_empty_images_are_dropped():
    values = np.array([[0.0, 1.0, 2.0], [0.0, np.nan, 2.0], [np.nan, np.nan, np.nan]])
    lines = bundle(values, np.zeros(3), beta=0.0, samples=3)
    assert lines.images.tolist() == [2]
    second = _curves(lines.x[0], lines.y[0])[1][1]
    assert np.isnan(second).all()  # both segments touch the missing axis


def test_bundle_refuses_a_single_axis_and_a_bad_strength():
    with pytest.raises(ConfigError, match="L ≥ 2"):
        bundle(np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(ConfigError, match="beta"):
        bundle(np.zeros((4, 2)), np.zeros(4), beta=1.5)
