"""The diverging point of a pair's profiles (spec-002 §1.6, G-11, §6 A5, A12), on synthetic profiles
whose gaps, interquartile ranges and neighbours are set by hand."""

from __future__ import annotations

import numpy as np
import pytest

from advlens.errors import ConfigError
from advlens.profiles import axis_scales, diverging_point, median_pairwise_distance, nearest_class_by_median


@pytest.fixture
def background() -> tuple[np.ndarray, np.ndarray]:
    """Six axes; on every axis the background is 0…99 scaled so its IQR is exactly 2 (labels 0/1/2)."""
    base = np.arange(100, dtype=float)
    iqr = np.percentile(base, 75) - np.percentile(base, 25)  # 49.5
    profiles = np.repeat((base * 2 / iqr)[:, None], 6, axis=1)
    return profiles, np.arange(100) % 3


def test_known_jump_between_axes_3_and_4_is_found(background):
    profiles, _ = background
    control = np.zeros(6)
    adversarial = np.array([0.2, 0.4, 0.2, 0.6, 5.0, 5.4])  # gaps in IQRs: .1 .2 .1 .3 2.5 2.7
    result = diverging_point(control, adversarial, profiles)
    np.testing.assert_allclose(result.gaps, [0.1, 0.2, 0.1, 0.3, 2.5, 2.7])
    np.testing.assert_allclose(result.jumps, [0.1, -0.1, 0.2, 2.2, 0.2])
    assert result.segment == (3, 4)
    assert result.jump == pytest.approx(2.2)
    assert result.describe(["a", "b", "c", "d", "e", "f"]) == "diverges between d and e"


def test_identical_profiles_have_no_diverging_point(background):
    profiles, labels = background
    same = profiles[17].copy()
    result = diverging_point(same, same.copy(), profiles, labels=labels)
    assert result.segment is None and (result.gaps == 0).all()
    assert result.describe(list("abcdef")) == "no clear divergence"
    np.testing.assert_array_equal(result.affinity_a, result.affinity_b)


def test_a_jump_below_the_threshold_is_not_reported(background):
    profiles, _ = background
    control = np.zeros(6)
    adversarial = np.array([0, 0, 0, 1.8, 1.8, 1.8])  # one jump of 0.9 IQR
    assert diverging_point(control, adversarial, profiles).segment is None
    assert diverging_point(control, adversarial, profiles, threshold=0.8).segment == (2, 3)


def test_each_axis_is_scaled_by_its_own_interquartile_range():
    rng = np.random.default_rng(0)
    profiles = np.stack([rng.normal(0, 1, 400), rng.normal(0, 10, 400)], axis=1)
    scales = axis_scales(profiles)
    for axis in range(2):
        ordered = np.sort(profiles[:, axis])
        q1, q3 = np.quantile(ordered, 0.25), np.quantile(ordered, 0.75)
        assert scales[axis] == pytest.approx(q3 - q1)
    # the same raw gap of 5 is a big jump on the narrow axis, a small one on the wide axis
    result = diverging_point(np.zeros(2), np.array([5.0, 5.0]), profiles)
    assert result.gaps[0] > 5 * result.gaps[1]


def test_affinity_is_the_class_whose_background_median_is_nearest():
    profiles = np.array([[0.0, 9.0], [1.0, 10.0], [2.0, 11.0], [10.0, 0.0], [11.0, 1.0], [12.0, 2.0]])
    labels = np.array([4, 4, 4, 7, 7, 7])  # class 4 median (1, 10), class 7 median (11, 1)
    assert nearest_class_by_median(np.array([2.5, 2.5]), profiles, labels).tolist() == [4, 7]
    result = diverging_point(np.array([1.0, 10.0]), np.array([10.0, 1.5]), profiles, labels=labels)
    assert result.affinity_a.tolist() == [4, 4] and result.affinity_b.tolist() == [7, 7]


