"""The treemap set view's figure (layer level, spec-003 §4, paper 003 Fig. 7) as a Plotly JSON dict (no Dash).

Cells are drawn as filled scatter polygons rather than ``go.Treemap``, which can draw neither partial nor
patterned fills: every feature map is an equal cell (:mod:`advlens.datapaths.treemap`); each set's cell is
framed in its datapath's colour and each shared atom carries the colours of all its sets as nested frames.
Encodings, one at a time:

- *activation difference* (solid): height ∝ value / max|value| of the layer, rising from the cell's bottom;
  negative values drop from its top in a lighter tint;
- *contribution* (dotted, ``fillpattern`` ".") : height ∝ value ∈ [0, 1].

A transparent square marker at each cell's centre carries its hover text and its click (``customdata`` =
``["map", id]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from advlens.app.datapaths.river_figure import ROLE_COLORS, ROLE_NAMES
from advlens.app.figures import figure
from advlens.datapaths.treemap import Rect, TreemapLayout

WIDTH, HEIGHT = 560, 420
"""The treemap's extent in px (the layout is computed in these units)."""
POSITIVE = "rgba(52,60,74,0.78)"
NEGATIVE = "rgba(52,60,74,0.28)"
DOTS = {"shape": ".", "fgcolor": "#1b1f27", "bgcolor": "rgba(255,255,255,0)", "size": 5, "solidity": 0.45}
CELL_LINE = "#d9dde3"
SELECTED = "#d62728"
FRAME_STEP = 2.5
LABEL_MIN_PX = 20


def _ring(rect: Rect, bottom: float | None = None, top: float | None = None) -> list[float | None]:
    """A closed polygon of ``rect`` between heights ``bottom`` and ``top`` (default: the whole cell), then a gap."""
    y0 = rect.y if bottom is None else bottom
    y1 = rect.y + rect.dy if top is None else top
    return [rect.x, rect.x + rect.dx, rect.x + rect.dx, rect.x, rect.x, None], [y0, y0, y1, y1, y0, None]


def _polygons(rects: list[tuple[Rect, float, float]]) -> tuple[list, list]:
    xs, ys = [], []
    for rect, bottom, top in rects:
        x, y = _ring(rect, bottom, top)
        xs.extend(x)
        ys.extend(y)
    return xs, ys


def fill_levels(layout: TreemapLayout, values: np.ndarray, mode: str, scale: float
                ) -> tuple[list[tuple[Rect, float, float]], list[tuple[Rect, float, float]]]:
    """(positive fills, negative fills) as (cell, bottom, top) of every leaf.

    Activation difference: height = |v| / scale of the cell, from the bottom (v > 0) or the top (v < 0);
    contribution: height = clip(v, 0, 1) from the bottom.
    """
    up, down = [], []
    for leaf in layout.leaves:
        v = float(values[leaf.item])
        r = leaf.rect
        if mode == "contribution":
            h = min(max(v, 0.0), 1.0) * r.dy
            if h > 0:
                up.append((r, r.y, r.y + h))
        elif scale > 0 and v != 0:
            h = min(abs(v) / scale, 1.0) * r.dy
            (up.append((r, r.y, r.y + h)) if v > 0 else down.append((r, r.y + r.dy - h, r.y + r.dy)))
    return up, down


