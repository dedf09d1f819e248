"""Class subsets for datasets with many classes (paper 001, §6.2.2, Places365).

The Prediction Matrix stays readable with about ten rows and columns: keep the top benign classes by
number of successful attacks, then the top adversarial labels among the attacks on those classes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from advlens.measures._tensors import ArrayLike, as_numpy
from advlens.measures.ranking import rank_descending

DEFAULT_SUBSET_SIZE = 10


class ClassSubset(NamedTuple):
    """Selected classes, most attacked first, with their counts of successful attacks.

    Shape:
        benign, adversarial: int64 (≤ n,); benign_counts, adversarial_counts: int64 like them.
    """

    benign: np.ndarray
    adversarial: np.ndarray
    benign_counts: np.ndarray
    adversarial_counts: np.ndarray


def attack_matrix(labels: ArrayLike, adversarial_predictions: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """Counts of successful attacks per (benign label, adversarial prediction) cell.

    Pairs whose adversarial prediction equals the label (failed attacks) are not counted, so the
    diagonal is 0.

    Shape:
        labels, adversarial_predictions: (N,) ints; returns int64 (C, C).
    """
    truth = as_numpy(labels).astype(np.int64).reshape(-1)
    predicted = as_numpy(adversarial_predictions).astype(np.int64).reshape(-1)
    if truth.shape != predicted.shape:
        raise ValueError(f"labels ({truth.size},) and adversarial predictions ({predicted.size},) differ in length")
    size = num_classes if num_classes is not None else int(max(truth.max(initial=-1), predicted.max(initial=-1)) + 1)
    success = truth != predicted
    matrix = np.zeros((size, size), dtype=np.int64)
    np.add.at(matrix, (truth[success], predicted[success]), 1)
    return matrix


def class_subsets(labels: ArrayLike, adversarial_predictions: ArrayLike, n_benign: int = DEFAULT_SUBSET_SIZE,
                  n_adversarial: int = DEFAULT_SUBSET_SIZE, num_classes: int | None = None) -> ClassSubset:
    """The top ``n_benign`` benign classes by number of successful attacks, then the top
    ``n_adversarial`` adversarial labels among the successful attacks on those classes.

    Ties go to the lower class id; classes without any successful attack are never selected (fewer
    than n are returned then).

    Shape:
        labels, adversarial_predictions: (N,) ints; returns :class:`ClassSubset`.
    """
    matrix = attack_matrix(labels, adversarial_predictions, num_classes)
    per_benign = matrix.sum(axis=1)
    benign = np.array([c for c in rank_descending(per_benign)[:n_benign] if per_benign[c] > 0], dtype=np.int64)
    per_adversarial = matrix[benign].sum(axis=0)
    adversarial = np.array([c for c in rank_descending(per_adversarial)[:n_adversarial] if per_adversarial[c] > 0],
                           dtype=np.int64)
    return ClassSubset(benign, adversarial, per_benign[benign], per_adversarial[adversarial])
