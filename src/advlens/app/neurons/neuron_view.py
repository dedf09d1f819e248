"""Neuron Vulnerability View (paper 001, §5.2.1, Fig. 2-c and Fig. 4).

The selected pair's activation × weight curves (benign image × benign class weight, adversarial image
× adversarial class weight) and the two class bands over the neurons, coloured by the labels'
colours and ordered by a vulnerability measure, with the measure's score per neuron below. The band
kind is chosen here: an interval of the class distribution (default: 10th–90th percentiles, where the
three regions of Fig. 4 show on a full store) or the confidence interval of the class mean.
Horizontally zoomable (drag, range slider, "first/last 25" buttons); hover shows a neuron's values;
a click selects the neuron.
"""

from __future__ import annotations

import numpy as np
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens import measures
from advlens.analysis import NEURON_MEASURES, Session
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, SELECTED_COLOR, class_color, empty_figure, error_figure, guarded, rgba
from advlens.app.figures import figure, typed_array
from advlens.app.urls import make_query
from advlens.app.neurons.state import (
    BADGE_REQUEST,
    BAND_KIND,
    DEFAULT_MEASURE,
    NEURON,
    PAIR,
    RF_QUANTILE,
    TOP_PERCENT,
    VIEWS_PAIR,
)
from advlens.errors import AdvlensError

MEASURE = "neuron-measure"
GRAPH = "neuron-graph"
PATHWAYS_LINK = "neuron-pathways-link"
PAIR_LINKS = "neuron-pair-links"

MEASURE_LABELS = {
    "band_gap": "band gap (neuron perturbation)",
    "iou_bmap": "IoU of the benign RF with bMap",
    "iou_amap": "IoU of the adversarial RF with aMap",
    "substitution": "direct substitution",
}
assert tuple(MEASURE_LABELS) == NEURON_MEASURES

SCORE_LABELS = {"band_gap": "band gap", "iou_bmap": "IoU (bMap)", "iou_amap": "IoU (aMap)",
                "substitution": "Δ prob."}

ZOOM_WINDOW = 25


def band_label(session: Session, kind: str) -> str:
    """What a band kind shows, at the level the session uses for it (e.g. "10th–90th percentile")."""
    level = session.band_level if kind == session.band_kind else measures.BAND_LEVELS[kind]
    if kind == "ci":
        return f"{100 * level:g}% CI of the class mean"
    tail = 50 * (1 - level)
    return f"class {_ordinal(tail)}–{_ordinal(100 - tail)} percentile"


