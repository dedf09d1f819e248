"""The aligned 1-D UMAP fit (spec-002 §1.3, §6 A6, A7, A8) on a synthetic stack of layers whose cluster
structure is known; its parts against plain loops and against umap-learn's own code (AlignedUMAP's
graphs, overlap weights and SGD; UMAP.transform for the placement of new images).

One fit is shared by the module (seconds: the SGD kernel is compiled once and cached on disk). The tests
that call umap-learn's own numba code as the peer are marked slow: umap-learn compiles it in every
process (a minute or more on two shared cores). UMAP outputs are compared within one fit, never across
refits with other inputs (spec-002 §5).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from advlens.profiles import ActivationProfiles, place
from advlens.profiles._arrays import euclidean
from advlens.profiles.aligned import (
    fuzzy_graph,
    identity_relations,
    initial_layout,
    nearest_neighbours,
    neighbourhood_overlap,
    optimise_layout,
    smooth_knn_dist,
    warm_up,
)
from advlens.profiles.placement import membership_strengths, smooth_knn_sigma

LAYERS = 6
MOVE_FROM = 3  # 0-based: from the fourth layer on, the moving points sit in cluster B


def _stack(seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Six clusters in 10-D, 60 points each, plus 60 more in cluster A (label 0) that move into
    cluster B (label 1) from layer MOVE_FROM on; every layer adds its own N(0, 0.3) noise (A6, A7)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (6, 10))
    labels = np.concatenate([np.repeat(np.arange(6), 60), np.zeros(60, dtype=int)])
    moving = np.arange(360, 420)
    offsets = rng.normal(0, 1, (len(labels), 10))
    layers = []
    for layer in range(LAYERS):
        base = centres[labels] + offsets
        if layer >= MOVE_FROM:
            base[moving] = centres[1] + offsets[moving]
        layers.append((base + rng.normal(0, 0.3, base.shape)).astype(np.float32))
    return layers, labels, moving


@pytest.fixture(scope="module")
def fitted():
    layers, labels, moving = _stack()
    return ActivationProfiles(random_state=0).fit(layers), layers, labels, moving


def test_embeddings_have_one_finite_column_per_layer(fitted):
    profiles, layers, _, _ = fitted
    assert profiles.embeddings_.shape == (420, LAYERS)
    assert np.isfinite(profiles.embeddings_).all() and profiles.n_disconnected_.tolist() == [0] * LAYERS


def test_stable_structure_keeps_its_order_from_axis_to_axis(fitted):
    """A6: the same points' positions on consecutive axes have Spearman ρ ≥ 0.9 (signs aligned too)."""
    profiles, _, _, moving = fitted
    stable = np.setdiff1d(np.arange(420), moving)
    for axis in range(LAYERS - 1):
        rho = spearmanr(profiles.embeddings_[stable, axis], profiles.embeddings_[stable, axis + 1]).statistic
        assert rho >= 0.9, (axis, rho)


def test_points_that_change_cluster_move_with_it(fitted):
    """A7: ≥ 90 % of the moving points sit nearest to A's median before the move and to B's after."""
    profiles, _, labels, moving = fitted
    stay_a = np.setdiff1d(np.flatnonzero(labels == 0), moving)
    stay_b = np.flatnonzero(labels == 1)
    for axis in range(LAYERS):
        column = profiles.embeddings_[:, axis]
        a, b = np.median(column[stay_a]), np.median(column[stay_b])
        nearer_b = np.mean(np.abs(column[moving] - b) < np.abs(column[moving] - a))
        if axis < MOVE_FROM:
            assert nearer_b <= 0.1, (axis, nearer_b)
        else:
            assert nearer_b >= 0.9, (axis, nearer_b)


def test_background_points_transformed_again_land_where_they_were_fitted(fitted):
    """A8: re-placing 200 background images: median |Δp| ≤ 2 % of the axis range on every axis."""
    profiles, layers, _, _ = fitted
    again = profiles.transform([layer[:200] for layer in layers])
    spread = np.ptp(profiles.embeddings_, axis=0)
    error = np.median(np.abs(again - profiles.embeddings_[:200]), axis=0) / spread
    assert (error <= 0.02).all(), error


def test_a_pair_with_no_perturbation_has_identical_profiles(fitted):
    """A8: x_adv = x gives the same position on every axis, in one call and in two."""
    profiles, layers, _, _ = fitted
    image = [layer[400:401] + 0.05 for layer in layers]
    pair = profiles.transform([np.concatenate([x, x]) for x in image])
    np.testing.assert_array_equal(pair[0], pair[1])
    np.testing.assert_array_equal(pair[0], profiles.transform(image)[0])


