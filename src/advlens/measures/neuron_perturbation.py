"""The neuron-perturbation measure (paper 001, §5.2.1, Fig. 4).

Curves: a neuron's *contribution* to a class logit is its pooled activation × the dense weight of
that class. The benign curve uses the benign image and the benign class's weights, the adversarial
curve the adversarial image and the adversarial class's weights.

Bands: per class c, a confidence interval of the mean contribution over the correctly predicted
benign images of c (store: ``class_mean``, ``class_std``, ``class_count``), or a percentile band
(store: ``class_percentiles``). The benign band of a pair is that of the benign class; the
adversarial band is the class-level band of the *adversarial class* (its benign images × its
weights), as the case study of Fig. 6 reads.

Band gap (§5.2.1): ``CU_a − CL_b`` if ``CL_b > CU_a`` (negative: inhibited by the attack),
``CL_a − CU_b`` if ``CL_a > CU_b`` (positive: excited), else 0.

Direct form: substitute one neuron's benign pooled activation by its adversarial value and record
the probability changes, for all neurons in one batched pass through the dense head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats

from advlens.measures._tensors import ArrayLike, as_numpy, as_tensor, interpolate_level
from advlens.measures.ranking import rank_descending
from advlens.measures.substitution import probability_changes

logger = logging.getLogger(__name__)

DEFAULT_CONFIDENCE = 0.95
"""Default confidence level of the class bands."""


class Bands(NamedTuple):
    """Lower and upper band bounds per class and neuron.

    Shape:
        low, high: float32 (C, D), or (D,) after selecting a class.
    """

    low: torch.Tensor
    high: torch.Tensor


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


def class_bands(class_mean: ArrayLike, class_std: ArrayLike, class_count: ArrayLike,
                level: float = DEFAULT_CONFIDENCE) -> Bands:
    """Confidence intervals of the class means: ``mean ± t_{(1+level)/2, n−1} · std / √n``.

    ``class_std`` is taken as the sample standard deviation (ddof = 1). Classes with fewer than two
    images carry no interval: their band is (−inf, +inf), so their band gaps are 0.

    Shape:
        class_mean, class_std: (C, D); class_count: (C,); returns :class:`Bands` float32 (C, D).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    mean = as_numpy(class_mean).astype(np.float64)
    std = as_numpy(class_std).astype(np.float64)
    count = as_numpy(class_count).astype(np.float64).reshape(-1)
    if mean.shape != std.shape or mean.ndim != 2 or count.size != mean.shape[0]:
        raise ValueError(f"class_mean {mean.shape}, class_std {std.shape} and class_count ({count.size},) "
                         "do not match (C, D), (C, D), (C,)")
    valid = count >= 2
    if not valid.all():
        logger.warning("classes %s have fewer than 2 images: their bands are unbounded",
                       np.flatnonzero(~valid).tolist())
    dof = np.where(valid, count - 1, 1.0)
    half = stats.t.ppf((1.0 + level) / 2.0, dof)[:, None] * std / np.sqrt(np.where(valid, count, 1.0))[:, None]
    half = np.where(valid[:, None], half, np.inf)
    return Bands(torch.from_numpy((mean - half).astype(np.float32)), torch.from_numpy((mean + half).astype(np.float32)))


def percentile_bands(class_percentiles: ArrayLike, percentile_levels: Sequence[float] | ArrayLike,
                     low: float | None = None, high: float | None = None) -> Bands:
    """Bands between two percentiles of the class contributions (an option to :func:`class_bands`).

    ``low`` and ``high`` are in the units of ``percentile_levels`` (default: the lowest and the
    highest stored level); levels between stored ones are linearly interpolated.

    Shape:
        class_percentiles: (P, C, D); percentile_levels: (P,); returns :class:`Bands` float32 (C, D).
    """
    levels = as_numpy(percentile_levels).astype(np.float64).reshape(-1)
    low = float(levels[0]) if low is None else low
    high = float(levels[-1]) if high is None else high
    if low > high:
        raise ValueError(f"low percentile {low} is above high percentile {high}")
    table = as_numpy(class_percentiles)
    if table.ndim != 3:
        raise ValueError(f"class_percentiles must be (P, C, D), got shape {table.shape}")
    lower = interpolate_level(table, levels, low, what="percentile level")
    upper = interpolate_level(table, levels, high, what="percentile level")
    return Bands(torch.from_numpy(lower.astype(np.float32)), torch.from_numpy(upper.astype(np.float32)))


def band_gap(adv_low: ArrayLike, adv_high: ArrayLike, benign_low: ArrayLike, benign_high: ArrayLike) -> torch.Tensor:
    """Band gap of paper 001, §5.2.1, elementwise.

    ``CU_a − CL_b`` if ``CL_b > CU_a`` (adversarial band below the benign one: negative, inhibited);
    ``CL_a − CU_b`` if ``CL_a > CU_b`` (above: positive, excited); 0 when the bands overlap.

    Shape:
        all inputs broadcastable, typically (D,); returns float32 of the broadcast shape.
    """
    cl_a = as_tensor(adv_low, dtype=torch.float32)
    cu_a = as_tensor(adv_high, cl_a.device, torch.float32)
    cl_b = as_tensor(benign_low, cl_a.device, torch.float32)
    cu_b = as_tensor(benign_high, cl_a.device, torch.float32)
    zero = torch.zeros((), device=cl_a.device)
    return torch.where(cl_b > cu_a, cu_a - cl_b, torch.where(cl_a > cu_b, cl_a - cu_b, zero))


def pair_band_gap(bands: Bands, benign_class: int, adversarial_class: int) -> torch.Tensor:
    """Band gap of a pair: the adversarial class's band against the benign class's band.

    Shape:
        bands: :class:`Bands` (C, D); returns float32 (D,).
    """
    return band_gap(bands.low[adversarial_class], bands.high[adversarial_class],
                    bands.low[benign_class], bands.high[benign_class])


def rank_band_gap(gap: ArrayLike, by: str = "signed", tiebreak: ArrayLike | None = None) -> np.ndarray:
    """Neuron order for the Neuron Vulnerability View.

    ``"signed"`` (Fig. 4): largest positive gap first (excited), zeros in the middle, most negative
    last (inhibited); ``"magnitude"``: largest |gap| first. Ties (e.g. the zero region) follow
    ``tiebreak`` descending (e.g. adversarial curve − benign curve), then neuron index.

    Shape:
        gap: (D,); tiebreak: (D,) or None; returns int64 (D,).
    """
    if by not in ("signed", "magnitude"):
        raise ValueError(f"by must be 'signed' or 'magnitude', got {by!r}")
    scores = as_numpy(gap).astype(np.float64)
    return rank_descending(np.abs(scores) if by == "magnitude" else scores, tiebreak)


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
