"""Neuron Cluster View (paper 001, §5.2.2, Fig. 2-e): the dendrogram of the analysed layer's neurons
for the selected pair (hierarchical clustering; default: Ward linkage of the L2 distance between the
neurons' RF images, the benign and adversarial image masked by each RF). The distance and the linkage
are chosen here.

The selected neuron is marked in red; clicking a node toggles the selection of its subtree (several
nodes may be selected); the selected neurons feed the RF union or intersection of the Receptive
Field View. Node ids are SciPy's: leaves 0 … K−1 are neurons, merge n is node K + n.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens import measures
from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, GROUP_COLOR, SELECTED_COLOR, empty_figure, error_figure, guarded
from advlens.app.figures import figure, typed_array
from advlens.measures.clustering import EUCLIDEAN_METHODS
from advlens.app.neurons.state import CLUSTER_METHOD, CLUSTER_METRIC, NEURON, NODES, PAIR, RF_QUANTILE

GRAPH = "dendrogram"
CLEAR = "dendrogram-clear"
CAPTION = "dendrogram-caption"

METRIC_LABELS = {
    "rf_l2": "L2 of the RF images",
    "mask_l2": "L2 of the RF masks",
    "rf_iou": "1 − IoU of the RF masks",
    "activation_l2": "L2 of the feature maps",
}
assert set(METRIC_LABELS) == set(measures.METRICS)
METHOD_LABELS = {"ward": "Ward", "complete": "complete", "average": "average"}
"""The linkages offered (average linkage draws hundreds of neurons as one long chain, see the README)."""


class DendrogramGeometry:
    """Positions of a clustering's nodes: leaves at x = 0 … K−1 in dendrogram order, merges at the mean
    x of their children and at their merge height."""

    def __init__(self, linkage: np.ndarray, leaves: np.ndarray, n_neurons: int) -> None:
        self.n_neurons = int(n_neurons)
        self.linkage = np.asarray(linkage)
        total = 2 * self.n_neurons - 1
        self.x = np.zeros(total)
        self.y = np.zeros(total)
        self.size = np.ones(total, dtype=np.int64)
        self.parent = np.full(total, -1, dtype=np.int64)
        self.children = np.full((total, 2), -1, dtype=np.int64)
        self.x[np.asarray(leaves, dtype=np.int64)] = np.arange(self.n_neurons)
        for i, (a, b, height, count) in enumerate(self.linkage):
            node, a, b = self.n_neurons + i, int(a), int(b)
            self.x[node] = 0.5 * (self.x[a] + self.x[b])
            self.y[node] = height
            self.size[node] = int(count)
            self.parent[[a, b]] = node
            self.children[node] = (a, b)

    @property
    def num_nodes(self) -> int:
        return len(self.x)

    def subtree(self, node: int) -> list[int]:
        """The node and all its descendants."""
        out, stack = [], [int(node)]
        while stack:
            current = stack.pop()
            out.append(current)
            if current >= self.n_neurons:
                stack.extend(int(c) for c in self.children[current])
        return out

    def segments(self, nodes: Iterable[int]) -> tuple[list, list]:
        """Polyline coordinates (None-separated) of the links from the given merge nodes to their children."""
        xs: list = []
        ys: list = []
        for node in nodes:
            if node < self.n_neurons:
                continue
            a, b = self.children[node]
            xs += [self.x[a], self.x[a], self.x[b], self.x[b], None]
            ys += [self.y[a], self.y[node], self.y[node], self.y[b], None]
        return xs, ys

    def stem(self, node: int) -> tuple[list, list]:
        """The vertical line from a node up to its parent's height."""
        parent = self.parent[node]
        top = self.y[parent] if parent >= 0 else self.y[node]
        return [self.x[node], self.x[node]], [self.y[node], top]


def tree_choice(metric, method) -> tuple[str, str]:
    """A checked (distance, linkage) pair; Ward linkage needs an L2 distance."""
    metric = validate.choice(metric, METRIC_LABELS, "distance")
    method = measures.default_method(metric) if method is None else validate.choice(method, METHOD_LABELS, "linkage")
    if method in EUCLIDEAN_METHODS and not metric.endswith("_l2"):
        raise validate.InvalidSelection(f"{METHOD_LABELS[method]} linkage needs L2 distances: with "
                                        f"{METRIC_LABELS[metric]} pick complete or average linkage")
    return metric, method


