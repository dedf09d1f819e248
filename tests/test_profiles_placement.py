"""Placing new images on fixed profile axes (spec-002 §1.3, §6 A8 second half) and the input checks of
ActivationProfiles, without fitting a UMAP: the reference axes are set by hand (a 1-D curve in 6-D whose
position along the curve is its axis value), so where a new image belongs is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advlens.errors import ConfigError
from advlens.profiles import ActivationProfiles, place


def _curve(t: np.ndarray) -> np.ndarray:
    """Points at parameters t on a smooth curve in 6-D (unit speed up to a few percent)."""
    return np.stack([t, 2 * np.sin(t / 3), 2 * np.cos(t / 3), 0.5 * t, np.sin(t / 5), np.zeros_like(t)], axis=1)


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    """300 background points spread along the curve, their axis positions = their parameters."""
    t = np.linspace(0, 60, 300)
    noise = np.random.default_rng(0).normal(0, 0.05, (300, 6))
    return (_curve(t) + noise).astype(np.float32), t.astype(np.float32)


def test_a_new_point_lands_where_its_neighbours_are(reference):
    data, positions = reference
    targets = np.array([5.1, 17.3, 31.7, 44.4, 58.0])
    placed = place(_curve(targets).astype(np.float32), data, positions)
    np.testing.assert_allclose(placed, targets, atol=1.5)  # background spacing 0.2, neighbourhood ±1.5


def test_identical_images_get_identical_positions_in_one_call_and_in_two(reference):
    data, positions = reference
    image = _curve(np.array([23.3])).astype(np.float32) + 0.01
    together = place(np.concatenate([image, image]), data, positions)
    alone = place(image, data, positions)
    assert together[0] == together[1] == alone[0]  # a control and its ε = 0 adversarial


def test_a_position_does_not_depend_on_the_other_images_of_the_batch(reference):
    data, positions = reference
    rng = np.random.default_rng(1)
    batch = (_curve(rng.uniform(0, 60, 12)) + rng.normal(0, 0.2, (12, 6))).astype(np.float32)
    together = place(batch, data, positions)
    one_by_one = np.array([place(batch[i:i + 1], data, positions)[0] for i in range(12)])
    np.testing.assert_array_equal(together, one_by_one)


def test_reference_points_without_a_position_are_not_used(reference):
    data, positions = reference
    holes = positions.copy()
    holes[::7] = np.nan  # points UMAP left disconnected
    new = _curve(np.array([12.0, 40.0])).astype(np.float32)
    keep = np.isfinite(holes)
    np.testing.assert_array_equal(place(new, data, holes), place(new, data[keep], positions[keep]))


def test_restored_profiles_place_images_on_every_layer(reference):
    data, positions = reference
    second = (data[:, ::-1] * 2).copy()  # another layer: other values, same images
    embeddings = np.stack([positions, -positions], axis=1)
    profiles = ActivationProfiles.from_embeddings([data, torch.from_numpy(second)], embeddings, random_state=0)
    new = _curve(np.array([8.0, 50.0])).astype(np.float32)
    placed = profiles.transform([new, new[:, ::-1] * 2])
    assert placed.shape == (2, 2)
    np.testing.assert_array_equal(placed[:, 0], place(new, data, positions))
    np.testing.assert_array_equal(placed[:, 1], place(new[:, ::-1] * 2, second, -positions))
    assert profiles.n_layers_ == 2 and profiles.n_disconnected_.tolist() == [0, 0]


def test_conv_maps_are_flattened_per_image(reference):
    data, positions = reference
    maps = data.reshape(300, 2, 3, 1)
    profiles = ActivationProfiles.from_embeddings([maps], positions[:, None])
    np.testing.assert_array_equal(profiles.transform([maps[:4]]), profiles.transform([data[:4]]))


# ----------------------------------------------------------------------------------------- input checks

def test_fit_refuses_bad_backgrounds_before_any_work():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"same 30 images, but layer\(s\) 1 hold 29"):
        ActivationProfiles().fit([rng.normal(size=(30, 4)), rng.normal(size=(29, 4))])
    with pytest.raises(ConfigError, match="holds 12 images but n_neighbors is 15"):
        ActivationProfiles().fit([rng.normal(size=(12, 4))] * 2)
    bad = rng.normal(size=(30, 4))
    bad[3, 1] = np.nan
    with pytest.raises(ConfigError, match=r"background\[1\] holds NaN"):
        ActivationProfiles().fit([rng.normal(size=(30, 4)), bad])
    with pytest.raises(ConfigError, match="one \\(n, D\\) activation matrix per layer"):
        ActivationProfiles().fit(rng.normal(size=(30, 4)))
    with pytest.raises(ConfigError, match="n_neighbors must be an integer"):
        ActivationProfiles(n_neighbors=1.5).fit([rng.normal(size=(30, 4))])
    with pytest.raises(ConfigError, match="alignment_regularisation"):
        ActivationProfiles(alignment_regularisation=-1).fit([rng.normal(size=(30, 4))])


def test_transform_refuses_other_layers(reference):
    data, positions = reference
    profiles = ActivationProfiles.from_embeddings([data], positions[:, None])
    with pytest.raises(ConfigError, match="fitted on 1"):
        profiles.transform([data[:2], data[:2]])
    with pytest.raises(ConfigError, match="5 values per image, the fitted layer 6"):
        profiles.transform([data[:2, :5]])
    with pytest.raises(ConfigError, match="not fitted"):
        ActivationProfiles().transform([data[:2]])
    with pytest.raises(ConfigError, match="expected \\(n, L\\)"):
        ActivationProfiles.from_embeddings([data], positions[:, None][:5])


def test_bandwidth_solves_umaps_equation_and_ignores_other_rows():
    from advlens.profiles.placement import membership_strengths, smooth_knn_sigma

    k, d = 15, 2.5
    equal = np.full((1, k), d, dtype=np.float32)  # Σ_{j≥1} exp(−d/σ) = log2 k  ⇒  σ = d / ln((k−1)/log2 k)
    assert smooth_knn_sigma(equal, k)[0] == pytest.approx(d / np.log((k - 1) / np.log2(k)), rel=1e-4)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.gamma(2.0, 3.0, (4, k)), axis=1).astype(np.float32)
    sigma = smooth_knn_sigma(rows, k)
    sums = np.exp(-rows[:, 1:] / sigma[:, None]).sum(axis=1)
    np.testing.assert_allclose(sums, np.log2(k), atol=1e-4)
    tiny = np.sort(rng.uniform(1e-4, 2e-4, (1, k)), axis=1).astype(np.float32)
    huge = np.sort(rng.uniform(1e3, 2e3, (1, k)), axis=1).astype(np.float32)
    assert smooth_knn_sigma(np.concatenate([tiny, huge]), k)[0] == smooth_knn_sigma(tiny, k)[0]
    strengths = membership_strengths(np.array([[0.0, 1.0, 2.0]], np.float32), np.array([2.0], np.float32))
    np.testing.assert_allclose(strengths, [[1.0, np.exp(-0.5), np.exp(-1.0)]], rtol=1e-6)


def test_blocked_distances_match_scipy():
    from scipy.spatial.distance import cdist

    from advlens.profiles._arrays import euclidean

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(37, 9)).astype(np.float32), rng.normal(size=(70, 9)).astype(np.float32)
    np.testing.assert_allclose(euclidean(a, b, block=16), cdist(a.astype(float), b.astype(float)), atol=1e-9)


def _loop_neighbours(new: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest reference rows of each new row by a plain float64 loop (ties in row order)."""
    indices, dists = [], []
    for x in new.astype(np.float64):
        d = np.array([np.sqrt(np.sum((x - y) ** 2)) for y in reference.astype(np.float64)])
        order = np.argsort(d, kind="stable")[:k]
        indices.append(order)
        dists.append(d[order])
    return np.array(indices), np.array(dists)