def _ordinal(value: float) -> str:
    number = f"{value:g}"
    if not number.isdigit():
        return f"{number}th"
    n = int(number)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def neuron_figure(session: Session, pair: int | None, measure: str = "band_gap", neuron: int | None = None,
                  quantile: float | None = None, top_percent: float = 20.0, kind: str | None = None) -> dict:
    """Curves, bands and the measure's scores of a pair, neurons ordered by the measure.

    Every argument is checked (:mod:`advlens.app.validate`); a bad one raises ``InvalidSelection``.
    """
    pair = validate.pair_id(session, pair)
    measure = validate.choice(measure, NEURON_MEASURES, "measure")
    neuron = validate.neuron_id(session, neuron)
    quantile = validate.rf_quantile(session, quantile)
    top_percent = validate.number(top_percent, "top p%", 1, 100)
    kind = session.band_kind if kind is None else validate.choice(kind, measures.BAND_KINDS, "band kind")
    if pair is None:
        return empty_figure("Pick a pair in the Image Grid to see its neurons.")
    info = session.pair_info(pair)
    try:
        order, scores = session.neuron_ranking(pair, measure, top_percent=top_percent, quantile=quantile, kind=kind)
    except AdvlensError as exc:  # e.g. the store's model cannot be loaded: the other measures still work
        return error_figure(f"{MEASURE_LABELS[measure]} unavailable: {exc}")
    curves = session.curves(pair)
    bands = session.bands(kind=kind)
    benign, adversarial = curves.benign.numpy()[order], curves.adversarial.numpy()[order]
    b_low, b_high = bands.low[info["label"]].numpy()[order], bands.high[info["label"]].numpy()[order]
    a_low, a_high = bands.low[info["adv_pred"]].numpy()[order], bands.high[info["adv_pred"]].numpy()[order]
    score = np.asarray(scores)[order]
    count = len(order)
    x = [f"#{int(n)}" for n in order]  # non-numeric categories: plotly reads numeric strings as positions
    ids = [int(n) for n in order]  # lists, not arrays: Dash puts customdata into click events only then
    b_color, a_color = class_color(info["label"]), class_color(info["adv_pred"])
    b_name, a_name = info["label_name"], info["adv_name"]

    plot = []
    for low, high, name, color in ((b_low, b_high, b_name, b_color), (a_low, a_high, a_name, a_color)):
        edge = {"width": 0.8, "color": rgba(color, 0.55)}
        plot.append({"type": "scatter", "x": x, "y": typed_array(low), "mode": "lines", "line": edge,
                     "customdata": ids, "showlegend": False, "legendgroup": f"band-{name}", "hoverinfo": "skip",
                     "xaxis": "x", "yaxis": "y"})
        plot.append({"type": "scatter", "x": x, "y": typed_array(high), "mode": "lines", "line": edge,
                     "fill": "tonexty", "fillcolor": rgba(color, 0.3), "name": f"{name} band",
                     "legendgroup": f"band-{name}", "customdata": [[i, round(float(v), 6)] for i, v in zip(ids, low)],
                     "hovertemplate": f"{name} band [%{{customdata[1]:.3f}}, %{{y:.3f}}]<extra></extra>",
                     "xaxis": "x", "yaxis": "y"})
    for values, name, color, side in ((benign, f"benign ({b_name})", b_color, "benign"),
                                      (adversarial, f"adversarial ({a_name})", a_color, "adversarial")):
        plot.append({"type": "scatter", "x": x, "y": typed_array(values), "mode": "lines",
                     "line": {"color": color, "width": 1.8}, "name": name, "customdata": ids,
                     "hovertemplate": f"{side} a×w %{{y:.3f}}<extra></extra>", "xaxis": "x", "yaxis": "y"})
    if measure == "band_gap":
        bar_colors = np.where(score > 0, a_color, np.where(score < 0, b_color, "#bbbbbb")).tolist()
    else:
        bar_colors = "#777777"
    plot.append({"type": "bar", "x": x, "y": typed_array(score), "marker": {"color": bar_colors, "line": {"width": 0}},
                 "customdata": ids, "name": SCORE_LABELS[measure], "showlegend": False,
                 "hovertemplate": f"{SCORE_LABELS[measure]} %{{y:.4f}}<extra></extra>", "xaxis": "x2", "yaxis": "y2"})
    shapes = [] if neuron is None else [
        {"type": "line", "x0": f"#{neuron}", "x1": f"#{neuron}", "xref": xref, "y0": 0, "y1": 1,
         "yref": f"{yref} domain", "line": {"color": SELECTED_COLOR, "width": 2}}
        for xref, yref in (("x", "y"), ("x2", "y2"))]
    buttons = [
        {"label": "all", "method": "relayout", "args": [{"xaxis2.range": [-0.5, count - 0.5]}]},
        {"label": f"first {ZOOM_WINDOW}", "method": "relayout",
         "args": [{"xaxis2.range": [-0.5, min(count, ZOOM_WINDOW) - 0.5]}]},
        {"label": f"last {ZOOM_WINDOW}", "method": "relayout",
         "args": [{"xaxis2.range": [max(0, count - ZOOM_WINDOW) - 0.5, count - 0.5]}]},
    ]
    x_axis = {"type": "category", "showgrid": False, "tickfont": {"size": 9},
              "unifiedhovertitle": {"text": "neuron %{x}"}, "domain": [0, 1]}
    y_axis = {"fixedrange": True, "zeroline": True, "zerolinecolor": "#ccc", "gridcolor": "#f0f0f0",
              "tickfont": {"size": 9}}
    layout = {
        "title": {"text": f"pair {pair}: {b_name} → {a_name} · {count} neurons by {MEASURE_LABELS[measure]} · "
                          f"bands: {band_label(session, kind)}",
                  "x": 0.01, "y": 0.985, "font": {"size": 12}},
        "margin": {"l": 58, "r": 30, "t": 52, "b": 52}, "modebar": {"orientation": "v"}, "hovermode": "x unified",
        "dragmode": "zoom", "plot_bgcolor": "white", "shapes": shapes,
        "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom",
                   "font": {"size": 10}},
        "uirevision": f"{pair}-{measure}-{kind}", "bargap": 0.1,
        "updatemenus": [{"type": "buttons", "direction": "right", "buttons": buttons, "x": 0.0, "xanchor": "left",
                         "y": 1.0, "yanchor": "bottom", "pad": {"t": 0, "b": 2}, "font": {"size": 10},
                         "showactive": False}],
        # two rows sharing the neuron axis: curves and bands above (76%), the measure's scores below
        "xaxis": {**x_axis, "anchor": "y", "matches": "x2", "showticklabels": False},
        "xaxis2": {**x_axis, "anchor": "y2", "title": {"text": "neurons (id), most vulnerable first",
                                                       "font": {"size": 10}, "standoff": 2}},
        "yaxis": {**y_axis, "anchor": "x", "domain": [0.2704, 1.0],
                  "title": {"text": "activation × weight", "font": {"size": 10}}},
        "yaxis2": {**y_axis, "anchor": "x2", "domain": [0.0, 0.2304],
                   "title": {"text": SCORE_LABELS[measure], "font": {"size": 10}}},
    }
    return figure(plot, layout)


