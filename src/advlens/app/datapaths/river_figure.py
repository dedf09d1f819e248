"""The river view's figure (network level, spec-003 §4, paper 003 Fig. 6) as a Plotly JSON dict (no Dash here).

x = network depth: one column per gate point, or per collapsed layer group. Behind the curves, the DAG of the
gate points: a box per layer group (its label toggles the group open or closed) and the skip links between
columns (a residual shortcut that passes a gate point is an arc above the boxes). In front, one constant-width
spline per datapath, source blue, adversarial orange, target purple, laid out by :mod:`advlens.datapaths.river`;
segments where d2 rises (diverging) or d3 falls (merging) over ≥ 2 columns are tinted, the first in the
source's half below the axis, the second in the target's half above it. A transparent bar over
each column carries its hover text (layer, d1/d2/d3, critical maps per datapath) and its click.
"""

from __future__ import annotations

from collections.abc import Sequence

from advlens.app.figures import figure
from advlens.datapaths.river import RiverLayout
from advlens.models.graph import ModelGraph

ROLE_COLORS = {"src": "#1f77b4", "adv": "#ff7f0e", "tar": "#9467bd"}
"""Source blue, adversarial orange, target purple (paper 003 Fig. 6; spec-003 §5 #24)."""
ROLE_NAMES = {"adv": "adversarial", "src": "source", "tar": "target"}
PHASE_TINTS = {"diverging": "rgba(255,127,14,0.13)", "merging": "rgba(148,103,189,0.15)"}
GROUP_FILL = "#f3f5f8"
GROUP_LINE = "#c5ccd6"
SKIP_COLOR = "#9aa3ae"
SELECTED_LINE = "#222"
TRACK = 1.0
"""Screen span (data units) of the largest shown d1: the curves lie within ±TRACK/2."""
BOX_TOP, BOX_BOTTOM = 0.66, -0.66
HEADER_Y = 0.78
COLUMN_PX = 118
WIDE_PX = 1100
"""Rivers wider than this (deep models, expanded groups) keep COLUMN_PX per column and scroll; others fill the panel."""
HEIGHT = 340


def gate_edges(graph: ModelGraph, layers: Sequence[str]) -> list[tuple[str, str]]:
    """The DAG of the gate points: (a, b) when a feeds b through layers that are not gate points.

    For a ResNet block this gives the inner edge (block input → inner ReLU → block output) and the shortcut
    (block input → block output), which skips the inner gate point.
    """
    gates = set(layers)
    nearest: dict[str, set[str]] = {}
    edges: list[tuple[str, str]] = []
    for node in graph.nodes:  # execution order is topological
        upstream: set[str] = set()
        for source in node.inputs:
            upstream |= {source} if source in gates else nearest.get(source, set())
        nearest[node.name] = upstream
        if node.name in gates:
            edges.extend((a, node.name) for a in graph.sort(upstream))
    return edges


def skip_links(river: RiverLayout, edges: Sequence[tuple[str, str]]) -> list[tuple[int, int]]:
    """Column pairs (i, j) of gate edges that pass over at least one column (j − i ≥ 2), each once."""
    found = set()
    for a, b in edges:
        i, j = river.column_of(a), river.column_of(b)
        if i is not None and j is not None and j - i >= 2:
            found.add((i, j))
    return sorted(found)


def _hover(river: RiverLayout, column: int, counts: dict[str, list[int]], layer_rows: dict[str, int]) -> str:
    c = river.columns[column]
    head = (f"<b>{c.label}</b> (group of {len(c.layers)} gate points, values of its last, {c.layer}; "
            "click to expand)" if c.collapsed else f"<b>{c.layer}</b> (click to open the layer)")
    row = layer_rows[c.layer]
    lines = [head,
             f"d1 source–target {river.d1[column]:.3f} · d2 adversarial–source {river.d2[column]:.3f} · "
             f"d3 adversarial–target {river.d3[column]:.3f} (RMS per map)",
             "critical maps: " + ", ".join(f"{ROLE_NAMES[r]} {counts[r][row]}" for r in ("adv", "src", "tar"))]
    phase = river.phase(column)
    if phase:
        lines.append(f"{phase} segment")
    return "<br>".join(lines)


