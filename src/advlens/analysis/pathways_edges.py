"""Connection influence between the drawn neurons of adjacent pathway layers (spec-004 §5).

Between two layers joined by exactly one convolution (plus norm / activation) the ``kernel``
estimator is exact and cheap (one capture of the source layer); between any other two layers
(residual blocks, pooling, several convolutions) ``grad_x_act`` is used. Either way the influence of
an edge over a set of images is the median over its images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from advlens.analysis.pathways_graph import METHODS
from advlens.models import AnalysedModel
from advlens.pathways import grad_x_act_influence, joining_convolution, kernel_influence, median_over

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerLinks:
    """The drawn channels of two adjacent layers and how influence between them is estimated.

    Shape:
        sources: (m,) int64 channels of layer ``source``; targets: (n,) int64 channels of ``target``.
    """

    source: str
    target: str
    sources: np.ndarray
    targets: np.ndarray
    conv: str | None

    @property
    def method(self) -> int:
        """Index into :data:`~advlens.analysis.pathways_graph.METHODS`."""
        return METHODS.index("kernel" if self.conv is not None else "grad_x_act")


def plan_links(model: AnalysedModel, layers: Sequence[str], drawn: Sequence[np.ndarray]) -> list[LayerLinks]:
    """One :class:`LayerLinks` per pair of adjacent layers (``drawn[i]``: the drawn channels of ``layers[i]``)."""
    return [LayerLinks(source, target, np.asarray(drawn[i], dtype=np.int64), np.asarray(drawn[i + 1], dtype=np.int64),
                       joining_convolution(model.graph, source, target))
            for i, (source, target) in enumerate(zip(layers[:-1], layers[1:]))]


def set_influence(model: AnalysedModel, links: Sequence[LayerLinks], images: np.ndarray,
                  batch_size: int = 64) -> list[np.ndarray]:
    """Median influence over ``images`` of every drawn source → drawn target channel, per layer pair.

    Returns one (n_targets, m_sources) float32 array per entry of ``links``; NaN when ``images`` is empty.

    Shape:
        images: (N, c, H, W) float32 in [0, 1].
    """
    if len(images) == 0:
        return [np.full((len(link.targets), len(link.sources)), np.nan, dtype=np.float32) for link in links]
    pixels = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    kernel_sources = [link.source for link in links if link.conv is not None and len(link.sources) and
                      len(link.targets)]
    maps = model.capture(pixels, kernel_sources, reduce="none", batch_size=batch_size) if kernel_sources else {}
    out = []
    for link in links:
        if len(link.sources) == 0 or len(link.targets) == 0:
            out.append(np.zeros((len(link.targets), len(link.sources)), dtype=np.float32))
            continue
        if link.conv is not None:
            conv = model.net.get_submodule(link.conv)
            with torch.no_grad():
                per_image = kernel_influence(maps[link.source].to(model.device), conv, link.targets.tolist(),
                                             link.sources.tolist())
        else:
            per_image = grad_x_act_influence(model, pixels, link.source, link.target, link.targets.tolist(),
                                             source_channels=link.sources.tolist(), batch_size=batch_size)
        out.append(np.asarray(median_over(per_image.cpu()), dtype=np.float32))
    return out


__all__ = ["LayerLinks", "plan_links", "set_influence"]
