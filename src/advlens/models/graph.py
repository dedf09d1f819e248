"""The model graph: a network's layers as a DAG, with the layer lists the analyses start from.

``build_graph(net, probe)`` traces the network with torch.fx (standard layers such as convolutions,
norms, pools and activations, including their subclasses, stay single layers; a submodule torch.fx
cannot trace becomes one opaque layer). When the model's own ``forward`` cannot be traced, the
graph falls back to the order in which module hooks fire, and says so in the log; functional ops
are then invisible. One probe forward gives every layer's output shape.

Layer names (stored in stores and URLs) follow the scheme in :mod:`advlens.models.tracing`:
``layer1.conv1`` (a module), ``_swish:1`` (the second call of a reused module), ``layer1.relu``
(a functional op inside ``layer1.forward``), ``layer1`` (a block's output), ``input``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence
from functools import cached_property

import torch
from torch import fx, nn

from advlens.errors import ModelError
from advlens.models import receptive_field as rf
from advlens.models.layer_node import LayerNode
from advlens.models.receptive_field import ReceptiveField
from advlens.models.tracing import INPUT_NAME, BuiltGraph, TraceFailure, build_fx, build_hooks

logger = logging.getLogger(__name__)


class ModelGraph:
    """A network's layers in execution (topological) order, addressable by name or alias.

    Attributes:
        nodes: every tensor the forward pass computes, in order, starting with ``input``.
        output: name of the layer the network returns (the logits).
        method: ``fx`` (traced) or ``hooks`` (fallback: module outputs only, approximate inputs).
        graph_module: the traced torch.fx copy (shares the network's modules), ``None`` for ``hooks``.
        opaque: modules torch.fx could not trace into, kept as single layers.
    """

    def __init__(self, built: BuiltGraph, method: str) -> None:
        self.nodes: tuple[LayerNode, ...] = tuple(built.nodes)
        self.output = built.output
        self.method = method
        self.graph_module: fx.GraphModule | None = built.graph_module
        self.opaque = built.opaque
        self._calls = built.calls
        self._residual_calls = built.residual_calls
        self._index = {node.name: i for i, node in enumerate(self.nodes)}
        self._lookup = dict(self._index)
        for i, node in enumerate(self.nodes):
            for alias in node.aliases:
                self._lookup.setdefault(alias, i)
        self._children: dict[str, list[str]] = {node.name: [] for node in self.nodes}
        for node in self.nodes:
            for parent in node.inputs:
                self._children[parent].append(node.name)

    # ------------------------------------------------------------------------------------------ lookup

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._lookup

    def __getitem__(self, name: str) -> LayerNode:
        return self.nodes[self._position(name)]

    def names(self) -> list[str]:
        """Every layer's name, in execution order."""
        return [node.name for node in self.nodes]

    def resolve(self, name: str) -> str:
        """The layer name of ``name`` (which may be an alias such as ``stem.2`` for ``stem``)."""
        return self.nodes[self._position(name)].name

    def _position(self, name: str) -> int:
        if not isinstance(name, str) or name not in self._lookup:
            close = difflib.get_close_matches(str(name), list(self._lookup), n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ModelError(f"no layer named {name!r} in the model{hint} (model.graph.names() lists them all)")
        return self._lookup[name]

    def outermost_name(self, name: str) -> str:
        """The outermost module whose output this layer is (``layer4`` for ``layer4.1``), else its name."""
        node = self[name]
        return node.module_outputs[-1] if node.module_outputs else node.name

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the image the network reads."""
        shape = self.nodes[0].shape
        return (int(shape[1]), int(shape[2])) if len(shape) == 3 else (1, 1)

    # ------------------------------------------------------------------------------------ layer lists

    def activation_layers(self) -> list[str]:
        """Every post-activation output: activation modules (each call of a reused one) and
        functional activations (``torch.relu`` in a block's ``forward``), except 1×1 gates (squeeze-
        excitation)."""
        return [n.name for n in self.nodes if n.activation and not (len(n.shape) == 3 and n.shape[1] * n.shape[2] == 1)]

    def weighted_layers(self) -> list[str]:
        """Convolutions and linear layers (modules or functional), in execution order."""
        return [n.name for n in self.nodes if n.kind == "weighted"]

    def block_outputs(self, residual_only: bool = False) -> list[str]:
        """Outputs of every call of a block class: a module class whose ``forward`` joins two branches
        (residual add or concat). ``residual_only`` keeps the calls that do join (EfficientNet: the 9
        MBConv blocks with a skip of 16). A plain chain without such blocks has none."""
        block_types = {self._calls[c] for c in self._residual_calls}
        wanted = [c for c, t in self._calls.items() if t in block_types]
        if residual_only:
            wanted = [c for c in wanted if c in self._residual_calls]
        found = [self._lookup[c] for c in wanted if c in self._lookup]
        return [self.nodes[i].name for i in sorted(set(found))]

    def blocks(self) -> dict[str, list[str]]:
        """Layers grouped by their enclosing module call (``""``: top level), in execution order."""
        grouped: dict[str, list[str]] = {}
        for node in self.nodes:
            grouped.setdefault(node.block, []).append(node.name)
        return grouped

    # -------------------------------------------------------------------------------------- structure

    def sort(self, names: Iterable[str]) -> list[str]:
        """Layer names in execution order (aliases resolved, duplicates dropped)."""
        return [self.nodes[i].name for i in sorted({self._position(n) for n in names})]

    @cached_property
    def _descendants(self) -> list[set[int]]:
        result: list[set[int]] = [set() for _ in self.nodes]
        for i in range(len(self.nodes) - 1, -1, -1):
            for child in self._children[self.nodes[i].name]:
                j = self._index[child]
                result[i].add(j)
                result[i] |= result[j]
        return result

    def reaches(self, a: str, b: str) -> bool:
        """Whether a directed path leads from layer ``a`` to layer ``b``."""
        return self._position(b) in self._descendants[self._position(a)]

    def sequential_problem(self, names: Sequence[str]) -> str | None:
        """Why ``names`` is not sequential (each layer feeding the next), or ``None`` when it is."""
        if len(names) == 0:
            return "no layers selected"
        resolved = [self.resolve(n) for n in names]
        for a, b in zip(resolved, resolved[1:]):
            if a == b:
                return f"layer {a!r} is selected twice"
            if not self.reaches(a, b):
                return f"{a!r} does not feed {b!r} (no path from one to the other in this order)"
        return None

    def is_sequential(self, names: Sequence[str]) -> bool:
        """Whether each layer's output feeds, directly or indirectly, the next one."""
        return self.sequential_problem(names) is None

    def check_sequential(self, names: Sequence[str]) -> None:
        """Raise ModelError naming the pair that breaks the chain."""
        problem = self.sequential_problem(names)
        if problem:
            raise ModelError(f"the layer selection is not sequential: {problem}")

    def between(self, a: str, b: str) -> list[str]:
        """Layers on the main (longest) path from ``a`` to ``b``, both included; shortcuts excluded."""
        start, end = self._position(a), self._position(b)
        if start != end and end not in self._descendants[start]:
            raise ModelError(f"no path leads from {self.nodes[start].name!r} to {self.nodes[end].name!r}")
        depth = {start: 0}
        previous: dict[int, int] = {}
        for i in range(start + 1, end + 1):
            node = self.nodes[i]
            best = None
            for parent in node.inputs:
                p = self._index[parent]
                if p in depth and (best is None or depth[p] > depth[best]):
                    best = p
            if best is not None and (i == end or end in self._descendants[i]):
                depth[i] = depth[best] + 1
                previous[i] = best
        path = [end]
        while path[-1] != start:
            path.append(previous[path[-1]])
        return [self.nodes[i].name for i in reversed(path)]

    # ------------------------------------------------------------------------------ receptive fields

    @cached_property
    def _fields(self) -> dict:
        names = self.names()
        return rf.compose(names, {n.name: n.inputs for n in self.nodes}, {n.name: n.step for n in self.nodes},
                          {n.name: len(n.shape) == 3 for n in self.nodes}, INPUT_NAME)

    def receptive_field(self, layer: str) -> ReceptiveField:
        """The theoretical receptive field of a spatial layer's units in input pixels.

        Composed over the kernels, strides, padding and dilation of every convolution and pooling on
        every path from the input (the union where paths merge). Unit (i, j) of the layer sees
        ``receptive_field(layer).window(i, j)`` of the image.
        """
        node = self[layer]
        if len(node.shape) != 3:
            raise ModelError(f"layer {node.name!r} has no spatial units (output {tuple(node.shape)} per image)")
        field = self._fields.get(node.name)
        if isinstance(field, Exception):
            raise ModelError(f"the receptive field of {node.name!r} is unknown: {field}")
        return rf.to_receptive_field(field, self.input_size)

    # ---------------------------------------------------------------------------------------- export

    def as_records(self) -> list[dict]:
        """JSON-friendly nodes (name, op, kind, block, inputs, shape, aliases, activation)."""
        return [node.as_record() for node in self.nodes]

    def __repr__(self) -> str:
        return f"ModelGraph({len(self.nodes)} layers, method={self.method!r}, output={self.output!r})"


def build_graph(net: nn.Module, probe: torch.Tensor) -> ModelGraph:
    """Trace ``net`` (torch.fx, else module-hook order) and run ``probe`` through it for the shapes.

    Shape:
        probe: (N, C, H, W), the network's (normalized) input.
    """
    try:
        built = build_fx(net, probe)
    except TraceFailure as exc:
        logger.warning("torch.fx cannot trace %s (%s); the model graph falls back to the order of module hooks: "
                       "functional ops (torch.relu, +) are not visible as layers", type(net).__name__, exc)
        return ModelGraph(build_hooks(net, probe), "hooks")
    except Exception as exc:  # noqa: BLE001 - the traced copy fails where the model may not: compare
        logger.warning("the torch.fx copy of %s fails on the probe (%s: %s); the model graph falls back to the "
                       "order of module hooks", type(net).__name__, type(exc).__name__, exc)
        return ModelGraph(build_hooks(net, probe), "hooks")
    return ModelGraph(built, "fx")
