"""What every view shares: the ids of the selection stores, the class palette, empty states.

Selection state lives in ``dcc.Store`` components and holds ids only:

- ``selection``: the pairs picked in the Data Overview, ``{"pairs": [ids], "label": text, "cell": [true,
  adversarial] or None}``, or ``None`` when nothing is selected;
- ``pair``: the pair picked in the Image Grid (an id or ``None``);
- ``neuron``: the neuron picked in the Neuron Vulnerability View (an id or ``None``);
- ``nodes``: dendrogram node ids picked in the Neuron Cluster View, with the pair and RF threshold
  whose clustering they refer to, ``{"pair": id, "quantile": level, "nodes": [ids]}``, or ``None``;
- ``classes``: the classes the Data Overview shows, ``{"rows": [ids], "cols": [ids]}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from dash import html
from plotly.colors import qualitative

from advlens.app.images import hex_rgb

SELECTION = "selection-store"
PAIR = "pair-store"
NEURON = "neuron-store"
NODES = "nodes-store"
CLASSES = "classes-store"
CONTEXT = "context-store"

RF_QUANTILE = "rf-quantile"
TOP_PERCENT = "top-percent"
COMBINE_OP = "combine-op"

PALETTE: tuple[str, ...] = tuple(qualitative.D3) + tuple(qualitative.Dark24)
"""Class colours indexed by class id (D3/Tab10 first, as in the paper's figures), the same in every view."""

SELECTED_COLOR = "#d62728"
"""The selected neuron (red, as in the paper's Neuron Cluster View)."""

GROUP_COLOR = "#1f4e9c"
"""Selected dendrogram subtrees."""

LOADING_DELAY_MS = 300
"""Computations shorter than this show no busy indicator."""

MAX_FULL_CLASSES = 12
"""Datasets with more classes open on a class subset (paper 001, §6.2.2)."""

GRAPH_CONFIG = {"displaylogo": False, "showSendToCloud": False, "showEditInChartStudio": False,
                "modeBarButtonsToRemove": ["sendChartToCloud", "sendDataToCloud", "autoScale2d"], "scrollZoom": False}
"""No button uploads data anywhere (plotly's "Share chart" sends the figure to a cloud service)."""


def class_color(label: int) -> str:
    return PALETTE[int(label) % len(PALETTE)]


def rgba(color: str, alpha: float) -> str:
    """``#rrggbb`` as an ``rgba()`` string."""
    r, g, b = hex_rgb(color)
    return f"rgba({r},{g},{b},{alpha})"


def empty_figure(text: str, height: int | None = None) -> go.Figure:
    """A blank figure carrying one centred message (an empty state, never an empty box)."""
    figure = go.Figure()
    figure.update_layout(
        xaxis={"visible": False}, yaxis={"visible": False}, plot_bgcolor="white", paper_bgcolor="white",
        margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=height,
        annotations=[{"text": text, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                      "font": {"size": 13, "color": "#666"}}],
    )
    return figure


def message(text: str | Sequence, kind: str = "hint") -> html.Div:
    """An empty-state or error message block (``kind``: hint, warning, error)."""
    return html.Div(text, className=f"message message-{kind}")


def panel(title: str, body: list, controls: list | None = None, class_name: str = "") -> html.Section:
    """A titled view panel."""
    header = html.Div([html.H2(title), html.Div(controls or [], className="panel-controls")],
                      className="panel-header")
    return html.Section([header, *body], className=f"panel {class_name}".strip())


def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
