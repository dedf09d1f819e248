"""Which layers become the Flow View's axes: the default list and the Architecture View's presets
(paper 002 §5.2, §5.3; spec-002 §1.2, §2.1, G-4, G-23).

* ``blocks``: every block output (the value after a residual add, the analogue of Keras'
  ``block_N_add``) followed by the logits — paper 002's MobileNetV2 case (§5.3).
* ``weighted``: each convolution / linear layer, recorded at the end of its own
  ``conv → [norm] → [activation]`` chain (post-activation, as Keras' ``Conv2D(activation='relu')``
  outputs, G-4), the logits last — paper 002's MNIST case (§5.2).

The default is ``blocks`` when the model has blocks, else ``weighted``. Every list is sequential
(each layer feeds the next, G-23): layers off the model's main path (a ResNet's projection shortcuts)
are left out.
"""

from __future__ import annotations

from collections.abc import Callable

from advlens.errors import ConfigError
from advlens.models.graph import ModelGraph
from advlens.models.tracing import INPUT_NAME


def _main_path(graph: ModelGraph) -> set[str]:
    return set(graph.between(INPUT_NAME, graph.output)) if graph.output else set(graph.names())


def _sequential(graph: ModelGraph, layers: list[str]) -> list[str]:
    """``layers`` in execution order without duplicates, keeping only main-path layers when the list
    is not sequential."""
    ordered = graph.sort(layers)
    if len(ordered) <= 1 or graph.is_sequential(ordered):
        return ordered
    path = _main_path(graph)
    return [name for name in ordered if name in path]


def _with_logits(graph: ModelGraph, layers: list[str]) -> list[str]:
    return layers + [graph.output] if graph.output and graph.output not in layers else layers


def post_activation(graph: ModelGraph, layer: str) -> str:
    """The end of ``layer``'s own ``[norm] → [activation]`` chain: follow its only reader while that
    reader is a norm or activation layer (G-4). ``conv1 → bn1 → relu`` gives ``relu``; a conv whose
    output goes into a residual add stays itself (after its norm)."""
    readers: dict[str, list[str]] = {}
    for node in graph.nodes:
        for parent in node.inputs:
            readers.setdefault(parent, []).append(node.name)
    name = graph.resolve(layer)
    while len(readers.get(name, [])) == 1:
        reader = graph[readers[name][0]]
        if not (reader.kind == "parametric" or reader.activation) or len(reader.inputs) != 1:
            break
        name = reader.name
    return name


def block_layers(graph: ModelGraph) -> list[str]:
    """Block outputs followed by the logits (empty when the model has no blocks)."""
    blocks = graph.block_outputs()
    return _sequential(graph, _with_logits(graph, blocks)) if blocks else []


def weighted_layers(graph: ModelGraph) -> list[str]:
    """Each weighted layer's post-activation output (G-4), the logits last, on the main path."""
    ends = [graph.output if name == graph.output else post_activation(graph, name)
            for name in graph.weighted_layers()]
    return _sequential(graph, _with_logits(graph, ends))


PROFILE_PRESETS: dict[str, tuple[str, Callable[[ModelGraph], list[str]]]] = {
    "blocks": ("block outputs + logits", block_layers),
    "weighted": ("weighted layers (post-activation) + logits", weighted_layers),
}
"""Preset id → (label, the graph's layer list), for the Flow View's Architecture View."""


def profile_preset(graph: ModelGraph, which: str) -> list[str]:
    """The layer list of a preset (``blocks`` or ``weighted``)."""
    if which not in PROFILE_PRESETS:
        raise ConfigError(f"unknown profile preset {which!r}; use one of {', '.join(PROFILE_PRESETS)}")
    return PROFILE_PRESETS[which][1](graph)


def default_profile_layers(graph: ModelGraph) -> list[str]:
    """The default axes: block outputs + logits, or the weighted preset for a model without blocks."""
    return block_layers(graph) or weighted_layers(graph)
