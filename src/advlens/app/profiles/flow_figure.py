"""The Flow View's figure (paper 002 §4.3; spec-002 §2.2) as a Plotly JSON dict (no Dash here).

Left (x axis ``x``): one vertical axis per layer at x = 0 … L−1, one shared y-range with no tick values
(G-12); the background as bundled lines (one WebGL trace per class, faint) or as profile histograms drawn
sideways to the right of each axis, stacked by class; the pair on top, black, benign solid and
adversarial dashed (G-7); the diverging segment as a red band with a badge naming the two layers.
Invisible click targets on each axis (``customdata ["axis", i]``) and in each gap (``["gap", i]``) make
"click an axis → Layer View" and "click between two axes → drill down" plain click events; a box drawn
over an axis brushes a group. Right (x axis ``x2``, same y): the class fingerprints, one heatmap per
class with the axes as columns and the bins as rows, on one shared inferno scale (G-10).
"""

from __future__ import annotations

import numpy as np
from plotly.colors import sequential

from advlens.analysis.profiles import FlowData
from advlens.app.common import class_color, rgba
from advlens.app.figures import figure, typed_array

BAND_COLOR = "rgba(214,39,40,0.16)"
BADGE_COLOR = "#b5121b"
GROUP_COLOR = "#ff7f0e"
FOREGROUND = "#111111"
TARGETS = 40
"""Invisible click targets per axis and per gap (spread over the y-range)."""
HISTOGRAM_WIDTH = 0.42
"""The longest histogram bar, in axis spacings."""
FLOW_DOMAIN = (0.0, 0.66)
PRINT_DOMAIN = (0.70, 1.0)
HEIGHT = 560
INFERNO = [[i / (len(sequential.Inferno) - 1), color] for i, color in enumerate(sequential.Inferno)]
"""Inferno as an explicit scale: plotly.js has no built-in "Inferno" (plotly.py expands the name itself)."""


def line_alpha(count: int) -> float:
    """Fainter lines for bigger backgrounds (≈ 0.5 for 60 images, 0.08 for 2,000)."""
    return float(np.clip(4.0 / np.sqrt(max(count, 1)), 0.06, 0.5))


def _background_lines(flow: FlowData, names: list[str]) -> list[dict]:
    alpha = line_alpha(len(flow.background))
    traces = []
    for label, x, y, count in zip(flow.lines.labels.tolist(), flow.lines.x, flow.lines.y, flow.lines.images):
        traces.append({"type": "scattergl", "mode": "lines", "x": typed_array(x), "y": typed_array(y),
                       "name": f"{names[label]} ({int(count)})", "legendgroup": f"c{label}", "hoverinfo": "skip",
                       "line": {"color": rgba(class_color(label), alpha), "width": 1}, "xaxis": "x", "yaxis": "y"})
    return traces


def _histogram_bars(flow: FlowData, names: list[str], legend: bool) -> list[dict]:
    hist = flow.histograms
    centres = (hist.edges[:-1] + hist.edges[1:]) / 2
    height = float(hist.edges[1] - hist.edges[0])
    stacked = hist.counts.astype(np.float64)  # (K, L, B)
    scale = HISTOGRAM_WIDTH / max(float(stacked.sum(axis=0).max()), 1.0)
    base = np.zeros(stacked.shape[1:])
    traces = []
    axes = np.arange(stacked.shape[1])
    for k, label in enumerate(hist.classes.tolist()):
        width = stacked[k] * scale
        traces.append({"type": "bar", "orientation": "h", "x": typed_array(width.reshape(-1)),
                       "base": typed_array((axes[:, None] + base).reshape(-1)),
                       "y": typed_array(np.tile(centres, len(axes))), "width": height,
                       "name": f"{names[label]} ({int(hist.sizes[k])})", "legendgroup": f"c{label}",
                       "showlegend": legend, "marker": {"color": rgba(class_color(label), 0.75), "line": {"width": 0}},
                       "customdata": typed_array(stacked[k].reshape(-1), "i4"),
                       "hovertemplate": f"{names[label]}: %{{customdata}} images<extra></extra>",
                       "xaxis": "x", "yaxis": "y"})
        base += width
    return traces


