"""The image-perturbation measure (paper 001, §5.2.1, Fig. 3 right): IoU of each neuron's RF with a
binarized vulnerability map: the benign RF with the binarized bMap, the adversarial RF with the
binarized aMap. Sorting neurons by it (descending) puts those that look where the attack works first.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from advlens.measures._tensors import ArrayLike, as_tensor
from advlens.measures.ranking import rank_descending


def iou(masks: ArrayLike, other: ArrayLike) -> torch.Tensor:
    """Intersection over union of boolean masks over their last two dimensions (broadcasting).

    An empty union (both masks empty) scores 0, never NaN.

    Shape:
        masks: (..., H, W) bool; other: broadcastable to it; returns float32 (...).
    """
    a = as_tensor(masks).bool()
    b = as_tensor(other, a.device).bool()
    intersection = (a & b).sum(dim=(-2, -1))
    union = (a | b).sum(dim=(-2, -1))
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros((), device=a.device)).float()


class ImagePerturbationScores(NamedTuple):
    """Per-neuron IoU scores and rankings (descending) of a pair.

    Shape:
        benign_iou, adversarial_iou: float32 (K,); benign_ranking, adversarial_ranking: int64 (K,).
    """

    benign_iou: torch.Tensor
    adversarial_iou: torch.Tensor
    benign_ranking: np.ndarray
    adversarial_ranking: np.ndarray


def image_perturbation_scores(benign_rf: ArrayLike, adversarial_rf: ArrayLike, bmap_mask: ArrayLike,
                              amap_mask: ArrayLike) -> ImagePerturbationScores:
    """IoU of every neuron's benign RF with the binarized bMap and of its adversarial RF with the
    binarized aMap, with the neuron rankings by each (highest IoU first, ties by neuron index).

    Shape:
        benign_rf, adversarial_rf: (K, H, W) bool; bmap_mask, amap_mask: (H, W) bool (see
        :func:`advlens.measures.binarize_top`); returns :class:`ImagePerturbationScores`.
    """
    benign = iou(benign_rf, as_tensor(bmap_mask).unsqueeze(0))
    adversarial = iou(adversarial_rf, as_tensor(amap_mask).unsqueeze(0))
    return ImagePerturbationScores(benign, adversarial, rank_descending(benign), rank_descending(adversarial))
