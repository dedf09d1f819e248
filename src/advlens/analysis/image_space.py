"""Image space of paper 001 (§5.1): Data Overview, Prediction Matrix, Image Grid orders, class subsets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from advlens import measures
from advlens.analysis.core import SessionCore

SORT_ORDERS = ("perturbation_asc", "perturbation_desc", "benign_drop", "adversarial_rise")
"""Image Grid orders (paper 001 §5.1): L2 perturbation increasing / decreasing, largest drop of the
benign class probability first, largest rise of the adversarial class probability first."""


class ImageSpace(SessionCore):
    """Queries over the store's pairs; no forward passes."""

    def overview(self) -> dict[str, np.ndarray]:
        """t-SNE coordinates (benign, adversarial) and labels of every pair for the Data Overview.

        Shape: benign_tsne, adv_tsne (P, 2) float32; label, benign_pred, adv_pred (P,) int64.
        """
        return self._cached(("overview",), lambda: {
            "benign_tsne": self.store.load("projections", "benign_tsne"),
            "adv_tsne": self.store.load("projections", "adv_tsne"),
            "label": self.table["label"], "benign_pred": self.table["benign_pred"],
            "adv_pred": self.table["adv_pred"],
        })

    def prediction_matrix(self, pairs: Sequence[int] | None = None) -> np.ndarray:
        """Counts of pairs per (true label, adversarial label). Shape: (C, C) int64."""
        index = slice(None) if pairs is None else self.check_pairs(pairs)
        return measures.attack_matrix(self.table["label"][index], self.table["adv_pred"][index], self.num_classes)

    def pairs_in_cell(self, true_label: int, adversarial_label: int) -> np.ndarray:
        """Pair ids of one Prediction Matrix cell. Shape: (n,) int64, increasing."""
        true_label, adversarial_label = self.check_class(true_label), self.check_class(adversarial_label)
        return np.flatnonzero((self.table["label"] == true_label) & (self.table["adv_pred"] == adversarial_label))

    def sort_pairs(self, pairs: Sequence[int], order: str = "perturbation_asc") -> np.ndarray:
        """Pair ids ordered by one of :data:`SORT_ORDERS` (ties by pair id). Shape: (n,) int64."""
        if order not in SORT_ORDERS:
            raise ValueError(f"order must be one of {SORT_ORDERS}, got {order!r}")
        ids = self.check_pairs(pairs)
        t = self.table
        if order.startswith("perturbation"):
            key = t["l2"][ids] if order == "perturbation_asc" else -t["l2"][ids]
        elif order == "benign_drop":
            label = t["label"][ids]
            key = -(t["benign_probs"][ids, label] - t["adv_probs"][ids, label])
        else:
            target = t["adv_pred"][ids]
            key = -(t["adv_probs"][ids, target] - t["benign_probs"][ids, target])
        return ids[np.lexsort((ids, key))]

    def class_subset(self, n_benign: int = 10, n_adversarial: int = 10) -> measures.ClassSubset:
        """Most attacked benign classes, then the most frequent adversarial labels among them (§6.2.2)."""
        return measures.class_subsets(self.table["label"], self.table["adv_pred"], n_benign, n_adversarial,
                                      self.num_classes)