def _foreground(flow: FlowData, names: list[str], pair_text: str) -> list[dict]:
    x = list(range(len(flow.layers)))
    div = flow.divergence
    traces = []
    for role, values, dash, affinity, raw in (
            ("benign", flow.benign, "solid", div.affinity_a, div.raw_affinity_a),
            ("adversarial", flow.adversarial, "dash", div.affinity_b, div.raw_affinity_b)):
        hover = []
        for i, layer in enumerate(flow.layers):
            lines = [f"<b>{pair_text} · {role}</b>", f"{layer}: gap {div.gaps[i]:.2f} IQR"]
            if affinity is not None:
                lines.append(f"nearest class (1-D median): {names[int(affinity[i])]}")
            if raw is not None:
                lines.append(f"raw-space majority of 15 neighbours: {names[int(raw[i])]}")
            if div.raw_distance is not None:
                lines.append(f"raw distance of the pair: {div.raw_distance[i]:.2f} × median, "
                             f"cosine {div.cosine_distance[i]:.3f}")
            hover.append("<br>".join(lines))
        traces.append({"type": "scatter", "mode": "lines+markers", "x": x, "y": [float(v) for v in values],
                       "name": f"{role} (pair)", "line": {"color": FOREGROUND, "width": 3, "dash": dash},
                       "marker": {"color": FOREGROUND if role == "benign" else "#ffffff", "size": 9,
                                  "line": {"color": FOREGROUND, "width": 2}},
                       "hovertext": hover, "hoverinfo": "text", "xaxis": "x", "yaxis": "y"})
    return traces


def _targets(flow: FlowData) -> list[dict]:
    low, high = flow.value_range
    ys = np.linspace(low, high, TARGETS).tolist()
    count = len(flow.layers)
    axes = {"x": [], "y": [], "customdata": [], "hovertext": []}
    gaps = {"x": [], "y": [], "customdata": [], "hovertext": []}
    for i, layer in enumerate(flow.layers):
        axes["x"] += [i] * TARGETS
        axes["y"] += ys
        axes["customdata"] += [["axis", i]] * TARGETS
        axes["hovertext"] += [f"<b>{layer}</b><br>click: open it in the Layer View<br>drag a box over it: brush a "
                              "group"] * TARGETS
        if i + 1 < count:
            gaps["x"] += [i + 0.5] * TARGETS
            gaps["y"] += ys
            gaps["customdata"] += [["gap", i]] * TARGETS
            gaps["hovertext"] += [f"click: drill down into the layers between {layer} and "
                                  f"{flow.layers[i + 1]}"] * TARGETS
    marker = {"size": 16, "color": "rgba(0,0,0,0)", "line": {"width": 0}}
    return [{"type": "scatter", "mode": "markers", "name": name, "showlegend": False, "hoverinfo": "text",
             "marker": marker, "xaxis": "x", "yaxis": "y", **points}
            for name, points in (("axes", axes), ("gaps", gaps))]


def _group_lines(flow: FlowData, group: np.ndarray) -> list[dict]:
    if group is None or not len(group):
        return []
    xs, ys = [], []
    for row in flow.background[group]:
        xs += list(range(len(row))) + [None]
        ys += [float(v) if np.isfinite(v) else None for v in row] + [None]
    return [{"type": "scatter", "mode": "lines", "x": xs, "y": ys, "name": f"brushed group ({len(group)})",
             "hoverinfo": "skip", "line": {"color": rgba(GROUP_COLOR, 0.55), "width": 1.2}, "xaxis": "x",
             "yaxis": "y"}]


HEADER_CHARACTERS = 12
"""Class names above the profile histograms are cut to this many characters (the whole name shows on hover)."""
SLANTED_HEADERS = 5
"""Above this many classes the histograms' headers are slanted (-60°): their columns are narrower than a name."""


def header_text(name: str, limit: int = HEADER_CHARACTERS) -> str:
    """``name`` cut to ``limit`` characters, an ellipsis marking a cut."""
    return name if len(name) <= limit else name[:limit - 1] + "…"


