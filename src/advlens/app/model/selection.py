"""Layer selection on a model graph: the logic behind the Architecture View's clicks and presets (no Dash).

A selection is a list of layer names in execution order that must be *sequential*: each layer feeds
the next (``ModelGraph.check_sequential``), as the Flow View of spec-002 needs one axis per layer along
one path. Every operation returns a :class:`SelectionChange`: the new selection, or the old one with the
graph's message when the change would break the chain. The Model page uses it and the Profiles page
will reuse it (with the same URL form, :func:`parse_layers` / :func:`format_layers`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from advlens.app import validate
from advlens.app.model.graph_layout import main_path
from advlens.errors import ModelError
from advlens.models.graph import ModelGraph

PRESETS: dict[str, tuple[str, Callable[[ModelGraph], list[str]]]] = {
    "activation": ("activation layers", lambda graph: graph.activation_layers()),
    "blocks": ("block outputs", lambda graph: graph.block_outputs()),
    "weighted": ("weighted layers", lambda graph: graph.weighted_layers()),
}
"""Preset id → (label, the graph's list)."""

SEPARATOR = ","


@dataclass(frozen=True)
class SelectionChange:
    """The selection after an operation, and what to tell the user (``refused``: nothing changed)."""

    layers: tuple[str, ...]
    message: str | None = None
    refused: bool = False


def parse_layers(graph: ModelGraph, text: str | None) -> list[str]:
    """``"stem,layer1"`` (the URL form) → checked layer names in execution order (``""``/``None``: none)."""
    if text is None or text == "":
        return []
    if not isinstance(text, str):
        raise validate.InvalidSelection(f"the selected layers {str(text)[:60]!r} are not comma-separated names")
    return validate.layer_names(graph, text.split(SEPARATOR))


def format_layers(layers: Sequence[str]) -> str:
    """The URL form of a selection."""
    return SEPARATOR.join(layers)


def check(graph: ModelGraph, layers: Sequence[str]) -> list[str]:
    """A selection from the browser: every layer of the graph, each once, in execution order, sequential.

    Raises:
        InvalidSelection: an unknown layer, one named twice, or a selection that is not sequential
            (the graph's message naming the pair that breaks the chain).
    """
    names = validate.layer_names(graph, list(layers))
    if names:
        try:
            graph.check_sequential(names)
        except ModelError as exc:
            raise validate.InvalidSelection(str(exc)) from None
    return names


def toggle(graph: ModelGraph, layers: Sequence[str], layer: str) -> SelectionChange:
    """Add ``layer`` to the selection, or remove it when it is selected; an addition that makes the
    selection non-sequential is refused with the graph's message."""
    current = check(graph, layers)
    layer = validate.layer_name(graph, layer)
    if layer in current:
        return SelectionChange(tuple(n for n in current if n != layer))
    proposed = graph.sort([*current, layer])
    try:
        graph.check_sequential(proposed)
    except ModelError as exc:
        return SelectionChange(tuple(current), f"{layer} not added: {exc}. Remove layers first, or pick layers "
                                               "on one path (a shortcut and the branch it skips cannot both be "
                                               "axes).", refused=True)
    return SelectionChange(tuple(proposed))


def preset(graph: ModelGraph, which: str) -> SelectionChange:
    """The graph's list for a preset (``activation``, ``blocks``, ``weighted``).

    When the list is not sequential (a ResNet's weighted layers include its projection shortcuts), the
    layers off the main path are left out and named in the message.
    """
    which = validate.choice(which, PRESETS, "preset")
    label, listing = PRESETS[which]
    layers = listing(graph)
    if not layers:
        return SelectionChange((), f"this model has no {label}", refused=False)
    if graph.is_sequential(layers):
        return SelectionChange(tuple(layers), f"{len(layers)} {label}")
    path = set(main_path(graph))
    kept = [n for n in layers if n in path]
    left = [n for n in layers if n not in path]
    if not kept or not graph.is_sequential(kept):
        raise ModelError(f"the {label} of this model do not lie on one path: {graph.sequential_problem(layers)}")
    return SelectionChange(tuple(kept), f"{len(kept)} {label} on the main path; left out (off the main path, "
                                        f"so not sequential with it): {', '.join(left)}")


def fill_path(graph: ModelGraph, layers: Sequence[str]) -> SelectionChange:
    """Every layer on the main path between the first and the last selected layer (a drill-down)."""
    current = check(graph, layers)
    if len(current) < 2:
        return SelectionChange(tuple(current), "select two layers first: the path between the first and the last "
                                               "selected layer is filled in", refused=True)
    filled = graph.between(current[0], current[-1])
    return SelectionChange(tuple(filled), f"{len(filled)} layers on the main path from {current[0]} to "
                                          f"{current[-1]}")
