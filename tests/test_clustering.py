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
    rf_images,
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


@pytest.mark.parametrize("metric,method", [("rf_l2", "average"), ("rf_l2", "ward"), ("mask_l2", "ward"),
                                           ("rf_iou", "average"), ("rf_iou", "complete")])
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


@pytest.mark.parametrize("metric", ["rf_l2", "mask_l2", "rf_iou"])
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
    np.testing.assert_allclose(neuron_distances(features, "mask_l2"), np.sqrt(pdist(flat, "hamming") * 50))
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
    expected = hierarchy.linkage(clustering.distances_, "ward")  # the default linkage
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
        neuron_distances(torch.rand(3, 4), "mask_l2")  # not binary
    with pytest.raises(ValueError, match="linkage method"):
        NeuronClustering("rf_l2", "centroids").fit(benign, adversarial)
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


def test_default_metric_compares_rf_images_not_masks() -> None:
    """§3.2: the RF is the masked image. A toy where the RF images and the masks give different trees.

    Image row [1, 0, 0, 0] (one bright pixel). Masks: n0 [1,0,0,0], n1 [0,1,1,1], n2 [0,0,0,0], n3 [1,1,1,1].
    RF images: n0 = n3 = [1,0,0,0] and n1 = n2 = 0, so RF-image L2 pairs {0, 3} and {1, 2} at distance 0;
    the masks pair {1, 3} and {0, 2} at distance 1 (one differing pixel) instead.
    """
    image = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])  # (C=1, H=1, W=4)
    masks = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)[:, None, :]
    images = rf_images(image, masks)
    assert images.shape == (4, 1, 1, 4)
    torch.testing.assert_close(images[:, 0, 0], torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0],
                                                              [1, 0, 0, 0]]))
    default = NeuronClustering().fit(images, images)  # benign and adversarial sides alike
    assert default.metric == "rf_l2" and default.method_ == "ward"
    # hand-computed distances on the concatenated sides: d(0,3) = d(1,2) = 0, every other pair √2
    hand = np.array([np.sqrt(2), np.sqrt(2), 0.0, 0.0, np.sqrt(2), np.sqrt(2)])  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    np.testing.assert_allclose(default.distances_, hand)
    np.testing.assert_allclose(default.linkage_, hierarchy.linkage(hand, "ward"))
    assert merge_of(default, {0, 3}) is not None and merge_of(default, {1, 2}) is not None
    masks_tree = NeuronClustering("mask_l2").fit(masks, masks)
    # masks differ in |n0 − n1| = 4 px, n0 − n2 = 1, n0 − n3 = 3, n1 − n2 = 3, n1 − n3 = 1, n2 − n3 = 4;
    # doubled by the two sides
    hand_masks = np.sqrt(2 * np.array([4, 1, 3, 3, 1, 4]))
    np.testing.assert_allclose(masks_tree.distances_, hand_masks)
    assert merge_of(masks_tree, {1, 3}) is not None and merge_of(masks_tree, {0, 2}) is not None
    assert merge_of(masks_tree, {0, 3}) is None


@pytest.mark.parametrize("method", ["ward", "complete", "average"])
@pytest.mark.parametrize("metric", ["rf_l2", "mask_l2", "activation_l2"])
def test_linkage_options_match_scipy(metric: str, method: str) -> None:
    generator = torch.Generator().manual_seed(7)
    if metric == "mask_l2":
        benign, adversarial = random_rfs(k=12, seed=5)
    else:
        benign, adversarial = torch.rand(12, 1, 5, 5, generator=generator), torch.rand(12, 1, 5, 5, generator=generator)
    flat = np.concatenate([benign.reshape(12, -1).numpy(), adversarial.reshape(12, -1).numpy()], axis=1)
    expected = hierarchy.linkage(pdist(flat.astype(np.float64), "euclidean"), method)
    clustering = NeuronClustering(metric, method).fit(benign, adversarial)
    np.testing.assert_allclose(clustering.linkage_, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(clustering.leaves_, hierarchy.leaves_list(expected))


def test_iou_metric_defaults_to_complete_linkage() -> None:
    benign, adversarial = random_rfs(k=9, seed=2)
    clustering = NeuronClustering("rf_iou").fit(benign, adversarial)
    assert clustering.method_ == "complete"
    np.testing.assert_allclose(clustering.linkage_, hierarchy.linkage(clustering.distances_, "complete"))