@pytest.mark.slow
def test_placement_matches_umap_learns_transform_for_one_image(fitted):
    """The spec's workaround (mapper.embedding_ = aligned embedding; mapper.transform) as the peer."""
    import umap

    profiles, layers, _, _ = fitted
    rng = np.random.default_rng(3)
    differences = []
    for axis in range(LAYERS):
        distances = euclidean(layers[axis], layers[axis]).astype(np.float32)
        np.fill_diagonal(distances, 0.0)
        mapper = umap.UMAP(n_components=1, n_neighbors=15, metric="precomputed", random_state=0).fit(distances)
        mapper.embedding_ = profiles.embeddings_[:, axis:axis + 1].copy()
        spread = np.ptp(profiles.embeddings_[:, axis])
        for row in rng.choice(420, 5, replace=False):
            image = (layers[axis][row:row + 1] + rng.normal(0, 0.2, (1, 10))).astype(np.float32)
            peer = mapper.transform(euclidean(image, layers[axis]).astype(np.float32))[0, 0]  # precomputed fit
            mine = place(image, layers[axis], profiles.embeddings_[:, axis], profiles.placement_params)[0]
            differences.append(abs(peer - mine) / spread)
    # most placements are bit-identical; NumPy's and numba's float32 exp can differ in a last bit, and
    # from there the stochastic descent may end elsewhere in the neighbourhood (seen: up to 10 % of the
    # range for an image between two clusters), so the typical case is what is compared
    assert np.median(differences) <= 0.01, differences


@pytest.mark.slow
def test_bandwidths_and_strengths_match_umap_learns_numba_code():
    from umap.umap_ import compute_membership_strengths, smooth_knn_dist

    rng = np.random.default_rng(4)
    for _ in range(5):
        dists = np.sort(rng.gamma(2.0, 3.0, (1, 15)).astype(np.float32), axis=1)
        sigma, rho = smooth_knn_dist(dists, 15.0, local_connectivity=0.0)
        assert rho[0] == 0.0
        np.testing.assert_allclose(smooth_knn_sigma(dists, 15), sigma, rtol=1e-5)
        _, _, vals, _ = compute_membership_strengths(np.arange(15)[None].astype(np.int32), dists, sigma, rho,
                                                     bipartite=True)
        np.testing.assert_allclose(membership_strengths(dists, sigma)[0], vals, rtol=1e-6)


def test_a_single_layer_gets_a_plain_umap_axis_that_separates_its_clusters():
    layers, labels, _ = _stack(seed=1)
    steps = []
    profiles = ActivationProfiles(random_state=0).fit(layers[:1], progress=lambda *step: steps.append(step[:2]))
    assert profiles.embeddings_.shape == (420, 1)
    assert steps[0] == (1, 12) and steps[-1] == (12, 12) and [d for d, _ in steps] == sorted(d for d, _ in steps)
    column = profiles.embeddings_[:, 0]
    medians = np.array([np.median(column[labels == c]) for c in range(6)])
    nearest = np.argmin(np.abs(column[:, None] - medians[None, :]), axis=1)
    assert np.mean(nearest == labels) >= 0.9


def test_a_refit_with_the_same_seed_in_the_same_process_is_identical(fitted):
    """The SGD runs without numba's parallel mode, so one seed gives one fit (spec-002 §5 saw refits differ
    with AlignedUMAP's parallel compilation)."""
    _, layers, _, _ = fitted
    first = ActivationProfiles(random_state=0, n_epochs=50).fit(layers[2:4])
    again = ActivationProfiles(random_state=0, n_epochs=50).fit(layers[2:4])
    np.testing.assert_array_equal(again.embeddings_, first.embeddings_)


def test_warm_up_compiles_the_kernel_the_fit_uses():
    from advlens.profiles import aligned

    assert warm_up() >= 0.0
    signatures = list(aligned._epoch_kernel().signatures)
    layers, _, _ = _stack(seed=2)
    ActivationProfiles(n_neighbors=5, n_epochs=10).fit(layers[:2])
    assert list(aligned._epoch_kernel().signatures) == signatures, "the fit needed another compilation"


# ------------------------------------------------------------------- the parts against plain loops

def test_nearest_neighbours_are_the_exact_euclidean_ones():
    rng = np.random.default_rng(5)
    layer = rng.normal(3.0, 1.0, (80, 40)).astype(np.float32)
    indices, dists = nearest_neighbours(layer, 6)
    for i in range(80):
        plain = [float(np.sqrt(((layer[i].astype(np.float64) - layer[j]) ** 2).sum())) for j in range(80)]
        plain[i] = 0.0
        order = sorted(range(80), key=lambda j: (plain[j], j))[:6]
        assert indices[i].tolist() == order
        np.testing.assert_allclose(dists[i], [plain[j] for j in order], rtol=1e-4, atol=1e-5)


