"""Which layers a pathway graph shows, and which estimator of connection influence is exact between
two of them (spec-004 §2 and §5)."""

from __future__ import annotations

from advlens.errors import ModelError
from advlens.models.graph import ModelGraph

# ops that may follow the joining convolution without changing which source value a target reads:
# per-channel affine norms, element-wise activations and no-ops
_PASS_THROUGH_WORDS = ("norm", "identity", "dropout")


def _passes_through(node) -> bool:
    return node.activation or any(word in node.op.lower() for word in _PASS_THROUGH_WORDS)


def joining_convolution(graph: ModelGraph, source_layer: str, target_layer: str) -> str | None:
    """The module name of the one ``nn.Conv2d`` joining two layers, or ``None``.

    A name is returned when the target is computed from the source by exactly one convolution module
    that reads the source's output itself, followed only by norm / element-wise activation layers,
    with no other input anywhere on the way (no skip connection, pooling, concat): then Bluff's kernel
    estimator (:func:`~advlens.pathways.kernel.kernel_influence`) is exact. Otherwise use
    :func:`~advlens.pathways.gradient.grad_x_act_influence`.

    Raises:
        ModelError: a layer is unknown or no path leads from ``source_layer`` to ``target_layer``.
    """
    source, target = graph.resolve(source_layer), graph.resolve(target_layer)
    if source == target:
        return None
    path = graph.between(source, target)
    nodes = [graph[name] for name in path]
    for previous, node in zip(path, nodes[1:]):
        if node.inputs != (previous,):
            return None  # a second input (skip connection, concat) joins on the way
    conv, rest = nodes[1], nodes[2:]
    if conv.op != "Conv2d" or conv.hook is None or not all(_passes_through(node) for node in rest):
        return None
    return conv.hook[0]


def default_pathway_layers(graph: ModelGraph) -> list[str]:
    """The layers a pathway graph shows by default, shallow → deep (spec-004 §2 [D]).

    * A ResNet (residual blocks whose output is an activation): the stem's output (the last
      activation before the first block) and, per residual block, its inner activation layers and its
      output. The demo model: ``stem, layer1.relu, layer1, …, layer4.relu, layer4``.
    * Another CNN with blocks that join branches (residual adds without a final activation, inception
      concats): the block outputs.
    * A plain chain: every spatial activation layer.

    Only layers with spatial maps (C, H, W) are listed.
    """
    spatial = {node.name for node in graph.nodes if len(node.shape) == 3}
    residual = [name for name in graph.block_outputs(residual_only=True) if name in spatial]
    if residual and all(graph[name].activation for name in residual):
        blocks = {graph[name].block for name in residual}
        activations = [name for name in graph.activation_layers() if name in spatial]
        inner = [name for name in activations if any(_inside(graph[name].block, b) for b in blocks)]
        first = graph.names().index(next(n.name for n in graph.nodes if any(_inside(n.block, b) for b in blocks)))
        stem = [name for name in activations if graph.names().index(name) < first][-1:]
        return stem + inner
    outputs = [name for name in graph.block_outputs() if name in spatial]
    if outputs:
        return outputs
    layers = [name for name in graph.activation_layers() if graph[name].spatial]
    if not layers:
        raise ModelError("the model has no activation layer with spatial feature maps to draw pathways through; "
                         "pass the layers explicitly")
    return layers


def _inside(block: str, outer: str) -> bool:
    return block == outer or block.startswith(outer + ".")