def treemap_figure(layout: TreemapLayout, roles: Sequence[str], values: np.ndarray, mode: str, hovers: dict[int, str],
                   counts: Sequence[int], selected: int | None = None) -> dict:
    """The treemap figure.

    Args:
        layout: the laid-out treemap (in px, :data:`WIDTH` × :data:`HEIGHT`); its set indices follow ``roles``.
        roles: the role of each set (``adv``, ``src``, ``tar``).
        values: the encoded value of every map of the layer (indexed by map id).
        mode: ``activation`` (solid fill, difference) or ``contribution`` (dotted fill).
        hovers: hover text per map id. counts: each set's size (for its label).
        selected: the open map (outlined in red).

    Shape: values (K,) for the layer's K maps.
    """
    values = np.asarray(values, dtype=np.float64)
    scale = float(np.max(np.abs(values), initial=0.0)) if mode == "activation" else 1.0
    data: list[dict] = []
    cells_x, cells_y = _polygons([(leaf.rect, None, None) for leaf in layout.leaves])
    data.append({"type": "scatter", "mode": "lines", "x": cells_x, "y": cells_y, "fill": "toself",
                 "fillcolor": "#ffffff", "line": {"color": CELL_LINE, "width": 0.8}, "hoverinfo": "skip", "hoveron": "points",
                 "showlegend": False, "name": "cells"})
    up, down = fill_levels(layout, values, mode, scale)
    if mode == "contribution":
        if up:
            x, y = _polygons(up)
            data.append({"type": "scatter", "mode": "lines", "x": x, "y": y, "fill": "toself",
                         "fillcolor": "rgba(255,255,255,0)", "fillpattern": DOTS, "line": {"width": 0},
                         "hoverinfo": "skip", "hoveron": "points", "showlegend": False, "name": "contribution"})
    else:
        for rects, color, name in ((up, POSITIVE, "positive"), (down, NEGATIVE, "negative")):
            if rects:
                x, y = _polygons(rects)
                data.append({"type": "scatter", "mode": "lines", "x": x, "y": y, "fill": "toself",
                             "fillcolor": color, "line": {"width": 0}, "hoverinfo": "skip", "hoveron": "points",
                             "showlegend": False,
                             "name": name})
    shapes: list[dict] = []
    for atom, rect in layout.atom_rects.items():
        for step, index in enumerate(sorted(atom, key=lambda i: (i != layout.parents[atom], i))):
            inset = 1.0 + step * FRAME_STEP
            shapes.append({"type": "rect", "x0": rect.x + inset, "x1": rect.x + rect.dx - inset, "y0": rect.y + inset,
                           "y1": rect.y + rect.dy - inset, "line": {"color": ROLE_COLORS[roles[index]], "width": 2},
                           "fillcolor": "rgba(0,0,0,0)"})
    annotations = []
    for index, rect in layout.set_rects.items():
        shapes.append({"type": "rect", "x0": rect.x, "x1": rect.x + rect.dx, "y0": rect.y, "y1": rect.y + rect.dy,
                       "line": {"color": ROLE_COLORS[roles[index]], "width": 3.5}, "fillcolor": "rgba(0,0,0,0)"})
        annotations.append({"x": rect.x + 4, "y": rect.y + rect.dy - 3, "xanchor": "left", "yanchor": "top",
                            "text": f"{ROLE_NAMES[roles[index]]} · {counts[index]}", "showarrow": False,
                            "bgcolor": "rgba(255,255,255,0.85)",
                            "font": {"size": 11, "color": ROLE_COLORS[roles[index]]}})
    leaves = layout.leaves
    if selected is not None:
        for leaf in leaves:
            if leaf.item == selected:
                r = leaf.rect
                shapes.append({"type": "rect", "x0": r.x, "x1": r.x + r.dx, "y0": r.y, "y1": r.y + r.dy,
                               "line": {"color": SELECTED, "width": 3}, "fillcolor": "rgba(0,0,0,0)"})
    if leaves:
        side = [max(4.0, min(leaf.rect.dx, leaf.rect.dy) * 0.92) for leaf in leaves]
        big = [min(leaf.rect.dx, leaf.rect.dy) >= LABEL_MIN_PX for leaf in leaves]
        data.append({"type": "scatter", "mode": "markers+text", "x": [leaf.rect.center[0] for leaf in leaves],
                     "y": [leaf.rect.center[1] for leaf in leaves],
                     "text": [str(leaf.item) if b else "" for leaf, b in zip(leaves, big)],
                     "textfont": {"size": 10, "color": "#1b1f27", "shadow": "0px 0px 3px white"},
                     "marker": {"size": side, "symbol": "square", "color": "rgba(0,0,0,0.004)"},
                     "customdata": [["map", leaf.item] for leaf in leaves],
                     "hovertext": [hovers.get(leaf.item, f"map {leaf.item}") for leaf in leaves],
                     "hoverinfo": "text", "showlegend": False, "name": "maps"})
    return figure(data, {
        "width": WIDTH + 10, "height": HEIGHT + 10, "margin": {"l": 5, "r": 5, "t": 5, "b": 5},
        "plot_bgcolor": "white", "paper_bgcolor": "white", "dragmode": False, "hovermode": "closest",
        "xaxis": {"range": [0, WIDTH], "visible": False, "fixedrange": True},
        "yaxis": {"range": [0, HEIGHT], "visible": False, "fixedrange": True}, "shapes": shapes,
        "annotations": annotations})


__all__ = ["HEIGHT", "WIDTH", "fill_levels", "treemap_figure"]
