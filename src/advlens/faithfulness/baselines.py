"""Baseline channel orders a ranking's patch curve is compared with (issue 13, item 1).

* random orders, one per seed (report the AUC's mean ± sd over seeds);
* ``|activation difference|``: channels by how much the attack changes their maps,
  ``max_{h,w} |a_adv − a_benign|`` (``reduce="max"``, the benchmark's baseline) or the spatial mean
  (``reduce="mean"``; the same order as paper 002's divergence ranking ``Σ_{h,w} |a_adv − a_benign|``).

Orders are best first; ties keep the lower channel id first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from advlens.errors import ConfigError

DIFFERENCE_REDUCTIONS = ("max", "mean")


def order_by_score(scores: torch.Tensor | np.ndarray) -> np.ndarray:
    """Channels by descending score, ties by ascending channel id; NaN scores last.

    Shape: scores (K,) or (P, K) → int64 of the same shape.
    """
    values = np.asarray(scores, dtype=np.float64)
    return np.argsort(-values, axis=-1, kind="stable").astype(np.int64)  # NumPy sorts NaN last


def random_rankings(channels: int, seeds: Sequence[int]) -> np.ndarray:
    """One seeded random permutation of ``channels`` per seed (NumPy ``default_rng(seed)``).

    Shape: (len(seeds), channels) int64.
    """
    if not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ConfigError(f"channels must be a positive integer, got {channels!r}")
    if not len(seeds):
        raise ConfigError("random baselines need at least one seed")
    return np.stack([np.random.default_rng(int(seed)).permutation(int(channels)) for seed in seeds]).astype(np.int64)


def difference_scores(benign: torch.Tensor | np.ndarray, adversarial: torch.Tensor | np.ndarray,
                      reduce: str = "max") -> np.ndarray:
    """``|a_adv − a_benign|`` per channel, reduced over the spatial positions by ``max`` or ``mean``.

    Shape: benign, adversarial (..., K, h, w) or (..., K) → (..., K) float64.
    """
    if reduce not in DIFFERENCE_REDUCTIONS:
        raise ConfigError(f"reduce must be one of {', '.join(DIFFERENCE_REDUCTIONS)}, got {reduce!r}")
    a, b = (torch.as_tensor(np.asarray(x)).double() for x in (benign, adversarial))
    if a.shape != b.shape:
        raise ConfigError(f"benign {tuple(a.shape)} and adversarial {tuple(b.shape)} maps differ in shape")
    diff = (b - a).abs()
    if diff.ndim >= 3:
        flat = diff.flatten(-2)
        diff = flat.amax(dim=-1) if reduce == "max" else flat.mean(dim=-1)
    return diff.numpy()


def difference_ranking(benign: torch.Tensor | np.ndarray, adversarial: torch.Tensor | np.ndarray,
                       reduce: str = "max") -> np.ndarray:
    """Channels by ``|activation difference|`` (see :func:`difference_scores`), best first.

    Shape: benign, adversarial (..., K, h, w) or (..., K) → (..., K) int64.
    """
    return order_by_score(difference_scores(benign, adversarial, reduce))