def _fingerprints(flow: FlowData, names: list[str], slanted: bool) -> tuple[list[dict], list[dict], dict]:
    hist = flow.histograms
    centres = ((hist.edges[:-1] + hist.edges[1:]) / 2).tolist()
    count = len(flow.layers)
    top = float(flow.fingerprints.max()) or 1.0
    traces, annotations = [], []
    for k, label in enumerate(hist.classes.tolist()):
        offset = k * (count + 1)
        traces.append({"type": "heatmap", "z": flow.fingerprints[k].tolist(), "x": [offset + i for i in range(count)],
                       "y": centres, "coloraxis": "coloraxis", "xaxis": "x2", "yaxis": "y",
                       "customdata": [list(flow.layers) for _ in centres],
                       "hovertemplate": f"{names[label]} · %{{customdata}}: %{{z:.1%}} of its images<extra></extra>"})
        annotations.append({"x": offset + (count - 1) / 2, "y": 1.0, "xref": "x2", "yref": "paper",
                            "text": header_text(names[label]), "hovertext": names[label], "showarrow": False,
                            "yanchor": "bottom", "xanchor": "left" if slanted else "center",
                            "textangle": -60 if slanted else 0, "font": {"size": 10, "color": class_color(label)}})
    coloraxis = {"colorscale": INFERNO, "cmin": 0.0, "cmax": top,
                 "colorbar": {"title": {"text": "share", "side": "right"}, "thickness": 10, "len": 0.6,
                              "tickformat": ".0%", "x": 1.01}}
    return traces, annotations, coloraxis


def flow_figure(flow: FlowData, names: list[str], pair_text: str, group: np.ndarray | None = None) -> dict:
    """The Flow View of ``flow`` (``names``: class names; ``group``: brushed background indices)."""
    count = len(flow.layers)
    data = (_background_lines(flow, names) if flow.lines is not None
            else _histogram_bars(flow, names, legend=True))
    data += _group_lines(flow, group) + _foreground(flow, names, pair_text) + _targets(flow)
    slanted = len(flow.histograms.classes) > SLANTED_HEADERS
    prints, annotations, coloraxis = _fingerprints(flow, names, slanted)
    data += prints
    shapes = [{"type": "line", "xref": "x", "yref": "paper", "x0": i, "x1": i, "y0": 0, "y1": 1,
               "line": {"color": "#6b7280", "width": 1.2}, "layer": "below"} for i in range(count)]
    segment = flow.divergence.segment
    if segment is not None:
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": segment[0], "x1": segment[1], "y0": 0,
                       "y1": 1, "fillcolor": BAND_COLOR, "line": {"width": 0}, "layer": "below"})
        annotations.append({"x": (segment[0] + segment[1]) / 2, "y": 1.0, "xref": "x", "yref": "paper",
                            "text": f"diverges between {flow.layers[segment[0]]} and {flow.layers[segment[1]]}",
                            "showarrow": False, "yanchor": "bottom", "bgcolor": BADGE_COLOR,
                            "font": {"color": "#ffffff", "size": 12}, "borderpad": 3})
    low, high = flow.value_range
    return figure(data, {
        "height": HEIGHT, "margin": {"l": 20, "r": 60, "t": 80 if slanted else 34, "b": 70}, "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff", "barmode": "overlay", "bargap": 0, "hovermode": "closest",
        "dragmode": "select", "clickmode": "event", "showlegend": True, "uirevision": "flow",
        "legend": {"orientation": "h", "y": -0.14, "x": 0, "font": {"size": 11}, "itemclick": False,
                   "itemdoubleclick": False},
        "xaxis": {"domain": list(FLOW_DOMAIN), "range": [-0.4, count - 0.5 + (0.1 if flow.lines is None else 0)],
                  "tickvals": list(range(count)), "ticktext": list(flow.layers), "tickangle": -25,
                  "showgrid": False, "zeroline": False, "fixedrange": True},
        "yaxis": {"range": [low, high], "showticklabels": False, "ticks": "", "showgrid": False, "zeroline": False,
                  "fixedrange": True, "title": {"text": "aligned 1-D position (no unit)", "font": {"size": 11}}},
        "xaxis2": {"domain": list(PRINT_DOMAIN), "anchor": "y", "showticklabels": False, "ticks": "", "showgrid": False,
                   "zeroline": False, "fixedrange": True},
        "coloraxis": coloraxis, "shapes": shapes, "annotations": annotations,
    })


__all__ = ["flow_figure", "line_alpha", "BAND_COLOR", "HEIGHT"]
