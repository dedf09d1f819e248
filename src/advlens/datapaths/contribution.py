"""Contribution analysis: which feature maps of an earlier layer cause a target map's activation
(paper 003 §5.4, Eq. 7 for the whole map, Eq. 8 for an area of interest; spec-003 §2).

For m examples and target map t of layer ℓ_t, one gate per feature map k of the source layer ℓ_s
multiplies that map inside the region R_k corresponding to the AOI (the whole map without an AOI;
outside R_k the map keeps its values). The gates of the m examples minimise jointly

    Σ_i ‖f_i − f_i(z_i)‖² / (‖f_i‖² + ε) + (λ̃/n')·Σ_k z_ik + (γ̃/√n')·Σ_{i≠j} ‖z_i − z_j‖₂

where f_i are the post-activation values of map t at the AOI neurons. An example whose AOI is silent
(‖f_i‖ ≈ 0) has nothing to explain: its gates are 0 and it takes no part in the pairwise term.
``method="sgd"`` solves this with projected Adam (T = 100); ``method="fast"`` linearises f at z = 1
and solves the resulting box-constrained quadratic problem (:mod:`advlens.datapaths.fast`). The
forward pass stops at ℓ_t; the backward pass reaches only ℓ_s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from advlens.datapaths.fast import FirstOrder
from advlens.datapaths.gates import gate_function
from advlens.datapaths.region import check_aoi, source_region
from advlens.datapaths.solver import check_solver, check_weight, minimize_box
from advlens.errors import ConfigError, ModelError
from advlens.models.adapter import AnalysedModel

METHODS = ("sgd", "fast")
RESOLUTION = 0.01  # z closer than this are ties in a ranking
EPSILON = 1e-12  # added to ‖f‖²; an AOI with ‖f‖² below it is silent


class _Reached(Exception):
    """Raised inside the forward pass when the target layer's output exists."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__("target layer reached")
        self.value = value


@dataclass(frozen=True)
class Contribution:
    """Contribution of every source feature map to a target map's AOI, per example.

    Attributes:
        z: gate per example and source map (∈ [0, 1]; ≈ the map's contribution to the AOI).
        source_layer, target_layer, target_map: the question asked.
        aoi: the selected neurons of the target map; region: the corresponding source cells.
        method: ``sgd`` or ``fast``.
        fidelity: the normalised fidelity term at the final gates (for ``fast``, of the linear model).
        activation: mean AOI activation of the target map per example.
        silent: examples whose AOI is not active at all (their z is 0).
        importance: first-order cost of removing each source map alone, ‖J[:, k]‖² / ‖f‖² with J the
            Jacobian of f in z at z = 1 (see :mod:`advlens.datapaths.fast`); it breaks ties between equal z
            (many maps may sit at the bound 1).

    Shape:
        z: (m, n'); aoi: (h_t, w_t) bool; region: (h_s, w_s) bool (None for a vector source layer);
        fidelity, activation: (m,); silent: (m,) bool; importance: (m, n').
    """

    z: torch.Tensor
    source_layer: str
    target_layer: str
    target_map: int
    aoi: torch.Tensor
    region: torch.Tensor | None
    method: str
    fidelity: torch.Tensor
    activation: torch.Tensor
    silent: torch.Tensor
    importance: torch.Tensor

    @property
    def default_example(self) -> int:
        """The example where the feature is detected: the larger mean AOI activation (spec-003 §2)."""
        return int(self.activation.argmax())

    def ranking(self, example: int | None = None) -> list[int]:
        """Source maps by descending contribution for one example (default: :attr:`default_example`);
        z equal at the solver's resolution (rounded to 0.01; e.g. several maps at 1) are ordered by
        descending :attr:`importance`."""
        row = self.default_example if example is None else example
        level = np.round(self.z[row].double().numpy() / RESOLUTION)
        order = np.lexsort((-self.importance[row].double().numpy(), -level))
        return order.tolist()

    def top(self, k: int = 10, example: int | None = None) -> list[tuple[int, float]]:
        """The k largest contributors as (map, z) of one example."""
        row = self.default_example if example is None else example
        return [(i, float(self.z[row, i])) for i in self.ranking(row)[:k]]


def pairwise_distance_sum(z: torch.Tensor) -> torch.Tensor:
    """Σ over ordered pairs i ≠ j of ‖z_i − z_j‖₂ (subgradient 0 where rows coincide). Shape: (m, n) → ()."""
    diffs = z.unsqueeze(0) - z.unsqueeze(1)
    upper = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
    return 2 * torch.linalg.vector_norm(diffs[upper[0], upper[1]], dim=1).sum()


def target_values(model: AnalysedModel, images: torch.Tensor, target_layer: str,
                  source_layer: str | None = None, replace=None) -> torch.Tensor:
    """The target layer's output, the forward pass cut there; ``replace`` changes the source layer first.

    Shape:
        images: (m, C, H, W); result: the target layer's output (m, C_t, h_t, w_t).
    """
    def reached(value: torch.Tensor) -> torch.Tensor:
        raise _Reached(value)

    functions = {target_layer: reached}
    if replace is not None:
        functions[source_layer] = replace
    try:
        with model.tapping((), functions):
            model(images)
    except _Reached as stop:
        return stop.value
    raise ModelError(f"the forward pass never produced layer {target_layer!r}")