def test_raw_space_check_distances_and_neighbour_majority():
    rng = np.random.default_rng(2)
    labels = np.array([0] * 20 + [1] * 20)
    layer1 = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(8, 1, (20, 3))])
    layer2 = np.concatenate([rng.normal(0, 1, (20, 5)), rng.normal(-8, 1, (20, 5))])
    a = [np.zeros(3), np.zeros(5)]                 # the control sits with class 0 in both layers
    b = [np.zeros(3) + 0.1, np.full(5, -8.0)]      # the adversarial joins class 1 in layer 2
    profiles = rng.normal(size=(40, 2))
    result = diverging_point(np.zeros(2), np.ones(2), profiles, labels=labels, raw_a=a, raw_b=b,
                             raw_background=[layer1, layer2], neighbours=5)
    assert result.raw_affinity_a.tolist() == [0, 0]
    assert result.raw_affinity_b.tolist() == [0, 1]
    for index, layer in enumerate([layer1, layer2]):
        pairs = [np.linalg.norm(layer[i] - layer[j]) for i in range(40) for j in range(i + 1, 40)]
        assert median_pairwise_distance(layer) == pytest.approx(float(np.median(pairs)))
        expected = np.linalg.norm(a[index] - b[index]) / np.median(pairs)
        assert result.raw_distance[index] == pytest.approx(expected)
    assert result.cosine_distance[0] == 1.0  # the control is the zero vector: no angle, maximal distance
    kept = diverging_point(np.zeros(2), np.ones(2), profiles, raw_a=a, raw_b=b, raw_background=[layer1, layer2],
                           raw_scales=[2.0, 4.0])
    np.testing.assert_allclose(kept.raw_distance, [np.linalg.norm(b[0]) / 2, np.linalg.norm(b[1]) / 4])


def test_cosine_distance_of_parallel_and_orthogonal_vectors():
    rng = np.random.default_rng(4)
    layer = rng.normal(size=(10, 2))
    result = diverging_point(np.zeros(2), np.zeros(2), rng.normal(size=(10, 2)),
                             raw_a=[np.array([1.0, 0.0]), np.array([1.0, 1.0])],
                             raw_b=[np.array([0.0, 3.0]), np.array([2.0, 2.0])], raw_background=[layer, layer])
    np.testing.assert_allclose(result.cosine_distance, [1.0, 0.0], atol=1e-12)


def test_bad_inputs_are_refused_before_any_work(background):
    profiles, labels = background
    with pytest.raises(ConfigError, match=r"profile_b must have shape \(6,\)"):
        diverging_point(np.zeros(6), np.zeros(5), profiles)
    with pytest.raises(ConfigError, match="99 labels for 100"):
        diverging_point(np.zeros(6), np.zeros(6), profiles, labels=labels[:99])
    with pytest.raises(ConfigError, match="together"):
        diverging_point(np.zeros(6), np.zeros(6), profiles, raw_a=[np.zeros(2)] * 6)
    with pytest.raises(ConfigError, match="threshold"):
        diverging_point(np.zeros(6), np.zeros(6), profiles, threshold=-1)


def test_missing_positions_do_not_hide_a_divergence(background):
    profiles, _ = background
    adversarial = np.array([0.0, np.nan, 0.0, 0.0, 6.0, 6.0])
    result = diverging_point(np.zeros(6), adversarial, profiles)
    assert result.segment == (3, 4)


def test_raw_affinity_is_the_majority_of_the_neighbours_not_the_nearest_one():
    # one class-1 image right next to the query, four class-0 images a little further: majority 0
    layer = np.array([[0.1, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [9.0, 9.0], [9.5, 9.0]])
    labels = np.array([1, 0, 0, 0, 0, 1, 1])
    result = diverging_point(np.zeros(1), np.zeros(1), np.arange(7.0)[:, None], labels=labels,
                             raw_a=[np.zeros(2)], raw_b=[np.array([9.2, 9.0])], raw_background=[layer], neighbours=5)
    assert result.raw_affinity_a.tolist() == [0] and result.raw_affinity_b.tolist() == [1]