def _plain_smooth_knn(row: list[float], k: int) -> tuple[float, float]:
    """umap-learn's smooth_knn_dist for one point as a plain float64 loop (local connectivity 1)."""
    rho = next((d for d in row if d > 0), 0.0)
    lo, hi, mid = 0.0, float("inf"), 1.0
    for _ in range(64):
        psum = sum(np.exp(-(d - rho) / mid) if d - rho > 0 else 1.0 for d in row[1:])
        if abs(psum - np.log2(k)) < 1e-5:
            break
        if psum > np.log2(k):
            hi, mid = mid, (lo + mid) / 2.0
        else:
            lo = mid
            mid = mid * 2 if hi == float("inf") else (lo + hi) / 2.0
    return mid, rho


def test_bandwidths_solve_the_smooth_knn_equation():
    rng = np.random.default_rng(6)
    dists = np.sort(rng.gamma(2.0, 3.0, (30, 15)).astype(np.float32), axis=1)
    dists[:, 0] = 0.0  # the point itself
    dists[3, 1] = 0.0  # a duplicate: ρ is the first distance above 0
    sigma, rho = smooth_knn_dist(dists, 15)
    for i in range(30):
        plain_sigma, plain_rho = _plain_smooth_knn(dists[i].astype(np.float64).tolist(), 15)
        assert rho[i] == pytest.approx(plain_rho)
        assert sigma[i] == pytest.approx(plain_sigma, rel=1e-3)


def test_the_graph_is_the_fuzzy_union_of_the_memberships_pruned_below_max_over_epochs():
    rng = np.random.default_rng(7)
    layer = rng.normal(0, 1, (40, 5)).astype(np.float32)
    indices, dists = nearest_neighbours(layer, 5)
    sigma, rho = smooth_knn_dist(dists, 5)
    member = np.zeros((40, 40))
    for i in range(40):
        for j, d in zip(indices[i], dists[i]):
            if j != i:
                member[i, j] = 1.0 if d - rho[i] <= 0 else np.exp(-(d - rho[i]) / sigma[i])
    union = member + member.T - member * member.T
    graph = fuzzy_graph(indices, dists, n_epochs=20)
    stored = graph.toarray()
    expected = np.where(union < union.max() / 20.0, 0.0, union)
    np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-7)
    # the pruned weights stay in the structure as explicit zeros (AlignedUMAP counts them as neighbours)
    assert set(zip(*graph.nonzero())) <= set(zip(*np.nonzero(union)))
    assert graph.nnz == int((union > 0).sum())


def test_overlap_weights_are_the_jaccard_index_of_each_points_neighbours():
    rng = np.random.default_rng(8)
    layers = [rng.normal(0, 1, (30, 4)).astype(np.float32) for _ in range(3)]
    graphs = [fuzzy_graph(*nearest_neighbours(layer, 5), n_epochs=200) for layer in layers]
    relations = identity_relations(3, 30, window=2)
    weights = neighbourhood_overlap(graphs, relations)
    assert weights.shape == (3, 5, 30)
    checked = 0
    for i in range(3):
        for offset in range(-2, 3):
            other = i + offset
            for k in range(30):
                if relations[i, offset + 2, k] < 0:
                    assert weights[i, offset + 2, k] == 0
                    continue
                assert offset != 0 and 0 <= other < 3 and relations[i, offset + 2, k] == k
                mine = set(graphs[i].indices[graphs[i].indptr[k]:graphs[i].indptr[k + 1]])
                theirs = set(graphs[other].indices[graphs[other].indptr[k]:graphs[other].indptr[k + 1]])
                assert weights[i, offset + 2, k] == pytest.approx(len(mine & theirs) / len(mine | theirs))
                checked += 1
    assert checked >= 3 * 30 and 0 < weights.max() <= 1 and weights[weights > 0].min() < 1


def test_the_start_has_the_sign_of_the_previous_layer(monkeypatch):
    import umap.spectral

    layers, _, _ = _stack(seed=3)
    layers = layers[:3]
    graphs = [fuzzy_graph(*nearest_neighbours(layer, 15), n_epochs=200) for layer in layers]
    spectral = umap.spectral.spectral_layout
    calls = []

    def flipping(*args, **kwargs):  # the eigensolver's sign is arbitrary: flip every other layer's
        calls.append(1)
        layout = spectral(*args, **kwargs)
        return -layout if len(calls) % 2 == 0 else layout

    start = initial_layout(layers, graphs, np.random.RandomState(0))
    monkeypatch.setattr(umap.spectral, "spectral_layout", flipping)
    flipped = initial_layout(layers, graphs, np.random.RandomState(0))
    assert len(calls) == 3 and start.shape == (3, 420, 1) and start.dtype == np.float32
    assert np.abs(start).max(axis=(1, 2)) == pytest.approx([10.0, 10.0, 10.0])
    for i in (1, 2):
        assert float(flipped[i - 1, :, 0] @ flipped[i, :, 0]) > 0, "each layer agrees with the one before"
    np.testing.assert_allclose(flipped, start, atol=1e-5)


