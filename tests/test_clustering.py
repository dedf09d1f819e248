"""Neuron clustering (paper 001, §5.2.2) invariants, distances and RF unions/intersections."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist

from advlens.measures import (
    NeuronClustering,
    combine_receptive_fields,
    iou,
    neuron_distances,
    neuron_features,
    node_members,
)


def random_rfs(k: int = 8, size: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(k, size, size, generator=generator) > 0.6,
            torch.rand(k, size, size, generator=generator) > 0.6)


def merge_of(clustering: NeuronClustering, members: set[int]) -> int | None:
    """Id of the node whose members are exactly ``members`` (None when no node has them)."""
    k = clustering.n_neurons_
    for node in range(k, 2 * k - 1):
        if set(clustering.members(node).tolist()) == members:
            return node
    return None


@pytest.mark.parametrize("metric,method", [("rf_l2", "average"), ("rf_l2", "ward"), ("rf_iou", "average"),
                                           ("rf_iou", "complete")])
def test_identical_neurons_merge_at_distance_zero(metric: str, method: str) -> None:
    benign, adversarial = random_rfs()
    benign[5], adversarial[5] = benign[2], adversarial[2]
    clustering = NeuronClustering(metric, method).fit(benign, adversarial)
    node = merge_of(clustering, {2, 5})
    assert node is not None and clustering.height(node) == 0.0


def test_identical_activation_maps_merge_at_distance_zero() -> None:
    generator = torch.Generator().manual_seed(4)
    benign, adversarial = torch.rand(7, 3, 3, generator=generator), torch.rand(7, 3, 3, generator=generator)
    benign[6], adversarial[6] = benign[0], adversarial[0]
    clustering = NeuronClustering("activation_l2", "ward").fit(benign, adversarial)
    node = merge_of(clustering, {0, 6})
    assert node is not None and clustering.height(node) == 0.0


@pytest.mark.parametrize("metric", ["rf_l2", "rf_iou"])
def test_neurons_with_empty_rfs_form_one_cluster(metric: str) -> None:
    benign, adversarial = random_rfs(k=9)
    empty = {1, 4, 7}
    for n in empty:
        benign[n] = False
        adversarial[n] = False
    clustering = NeuronClustering(metric).fit(benign, adversarial)
    node = merge_of(clustering, empty)
    assert node is not None and clustering.height(node) == 0.0


def test_distances_match_their_definitions() -> None:
    benign, adversarial = random_rfs(k=6, size=5, seed=3)
    benign[0] = False
    adversarial[0] = False
    benign[3] = False
    adversarial[3] = False
    features = neuron_features(benign, adversarial)
    assert features.shape == (6, 50)
    flat = features.numpy().astype(bool)
    # L2 of binary vectors = √(number of differing pixels)
    np.testing.assert_allclose(neuron_distances(features, "rf_l2"), np.sqrt(pdist(flat, "hamming") * 50))
    # 1 − IoU of the concatenated RFs; two empty RFs are identical (0), empty vs non-empty 1
    iou_distance = neuron_distances(features, "rf_iou")
    square = np.zeros((6, 6))
    for a in range(6):
        for b in range(6):
            both_empty = not flat[a].any() and not flat[b].any()
            value = iou(torch.from_numpy(flat[a].reshape(1, 50)), torch.from_numpy(flat[b].reshape(1, 50))).item()
            square[a, b] = 0.0 if both_empty or a == b else 1.0 - value
    np.testing.assert_allclose(iou_distance, square[np.triu_indices(6, 1)], atol=1e-12)
    assert iou_distance[2] == 0.0  # condensed index of the pair (0, 3), both empty
    maps = torch.rand(6, 2, 2, dtype=torch.float64)
    np.testing.assert_allclose(neuron_distances(neuron_features(maps), "activation_l2"),
                               pdist(maps.reshape(6, -1).numpy()), atol=1e-12)


def test_linkage_leaves_and_node_members() -> None:
    benign, adversarial = random_rfs(k=10)
    clustering = NeuronClustering().fit(benign, adversarial)
    k = 10
    assert clustering.linkage_.shape == (k - 1, 4)
    np.testing.assert_array_equal(clustering.leaves_, hierarchy.leaves_list(clustering.linkage_))
    assert sorted(clustering.leaves_.tolist()) == list(range(k))
    expected = hierarchy.linkage(clustering.distances_, "average")
    np.testing.assert_allclose(clustering.linkage_, expected)
    for leaf in range(k):
        assert clustering.members(leaf).tolist() == [leaf]
    assert clustering.members(2 * k - 2).tolist() == list(range(k))  # the root
    for node in range(k, 2 * k - 1):  # the children of every merge partition it
        left, right = (int(v) for v in clustering.linkage_[node - k, :2])
        children = np.concatenate([clustering.members(left), clustering.members(right)])
        assert sorted(children.tolist()) == clustering.members(node).tolist()
        assert len(children) == clustering.linkage_[node - k, 3]
    root_children = [int(v) for v in clustering.linkage_[-1, :2]]
    assert node_members(clustering.linkage_, root_children).tolist() == list(range(k))
    with pytest.raises(ValueError):
        clustering.members(2 * k - 1)


def test_invalid_combinations_and_single_neuron() -> None:
    benign, adversarial = random_rfs(k=4)
    with pytest.raises(ValueError):
        NeuronClustering("rf_iou", "ward").fit(benign, adversarial)
    with pytest.raises(ValueError):
        NeuronClustering("cosine").fit(benign, adversarial)
    with pytest.raises(ValueError):
        neuron_distances(torch.rand(3, 4), "rf_l2")  # not binary
    single = NeuronClustering().fit(benign[:1], adversarial[:1])
    assert single.linkage_.shape == (0, 4) and single.leaves_.tolist() == [0]
    assert single.members(0).tolist() == [0]


def test_union_and_intersection_of_rfs() -> None:
    rfs = torch.zeros(3, 2, 3, dtype=torch.bool)
    rfs[0, 0, :2] = True
    rfs[1, 0, 1:] = True
    rfs[2, 1, :] = True
    union = combine_receptive_fields(rfs, [0, 1])
    torch.testing.assert_close(union, torch.tensor([[True, True, True], [False, False, False]]))
    inter = combine_receptive_fields(rfs, np.array([0, 1]), "intersection")
    torch.testing.assert_close(inter, torch.tensor([[False, True, False], [False, False, False]]))
    assert not combine_receptive_fields(rfs, [0, 2], "intersection").any()
    assert not combine_receptive_fields(rfs, [], "union").any()
    assert not combine_receptive_fields(rfs, [], "intersection").any()
    pair = torch.stack([rfs, ~rfs])  # benign and adversarial RFs at once
    assert combine_receptive_fields(pair, [0, 1]).shape == (2, 2, 3)