def neuron_from_click(session: Session, click_data: dict | None) -> int | None:
    """The neuron id of a click on the view (``None``: not a neuron; an invalid id raises ``InvalidSelection``)."""
    if not isinstance(click_data, dict) or not isinstance(click_data.get("points"), list):
        return None
    for point in click_data["points"]:
        data = point.get("customdata") if isinstance(point, dict) else None
        value = data[0] if isinstance(data, list) and data else data
        if value is not None:
            return validate.neuron_id(session, value)
    return None


def layout(session: Session, measure: str = DEFAULT_MEASURE) -> html.Section:
    controls = [
        html.Span("sort by", className="label"),
        dcc.Dropdown(id=MEASURE, options=[{"label": v, "value": k} for k, v in MEASURE_LABELS.items()],
                     value=measure, clearable=False, searchable=False, className="measure-dropdown"),
        html.Span("bands", className="label"),
        dcc.Dropdown(id=BAND_KIND, options=[{"label": band_label(session, k), "value": k} for k in measures.BAND_KINDS],
                     value=session.band_kind, clearable=False, searchable=False, className="band-dropdown"),
    ]
    return common.panel("Neuron Vulnerability View", [
        dcc.Loading(dcc.Graph(id=GRAPH, config=GRAPH_CONFIG, className="neuron-graph"),
                    delay_show=common.LOADING_DELAY_MS),
        dcc.Store(id=BADGE_REQUEST, data=None),
        html.Div([html.Div(id=PATHWAYS_LINK, className="page-link"), html.Div(id=PAIR_LINKS, className="page-link")],
                 className="page-links"),
    ], controls, "neuron-view")


# ---------------------------------------------------------------------------------------------- callbacks
@guarded(error_figure)
def draw(session: Session, pair, measure, neuron, quantile, top_percent, kind=None) -> dict:
    return neuron_figure(session, pair, measure, neuron, quantile, 20.0 if top_percent is None else top_percent,
                         kind)


@guarded(lambda text: common.message(text, "error"))
def pathways_link(session: Session, pair, neuron) -> html.Span | dcc.Link | None:
    """A link to the Pathways page on this pair's class pair (true → adversarial label), with the neuron's detail
    open; without a sweep stage, the command that adds it."""
    if pair is None:
        return None
    info = session.pair_info(validate.pair_id(session, pair))
    if not session.has_sweep():
        return html.Span(["Class pathways need the sweep stage: ", html.Code(session.sweep_command())])
    params = {"true": info["label"], "adv": info["adv_pred"]}
    if neuron is not None:
        params["neuron"] = validate.neuron_id(session, neuron)
    return dcc.Link(f"Show the class pathways of {info['label_name']} → {info['adv_name']}",
                    href="/pathways" + make_query(params))


@guarded(lambda text: common.message(text, "error"))
def pair_links(session: Session, pair) -> list | None:
    """Links to this pair on the Profiles and Datapaths pages (those pages check the id and say what they need)."""
    if pair is None:
        return None
    pair = validate.pair_id(session, pair)
    query = make_query({"pair": pair})
    return [dcc.Link("Open this pair's activation profile", href=f"/profiles{query}"), html.Span(" · "),
            dcc.Link("Open this pair's datapaths", href=f"/datapaths{query}")]


@guarded(lambda text: no_update)
def pick(session: Session, click_data, current) -> int:
    """The neuron of a click on the view."""
    neuron = neuron_from_click(session, click_data)
    if neuron is None:
        raise PreventUpdate
    return no_update if neuron == current else neuron


def register(app: Dash, session: Session) -> None:
    app.callback(Output(GRAPH, "figure"), Input(PAIR, "data"), Input(MEASURE, "value"), Input(NEURON, "data"),
                 Input(RF_QUANTILE, "value"), Input(TOP_PERCENT, "value"), Input(BAND_KIND, "value"))(
        lambda pair, measure, neuron, quantile, top_percent, kind: draw(session, pair, measure, neuron, quantile,
                                                                        top_percent, kind))
    app.callback(Output(PATHWAYS_LINK, "children"), Input(VIEWS_PAIR, "data"), Input(NEURON, "data"))(
        lambda pair, neuron: pathways_link(session, pair, neuron))
    app.callback(Output(PAIR_LINKS, "children"), Input(VIEWS_PAIR, "data"))(lambda pair: pair_links(session, pair))
    app.callback(Output(NEURON, "data"), Input(GRAPH, "clickData"), State(NEURON, "data"),
                 prevent_initial_call=True)(lambda click_data, current: pick(session, click_data, current))