def test_new_images_find_the_neighbours_a_float64_loop_finds():
    """The float32 Gram distances of the placement (as the fit's) pick the same neighbours, in the same order, as a
    float64 loop, on non-negative activations far from the origin (a line through 3,000-D at offset 40, where
    uncentred float32 products would lose the small distances), spaced so that the k + 1 nearest distances of
    each new image are apart by far more than float32 rounding: the sets must agree."""
    from advlens.profiles.placement import _nearest

    rng = np.random.default_rng(5)
    k = 15
    direction = rng.uniform(0, 1, 3000)
    direction /= np.linalg.norm(direction)
    t = rng.permutation(np.arange(400) * 0.25)  # reference rows in shuffled order
    targets = np.array([3.1, 17.35, 50.06, 88.2, 99.6])
    reference = (40.0 + t[:, None] * direction).astype(np.float32)
    new = (40.0 + targets[:, None] * direction).astype(np.float32)
    expected, distances = _loop_neighbours(new, reference, k + 1)
    assert np.diff(distances, axis=1).min() > 0.03  # no near-tie among the k + 1 nearest
    indices, dists = _nearest(new, reference, k)
    np.testing.assert_array_equal(indices, expected[:, :k])
    np.testing.assert_allclose(dists, distances[:, :k], rtol=1e-2, atol=5e-3)  # float32 rounding of d²
    assert dists.dtype == np.float32


def test_gram_distances_match_scipy_across_blocks():
    from scipy.spatial.distance import cdist

    from advlens.profiles._arrays import gram_distances

    rng = np.random.default_rng(6)
    a, b = rng.normal(3, 1, (7, 40)).astype(np.float32), rng.normal(3, 1, (50, 40)).astype(np.float32)
    found = gram_distances(a, b, block=16)
    assert found.dtype == np.float32 and found.shape == (7, 50)
    np.testing.assert_allclose(found, cdist(a.astype(float), b.astype(float)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gram_distances(b[:3], b)[np.arange(3), np.arange(3)], 0.0, atol=1e-2)  # √ of rounding


def test_gram_distances_of_a_row_do_not_depend_on_the_other_rows():
    from advlens.profiles._arrays import gram_distances

    rng = np.random.default_rng(7)
    a, b = rng.uniform(0, 5, (5, 3000)).astype(np.float32), rng.uniform(0, 5, (300, 3000)).astype(np.float32)
    together = gram_distances(a, b)
    np.testing.assert_array_equal(together[2], gram_distances(a[2:3], b)[0])
    np.testing.assert_array_equal(together[:2], gram_distances(a[:2], b))
