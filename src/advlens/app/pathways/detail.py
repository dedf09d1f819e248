"""Detail view (spec-004 §6, Bluff Fig. 1C): the hovered or clicked neuron's feature visualisation, its
top dataset examples (receptive-field patches) and a chart of its importance against attack strength
with the original and target importances as reference lines. A neuron of the analysed layer links to
the Neurons page for a pair of this class pair with that neuron selected.
"""

from __future__ import annotations

import numpy as np
from dash import Dash, Input, Output, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.analysis.pathways import PathwayNeuronDetail
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, guarded
from advlens.app.figures import figure
from advlens.app.model.tiles import example_url, feature_url
from advlens.app.pathways.graph_view import check_pair
from advlens.app.pathways.state import ATTACK, FOCUS, GRAPH, PAIR, STRENGTH, check_pinned, strength_index
from advlens.app.urls import make_query
from advlens.pathways import GROUP_COLORS

BODY = "pathways-detail"
CHART = "pathways-strength-chart"
EXAMPLES = 6
"""Dataset examples shown (the features stage keeps more)."""


def strength_chart(detail: PathwayNeuronDetail, strength: int, names: list[str]) -> dict:
    """Importance for attacked(s) against ε (log axis), with the original and target importances as lines."""
    eps = detail.eps * 255
    valid = np.isfinite(detail.attacked)
    data = [{"type": "scatter", "mode": "lines+markers", "x": eps[valid].tolist(),
             "y": detail.attacked[valid].tolist(), "name": "attacked", "line": {"color": GROUP_COLORS["attack"]},
             "customdata": detail.attacked_count[valid].tolist(),
             "hovertemplate": "ε %{x:g}/255: %{y:.3g} (%{customdata} images)<extra>attacked</extra>"}]
    shapes, annotations = [], []
    for value, color, label in ((detail.original_importance, GROUP_COLORS["original"], names[detail.original]),
                                (detail.target_importance, GROUP_COLORS["target"], names[detail.target])):
        if np.isfinite(value):
            shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": value, "y1": value,
                           "line": {"color": color, "width": 2, "dash": "dash"}})
            annotations.append({"text": f"{label} (benign)", "xref": "paper", "x": 1, "y": value, "showarrow": False,
                                "xanchor": "right", "yanchor": "bottom", "font": {"size": 10, "color": "#444"}})
    if strength:
        shapes.append({"type": "line", "yref": "paper", "y0": 0, "y1": 1, "x0": float(eps[strength - 1]),
                       "x1": float(eps[strength - 1]), "line": {"color": "#999", "width": 1, "dash": "dot"}})
    if not valid.any():
        annotations.append({"text": "no attacked image at any strength", "xref": "paper", "yref": "paper", "x": 0.5,
                            "y": 0.5, "showarrow": False, "font": {"color": "#666"}})
    layout = {"height": 190, "margin": {"l": 44, "r": 8, "t": 6, "b": 34}, "showlegend": False,
              "plot_bgcolor": "white", "paper_bgcolor": "white", "shapes": shapes, "annotations": annotations,
              "xaxis": {"type": "log", "title": {"text": "ε (/255)", "font": {"size": 11}}, "tickvals": eps.tolist(),
                        "ticktext": [f"{e:g}" for e in eps], "gridcolor": "#eee"},
              "yaxis": {"title": {"text": "importance", "font": {"size": 11}}, "gridcolor": "#eee",
                        "zeroline": False}}
    return figure(data, layout)


def neurons_link(session: Session, original: int, target: int, layer: str, channel: int) -> html.Div | None:
    """On the analysed layer: a link to the Neurons page for a pair of this class pair with the neuron selected."""
    if layer != session.model.analysed_layer_name:
        return None
    pairs = session.pairs_in_cell(original, target)
    names = session.class_names
    if not len(pairs):
        return html.Div(f"No successful attack of the store turns {names[original]} into {names[target]}, so the "
                        "Neurons page has no pair of this class pair.", className="pw-hint")
    query = make_query({"pair": int(pairs[0]), "neuron": channel})
    return dcc.Link(f"Open neuron {channel} on the Neurons page (pair {int(pairs[0])}, one of {len(pairs)} "
                    f"{names[original]} → {names[target]} pairs)", href=f"/neurons{query}",
                    className="neuron-link", id="pathways-neurons-link")


