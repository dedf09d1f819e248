"""The Architecture View's figure (spec-002 §2.1) as a Plotly JSON dict (no Dash here).

A horizontal DAG, input → output: the model's input and output are circles, every other layer a
square coloured by kind (grey: no trainable parameters; blue: convolution/linear; red: other trainable
layers such as batch norm); blocks are white boxes around their layers; identity shortcuts are arcs
above the main lane and projection shortcuts run on the lanes below, in the shortcut colour. Selected
layers carry an amber halo, the layer whose channels are shown a black outline. Hover: name, type,
output shape, receptive field.

Large models get narrower columns and labels on the weighted layers and block outputs only; the
figure is at least as wide as its columns need (the page scrolls it horizontally) and zooms along x.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from advlens.app.figures import figure
from advlens.app.model.graph_layout import GraphLayout, block_parents
from advlens.errors import AdvlensError
from advlens.models.graph import ModelGraph

KIND_COLORS = {"other": "#9aa0a6", "weighted": "#1f77b4", "parametric": "#d62728"}
"""Grey: no trainable parameters; blue: connected layers with weights (conv, linear); red: other trainable."""
KIND_LABELS = {"other": "no parameters", "weighted": "weighted (conv, linear)",
               "parametric": "other trainable (norm …)"}
EDGE_COLOR = "#8a9099"
SHORTCUT_COLOR = "#e07b00"
SELECTED_HALO = "rgba(255,176,0,0.55)"
FOCUS_COLOR = "#111111"
BACKGROUND = "#eef0f3"
BOX_LINE = "#b4bbc4"

LANE_PX = 62
MARGIN = {"l": 14, "r": 14, "t": 8, "b": 8}
LABEL_CHAR_PX = 5.6
"""Width of a label character (10 px sans-serif), to leave room under the lowest lane for rotated labels."""
TOP_ROOM = 0.5
"""Lanes of room above the highest arc (or the main lane) for the block labels."""
WIDE_COLUMN_PX = 40
NARROW_COLUMN_PX = 24
NARROW_FROM = 70
"""Models deeper than this many columns get narrow columns and thinned labels."""

OP_SHORT = {"Conv2d": "conv", "Conv2dStaticSamePadding": "conv", "BatchNorm2d": "bn", "BatchNorm1d": "bn",
            "Linear": "linear", "ReLU": "relu", "ReLU6": "relu6", "AdaptiveAvgPool2d": "avgpool",
            "MaxPool2d": "maxpool", "AvgPool2d": "avgpool", "Dropout": "dropout", "Flatten": "flatten"}


@dataclass(frozen=True)
class NodeFacts:
    """What the view says about every layer (in layout order): hover text, short label, colour, symbol."""

    hover: tuple[str, ...]
    labels: tuple[str, ...]
    colors: tuple[str, ...]
    symbols: tuple[str, ...]
    kinds: tuple[str, ...]
    shown: tuple[bool, ...]
    """Whether the layer's label is drawn (see :func:`labelled`)."""


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape) if len(shape) else "scalar"


def rf_text(graph: ModelGraph, name: str) -> str:
    """``7×7 px, stride 2`` / ``the whole image`` / ``—`` (not a spatial layer) / ``unknown (…)``."""
    node = graph[name]
    if len(node.shape) != 3:
        return "— (not spatial)"
    try:
        field = graph.receptive_field(name)
    except AdvlensError as exc:
        return f"unknown ({exc})"
    if field.whole:
        return "the whole image"
    size = f"{field.size[0]}×{field.size[1]}"
    jump = field.jump[0] if field.jump[0] == field.jump[1] else f"{field.jump[0]}×{field.jump[1]}"
    return f"{size} px, stride {jump}"


