"""The Neurons page's what-if panel (issue 13, item 3): the selected neurons of the analysed layer — the neuron of
the Neuron Vulnerability View, the subtrees selected in the Neuron Cluster View, or the top k of the view's ranking —
restored to benign, set to adversarial or zeroed, with the pair's class probabilities beside the original ones.

The panel itself is :mod:`advlens.app.what_if`; this module picks the neurons. The edit, the selection and k are in
the URL (``edit``, ``edit_of``, ``k``; see :mod:`advlens.app.neurons.state`).
"""

from __future__ import annotations

import numpy as np
from dash import Dash, Input, Output, dcc, html

from advlens import measures
from advlens.analysis import NEURON_MEASURES, Session
from advlens.app import validate, what_if
from advlens.app.common import error_figure, guarded
from advlens.app.neurons.cluster_view import active_nodes, selected_neurons
from advlens.app.neurons.neuron_view import MEASURE, SCORE_LABELS
from advlens.app.neurons.state import (
    BAND_KIND,
    DEFAULT_EDIT,
    DEFAULT_EDIT_OF,
    EDIT_SOURCES,
    NEURON,
    NODES,
    RF_QUANTILE,
    TOP_PERCENT,
    VIEWS_PAIR,
    default_k,
    edit_k,
)

IDS = what_if.WhatIfIds("what-if")
SOURCE = "what-if-source"
K = "what-if-k"

SOURCE_LABELS = {"neuron": "the selected neuron", "cluster": "the selected cluster", "top": "the top"}
assert tuple(SOURCE_LABELS) == EDIT_SOURCES

HINTS = {
    "neuron": "Select a neuron (click it in the Neuron Vulnerability View), or edit the selected cluster or the top k.",
    "cluster": "Select a cluster: click a node of the Neuron Cluster View (or edit the selected neuron or the top k).",
    "top": "Set k, the number of top-ranked neurons to edit.",
}


def chosen_neurons(session: Session, pair: int, source: str, neuron, record, quantile, measure, top_percent, kind,
                   k) -> tuple[np.ndarray, str]:
    """The neurons ``source`` selects and how the panel names them (checked; none: an empty array)."""
    if source == "neuron":
        neuron = validate.neuron_id(session, neuron)
        return (np.zeros(0, dtype=np.int64) if neuron is None else np.array([neuron])), f"neuron {neuron}"
    if source == "cluster":
        record = validate.nodes_record(session, record)
        tree = (measures.DEFAULT_METRIC, None) if record is None else (record["metric"], record["method"])
        nodes = active_nodes(record, pair, quantile, *tree)
        members = selected_neurons(session, pair, nodes, quantile, *tree)
        return members, f"the cluster of {len(members)} neuron{'s' if len(members) != 1 else ''}"
    measure = validate.choice(measure, NEURON_MEASURES, "measure")
    kind = session.band_kind if kind is None else validate.choice(kind, measures.BAND_KINDS, "band kind")
    top_percent = validate.number(20.0 if top_percent is None else top_percent, "top p%", 1, 100)
    if k is None:  # the k box is empty
        return np.zeros(0, dtype=np.int64), "the top k"
    k = edit_k(session, k)
    order, _ = session.neuron_ranking(pair, measure, top_percent=top_percent, quantile=quantile, kind=kind)
    return np.asarray(order[:k], dtype=np.int64), f"the top {k} by {SCORE_LABELS[measure]}"


@guarded(lambda text: (error_figure(text), ""))
def draw(session: Session, pair, mode, source, k, neuron, record, quantile, measure, top_percent=20.0,
         kind=None) -> tuple[dict, str]:
    """The what-if panel's figure and summary for the page's selection."""
    pair = validate.pair_id(session, pair)
    source = validate.choice(source, SOURCE_LABELS, "edited selection")
    quantile = validate.rf_quantile(session, quantile)
    layer = session.model_config["analysed_layer"]
    if pair is None:
        return what_if.panel_outputs(session, None, mode, layer, None, "", "")
    channels, what = chosen_neurons(session, pair, source, neuron, record, quantile, measure, top_percent, kind, k)
    return what_if.panel_outputs(session, pair, mode, layer, channels.tolist(), HINTS[source], what)


def layout(session: Session, mode: str = DEFAULT_EDIT, source: str = DEFAULT_EDIT_OF,
           k: int | None = None) -> html.Section:
    k = default_k(session) if k is None else k
    selection = [
        html.Span("edit", className="label"),
        dcc.RadioItems(id=SOURCE, options=[{"label": v, "value": s} for s, v in SOURCE_LABELS.items()], value=source,
                       inline=True, className="radio"),
        html.Span("k", className="label"),
        dcc.Input(id=K, type="number", min=1, max=session.num_neurons, step=1, value=k, debounce=True,
                  className="what-if-k"),
        html.Span("(in the view's order)", className="label"),
    ]
    return what_if.layout(IDS, selection, mode, title="What if")


def register(app: Dash, session: Session) -> None:
    app.callback(Output(IDS.graph, "figure"), Output(IDS.summary, "children"),
                 Input(VIEWS_PAIR, "data"), Input(IDS.mode, "value"), Input(SOURCE, "value"), Input(K, "value"),
                 Input(NEURON, "data"), Input(NODES, "data"), Input(RF_QUANTILE, "value"), Input(MEASURE, "value"),
                 Input(TOP_PERCENT, "value"), Input(BAND_KIND, "value"))(
        lambda pair, mode, source, k, neuron, record, quantile, measure, top_percent, kind: draw(
            session, pair, mode, source, k, neuron, record, quantile, measure, top_percent, kind))
