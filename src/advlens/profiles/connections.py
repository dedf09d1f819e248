"""A unit's strongest connections (paper 002 §4.4; spec-002 §1.7, G-17).

For unit k of a layer, the incoming connections are the filters of the previous weighted layer whose
kernels into k are strongest, ``w(c → k) = Σ|W[k, c, :, :]|``, and the outgoing ones the filters of
the next weighted layer that k feeds most strongly, ``w(k → m) = Σ|W'[m, k, :, :]|``; each with the
sign of its kernel sum. Layers without weights between (batch norm, activations, pooling, a residual
add, a flatten after global pooling) pass channels straight through, so a block output's unit k is
output channel k of the convolution that produced it. A grouped convolution connects a unit to the
channels of its group only; a depthwise convolution connects channel k to channel k alone. Where a
branch joins or forks, the main path (the longest one through the model) is followed, as in the Flow
View's drill-down (G-24).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

from advlens.errors import ConfigError, ModelError
from advlens.models.graph import ModelGraph
from advlens.models.tracing import INPUT_NAME
from advlens.profiles._arrays import positive_int

TOP_CONNECTIONS = 5
JOIN_OPS = frozenset({"cat", "concat", "concatenate", "stack"})


@dataclass(frozen=True)
class Connection:
    """One kernel between two units: ``channel`` of the layer on the other side, its strength
    (sum of absolute kernel weights) and the sign of the kernel's sum (+1, −1 or 0)."""

    channel: int
    strength: float
    sign: int


@dataclass(frozen=True)
class Connections:
    """A unit's strongest incoming and outgoing connections, strongest first.

    Attributes:
        layer, unit: the unit asked about.
        incoming_via: the weighted layer whose kernels produce the unit (``None``: none before it).
        incoming_from: the layer the incoming channels belong to (a weighted layer, or ``input``).
        incoming: the top connections ``c → unit`` (channels of ``incoming_from``).
        outgoing_to: the next weighted layer on the main path (``None``: none after it).
        outgoing: the top connections ``unit → m`` (channels of ``outgoing_to``).
    """

    layer: str
    unit: int
    incoming_via: str | None
    incoming_from: str | None
    incoming: tuple[Connection, ...]
    outgoing_to: str | None
    outgoing: tuple[Connection, ...]


class _Paths:
    """Longest-path depths of a model graph, to follow the main path where branches fork or join."""

    def __init__(self, graph: ModelGraph) -> None:
        self.graph = graph
        self.nodes = {node.name: node for node in graph.nodes}

    @cached_property
    def depth(self) -> dict[str, int]:
        """Longest path from the input to each layer."""
        depth: dict[str, int] = {}
        for node in self.graph.nodes:
            depth[node.name] = 1 + max((depth[p] for p in node.inputs), default=-1)
        return depth

    @cached_property
    def children(self) -> dict[str, list[str]]:
        children: dict[str, list[str]] = {node.name: [] for node in self.graph.nodes}
        for node in self.graph.nodes:
            for parent in node.inputs:
                children[parent].append(node.name)
        return children

    @cached_property
    def height(self) -> dict[str, int]:
        """Longest path from each layer to a layer nothing reads (the output)."""
        height: dict[str, int] = {}
        for node in reversed(self.graph.nodes):
            height[node.name] = 1 + max((height[c] for c in self.children[node.name]), default=-1)
        return height

    def main_parent(self, name: str) -> str | None:
        inputs = self.nodes[name].inputs
        return max(inputs, key=lambda p: self.depth[p]) if inputs else None

    def main_child(self, name: str) -> str | None:
        children = self.children[name]
        return max(children, key=lambda c: self.height[c]) if children else None


def _weight_module(model, name: str) -> nn.Module | None:
    """The conv/linear module computing layer ``name``, or None when it is not one."""
    node = model.graph[name]
    if node.kind != "weighted" or node.hook is None:
        return None
    module = model.net.get_submodule(node.hook[0])
    return module if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) else None


def _positions(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[1:])) if len(shape) > 1 else 1


def _step(paths: _Paths, name: str, towards: str) -> str | None:
    """The next layer on the main path, or None at the end or at a join that renumbers channels."""
    node = paths.nodes[name]
    if towards == "back":
        if node.op in JOIN_OPS and len(node.inputs) > 1:
            return None
        return paths.main_parent(name)
    child = paths.main_child(name)
    if child is None or (paths.nodes[child].op in JOIN_OPS and len(paths.nodes[child].inputs) > 1):
        return None
    return child


