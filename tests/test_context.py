"""Context images (paper 001, §5.3) and class subsets (§6.2.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advlens.measures import attack_matrix, class_confidence, class_subsets, context_images, max_activations, rf_masks


def test_max_activations_is_the_feature_map_maximum() -> None:
    maps = torch.zeros(2, 3, 4, 4)
    maps[0, 1, 2, 3] = 5.0
    maps[1, 2, 0, 0] = -1.0
    maps[1, 2, 1, 1] = -0.5
    out = max_activations(maps)
    torch.testing.assert_close(out[0], torch.tensor([0.0, 5.0, 0.0]))
    assert out[1, 2] == 0.0  # the zeros elsewhere in the map


def test_top_m_by_activation_are_the_true_top_m_on_each_side() -> None:
    generator = np.random.default_rng(0)
    pairs, neurons, neuron = 40, 5, 3
    benign_scores = generator.normal(size=(pairs, neurons))
    adversarial_scores = generator.normal(size=(pairs, neurons))
    result = context_images(neuron, benign_scores, adversarial_scores)
    assert len(result.benign) == 6 and len(result.adversarial) == 6
    assert result.benign.tolist() == np.argsort(-benign_scores[:, neuron])[:6].tolist()
    assert result.adversarial.tolist() == np.argsort(-adversarial_scores[:, neuron])[:6].tolist()
    np.testing.assert_array_equal(result.benign_scores, benign_scores[result.benign, neuron])
    # brute force: no image outside the selection beats the weakest selected one
    outside = np.setdiff1d(np.arange(pairs), result.benign)
    assert benign_scores[outside, neuron].max() <= result.benign_scores.min()
    assert result.benign_rfs is None
    # ties go to the lower index, m larger than the set returns all
    tied = context_images(0, np.ones((4, 1)), np.array([[1.0], [3.0], [3.0], [2.0]]), m=10)
    assert tied.benign.tolist() == [0, 1, 2, 3] and tied.adversarial.tolist() == [1, 2, 3, 0]


def test_top_m_by_confidence_uses_benign_labels_and_adversarial_predictions() -> None:
    benign_probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    adversarial_probs = np.array([[0.45, 0.55], [0.99, 0.01], [0.3, 0.7], [0.1, 0.9]])
    labels, predictions = np.array([0, 1, 0, 1]), np.array([1, 0, 1, 1])
    benign_conf = class_confidence(benign_probs, labels)
    adversarial_conf = class_confidence(adversarial_probs, predictions)
    np.testing.assert_allclose(benign_conf, [0.9, 0.8, 0.6, 0.7])
    np.testing.assert_allclose(adversarial_conf, [0.55, 0.99, 0.7, 0.9])
    result = context_images(7, benign_conf, adversarial_conf, m=2)  # the neuron is irrelevant here
    assert result.benign.tolist() == [0, 1]
    assert result.adversarial.tolist() == [1, 3]


def test_context_images_come_with_the_neurons_rfs() -> None:
    generator = torch.Generator().manual_seed(5)
    maps = torch.rand(10, 4, 3, 3, generator=generator)
    adversarial_maps = torch.rand(10, 4, 3, 3, generator=generator)
    thresholds = torch.tensor([0.2, 0.5, 0.7, 0.9])
    result = context_images(1, max_activations(maps), max_activations(adversarial_maps), m=3, benign_maps=maps,
                            adversarial_maps=adversarial_maps, threshold=thresholds, size=(9, 9))
    assert result.benign_rfs.shape == (3, 9, 9) and result.benign_rfs.dtype == torch.bool
    expected = rf_masks(maps[torch.as_tensor(result.benign)], thresholds, (9, 9))[:, 1]
    torch.testing.assert_close(result.benign_rfs, expected)
    expected = rf_masks(adversarial_maps[torch.as_tensor(result.adversarial)], thresholds, (9, 9))[:, 1]
    torch.testing.assert_close(result.adversarial_rfs, expected)
    # only this neuron's maps (P, h, w) give the same RFs
    alone = context_images(1, max_activations(maps), max_activations(adversarial_maps), m=3,
                           benign_maps=maps[:, 1], threshold=0.5, size=(9, 9))
    assert alone.adversarial_rfs is None
    torch.testing.assert_close(alone.benign_rfs, rf_masks(maps[torch.as_tensor(alone.benign)], 0.5, (9, 9))[:, 1])
    with pytest.raises(ValueError):
        context_images(1, max_activations(maps), max_activations(adversarial_maps), benign_maps=maps)


# --- class subsets ----------------------------------------------------------------------------------


def test_class_subsets_top_benign_then_top_adversarial_within() -> None:
    # (label, adversarial prediction) pairs; class 5 attacks fail (prediction = label)
    cells = {(0, 1): 5, (0, 2): 1, (1, 2): 4, (2, 3): 2, (3, 0): 1, (4, 6): 3, (5, 5): 9, (6, 7): 3}
    labels = np.concatenate([[a] * n for (a, _), n in cells.items()])
    predictions = np.concatenate([[b] * n for (_, b), n in cells.items()])
    matrix = attack_matrix(labels, predictions, num_classes=8)
    assert matrix[0, 1] == 5 and matrix[5, 5] == 0 and matrix.sum() == 19
    subset = class_subsets(labels, predictions, n_benign=3, n_adversarial=2)
    # successful attacks per benign class: 0: 6, 1: 4, 4: 3, 6: 3, 2: 2, 3: 1 → top 3 = 0, 1, 4 (4 before 6)
    assert subset.benign.tolist() == [0, 1, 4]
    assert subset.benign_counts.tolist() == [6, 4, 3]
    # adversarial labels within {0, 1, 4}: 2: 5, 1: 5, 6: 3 → top 2 = 1, 2 (tie → lower id)
    assert subset.adversarial.tolist() == [1, 2]
    assert subset.adversarial_counts.tolist() == [5, 5]
    # classes never attacked successfully are not selected
    everything = class_subsets(labels, predictions)
    assert 5 not in everything.benign.tolist() and len(everything.benign) == 6
    assert set(everything.adversarial.tolist()) == {0, 1, 2, 3, 6, 7}
