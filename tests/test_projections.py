"""t-SNE projection (openTSNE): quality and reproducibility invariants, as openTSNE's own tests do —
kNN label accuracy of the embedding of well-separated labelled data, and seeded identity — rather than
coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from advlens.projections import tsne_embedding

CLASSES, PER_CLASS, DIMS = 5, 30, 20


def knn_accuracy(points: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN majority vote (ties: the lowest label), by brute-force distances."""
    distances = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1).astype(np.float64)
    np.fill_diagonal(distances, np.inf)
    neighbours = np.argsort(distances, axis=1, kind="stable")[:, :k]
    votes = np.array([np.bincount(labels[row], minlength=labels.max() + 1).argmax() for row in neighbours])
    return float((votes == labels).mean())


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Five Gaussian blobs, separated in dimensions 2… only; dimensions 0 and 1 are wide label-free noise,
    so a projection that kept the first two coordinates would mix the classes."""
    rng = np.random.default_rng(0)
    centres = np.zeros((CLASSES, DIMS))
    centres[:, 2:] = rng.normal(scale=4.0, size=(CLASSES, DIMS - 2))
    labels = rng.permutation(np.repeat(np.arange(CLASSES), PER_CLASS))  # shuffled: row order carries no label
    vectors = centres[labels] + rng.normal(size=(len(labels), DIMS))
    vectors[:, :2] *= 5.0
    return vectors.astype(np.float32), labels


@pytest.fixture(scope="module")
def embedding(blobs) -> np.ndarray:
    return tsne_embedding(blobs[0], random_state=0)


def test_embedding_keeps_well_separated_classes_apart(blobs, embedding) -> None:
    vectors, labels = blobs
    assert embedding.shape == (len(labels), 2) and embedding.dtype == np.float32
    assert np.isfinite(embedding).all()
    assert knn_accuracy(vectors, labels) == 1.0  # the classes are separable in the input
    accuracy = knn_accuracy(embedding, labels)
    assert accuracy >= 0.95, f"5-NN accuracy in the t-SNE embedding is {accuracy:.2f}"
    # the invariant discriminates: chance-level embeddings, and the input's first two (label-free)
    # coordinates, fail it by far
    for seed in range(3):
        assert knn_accuracy(np.random.default_rng(seed).normal(size=(len(labels), 2)), labels) < 0.5
    assert knn_accuracy(vectors[:, :2], labels) < 0.5
    # coordinates handed to the wrong rows fail it too
    assert knn_accuracy(embedding[::-1], labels) < 0.5


def test_same_seed_same_coordinates_other_seed_other_coordinates(blobs, embedding) -> None:
    vectors, labels = blobs
    again = tsne_embedding(vectors, random_state=0)
    np.testing.assert_array_equal(again, embedding)
    other = tsne_embedding(vectors, random_state=1)
    assert np.abs(other - embedding).max() > 1e-2  # the seed is used
    assert knn_accuracy(other, labels) >= 0.95  # … and every seed keeps the classes apart


def test_small_inputs() -> None:
    # fewer than 4 points: placed on a line, in order
    line = tsne_embedding(np.random.default_rng(0).normal(size=(3, 5)))
    np.testing.assert_array_equal(line, np.array([[0, 0], [1, 0], [2, 0]], dtype=np.float32))
    # 12 points, fewer than 3 × the perplexity asked for: two far-apart groups still separate
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(2), 6)
    vectors = np.where(labels[:, None] == 0, -10.0, 10.0) + rng.normal(size=(12, 4))
    points = tsne_embedding(vectors, perplexity=30.0, random_state=0)
    assert points.shape == (12, 2)
    assert knn_accuracy(points, labels, k=3) == 1.0