def examples(session: Session, detail: PathwayNeuronDetail) -> list:
    names = session.class_names
    found = detail.examples
    if found is None or found.patches is None:
        return [common.message("No dataset examples for this layer.")]
    index = session.features.layers().index(detail.layer)
    tiles = []
    for rank in range(min(EXAMPLES, len(found.indices))):
        label, prediction = int(found.labels[rank]), int(found.predictions[rank])
        tiles.append(html.Div([
            html.Img(src=example_url(index, detail.channel, rank), className="example-img",
                     alt=f"example {rank + 1}", title=f"image {int(found.indices[rank])}"),
            html.Div(common.fmt(float(found.values[rank])), className="example-value", title="maximal activation"),
            html.Div(f"{names[label]}" + (f" → {names[prediction]}" if prediction != label else ""),
                     className="example-label"),
        ], className="example-tile"))
    return tiles


def details(session: Session, focus, pair, attack, strength) -> list:
    """The detail view of the focused neuron (or what to do)."""
    if focus is None:
        return [common.message("Hover a neuron of the graph to see its feature visualisation, dataset examples and "
                               "importance against attack strength; click it to pin it.")]
    pinned = check_pinned(session, [focus])
    layer, channel = pinned[0]
    original, target = check_pair(session, pair)
    attack = validate.choice(attack, session.sweep_info().attacks, "attack")
    strength = strength_index(session, strength)
    detail = session.pathway_neuron_detail(layer, channel, original, target, attack)
    names = session.class_names
    head = [html.H3(f"{layer} · channel {channel}")]
    channels = int(session.sweep_info().channels[session.check_pathway_layer(layer)])

    def rank(percentile: float) -> str:  # rank percentile r/C (1 = most important) as "rank k of C"
        return f"rank {round(channels * (1 - percentile)) + 1} of {channels}" if np.isfinite(percentile) else "no rank"

    facts = [html.Li(f"importance (median of the maximal activation): {names[original]} "
                     f"{common.fmt(detail.original_importance)} ({rank(detail.original_percentile)} in the layer), "
                     f"{names[target]} {common.fmt(detail.target_importance)} ({rank(detail.target_percentile)})")]
    if strength and np.isfinite(detail.attacked[strength - 1]):
        value = detail.attacked[strength - 1]
        facts.append(html.Li(f"attacked at {detail.eps[strength - 1] * 255:g}/255: {common.fmt(float(value))} "
                             f"({rank(detail.attacked_percentile[strength - 1])}), excitation "
                             f"{value - detail.original_importance:+.3g}"))
    if detail.visualization is not None:
        index = session.features.layers().index(layer)
        picture = html.Img(src=feature_url(index, channel, "large"), className="pw-detail-vis",
                           alt=f"feature visualisation of {layer} channel {channel}", title="feature visualisation")
    else:
        picture = common.message(detail.features_problem or "no feature visualisation", "warning")
    link = neurons_link(session, original, target, layer, channel)
    return [
        html.Div(head, className="channel-head"),
        html.Div([picture, html.Ul(facts, className="stats-notes")], className="pw-detail-top"),
        html.H4(f"Importance against strength ({attack.upper()})"),
        dcc.Graph(id=CHART, figure=strength_chart(detail, strength, names),
                  config={**GRAPH_CONFIG, "displayModeBar": False}),
        html.H4("Dataset examples (where the channel's top images excite it most)"),
        html.Div(examples(session, detail) if detail.examples is not None else
                 [common.message(detail.features_problem or "no dataset examples", "warning")],
                 className="example-row pw-examples"),
        link,
    ]


@guarded(lambda text: [common.message(text, "error")])
def draw(session: Session, focus, pair, attack, strength) -> list:
    return details(session, focus, pair, attack, strength)


@guarded(lambda text: no_update)
def focus_of(session: Session, event) -> list:
    """The neuron of a hover or click event, as ``[layer, channel]`` (nothing for edges and labels)."""
    if not isinstance(event, dict) or not event.get("points"):
        raise PreventUpdate
    custom = event["points"][0].get("customdata")
    if not isinstance(custom, (list, tuple)) or len(custom) != 2:
        raise PreventUpdate
    return check_pinned(session, [custom])[0]


def layout(focus) -> html.Section:
    return common.panel("Neuron detail", [
        dcc.Store(id=FOCUS, data=focus),
        dcc.Loading(html.Div(id=BODY, className="pw-detail-body"), delay_show=common.LOADING_DELAY_MS),
    ], [], "pw-detail-panel")


def register(app: Dash, session: Session) -> None:
    @app.callback(Output(FOCUS, "data"), Input(GRAPH, "hoverData"), Input(GRAPH, "clickData"),
                  prevent_initial_call=True)
    def _focus(hover, click):
        clicked = bool(ctx.triggered) and ctx.triggered[0]["prop_id"].endswith("clickData")
        return focus_of(session, click if clicked else hover)

    app.callback(Output(BODY, "children"), Input(FOCUS, "data"), Input(PAIR, "value"), Input(ATTACK, "value"),
                 Input(STRENGTH, "value"))(lambda focus, pair, attack, strength: draw(session, focus, pair, attack,
                                                                                     strength))