# ------------------------------------------------------------------- the parts against umap-learn

def _distance_matrices(layers: list[np.ndarray]) -> list[np.ndarray]:
    matrices = []
    for layer in layers:
        matrix = euclidean(layer, layer).astype(np.float32)
        np.fill_diagonal(matrix, 0.0)
        matrices.append(matrix)
    return matrices


def _umap_inputs(layers: list[np.ndarray]):
    """AlignedUMAP fitted on exact distance matrices, with the inputs its joint SGD received."""
    import umap
    import umap.aligned_umap as aligned_module

    received = {}
    sgd = aligned_module.optimize_layout_aligned_euclidean

    def spy(*args, **kwargs):
        received.update(start=np.stack([np.array(e) for e in args[0]]), weights=np.array(args[6]),
                        relations=np.array(args[7]), seed=np.array(args[8]), kwargs=kwargs)
        return sgd(*args, **kwargs)

    distances = _distance_matrices(layers)
    aligned_module.optimize_layout_aligned_euclidean = spy
    try:
        fitted = umap.AlignedUMAP(n_components=1, n_neighbors=10, metric="precomputed", random_state=0).fit(
            distances, relations=[{k: k for k in range(len(layers[0]))}] * (len(layers) - 1))
    finally:
        aligned_module.optimize_layout_aligned_euclidean = sgd
    return fitted, received


@pytest.mark.slow
def test_graphs_weights_and_sgd_reproduce_aligned_umap():
    layers, _, _ = _stack(seed=4)
    layers = [layer[:150] for layer in layers[:3]]
    fitted, received = _umap_inputs(layers)
    graphs = []
    for matrix in _distance_matrices(layers):  # the neighbours UMAP finds in the same matrices
        order = np.argsort(matrix, axis=1, kind="stable")[:, :10].astype(np.int32)
        graphs.append(fuzzy_graph(order, np.take_along_axis(matrix, order, axis=1), n_epochs=200))
    for mine, mapper in zip(graphs, fitted.mappers_):
        theirs = mapper.graph_.tocsr()
        np.testing.assert_array_equal(mine.indptr, theirs.indptr)
        np.testing.assert_array_equal(mine.indices, theirs.indices)
        np.testing.assert_allclose(mine.data, theirs.data, atol=1e-5)
    np.testing.assert_array_equal(identity_relations(3, 150, 3), received["relations"])
    np.testing.assert_allclose(neighbourhood_overlap(graphs, received["relations"]), received["weights"], atol=1e-6)
    # the SGD from AlignedUMAP's own start and graphs: bit for bit
    positions = optimise_layout(received["start"].copy(), [m.graph_.tocsr() for m in fitted.mappers_],
                                received["weights"], received["relations"], 200, 1.576943460405378,
                                0.8950608781227859, received["kwargs"]["lambda_"], received["seed"].copy())
    np.testing.assert_array_equal(positions[:, :, 0], np.stack([e[:, 0] for e in fitted.embeddings_]))


@pytest.mark.slow
def test_the_placement_descent_is_umap_learns_transform_descent():
    """placement's cached SGD driver against umap-learn's optimize_layout_euclidean: bit for bit."""
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import make_epochs_per_sample

    from advlens.profiles.placement import _descend

    rng = np.random.default_rng(9)
    reference = rng.normal(0, 3, (60, 1)).astype(np.float32)
    start = rng.normal(0, 3, (4, 1)).astype(np.float32)
    head = np.repeat(np.arange(4, dtype=np.int32), 8)
    tail = rng.integers(0, 60, 32).astype(np.int32)
    schedule = make_epochs_per_sample(rng.uniform(0.1, 1.0, 32).astype(np.float32), 66)
    seed = np.array([11, -7, 3], dtype=np.int64)
    args = (66, 60, schedule, 1.58, 0.9, seed, 1.0, 0.25, 5)
    theirs = optimize_layout_euclidean(start.copy(), reference.copy(), head, tail, *args, parallel=False)
    mine = _descend(start.copy(), reference.copy(), head, tail, *args)
    np.testing.assert_array_equal(mine, theirs)
