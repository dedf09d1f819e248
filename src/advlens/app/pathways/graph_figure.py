"""The Graph Summary View figure (spec-004 §6, Bluff Fig. 1B): one band per layer, deepest on top; the four
groups side by side (original-only | both | target-only | attack-only, then pinned extras), each node a
small square showing the neuron's feature visualisation framed in its group colour and labelled with its
channel id; edges as cubic Bézier curves whose colour runs from the source group's colour to the target's.

Coordinates are in node slots (one slot = :data:`PITCH` px); a group holds at most :data:`WRAP` nodes per
row and wraps into more rows of its layer's band. Figures are plain dicts (:mod:`advlens.app.figures`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advlens.analysis.pathways import PathwayGraph
from advlens.app.figures import figure, typed_array
from advlens.app.images import hex_rgb
from advlens.app.pathways.display import GraphDisplay
from advlens.pathways import GROUP_COLORS, GROUPS

PITCH = 32
"""Pixels per node slot."""
WRAP = 10
"""Most nodes per row of a group; fewer when the groups would not fit in :data:`MAX_SLOTS` (then they wrap)."""
MIN_WRAP = 4
MAX_SLOTS = 28.0
"""Width of the graph in slots it keeps to by wrapping groups (≈ 1000 px: the panel beside the sidebar and detail)."""
GROUP_GAP = 1.2
ROW = 1.3
"""Height of a wrapped row of nodes, in slots (room for the channel labels)."""
BAND_GAP = 1.15
NODE = 0.8
"""Node square side, in slots."""
MAX_EDGES_PER_LAYER = 120
"""The strongest edges of a pair of layers that are drawn (the rest are thinner than the drawn ones)."""
MARGIN = {"l": 92, "r": 12, "t": 34, "b": 8}
PINNED_COLOR = "#6f6f6f"
FADED = 0.22
GROUP_TITLES = {"original": "original only", "both": "both", "target": "target only", "attack": "attack only",
                "pinned": "pinned"}
SAMPLES = 13


def group_color(group: int) -> str:
    return GROUP_COLORS[GROUPS[group]] if group < len(GROUPS) else PINNED_COLOR


def _mix(a: str, b: str, t: float) -> str:
    ra, rb = hex_rgb(a), hex_rgb(b)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ra, rb))


@dataclass(frozen=True)
class Placement:
    """Node centres and the bands / group blocks, in slots. Shape: x, y (M,); band_y (L,) band centres."""

    x: np.ndarray
    y: np.ndarray
    band_y: np.ndarray
    group_x: dict[int, tuple[float, float]]
    width: float
    height: float


def place(graph: PathwayGraph) -> Placement:
    """Node positions: layer bands bottom (shallow) → top (deep); groups left → right in fixed blocks."""
    groups = [g for g in range(len(GROUPS))] + ([len(GROUPS)] if np.any(graph.node_group == len(GROUPS)) else [])
    counts = np.zeros((len(graph.layers), len(groups)), dtype=int)
    for layer, group in zip(graph.node_layer.tolist(), graph.node_group.tolist()):
        counts[layer, groups.index(group)] += 1
    wrap = WRAP
    while wrap > MIN_WRAP and (np.maximum(1, np.minimum(counts.max(0, initial=0), wrap)).sum() +
                               GROUP_GAP * (len(groups) - 1)) > MAX_SLOTS:
        wrap -= 1
    block = np.maximum(1, np.minimum(counts.max(0, initial=0), wrap))
    starts = np.concatenate([[0.0], np.cumsum(block + GROUP_GAP)[:-1]])
    subrows = np.maximum(1, np.ceil(counts / wrap).max(1)).astype(int)
    heights = 1 + (subrows - 1) * ROW
    band_base = np.concatenate([[0.0], np.cumsum(heights + BAND_GAP)[:-1]])
    x, y = np.zeros(graph.num_nodes), np.zeros(graph.num_nodes)
    seen: dict[tuple[int, int], int] = {}
    for node, (layer, group) in enumerate(zip(graph.node_layer.tolist(), graph.node_group.tolist())):
        gi = groups.index(group)
        i = seen.get((layer, gi), 0)
        seen[(layer, gi)] = i + 1
        row_count = min(wrap, counts[layer, gi] - (i // wrap) * wrap)
        x[node] = starts[gi] + (block[gi] - row_count) / 2 + (i % wrap) + 0.5
        y[node] = band_base[layer] + BAND_GAP + heights[layer] - (i // wrap) * ROW - 0.5
    band_y = band_base + BAND_GAP + heights / 2
    group_x = {g: (float(starts[i]), float(starts[i] + block[i])) for i, g in enumerate(groups)}
    return Placement(x, y, band_y, group_x, float(starts[-1] + block[-1]),
                     float(band_base[-1] + BAND_GAP + heights[-1]))


def _bezier(x0: float, y0: float, x1: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    """A cubic Bézier from (x0, y0) up to (x1, y1) with vertical tangents at both ends. Shape: (SAMPLES,) each."""
    t = np.linspace(0.0, 1.0, SAMPLES)[:, None]
    lift = (y1 - y0) / 2
    points = np.array([[x0, y0], [x0, y0 + lift], [x1, y1 - lift], [x1, y1]])
    weights = np.hstack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3])
    curve = weights @ points
    return curve[:, 0], curve[:, 1]


def edge_traces(graph: PathwayGraph, placed: Placement, shown: GraphDisplay) -> list[dict]:
    """Edges as line traces, one per (colour, width, strength) group; each curve in three coloured thirds."""
    chosen = np.flatnonzero(shown.edge_shown)
    layers = graph.node_layer[graph.edge_source[chosen]]
    keep = []
    for layer in np.unique(layers):
        at = chosen[layers == layer]
        keep.append(at[np.argsort(-shown.edge_width[at], kind="stable")][:MAX_EDGES_PER_LAYER])
    chosen = np.concatenate(keep) if keep else chosen
    buckets: dict[tuple[str, float, bool], tuple[list, list]] = {}
    half = NODE / 2
    thirds = [(0, SAMPLES // 3 + 1), (SAMPLES // 3, 2 * SAMPLES // 3 + 1), (2 * SAMPLES // 3, SAMPLES)]
    for edge in chosen.tolist():
        s, t = int(graph.edge_source[edge]), int(graph.edge_target[edge])
        xs, ys = _bezier(placed.x[s], placed.y[s] + half, placed.x[t], placed.y[t] - half)
        start, end = group_color(int(graph.node_group[s])), group_color(int(graph.node_group[t]))
        strong = bool(shown.edge_strong[edge])
        width = max(0.5, round(float(shown.edge_width[edge]) * 2) / 2)
        for k, (a, b) in enumerate(thirds):
            color = (start, _mix(start, end, 0.5), end)[k]
            bx, by = buckets.setdefault((color, width, strong), ([], []))
            bx.extend([*xs[a:b], np.nan]), by.extend([*ys[a:b], np.nan])
    traces = []
    for (color, width, strong), (bx, by) in sorted(buckets.items(), key=lambda item: item[0][2]):
        traces.append({"type": "scatter", "mode": "lines", "x": typed_array(bx), "y": typed_array(by),
                       "line": {"color": color, "width": width}, "opacity": 0.7 if strong else 0.12,
                       "hoverinfo": "skip", "showlegend": False, "connectgaps": False})
    return traces


def node_shapes(graph: PathwayGraph, placed: Placement, shown: GraphDisplay, compare: bool) -> list[dict]:
    """Frames (normal mode) or the inner and outer rectangles (compare mode) of the shown nodes."""
    shapes = []
    half, inner_half = NODE / 2, NODE / 4
    for node in np.flatnonzero(shown.node_shown).tolist():
        x, y = placed.x[node], placed.y[node]
        color = group_color(int(graph.node_group[node]))
        if compare:
            outer_fill = color if shown.outer[node] else "#ececec"
            inner_fill = color if shown.inner[node] else "#ffffff"
            shapes.append({"type": "rect", "x0": x - half, "x1": x + half, "y0": y - half, "y1": y + half,
                           "fillcolor": outer_fill, "line": {"color": "#555", "width": 1}, "layer": "above"})
            shapes.append({"type": "rect", "x0": x - inner_half, "x1": x + inner_half, "y0": y - inner_half,
                           "y1": y + inner_half, "fillcolor": inner_fill, "line": {"color": "#555", "width": 1},
                           "layer": "above"})
        else:
            shapes.append({"type": "rect", "x0": x - half, "x1": x + half, "y0": y - half, "y1": y + half,
                           "line": {"color": color, "width": 3}, "fillcolor": "rgba(0,0,0,0)", "layer": "above",
                           "opacity": 1.0 if shown.node_opaque[node] else FADED})
    return shapes


def node_images(graph: PathwayGraph, placed: Placement, shown: GraphDisplay, urls: list[str | None]) -> list[dict]:
    """The feature visualisations of the shown nodes as layout images (``urls[node]``; None: no image)."""
    images = []
    for node in np.flatnonzero(shown.node_shown).tolist():
        if urls[node] is None:
            continue
        images.append({"source": urls[node], "xref": "x", "yref": "y", "x": placed.x[node], "y": placed.y[node],
                       "sizex": NODE - 0.1, "sizey": NODE - 0.1, "xanchor": "center", "yanchor": "middle",
                       "sizing": "stretch", "layer": "above", "opacity": 1.0 if shown.node_opaque[node] else FADED})
    return images


def node_trace(graph: PathwayGraph, placed: Placement, shown: GraphDisplay, hover: list[str], pinned: np.ndarray,
               filled: bool) -> list[dict]:
    """Hover / click targets (one marker per shown node, carrying ``[layer, channel]``), channel labels and pins."""
    nodes = np.flatnonzero(shown.node_shown)
    colors = [group_color(int(g)) for g in graph.node_group[nodes]]
    opacity = np.where(shown.node_opaque[nodes], 1.0, FADED)
    marker_color = ([f"rgba{(*hex_rgb(c), 0.85 if o == 1.0 else 0.25)}" for c, o in zip(colors, opacity)]
                    if filled else "rgba(0,0,0,0)")
    custom = [[graph.layers[int(graph.node_layer[n])], int(graph.node_channel[n])] for n in nodes]
    traces = [{
        "type": "scatter", "mode": "markers", "x": placed.x[nodes].tolist(), "y": placed.y[nodes].tolist(),
        "marker": {"symbol": "square", "size": PITCH * NODE - 2, "color": marker_color, "line": {"width": 0}},
        "customdata": custom, "text": [hover[n] for n in nodes], "hovertemplate": "%{text}<extra></extra>",
        "showlegend": False, "name": "neurons",
    }, {
        "type": "scatter", "mode": "text", "x": placed.x[nodes].tolist(),
        "y": (placed.y[nodes] - NODE / 2 - 0.22).tolist(), "text": [str(int(graph.node_channel[n])) for n in nodes],
        "textfont": {"size": 9, "color": [f"rgba(40,40,40,{o})" for o in opacity]}, "hoverinfo": "skip",
        "showlegend": False,
    }]
    pins = nodes[pinned[nodes]]
    if len(pins):
        traces.append({"type": "scatter", "mode": "markers", "x": (placed.x[pins] + NODE / 2).tolist(),
                       "y": (placed.y[pins] + NODE / 2).tolist(), "hoverinfo": "skip", "showlegend": False,
                       "marker": {"symbol": "circle", "size": 9, "color": "#222", "line": {"color": "#fff",
                                                                                          "width": 1.5}}})
    return traces


def pathway_figure(graph: PathwayGraph, shown: GraphDisplay, urls: list[str | None], hover: list[str],
                   pinned: np.ndarray, class_names: list[str], compare: bool = False) -> dict:
    """The whole Graph Summary View."""
    placed = place(graph)
    header = {"original": f"original only · {class_names[graph.original]}", "both": "both classes",
              "target": f"target only · {class_names[graph.target]}", "attack": "attack only", "pinned": "pinned"}
    names = [*GROUPS, "pinned"]
    annotations = [{"text": f"<b>{header[names[g]]}</b>", "x": (x0 + x1) / 2, "y": placed.height + 0.15,
                    "xref": "x", "yref": "y", "showarrow": False, "yanchor": "bottom",
                    "font": {"size": 11, "color": group_color(g) if g != 0 else "#4f8a47"}}
                   for g, (x0, x1) in placed.group_x.items()]
    layout = {
        "width": int(placed.width * PITCH + MARGIN["l"] + MARGIN["r"] + PITCH),
        "height": int((placed.height + 0.9) * PITCH + MARGIN["t"] + MARGIN["b"]),
        "margin": MARGIN, "plot_bgcolor": "white", "paper_bgcolor": "white", "dragmode": False,
        "hovermode": "closest", "hoverdistance": 12, "showlegend": False,
        "xaxis": {"range": [-0.5, placed.width + 0.5], "visible": False, "fixedrange": True},
        "yaxis": {"range": [-0.2, placed.height + 0.7], "fixedrange": True, "showgrid": False, "zeroline": False,
                  "tickvals": placed.band_y.tolist(), "ticktext": list(graph.layers), "ticks": "",
                  "tickfont": {"size": 11, "color": "#333"}},
        "shapes": [{"type": "rect", "xref": "x", "yref": "y", "x0": x0 - 0.25, "x1": x1 + 0.25, "y0": -0.1,
                    "y1": placed.height + 0.1, "fillcolor": "#f7f8fa", "line": {"width": 0}, "layer": "below"}
                   for x0, x1 in placed.group_x.values()] + node_shapes(graph, placed, shown, compare),
        "images": [] if compare else node_images(graph, placed, shown, urls),
        "annotations": annotations,
    }
    plain = not compare and all(url is None for url in urls)  # no feature visualisations: coloured squares
    data = edge_traces(graph, placed, shown) + node_trace(graph, placed, shown, hover, pinned, filled=plain)
    return figure(data, layout)
