"""Gates on whole feature maps: the layout of a gate vector over gate points, and gated forward passes.

A *gate point* is a layer of ``model.graph`` (any layer the graph can address: a module output, a
functional ``torch.relu`` inside a block, a block output after its add and ReLU). Each of its output
channels (feature maps) gets one gate ``z_k ∈ [0, 1]`` that multiplies the whole map,
``a_k ← z_k · a_k`` (paper 003 Eq. 2, 5; spec-003 §1.2). A datapath in continuous form is one flat
vector ``z`` of all gates; :class:`GateLayout` says which slice belongs to which layer. The
multiplication is applied through ``model.tapping(replace=…)``, so hooks are removed when the block
ends, also when a forward pass raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import torch

from advlens.errors import ModelError
from advlens.models.adapter import AnalysedModel


@dataclass(frozen=True)
class GateLayout:
    """Which slice of a flat gate vector belongs to which gate point.

    Attributes:
        layers: gate points in execution order (graph names).
        sizes: feature maps (channels) per gate point.
    """

    layers: tuple[str, ...]
    sizes: tuple[int, ...]

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start of each layer's slice; the last entry is the total ``n``."""
        starts = [0]
        for size in self.sizes:
            starts.append(starts[-1] + size)
        return tuple(starts)

    @property
    def total(self) -> int:
        """n, the number of gates."""
        return self.offsets[-1]

    def index(self, layer: str) -> int:
        if layer not in self.layers:
            raise ModelError(f"{layer!r} is not a gate point of this datapath; gate points: {', '.join(self.layers)}")
        return self.layers.index(layer)

    def slice(self, layer: str) -> slice:
        i = self.index(layer)
        return slice(self.offsets[i], self.offsets[i + 1])

    def split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat gates to one tensor per layer. Shape: (..., n) → {layer: (..., n_ℓ)}."""
        if z.shape[-1] != self.total:
            raise ModelError(f"a gate vector of this layout has {self.total} entries, got {z.shape[-1]}")
        return {layer: z[..., self.offsets[i]:self.offsets[i + 1]] for i, layer in enumerate(self.layers)}

    def join(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """One tensor per layer to flat gates. Shape: {layer: (..., n_ℓ)} → (..., n)."""
        return torch.cat([parts[layer] for layer in self.layers], dim=-1)


def default_gate_layers(model: AnalysedModel) -> list[str]:
    """The spec's gate points: every post-activation output with spatial maps (spec-003 §1.2).

    For a ResNet these are the stem, each block's inner post-ReLU output and each block output after
    add + ReLU (the demo model: 9 points, 992 gates).
    """
    graph = model.graph
    return [name for name in graph.activation_layers() if graph[name].spatial]


def gate_layout(model: AnalysedModel, layers: Sequence[str] | None = None) -> GateLayout:
    """Resolve and check gate points; ``None`` takes :func:`default_gate_layers`.

    Raises ``ModelError`` for unknown names, duplicates, the input, or layers without channels.
    """
    graph = model.graph
    names = default_gate_layers(model) if layers is None else [graph.resolve(name) for name in layers]
    if not names:
        raise ModelError("datapaths need at least one gate layer (see model.graph.activation_layers())")
    if len(set(names)) != len(names):
        raise ModelError(f"a gate layer is listed twice: {', '.join(names)}")
    source = graph.nodes[0].name
    for name in names:
        node = graph[name]
        if name == source or len(node.shape) not in (1, 3) or node.channels < 1:
            raise ModelError(f"layer {name!r} (output {tuple(node.shape)}) cannot carry gates: a gate multiplies one "
                             "feature map, so gate layers are layers with channel outputs (C, H, W) or (D,)")
    ordered = graph.sort(names)
    return GateLayout(tuple(ordered), tuple(graph[name].channels for name in ordered))


def _broadcast(gates: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Shape: gates (B, C) → (B, C, 1, …) matching ``value`` (B, C, *spatial)."""
    return gates.reshape(*gates.shape, *([1] * (value.ndim - 2)))


def gate_function(gates: torch.Tensor, region: torch.Tensor | None = None):
    """The replacement ``a ↦ a · z`` for one layer, optionally only inside a spatial region.

    With ``region`` (a float mask R of the layer's grid) the multiplier is ``1 + R · (z − 1)``: the gate
    acts on the region's neurons, the rest of the map keeps its values (spec-003 §2, Eq. 8).

    Shape:
        gates: (B, C); region: (h, w) with values in {0, 1}; the layer output: (B, C, h, w) or (B, C).
    """
    def apply(value: torch.Tensor) -> torch.Tensor:
        if value.shape[:2] != gates.shape:
            raise ModelError(f"gates of shape {tuple(gates.shape)} do not fit a layer output of shape "
                             f"{tuple(value.shape)}: one gate per example and feature map is needed")
        z = _broadcast(gates.to(value.dtype), value)
        if region is None:
            return value * z
        return value * (1 + region.to(value.dtype) * (z - 1))
    return apply


@contextmanager
def gated(model: AnalysedModel, layout: GateLayout, z: torch.Tensor) -> Iterator[None]:
    """Inside the block, ``model(images)`` multiplies every gate point's maps by its gates.

    Shape:
        z: (B, n) with B the batch of the forward passes run inside the block.
    """
    parts = layout.split(z)
    with model.tapping((), {layer: gate_function(parts[layer]) for layer in layout.layers}):
        yield