def geometry(session: Session, pair: int, quantile: float | None = None, metric: str = measures.DEFAULT_METRIC,
             method: str | None = None) -> DendrogramGeometry:
    clustering = session.clustering(pair, metric=metric, method=method, quantile=quantile)
    return DendrogramGeometry(clustering.linkage_, clustering.leaves_, clustering.n_neurons_)


def active_nodes(record: dict | None, pair: int | None, quantile: float | None,
                 metric: str = measures.DEFAULT_METRIC, method: str | None = None) -> list[int]:
    """The selected node ids when they belong to this tree (pair, RF threshold, distance, linkage), else none.

    The ``nodes`` store records the tree its node ids refer to, so picking another pair needs no round trip
    to clear it.
    """
    if not record or pair is None or record.get("pair") != pair or record.get("quantile") != quantile:
        return []
    method = measures.default_method(metric) if method is None else method
    recorded_metric = record.get("metric", measures.DEFAULT_METRIC)
    recorded_method = record.get("method") or measures.default_method(recorded_metric)
    if (recorded_metric, recorded_method) != (metric, method):
        return []
    return [int(n) for n in record.get("nodes", [])]


def toggle_node(nodes: Sequence[int] | None, node: int) -> list[int]:
    """Add a node to the selection, or remove it when already selected."""
    current = [int(n) for n in nodes or []]
    return [n for n in current if n != node] if node in current else current + [int(node)]


def selected_neurons(session: Session, pair: int, nodes: Sequence[int], quantile: float | None = None,
                     metric: str = measures.DEFAULT_METRIC, method: str | None = None) -> np.ndarray:
    """The neurons under the selected nodes (sorted ids)."""
    if not nodes:
        return np.zeros(0, dtype=np.int64)
    return session.clustering(pair, metric=metric, method=method, quantile=quantile).members([int(n) for n in nodes])


