"""The neuron-perturbation measure (paper 001, §5.2.1, Fig. 4).

Curves: a neuron's *contribution* to a class logit is its pooled activation × the dense weight of
that class. The benign curve uses the benign image and the benign class's weights, the adversarial
curve the adversarial image and the adversarial class's weights.

Bands and band gaps: :mod:`advlens.measures.bands`.

Direct form: substitute one neuron's benign pooled activation by its adversarial value and record
the probability changes, for all neurons in one batched pass through the dense head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from advlens.measures._tensors import ArrayLike, as_tensor
from advlens.measures.substitution import probability_changes


class ContributionCurves(NamedTuple):
    """Activation × weight curves of a pair.

    Shape:
        benign, adversarial: float32 (D,).
    """

    benign: torch.Tensor
    adversarial: torch.Tensor


class NeuronSubstitution(NamedTuple):
    """Probability changes when one neuron's benign pooled activation is set to its adversarial value.

    Shape:
        benign_drop: (D,) y_b − y'_b, decrease of the benign class probability (positive = vulnerable);
        adversarial_rise: (D,) y'_a − y_a, increase of the adversarial class probability.
    """

    benign_drop: torch.Tensor
    adversarial_rise: torch.Tensor


def contributions(pooled: ArrayLike, weight: ArrayLike, classes: int | ArrayLike) -> torch.Tensor:
    """Activation × dense weight of the given class(es): ``pooled * weight[classes]``.

    Shape:
        pooled: (D,) or (N, D); weight: (C, D); classes: int or (N,); returns float32 like ``pooled``.
    """
    activations = as_tensor(pooled, dtype=torch.float32)
    weights = as_tensor(weight, activations.device, torch.float32)
    index = as_tensor(classes, activations.device).long()
    if weights.ndim != 2 or weights.shape[1] != activations.shape[-1]:
        raise ValueError(f"weight must be (C, {activations.shape[-1]}), got {tuple(weights.shape)}")
    return activations * weights[index]


def contribution_curves(benign_pooled: ArrayLike, adversarial_pooled: ArrayLike, weight: ArrayLike,
                        benign_class: int, adversarial_class: int) -> ContributionCurves:
    """The pair's curves: benign pooled × weights of the benign class, adversarial pooled × weights
    of the adversarial class (pass ``model.dense_weight`` as ``weight``).

    Shape:
        benign_pooled, adversarial_pooled: (D,); weight: (C, D); returns two float32 (D,).
    """
    return ContributionCurves(contributions(benign_pooled, weight, benign_class),
                              contributions(adversarial_pooled, weight, adversarial_class))


@torch.no_grad()
def neuron_substitution(model: Callable[[torch.Tensor], torch.Tensor], benign_pooled: ArrayLike,
                        adversarial_pooled: ArrayLike, benign_class: int, adversarial_class: int, *,
                        max_batch: int = 1024, device: torch.device | str | None = None) -> NeuronSubstitution:
    """Replace each neuron's benign pooled activation by its adversarial value, one neuron at a time.

    The D substituted vectors go through the dense head in batches of ``max_batch``; the changes of
    the softmax probabilities of the benign and the adversarial class are recorded (signs as in
    :func:`advlens.measures.vulnerability_maps`: positive = vulnerable).

    Args:
        model: an ``AnalysedModel`` (its ``logits_from_pooled`` is used) or any callable mapping
            pooled vectors to logits.
        benign_pooled, adversarial_pooled: the pair's pooled vectors.
        device: where to compute; default: the model's device (else that of ``benign_pooled``).

    Shape:
        benign_pooled, adversarial_pooled: (D,); returns :class:`NeuronSubstitution` float32 (D,) each.
    """
    head = getattr(model, "logits_from_pooled", model)
    if device is None:
        device = getattr(model, "device", None)
    benign = as_tensor(benign_pooled, device, torch.float32).reshape(-1)
    adversarial = as_tensor(adversarial_pooled, benign.device, torch.float32).reshape(-1)
    if benign.shape != adversarial.shape:
        raise ValueError(f"pooled vectors differ in shape: {tuple(benign.shape)} vs {tuple(adversarial.shape)}")
    dims = benign.numel()
    columns = torch.arange(dims, device=benign.device)

    def substituted():
        for start in range(0, dims, max(1, max_batch)):
            neurons = columns[start:start + max_batch]
            yield neurons, torch.where(neurons[:, None] == columns[None, :], adversarial, benign)

    return NeuronSubstitution(*probability_changes(head, benign, substituted(), dims, benign_class,
                                                   adversarial_class))
