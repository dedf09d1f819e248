"""What the Graph Summary View shows of a :class:`~advlens.analysis.pathways.PathwayGraph` at one setting:
which nodes are opaque (highlight modes, spec-004 §4), which nodes and edges the filter keeps, edge widths
(per-layer scale, 0–4 px) and the strongest edges, and compare mode's inner/outer membership.

Strength index ``s``: 0 = the benign pathways, ``s > 0`` the attacked images at ``eps[s − 1]``.

- Node values at ``s``: importance for attacked(s) (at 0: the larger of the original and the target importance,
  so both benign pathways show) and excitation ``attacked(s) − original`` (at 0: none). Highlight modes keep the top x% of each layer's *drawn* nodes.
- Edge value at ``s``: the attacked(s) influence; at 0 the larger of the original and the target influence
  (each benign pathway carries its own class's signal). Edge excitation: influence at s − original influence.
  Widths are linear in the value with one scale per pair of layers (its strongest edge is 4 px); edges
  thinner than :data:`MIN_WIDTH` are not drawn. The highlighted edges are the top 30% of each pair of layers
  under the node highlight mode, applied to the edge values and excitations.
- A strength whose attacked set is empty has no values: nothing is highlighted, and no edge drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advlens.analysis.pathways import PathwayGraph
from advlens.pathways import highlight

MAX_WIDTH = 4.0
MIN_WIDTH = 0.2
EDGE_TOP = 0.3
"""Share of each layer pair's edges highlighted (Bluff: the strongest 30%)."""


def node_values(graph: PathwayGraph, strength: int, attack: str | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """(importance (M,), excitation (M,), whether the set has images) at strength index ``strength``."""
    if strength == 0:  # the benign pathways of both classes
        return np.fmax(graph.importance[0], graph.importance[1]).astype(np.float64), np.zeros(graph.num_nodes), True
    values = graph.attacked(attack)[strength - 1].astype(np.float64)
    if not np.all(np.isfinite(values)):
        return np.zeros(graph.num_nodes), np.zeros(graph.num_nodes), False
    return values, values - graph.importance[0], True


def node_highlight(graph: PathwayGraph, strength: int, mode: str, top_percent: float,
                   attack: str | None = None) -> np.ndarray:
    """Which nodes the highlight mode keeps opaque: the top ``top_percent``% of each layer's drawn nodes.
    Shape: (M,) bool."""
    importance, excitation, valid = node_values(graph, strength, attack)
    mask = np.zeros(graph.num_nodes, dtype=bool)
    if not valid:
        return mask
    for layer in range(len(graph.layers)):
        nodes = graph.nodes_of(layer)
        if len(nodes):
            mask[nodes] = highlight({"importance": importance[nodes], "excitation": excitation[nodes]}, mode,
                                    top_percent / 100.0)
    return mask


def edge_values(graph: PathwayGraph, strength: int) -> tuple[np.ndarray, np.ndarray]:
    """(value (Q,), excitation (Q,)) of every edge at strength index ``strength``; 0 where a set is empty."""
    if strength == 0:
        value = np.fmax(graph.influence[0], graph.influence[1])
        return np.nan_to_num(value.astype(np.float64)), np.zeros(graph.num_edges)
    value = graph.influence[1 + strength].astype(np.float64)
    return np.nan_to_num(value), np.nan_to_num(value - graph.influence[0])


def edge_layer(graph: PathwayGraph) -> np.ndarray:
    """The source layer of every edge. Shape: (Q,) int64."""
    return graph.node_layer[graph.edge_source]


def edge_widths(graph: PathwayGraph, values: np.ndarray) -> np.ndarray:
    """Width in px, linear in the value with one scale per pair of layers (0 for values ≤ 0). Shape: (Q,)."""
    widths = np.zeros(len(values))
    layers = edge_layer(graph)
    for layer in np.unique(layers):
        at = layers == layer
        top = values[at].max(initial=0.0)
        if top > 0:
            widths[at] = MAX_WIDTH * np.clip(values[at], 0, None) / top
    return widths


def edge_highlight(graph: PathwayGraph, strength: int, mode: str) -> np.ndarray:
    """The highlighted edges: top :data:`EDGE_TOP` of each layer pair under ``mode``. Shape: (Q,) bool."""
    values, excitation = edge_values(graph, strength)
    mask = np.zeros(graph.num_edges, dtype=bool)
    layers = edge_layer(graph)
    for layer in np.unique(layers):
        at = np.flatnonzero((layers == layer) & (values > 0))
        if len(at):
            mask[at] = highlight({"importance": values[at], "excitation": excitation[at]}, mode, EDGE_TOP)
    return mask


@dataclass(frozen=True)
class GraphDisplay:
    """What to draw. Shape: node_* (M,) bool; edge_width (Q,) px; edge_strong, edge_shown (Q,) bool;
    inner, outer (M,) bool in compare mode (else None)."""

    node_shown: np.ndarray
    node_opaque: np.ndarray
    edge_width: np.ndarray
    edge_strong: np.ndarray
    edge_shown: np.ndarray
    inner: np.ndarray | None
    outer: np.ndarray | None


def pinned_mask(graph: PathwayGraph, pinned: list[list]) -> np.ndarray:
    """Which nodes are pinned. Shape: (M,) bool."""
    mask = np.zeros(graph.num_nodes, dtype=bool)
    for layer, channel in pinned:
        node = graph.node_index(layer, channel)
        if node is not None:
            mask[node] = True
    return mask


def display(graph: PathwayGraph, strength: int, mode: str, top_percent: float, filter_: str, pinned: list[list],
            compare: str = "none", vs: int = 0) -> GraphDisplay:
    """The nodes and edges to draw at one setting of the page (see the module docstring).

    Compare ``strengths``: inner = in the pathway (highlighted) at the weaker of ``strength`` and ``vs``,
    outer = at the stronger; edges are those of the stronger. Compare ``attacks``: inner = the graph's attack,
    outer = the sweep's other attack, both at ``strength``.
    """
    inner = outer = None
    shown_strength = strength
    if compare == "strengths":
        weak, strong = sorted((strength, vs))
        inner = node_highlight(graph, weak, mode, top_percent)
        outer = node_highlight(graph, strong, mode, top_percent)
        opaque, shown_strength = inner | outer, strong
    elif compare == "attacks":
        other = next((a for a in graph.attacks if a != graph.attack), graph.attack)
        inner = node_highlight(graph, strength, mode, top_percent)
        outer = node_highlight(graph, strength, mode, top_percent, other)
        opaque = inner | outer
    else:
        opaque = node_highlight(graph, strength, mode, top_percent)
    pins = pinned_mask(graph, pinned)
    shown = {"all": np.ones(graph.num_nodes, dtype=bool), "pinned": pins, "highlighted": opaque}[filter_]
    values, _ = edge_values(graph, shown_strength)
    widths = edge_widths(graph, values)
    ends_shown = shown[graph.edge_source] & shown[graph.edge_target]
    strong = edge_highlight(graph, shown_strength, mode) & opaque[graph.edge_source] & opaque[graph.edge_target]
    return GraphDisplay(node_shown=shown, node_opaque=opaque, edge_width=widths, edge_strong=strong,
                        edge_shown=ends_shown & (widths >= MIN_WIDTH), inner=inner, outer=outer)