def river_figure(river: RiverLayout, groups: Sequence[tuple[str, Sequence[str]]], expanded: Sequence[str],
                 edges: Sequence[tuple[str, str]], counts: dict[str, list[int]], layers: Sequence[str],
                 selected: str | None = None) -> dict:
    """The river figure.

    Args:
        river: the layout of the shown columns (:func:`advlens.datapaths.river.river_layout`, height
            :data:`TRACK`).
        groups: the layer groups (name, gate points) in depth order; ``expanded``: the open ones.
        edges: the gate DAG (:func:`gate_edges`).
        counts: critical maps per role (``adv``, ``src``, ``tar``) and gate point (in ``layers`` order).
        selected: the layer open in the layer view (its column is outlined).
    """
    n = len(river.columns)
    xs = list(range(n))
    rows = {name: i for i, name in enumerate(layers)}
    shapes: list[dict] = []
    annotations: list[dict] = []
    for segment in river.segments:  # diverging: the source's half (below the axis); merging: the target's half
        low, high = (BOX_BOTTOM, 0.0) if segment.phase == "diverging" else (0.0, BOX_TOP)
        shapes.append({"type": "rect", "layer": "below", "x0": segment.start, "x1": segment.end, "y0": low,
                       "y1": high, "fillcolor": PHASE_TINTS[segment.phase], "line": {"width": 0}})
    header_x, header_text, header_ids = [], [], []
    for name, members in groups:
        cols = [i for i, c in enumerate(river.columns) if c.group == name]
        if not cols:
            continue
        shapes.append({"type": "rect", "layer": "below", "x0": cols[0] - 0.42, "x1": cols[-1] + 0.42,
                       "y0": BOX_BOTTOM, "y1": BOX_TOP, "fillcolor": "rgba(0,0,0,0)",
                       "line": {"color": GROUP_LINE, "width": 1.2}})
        if len(members) > 1:
            header_x.append((cols[0] + cols[-1]) / 2)
            header_text.append(f"{'▾' if name in expanded else '▸'} {name}")
            header_ids.append(["group", name])
        else:
            annotations.append({"x": cols[0], "y": HEADER_Y, "text": name, "showarrow": False,
                                "font": {"size": 11, "color": "#555"}})
    for i, j in skip_links(river, edges):
        height = BOX_TOP + 0.04
        shapes.append({"type": "path", "layer": "below", "path": f"M {i} {BOX_TOP - 0.06} C {i + 0.3} {height + 0.12}, "
                       f"{j - 0.3} {height + 0.12}, {j} {BOX_TOP - 0.06}",
                       "line": {"color": SKIP_COLOR, "width": 1.3, "dash": "dot"}})
    for i in range(n - 1):
        shapes.append({"type": "line", "layer": "below", "x0": i + 0.42, "x1": i + 0.58, "y0": 0, "y1": 0,
                       "line": {"color": GROUP_LINE, "width": 1}})
    if selected is not None and river.column_of(selected) is not None:
        col = river.column_of(selected)
        shapes.append({"type": "rect", "x0": col - 0.36, "x1": col + 0.36, "y0": BOX_BOTTOM + 0.03,
                       "y1": BOX_TOP - 0.03, "line": {"color": SELECTED_LINE, "width": 2},
                       "fillcolor": "rgba(0,0,0,0)"})
    hovers = [_hover(river, i, counts, rows) for i in xs]
    data = [{"type": "bar", "x": xs, "y": [BOX_TOP - BOX_BOTTOM] * n, "base": [BOX_BOTTOM] * n, "width": 0.8,
             "marker": {"color": "rgba(0,0,0,0.004)"}, "hovertext": hovers, "hoverinfo": "text",
             "customdata": [["column", i] for i in xs], "name": "columns", "showlegend": False}]
    for role, ys in (("src", river.y_src), ("adv", river.y_adv), ("tar", river.y_tar)):
        data.append({"type": "scatter", "mode": "lines+markers", "x": xs, "y": [float(v) for v in ys],
                     "line": {"color": ROLE_COLORS[role], "width": 5, "shape": "spline", "smoothing": 0.8},
                     "marker": {"color": ROLE_COLORS[role], "size": 9}, "name": ROLE_NAMES[role],
                     "hoverinfo": "skip", "customdata": [["column", i] for i in xs]})
    if header_x:
        data.append({"type": "scatter", "mode": "text+markers", "x": header_x, "y": [HEADER_Y] * len(header_x),
                     "text": header_text, "textposition": "middle center", "customdata": header_ids,
                     "marker": {"size": 22, "color": "rgba(0,0,0,0.01)", "symbol": "square"},
                     "textfont": {"size": 12, "color": "#1f4e9c"}, "hoverinfo": "text",
                     "hovertext": ["click to collapse" if ids[1] in expanded else "click to expand"
                                   for ids in header_ids], "name": "groups", "showlegend": False})
    ticks = [c.label + (" ▸" if c.collapsed else "") for c in river.columns]
    layout = {
        "height": HEIGHT, "margin": {"l": 20, "r": 20, "t": 10, "b": 40},
        **({"width": 90 + COLUMN_PX * n} if 90 + COLUMN_PX * n > WIDE_PX else {"autosize": True}),
        "plot_bgcolor": "white", "paper_bgcolor": "white", "dragmode": False, "hovermode": "closest",
        "barmode": "overlay", "showlegend": False, "shapes": shapes, "annotations": annotations,
        "xaxis": {"range": [-0.6, n - 0.4], "tickmode": "array", "tickvals": xs, "ticktext": ticks,
                  "showgrid": False, "zeroline": False, "fixedrange": True, "tickangle": 0},
        "yaxis": {"range": [BOX_BOTTOM - 0.06, HEADER_Y + 0.1], "visible": False, "fixedrange": True},
    }
    return figure(data, layout)


__all__ = ["ROLE_COLORS", "ROLE_NAMES", "TRACK", "gate_edges", "river_figure", "skip_links"]