def dendrogram_figure(session: Session, pair: int | None, neuron: int | None = None,
                      nodes: Sequence[int] | None = None, quantile: float | None = None,
                      metric: str = measures.DEFAULT_METRIC, method: str | None = None) -> dict:
    """The dendrogram of a pair's neurons, the selected neuron in red and the selected subtrees in blue.

    Every argument is checked (:mod:`advlens.app.validate`); a bad one raises ``InvalidSelection``.
    """
    pair = validate.pair_id(session, pair)
    neuron = validate.neuron_id(session, neuron)
    nodes = validate.node_ids(session, nodes)
    quantile = validate.rf_quantile(session, quantile)
    metric, method = tree_choice(metric, method)
    if pair is None:
        return empty_figure("Pick a pair in the Image Grid to cluster its neurons.")
    geo = geometry(session, pair, quantile, metric, method)
    merges = range(geo.n_neurons, geo.num_nodes)
    xs, ys = geo.segments(merges)
    traces = [{"type": "scatter", "x": xs, "y": ys, "mode": "lines", "line": {"color": "#9a9a9a", "width": 1},
               "hoverinfo": "skip", "showlegend": False}]
    shapes = []
    covered = sorted({m for n in nodes for m in geo.subtree(n)})
    for n in nodes:  # shade each selected subtree, so small ones stay visible among hundreds of leaves
        leaves = [m for m in geo.subtree(n) if m < geo.n_neurons]
        shapes.append({"type": "rect", "x0": float(geo.x[leaves].min()) - 0.5, "x1": float(geo.x[leaves].max()) + 0.5,
                       "y0": 0, "y1": max(float(geo.y[n]), 1e-9), "fillcolor": "rgba(31,78,156,0.12)",
                       "line": {"width": 0}, "layer": "below"})
    if covered:
        xs, ys = geo.segments(covered)
        for n in nodes:  # the selected nodes' own stems, so a selected leaf shows too
            sx, sy = geo.stem(n)
            xs += [*sx, None]
            ys += [*sy, None]
        traces.append({"type": "scatter", "x": xs, "y": ys, "mode": "lines",
                       "line": {"color": GROUP_COLOR, "width": 2.2}, "hoverinfo": "skip", "showlegend": False})
    ids = np.arange(geo.num_nodes)
    leaf, merge = ids[:geo.n_neurons], ids[geo.n_neurons:]
    selected = np.zeros(geo.num_nodes, dtype=bool)
    selected[nodes] = True
    traces.append({
        "type": "scatter", "x": typed_array(geo.x[merge]), "y": typed_array(geo.y[merge]), "mode": "markers",
        "customdata": merge.tolist(), "showlegend": False,  # a list: Dash puts it into click events only then
        "marker": {"size": np.where(selected[merge], 10, 5).tolist(),
                   "color": np.where(selected[merge], GROUP_COLOR, "rgba(120,120,120,0.45)").tolist(),
                   "line": {"width": 0}},
        "hovertext": [f"node {n}: {geo.size[n]} neurons, height {geo.y[n]:.2f}" for n in merge],
        "hovertemplate": "%{hovertext}<extra>click: select subtree</extra>",
    })
    traces.append({
        "type": "scatter", "x": typed_array(geo.x[leaf]), "y": typed_array(geo.y[leaf]), "mode": "markers",
        "customdata": leaf.tolist(), "showlegend": False,
        "marker": {"size": np.where(selected[leaf], 8, 4).tolist(),
                   "color": np.where(selected[leaf], GROUP_COLOR, "rgba(150,150,150,0.5)").tolist()},
        "hovertext": [f"neuron {n}" for n in leaf], "hovertemplate": "%{hovertext}<extra></extra>",
    })
    top = float(geo.y.max()) if geo.num_nodes > 1 else 1.0
    if neuron is not None:
        sx, sy = geo.stem(neuron)
        traces.append({"type": "scatter", "x": [float(v) for v in sx], "y": [float(v) for v in sy],
                       "mode": "lines", "line": {"color": SELECTED_COLOR, "width": 3}, "hoverinfo": "skip",
                       "showlegend": False})
        traces.append({
            "type": "scatter", "x": [float(geo.x[neuron])], "y": [-0.04 * max(top, 1e-6)], "mode": "markers",
            "customdata": [neuron], "marker": {"symbol": "triangle-up", "size": 11, "color": SELECTED_COLOR},
            "showlegend": False, "hovertemplate": f"selected neuron {neuron}<extra></extra>",
        })
    count = len(selected_neurons(session, pair, nodes, quantile, metric, method)) if nodes else 0
    chosen = f" · {len(nodes)} node{'s' if len(nodes) > 1 else ''}, {count} neurons selected" if nodes else ""
    return figure(traces, {
        "title": {"text": f"pair {pair}: {geo.n_neurons} neurons{chosen}", "x": 0.01, "y": 0.985,
                  "font": {"size": 12}},
        "margin": {"l": 58, "r": 30, "t": 30, "b": 8}, "modebar": {"orientation": "v"}, "plot_bgcolor": "white",
        "dragmode": "zoom", "hovermode": "closest", "shapes": shapes,
        "xaxis": {"visible": False, "range": [-1, geo.n_neurons]},
        "yaxis": {"title": {"text": f"{METRIC_LABELS[metric]} · {METHOD_LABELS[method]} linkage",
                            "font": {"size": 10}}, "tickfont": {"size": 9},
                  "gridcolor": "#f0f0f0", "zeroline": False,
                  "range": [-0.08 * max(top, 1e-6), 1.04 * max(top, 1e-6)]},
        "uirevision": f"{pair}-{quantile}-{metric}-{method}",
    })


def caption(session: Session, pair: int | None, nodes: Sequence[int] | None, quantile: float | None,
            metric: str = measures.DEFAULT_METRIC, method: str | None = None) -> str:
    if pair is None:
        return ""
    if not nodes:
        return "Click nodes to select their subtrees; the Receptive Field View shows their RFs combined."
    members = selected_neurons(session, pair, nodes, quantile, metric, method)
    shown = ", ".join(str(int(m)) for m in members[:12]) + (" …" if len(members) > 12 else "")
    return f"{len(members)} neurons selected: {shown}"


