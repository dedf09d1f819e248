"""Neuron importance (Bluff, paper 004 §3.2; spec-004 §2): the median over a set of images of each
channel's spatial maximum, and the within-layer rank percentile of that importance."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from advlens.pathways._arrays import as_float_array


def neuron_importance(max_activations: Any) -> np.ndarray:
    """Importance of each channel for one set of images: ``median_i max_{h,w} C^d[h, w](x_i)``.

    Args:
        max_activations: per image and channel the spatial maximum of the layer's map (what
            ``model.capture(images, layers, reduce="max")`` returns), NumPy or torch.

    Returns:
        float64 medians (an even count averages the two middle values, as ``numpy.median``).

    Raises:
        ValueError: not (N, C), no images, or NaN/inf values.

    Shape:
        max_activations: (N, C) → (C,).
    """
    table = as_float_array(max_activations, "max_activations (N images × C channels)", ndim=2)
    if table.shape[0] == 0:
        raise ValueError("neuron importance needs at least one image: the set is empty "
                         "(no image of this class, or no successfully attacked image at this strength)")
    return np.median(table, axis=0)


def rank_percentile(importance: Any) -> np.ndarray:
    """Within-layer rank percentile ``rank / C`` of each channel's importance (Bluff stores it).

    Ranks run 1 … C from the *least* to the *most* important channel, so higher is better: the most
    important channel has percentile 1.0, the least important 1/C. Tied channels share the highest
    rank of their run (``scipy.stats.rankdata(method="max")``), so a tie never lowers a channel and the
    top channel(s) always read 1.0.

    Shape:
        importance: (C,) → (C,) float64 in (0, 1].
    """
    values = as_float_array(importance, "importance (one value per channel)", ndim=1)
    if values.size == 0:
        raise ValueError("rank_percentile needs at least one channel")
    return rankdata(values, method="max").astype(np.float64) / values.size