def _channel_map(before: tuple[int, ...], after: tuple[int, ...]) -> int | None:
    """How many values of ``after`` each channel of ``before`` becomes: 1 when channels pass through
    (same count), H·W for a flatten of (C, H, W) maps, None when channels do not correspond."""
    c_before = before[0] if before else 1
    c_after = after[0] if after else 1
    if c_before == c_after:
        return 1
    if len(before) == 3 and len(after) == 1 and c_after == c_before * _positions(before):
        return _positions(before)
    return None


def _source(model, paths: _Paths, start: str) -> tuple[str, int] | None:
    """Walk back from ``start`` (inclusive) through layers without weights: the weighted layer (or the
    input) whose channels ``start``'s channels are, and how many values each of its channels became."""
    name, spread = start, 1
    while True:
        if name == INPUT_NAME or _weight_module(model, name) is not None:
            return name, spread
        parent = _step(paths, name, "back")
        if parent is None:
            return None
        factor = _channel_map(paths.nodes[parent].shape, paths.nodes[name].shape)
        if factor is None:
            return None
        spread *= factor
        name = parent


def _top(strengths: np.ndarray, sums: np.ndarray, channels: np.ndarray, top: int) -> tuple[Connection, ...]:
    order = np.lexsort((channels, -strengths))[:top]
    return tuple(Connection(int(channels[i]), float(strengths[i]), int(np.sign(sums[i]))) for i in order)


def _kernel_blocks(weight: torch.Tensor, spread: int) -> np.ndarray:
    """Weights as (out, in_channels, values per kernel): a linear layer after a flatten of
    ``spread``-valued channels is viewed channel-major, as ``torch.flatten`` lays it out."""
    array = weight.detach().cpu().double().numpy()
    if array.ndim == 2:
        if array.shape[1] % spread:
            raise ModelError(f"a linear layer with {array.shape[1]} inputs cannot read channels of {spread} values")
        return array.reshape(array.shape[0], array.shape[1] // spread, spread)
    return array.reshape(array.shape[0], array.shape[1], -1)


def _groups(module: nn.Module) -> int:
    return int(getattr(module, "groups", 1))


def strongest_connections(model, layer: str, unit: int, top: int = TOP_CONNECTIONS) -> Connections:
    """The ``top`` strongest incoming and outgoing connections of unit ``unit`` of ``layer`` (G-17).

    Args:
        model: an :class:`~advlens.models.adapter.AnalysedModel` (its graph and weights are read).
        layer: any layer of ``model.graph`` (name or alias).
        unit: a channel of that layer (a value of a vector layer).
        top: connections per side.

    Raises:
        ModelError: an unknown layer; ConfigError: a unit outside the layer.
    """
    graph: ModelGraph = model.graph
    name = graph.resolve(layer)
    node = graph[name]
    unit = positive_int(unit, "unit", minimum=0)
    if unit >= node.channels:
        raise ConfigError(f"layer {name!r} has {node.channels} units (0…{node.channels - 1}), not {unit}")
    top = positive_int(top, "top")
    paths = _Paths(graph)

    incoming_via = incoming_from = None
    incoming: tuple[Connection, ...] = ()
    found = _source(model, paths, name)
    if found is not None and found[0] != INPUT_NAME:
        incoming_via, spread = found
        k = unit // spread
        module = _weight_module(model, incoming_via)
        before = _step(paths, incoming_via, "back")
        origin = _source(model, paths, before) if before is not None else None
        if origin is not None:
            incoming_from, in_spread = origin
            blocks = _kernel_blocks(module.weight, in_spread)[k]  # (in per group, values)
            per_group_out = module.weight.shape[0] // _groups(module)
            first = (k // per_group_out) * blocks.shape[0]
            channels = first + np.arange(blocks.shape[0])
            incoming = _top(np.abs(blocks).sum(axis=1), blocks.sum(axis=1), channels, top)

    outgoing_to = None
    outgoing: tuple[Connection, ...] = ()
    current, spread = name, 1
    while True:
        child = _step(paths, current, "forward")
        if child is None:
            break
        factor = _channel_map(paths.nodes[current].shape, paths.nodes[child].shape)
        module = _weight_module(model, child)
        if module is not None:
            outgoing_to = child
            blocks = _kernel_blocks(module.weight, spread)  # (out, in per group, values)
            per_group_in = blocks.shape[1]
            group = unit // per_group_in
            per_group_out = blocks.shape[0] // _groups(module)
            channels = group * per_group_out + np.arange(per_group_out)
            kernels = blocks[channels, unit - group * per_group_in]  # (out in group, values)
            outgoing = _top(np.abs(kernels).sum(axis=1), kernels.sum(axis=1), channels, top)
            break
        if factor is None:
            break
        spread *= factor
        current = child
    return Connections(name, unit, incoming_via, incoming_from, incoming, outgoing_to, outgoing)
