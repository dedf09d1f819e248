"""The diverging–merging evaluation of paper 003 §6.1 (Eq. 9, Eq. 10, top-K score; spec-003 §3).

Per layer i, ``diff(i) = ‖z_adv(i) − z_src(i)‖₂ − ‖z_adv(i) − z_tar(i)‖₂`` (Eq. 9; positive: the
adversarial datapath is nearer the target's than the source's). A diverging–merging pattern is
detected when diff strictly increases over each of the last r steps and ends at its maximum (Eq. 10).
Per adversarial, its targets are ranked by whole-network ‖z_adv − z_tar‖₂ (ascending) and the top-K
score counts detected patterns among the first K (a number in [0, K], non-decreasing in K).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from advlens.datapaths.gates import GateLayout
from advlens.errors import ConfigError
from advlens.models.adapter import AnalysedModel

DISTANCES = ("raw", "rms")


def default_r(m: int) -> int:
    """r = 8 when m ≥ 30 layers, else ⌈m/3⌉ (spec-003 §3; the demo ResNet: m = 9 → r = 3)."""
    if m < 1:
        raise ConfigError(f"the number of layers must be ≥ 1, got {m}")
    return 8 if m >= 30 else math.ceil(m / 3)


def evaluation_layers(model: AnalysedModel, layers: Sequence[str]) -> list[str]:
    """Which gate points enter Eq. 9/10: all when their widths never decrease with depth, else the stem
    (the first gate point) and every block output among them (raw ℓ2 grows with √width)."""
    graph = model.graph
    ordered = graph.sort(layers)
    widths = [graph[name].channels for name in ordered]
    if all(a <= b for a, b in zip(widths, widths[1:])):
        return ordered
    blocks = set(graph.block_outputs())
    return [ordered[0], *[name for name in ordered[1:] if name in blocks]]


def layer_distances(a: torch.Tensor, b: torch.Tensor, layout: GateLayout, layers: Sequence[str] | None = None,
                    distance: str = "raw") -> torch.Tensor:
    """Per-layer ℓ2 distance between datapaths; ``rms`` divides by √n_ℓ.

    Shape:
        a, b: (N, n) (broadcastable); result (N, len(layers)).
    """
    if distance not in DISTANCES:
        raise ConfigError(f"unknown distance {distance!r}; use one of {', '.join(DISTANCES)}")
    names = list(layout.layers if layers is None else layers)
    columns = []
    for name in names:
        part = layout.slice(name)
        d = torch.linalg.vector_norm(a[..., part] - b[..., part], dim=-1)
        columns.append(d / math.sqrt(part.stop - part.start) if distance == "rms" else d)
    return torch.stack(columns, dim=-1)


def diff_curve(adv: torch.Tensor, src: torch.Tensor, tar: torch.Tensor, layout: GateLayout,
               layers: Sequence[str] | None = None, distance: str = "raw") -> torch.Tensor:
    """Eq. 9 per layer: dis(adv, src) − dis(adv, tar).

    Shape:
        adv, src, tar: (N, n) (broadcastable); result (N, m).
    """
    return (layer_distances(adv, src, layout, layers, distance)
            - layer_distances(adv, tar, layout, layers, distance))


def pattern_detected(diff: Sequence[float] | np.ndarray | torch.Tensor, r: int) -> bool:
    """Eq. 10: diff rises strictly over each of the last r steps and its last value is the maximum.

    With m = len(diff), the steps compared are (m−r−1 → m−r), …, (m−2 → m−1) (0-based), so m ≥ r + 1 is
    needed; a shorter curve is never a pattern. Ties count as not increasing.

    Shape:
        diff: (m,).
    """
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ConfigError(f"r must be a positive integer, got {r!r}")
    values = np.asarray(diff.detach().cpu() if isinstance(diff, torch.Tensor) else diff, dtype=np.float64)
    if values.ndim != 1:
        raise ConfigError(f"diff must be one value per layer (1-D), got shape {values.shape}")
    m = len(values)
    if m < r + 1:
        return False
    tail = values[m - r - 1:]
    rising = int(np.sum(tail[1:] > tail[:-1]))
    return bool(rising == r and values[-1] >= values.max())


def top_k_score(distances: np.ndarray | torch.Tensor, detected: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    """Per adversarial, the number of detected patterns among its K nearest targets.

    Targets are ranked by ascending whole-network distance (similarity 1/dis), ties by their order.

    Shape:
        distances: (A, T) float; detected: (A, T) bool; result (A,) integers in [0, min(K, T)].
    """
    dist = np.asarray(distances.cpu() if isinstance(distances, torch.Tensor) else distances, dtype=np.float64)
    flags = np.asarray(detected.cpu() if isinstance(detected, torch.Tensor) else detected, dtype=bool)
    if dist.ndim != 2 or dist.shape != flags.shape:
        raise ConfigError(f"distances and detected must both be (adversarials, targets), got {dist.shape} and "
                          f"{flags.shape}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"K must be a positive integer, got {k!r}")
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(flags, order, axis=1).sum(axis=1)