def _check(model: AnalysedModel, examples: torch.Tensor, target_layer: str, target_map: int, source_layer: str,
           method: str, lam: float, gamma: float, steps: int, lr: float, optimizer: str) -> tuple[str, str]:
    if not isinstance(examples, torch.Tensor):
        raise ConfigError(f"examples must be a tensor (m, C, H, W) in [0, 1], got {type(examples).__name__}")
    model.check_input(examples)
    if len(examples) < 1:
        raise ConfigError("contribution analysis needs at least one example")
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    check_weight("lam", lam)
    check_weight("gamma", gamma)
    check_solver(steps, lr, optimizer)
    graph = model.graph
    target, source = graph.resolve(target_layer), graph.resolve(source_layer)
    node = graph[target]
    if len(node.shape) != 3:
        raise ModelError(f"target layer {target!r} has output {tuple(node.shape)}, not feature maps (C, H, W)")
    if not isinstance(target_map, int) or isinstance(target_map, bool) or not 0 <= target_map < node.channels:
        raise ConfigError(f"target_map must be a map index of {target!r} in 0..{node.channels - 1}, got {target_map!r}")
    if len(graph[source].shape) not in (1, 3) or source == graph.nodes[0].name:
        raise ModelError(f"source layer {source!r} has no feature maps to gate")
    if not graph.reaches(source, target):
        raise ModelError(f"source layer {source!r} does not feed target layer {target!r}: pick an earlier layer "
                         "on a path to the target")
    return target, source


def contribution(model: AnalysedModel, examples: torch.Tensor, target_layer: str, target_map: int,
                 source_layer: str, aoi: torch.Tensor | None = None, *, method: str = "sgd", lam: float = 0.1,
                 gamma: float = 0.1, steps: int = 100, lr: float = 0.05, optimizer: str = "adam", margin: int = 0,
                 max_groups: int = 64) -> Contribution:
    """Contribution of each map of ``source_layer`` to map ``target_map`` of ``target_layer`` (Eq. 7/8).

    Args:
        examples: the m images analysed together (the datapaths' examples, e.g. src, adv, tar).
        aoi: a bool mask of the target map's grid (Eq. 8), ``None`` for the whole map (Eq. 7).
        method: ``sgd`` (projected Adam, T = ``steps``) or ``fast`` (first-order approximation).
        lam, gamma: λ̃ and γ̃ (scale-free as in extraction).
        margin: source cells added around the AOI's corresponding region.
        max_groups: the fast path pools more AOI neurons than this into this many groups (by summation).

    Shape:
        examples: (m, C, H, W) in [0, 1]; result z: (m, n').
    """
    target, source = _check(model, examples, target_layer, target_map, source_layer, method, lam, gamma, steps, lr,
                            optimizer)
    graph = model.graph
    aoi_mask = check_aoi(aoi, graph[target].shape[1:])
    source_shape = graph[source].shape
    region = source_region(aoi_mask, source_shape[1:], margin) if len(source_shape) == 3 else None
    if not isinstance(max_groups, int) or max_groups < 1:
        raise ConfigError(f"max_groups must be a positive integer, got {max_groups!r}")
    device = model.device
    images = examples.to(device, model.mean.dtype)
    region_t = None if region is None else region.to(device)
    count, n = len(images), source_shape[0]
    aoi_d = aoi_mask.to(device)

    def aoi_values(z: torch.Tensor | None) -> torch.Tensor:
        replace = None if z is None else gate_function(z, region_t)
        return target_values(model, images, target, source, replace)[:, target_map][:, aoi_d]

    with torch.no_grad():
        f = aoi_values(None)
    norm = f.pow(2).sum(dim=1)
    silent = norm <= EPSILON
    active = ~silent
    lam_n, gamma_n = lam / n, gamma / math.sqrt(n)
    jacobian = FirstOrder.of(aoi_values, f, count, n, max_groups)
    importance = jacobian.removal_cost().masked_fill(silent.cpu().unsqueeze(1), 0.0)  # on the CPU, as the result

    if method == "fast":
        z, fidelity = jacobian.solve(lam_n, gamma_n, silent)
    else:
        def loss(z: torch.Tensor) -> torch.Tensor:
            fid = ((aoi_values(z) - f).pow(2).sum(dim=1) / (norm + EPSILON))[active].sum()
            total = fid + lam_n * z[active].sum()
            if gamma and int(active.sum()) > 1:
                total = total + gamma_n * pairwise_distance_sum(z[active])
            return total

        start = torch.ones(count, n, device=device)
        z = minimize_box(loss, start, steps, lr, optimizer, frozen=silent.unsqueeze(1)) if steps else start
        z = z.masked_fill(silent.unsqueeze(1), 0.0)
        with torch.no_grad():
            fidelity = (aoi_values(z) - f).pow(2).sum(dim=1) / (norm + EPSILON)
        fidelity = fidelity.masked_fill(silent, 0.0)
    return Contribution(z.cpu(), source, target, target_map, aoi_mask, region, method, fidelity.cpu(),
                        f.mean(dim=1).cpu(), silent.cpu(), importance)
