"""Context images for a neuron (paper 001, §5.3, "One Neuron–Multiple Images").

For a neuron and a set of benign/adversarial pairs: the top m benign images by the neuron's maximal
activation (max over its feature map) or by prediction confidence, and, independently, the top m
adversarial images by their own activation of the neuron or their confidence in the adversarial
prediction, each shown with the neuron's RF.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from advlens.measures._tensors import ArrayLike, as_numpy, as_tensor
from advlens.measures.ranking import top_k
from advlens.measures.receptive_fields import Size, rf_masks

DEFAULT_M = 6


def max_activations(feature_maps: ArrayLike) -> torch.Tensor:
    """Each neuron's maximal activation over its feature map (a per-image score to store).

    Shape:
        feature_maps: (N, K, h, w); returns (N, K).
    """
    maps = as_tensor(feature_maps)
    if maps.ndim != 4:
        raise ValueError(f"feature_maps must be (N, K, h, w), got {tuple(maps.shape)}")
    return maps.amax(dim=(-2, -1))


def class_confidence(probabilities: ArrayLike, classes: ArrayLike) -> np.ndarray:
    """Probability of each image's own class: benign images with their benign labels, adversarial
    images with their adversarial predictions.

    Shape:
        probabilities: (N, C); classes: (N,) ints; returns (N,).
    """
    probs = as_numpy(probabilities)
    index = as_numpy(classes).astype(np.int64).reshape(-1)
    if probs.ndim != 2 or probs.shape[0] != index.size:
        raise ValueError(f"probabilities {probs.shape} and classes ({index.size},) do not match (N, C), (N,)")
    return probs[np.arange(index.size), index]


class ContextImages(NamedTuple):
    """Top-m pair indices (into the given set of pairs), their scores and, when maps were given, RFs.

    Shape:
        benign, adversarial: int64 (m,); benign_scores, adversarial_scores: (m,);
        benign_rfs, adversarial_rfs: bool (m, H, W) or None.
    """

    benign: np.ndarray
    adversarial: np.ndarray
    benign_scores: np.ndarray
    adversarial_scores: np.ndarray
    benign_rfs: torch.Tensor | None
    adversarial_rfs: torch.Tensor | None


def _column(scores: ArrayLike, neuron: int) -> np.ndarray:
    values = as_numpy(scores)
    if values.ndim == 2:
        return values[:, neuron]
    if values.ndim == 1:
        return values
    raise ValueError(f"scores must be (P,) or (P, K), got shape {values.shape}")


def _neuron_rfs(maps: ArrayLike | None, index: np.ndarray, neuron: int, threshold: float | ArrayLike | None,
                size: Size | None) -> torch.Tensor | None:
    if maps is None:
        return None
    if threshold is None or size is None:
        raise ValueError("RFs of context images need the neuron's threshold and the RF size")
    selected = as_tensor(maps)[torch.as_tensor(index, dtype=torch.long)]
    if selected.ndim == 4:  # (m, K, h, w): keep the neuron's maps
        selected = selected[:, neuron]
    limit = as_tensor(threshold, dtype=torch.float32).reshape(-1)
    limit = limit[neuron] if limit.numel() > 1 else limit[0]
    return rf_masks(selected.unsqueeze(1), limit, size)[:, 0]


def context_images(neuron: int, benign_scores: ArrayLike, adversarial_scores: ArrayLike, m: int = DEFAULT_M, *,
                   benign_maps: ArrayLike | None = None, adversarial_maps: ArrayLike | None = None,
                   threshold: float | ArrayLike | None = None, size: Size | None = None) -> ContextImages:
    """Top ``m`` benign and top ``m`` adversarial images of a set of pairs for one neuron.

    Pass as scores either per-neuron activation scores (e.g. :func:`max_activations`, (P, K): the
    neuron's column is used) to rank by maximal activation, or per-image confidences ((P,), see
    :func:`class_confidence`: benign images for the benign label, adversarial images for the
    adversarial prediction) to rank by confidence. Each side is ranked on its own, largest first,
    ties by index. With feature maps and the neuron's ``threshold`` (shared by both sides) the RFs of
    the selected images are returned too.

    Shape:
        benign_scores, adversarial_scores: (P, K) or (P,); benign_maps, adversarial_maps: (P, K, h, w)
        or (P, h, w) (this neuron's maps); threshold: scalar or (K,); returns :class:`ContextImages`.
    """
    benign_values = _column(benign_scores, neuron)
    adversarial_values = _column(adversarial_scores, neuron)
    benign = top_k(benign_values, m)
    adversarial = top_k(adversarial_values, m)
    return ContextImages(
        benign, adversarial, benign_values[benign], adversarial_values[adversarial],
        _neuron_rfs(benign_maps, benign, neuron, threshold, size),
        _neuron_rfs(adversarial_maps, adversarial, neuron, threshold, size),
    )
