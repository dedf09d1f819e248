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


def per_image_influence(model: AnalysedModel, links: Sequence[LayerLinks], images: torch.Tensor,
                        batch_size: int = 64) -> list[torch.Tensor]:
    """Influence of every drawn source on every drawn target channel, per image and layer pair.

    One forward pass per batch feeds every ``kernel`` pair (the sources are captured together); each
    ``grad_x_act`` pair runs its own forward and backward passes.

    Shape:
        images: (N, c, H, W) in [0, 1] → one (N, n_targets, m_sources) float32 tensor per entry of ``links``.
    """
    out: list[list[torch.Tensor]] = [[] for _ in links]
    active = [i for i, link in enumerate(links) if len(link.sources) and len(link.targets)]
    kernel_sources = [links[i].source for i in active if links[i].conv is not None]
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        maps = model.capture(batch, kernel_sources, reduce="none", batch_size=batch_size) if kernel_sources else {}
        for i in active:
            link = links[i]
            if link.conv is not None:
                with torch.no_grad():
                    part = kernel_influence(maps[link.source].to(model.device), model.net.get_submodule(link.conv),
                                            link.targets.tolist(), link.sources.tolist())
            else:
                part = grad_x_act_influence(model, batch, link.source, link.target, link.targets.tolist(),
                                            source_channels=link.sources.tolist(), batch_size=batch_size)
            out[i].append(part.detach().float().cpu())
    return [torch.cat(parts) if parts else torch.zeros((len(images), len(link.targets), len(link.sources)))
            for parts, link in zip(out, links)]


def set_influences(model: AnalysedModel, links: Sequence[LayerLinks], sets: Sequence[np.ndarray],
                   batch_size: int = 64) -> list[list[np.ndarray]]:
    """Median influence over each image set of every drawn source → drawn target channel, per layer pair.

    The sets are concatenated and run in common batches (fewer, larger passes than set by set).
    Returns ``[set][link]`` (n_targets, m_sources) float32 arrays; NaN for an empty set.

    Shape:
        each set: (N_k, c, H, W) float32 in [0, 1].
    """
    sizes = [len(images) for images in sets]
    if sum(sizes) == 0:
        return [[np.full((len(link.targets), len(link.sources)), np.nan, dtype=np.float32) for link in links]
                for _ in sets]
    pixels = torch.from_numpy(np.ascontiguousarray(np.concatenate([s for s in sets if len(s)]), dtype=np.float32))
    per_image = per_image_influence(model, links, pixels, batch_size)
    out, start = [], 0
    for size in sizes:
        medians = []
        for link, values in zip(links, per_image):
            if size == 0:
                medians.append(np.full((len(link.targets), len(link.sources)), np.nan, dtype=np.float32))
            elif len(link.sources) == 0 or len(link.targets) == 0:
                medians.append(np.zeros((len(link.targets), len(link.sources)), dtype=np.float32))
            else:
                medians.append(np.asarray(median_over(values[start:start + size]), dtype=np.float32))
        out.append(medians)
        start += size
    return out


__all__ = ["LayerLinks", "plan_links", "per_image_influence", "set_influences"]