def short_label(name: str, block: str, op: str) -> str:
    """A layer's name inside its (outermost) block: ``layer2.shortcut.0`` → ``shortcut.0``; a block's own
    output and a numbered child of a ``Sequential`` show their type (``layer2`` → ``relu``, ``stem.1`` → ``bn``)."""
    if block and name == block:
        return OP_SHORT.get(op, op.lower())
    inner = name[len(block) + 1:] if block and name.startswith(block + ".") else name
    return OP_SHORT.get(op, op.lower()) if inner.isdigit() else inner  # a Sequential's child: its type


def node_facts(graph: ModelGraph, layout: GraphLayout) -> NodeFacts:
    hover, labels, colors, symbols, kinds = [], [], [], [], []
    calls = {box.name for box in layout.blocks}
    for name in layout.names:
        node = graph[name]
        terminal = name in layout.terminals
        role = " (model input)" if name == layout.terminals[0] else " (model output)" if terminal else ""
        hover.append(f"<b>{name}</b>{role}<br>type: {node.op} · {KIND_LABELS[node.kind]}<br>"
                     f"block: {node.block or '(top level)'}<br>output: {shape_text(node.shape)}<br>"
                     f"receptive field: {rf_text(graph, name)}")
        outer = next((b for b in block_parents(node.block) if b in calls), node.block)
        labels.append(short_label(name, outer, node.op))
        colors.append(KIND_COLORS[node.kind])
        symbols.append("circle" if terminal else "square")
        kinds.append(node.kind)
    return NodeFacts(tuple(hover), tuple(labels), tuple(colors), tuple(symbols), tuple(kinds),
                     tuple(labelled(graph, layout)))


def _polylines(points: Iterable[Sequence[tuple[float, float]]]) -> tuple[list, list]:
    xs: list = []
    ys: list = []
    for line in points:
        for x, y in line:
            xs.append(x)
            ys.append(y)
        xs.append(None)
        ys.append(None)
    return xs, ys


def column_px(layout: GraphLayout) -> int:
    return NARROW_COLUMN_PX if layout.depth + 1 > NARROW_FROM else WIDE_COLUMN_PX


def labelled(graph: ModelGraph, layout: GraphLayout) -> list[bool]:
    """Which layers carry a label: all of them on a small model, else the weighted layers, the block
    outputs and the terminals (the rest are named on hover)."""
    if column_px(layout) == WIDE_COLUMN_PX:
        return [True] * len(layout.names)
    outputs = set(graph.block_outputs()) | set(layout.terminals)
    return [graph[n].kind == "weighted" or n in outputs for n in layout.names]


def label_angle(layout: GraphLayout) -> int:
    return -40 if column_px(layout) == WIDE_COLUMN_PX else -60


def label_room(layout: GraphLayout, facts: NodeFacts) -> float:
    """Lanes of room under the lowest lane for the longest label drawn there (rotated)."""
    lowest = -layout.lanes
    longest = max([len(label) for label, y, shown in zip(facts.labels, layout.y, facts.shown)
                   if shown and y == lowest] or [4])
    drop = longest * LABEL_CHAR_PX * math.sin(math.radians(-label_angle(layout))) + 16
    return max(0.8, drop / LANE_PX)


def figure_size(layout: GraphLayout, facts: NodeFacts) -> tuple[int, int]:
    """(least width, height) in pixels: every column and lane gets its room (the figure fills a wider place)."""
    width = int((layout.depth + 1.6) * column_px(layout)) + MARGIN["l"] + MARGIN["r"]
    height = int((layout.arc_top + TOP_ROOM + layout.lanes + label_room(layout, facts)) * LANE_PX)
    return width, height + MARGIN["t"] + MARGIN["b"]