def node_from_click(session: Session, click_data: dict | None) -> int | None:
    """The node id of a click on the dendrogram (``None``: not a node; an invalid id raises ``InvalidSelection``)."""
    if not isinstance(click_data, dict) or not isinstance(click_data.get("points"), list) or not click_data["points"]:
        return None
    point = click_data["points"][0]
    value = point.get("customdata") if isinstance(point, dict) else None
    if value is None:
        return None
    return validate.node_ids(session, [value[0] if isinstance(value, list) and value else value])[0]


def layout(session: Session, metric: str = measures.DEFAULT_METRIC, method: str | None = None) -> html.Section:
    """The view, opened on a distance and a linkage (default: the linkage of the distance)."""
    controls = [
        dcc.Dropdown(id=CLUSTER_METRIC, options=[{"label": v, "value": k} for k, v in METRIC_LABELS.items()],
                     value=metric, clearable=False, searchable=False, className="metric-dropdown"),
        dcc.Dropdown(id=CLUSTER_METHOD, options=[{"label": f"{v} linkage", "value": k}
                                                 for k, v in METHOD_LABELS.items()],
                     value=method or measures.default_method(metric), clearable=False, searchable=False,
                     className="method-dropdown"),
        html.Button("Clear nodes", id=CLEAR, n_clicks=0, className="button"),
    ]
    return common.panel("Neuron Cluster View", [
        dcc.Loading(dcc.Graph(id=GRAPH, config=GRAPH_CONFIG, className="dendrogram-graph", responsive=True),
                    delay_show=common.LOADING_DELAY_MS, parent_className="graph-fill"),
        html.Div(id=CAPTION, className="summary"),
    ], controls, "cluster-view")


# ---------------------------------------------------------------------------------------------- callbacks
@guarded(lambda text: (error_figure(text), ""))
def draw(session: Session, pair, neuron, record, quantile, metric=measures.DEFAULT_METRIC, method=None) -> tuple:
    record = validate.nodes_record(session, record)
    metric, method = tree_choice(metric, method)
    nodes = active_nodes(record, pair, quantile, metric, method)
    return (dendrogram_figure(session, pair, neuron, nodes, quantile, metric, method),
            caption(session, pair, nodes, quantile, metric, method))


@guarded(lambda text: no_update)
def pick(session: Session, trigger, click_data, record, pair, quantile, metric=measures.DEFAULT_METRIC,
         method=None) -> dict | None:
    """The selected nodes after a click on a node (toggles it); none after "Clear nodes", a neuron picked in the
    Neuron Vulnerability View or another distance or linkage (another tree)."""
    if trigger != GRAPH:
        return None if record else no_update
    record = validate.nodes_record(session, record)
    pair = validate.pair_id(session, pair)
    quantile = validate.rf_quantile(session, quantile)
    metric, method = tree_choice(metric, method)
    node = node_from_click(session, click_data)
    if pair is None or node is None:
        raise PreventUpdate
    nodes = toggle_node(active_nodes(record, pair, quantile, metric, method), node)
    return {"pair": pair, "quantile": quantile, "metric": metric, "method": method, "nodes": nodes}


def register(app: Dash, session: Session) -> None:
    app.callback(Output(GRAPH, "figure"), Output(CAPTION, "children"), Input(PAIR, "data"), Input(NEURON, "data"),
                 Input(NODES, "data"), Input(RF_QUANTILE, "value"), Input(CLUSTER_METRIC, "value"),
                 Input(CLUSTER_METHOD, "value"))(
        lambda pair, neuron, record, quantile, metric, method: draw(session, pair, neuron, record, quantile, metric,
                                                                    method))

    @app.callback(Output(NODES, "data"), Input(GRAPH, "clickData"), Input(CLEAR, "n_clicks"), Input(NEURON, "data"),
                  Input(CLUSTER_METRIC, "value"), Input(CLUSTER_METHOD, "value"),
                  State(NODES, "data"), State(PAIR, "data"), State(RF_QUANTILE, "value"), prevent_initial_call=True)
    def _pick(click_data, _clear, _neuron, metric, method, record, pair, quantile):
        return pick(session, ctx.triggered_id, click_data, record, pair, quantile, metric, method)