def architecture_figure(graph: ModelGraph, layout: GraphLayout, facts: NodeFacts, selected: Sequence[str] = (),
                        focus: str | None = None) -> dict:
    """The Architecture View of ``graph`` with ``selected`` layers highlighted and ``focus`` outlined.

    Traces, in order: ``edges`` (main and branch), ``shortcuts``, ``selected`` (halos), ``layers``
    (one marker per layer, ``customdata`` = layer name), ``labels``.
    """
    index = {name: i for i, name in enumerate(layout.names)}
    plain = [e.points for e in layout.edges if e.kind != "shortcut"]
    short = [e.points for e in layout.edges if e.kind == "shortcut"]
    ex, ey = _polylines(plain)
    sx, sy = _polylines(short)
    chosen = [index[n] for n in selected if n in index]
    wide = column_px(layout) == WIDE_COLUMN_PX
    size = 15 if wide else 11
    lines = [3 if n == focus else 1 for n in layout.names]
    line_colors = [FOCUS_COLOR if n == focus else "#ffffff" for n in layout.names]
    data = [
        {"type": "scatter", "name": "edges", "x": ex, "y": ey, "mode": "lines", "hoverinfo": "skip",
         "line": {"color": EDGE_COLOR, "width": 1.3}, "showlegend": False},
        {"type": "scatter", "name": "shortcuts", "x": sx, "y": sy, "mode": "lines", "hoverinfo": "skip",
         "line": {"color": SHORTCUT_COLOR, "width": 2}, "showlegend": False},
        {"type": "scatter", "name": "selected", "x": [layout.x[i] for i in chosen],
         "y": [layout.y[i] for i in chosen], "mode": "markers", "hoverinfo": "skip", "showlegend": False,
         "marker": {"size": size + 13, "color": SELECTED_HALO, "symbol": "square", "line": {"width": 0}}},
        {"type": "scatter", "name": "layers", "x": list(layout.x), "y": list(layout.y), "mode": "markers",
         "customdata": list(layout.names), "hovertext": list(facts.hover), "hoverinfo": "text",
         "showlegend": False,
         "marker": {"size": size, "color": list(facts.colors), "symbol": list(facts.symbols),
                    "line": {"width": lines, "color": line_colors}}},
    ]
    shows = facts.shown
    annotations = [
        {"x": layout.x[i], "y": layout.y[i], "text": f"<b>{label}</b>" if layout.names[i] == focus else label,
         "showarrow": False, "textangle": label_angle(layout), "xanchor": "right", "yanchor": "top",
         "yshift": -size / 2 - 1, "xshift": 4, "font": {"size": 10 if wide else 9, "color": "#333"}}
        for i, label in enumerate(facts.labels) if shows[i]]
    shapes = []
    for box in layout.blocks:
        shapes.append({"type": "rect", "xref": "x", "yref": "y", "x0": box.x0, "x1": box.x1, "y0": box.y0,
                       "y1": box.y1, "fillcolor": "#ffffff", "line": {"color": BOX_LINE, "width": 1}, "layer": "below"})
        if box.level == 0:
            annotations.append({"x": box.x0, "y": box.y1, "text": box.name, "showarrow": False, "xanchor": "left",
                                "yanchor": "bottom", "font": {"size": 10 if wide else 9, "color": "#5a6472"}})
    height = figure_size(layout, facts)[1]
    top = layout.arc_top + TOP_ROOM
    bottom = -layout.lanes - label_room(layout, facts)
    return figure(data, {
        "height": height, "margin": MARGIN, "autosize": True, "plot_bgcolor": BACKGROUND, "paper_bgcolor": BACKGROUND,
        "xaxis": {"visible": False, "range": [-0.8, layout.depth + 0.8], "zeroline": False},
        "yaxis": {"visible": False, "range": [bottom, top], "fixedrange": True, "zeroline": False},
        "shapes": shapes, "annotations": annotations, "hovermode": "closest", "dragmode": "zoom",
        "clickmode": "event", "showlegend": False, "uirevision": "architecture",
        "hoverlabel": {"bgcolor": "#ffffff", "font": {"size": 12}},
    })


__all__ = ["architecture_figure", "node_facts", "NodeFacts", "KIND_COLORS", "SHORTCUT_COLOR",
           "rf_text", "figure_size"]
