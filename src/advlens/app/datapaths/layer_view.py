"""Layer level (spec-003 §4, paper 003 §5.3): the treemap set view of the open layer's critical maps.

Sets: the critical maps of the adversarial, the source and the representative target at this layer. Encodings
(a toggle): *activation difference* acti(A) − acti(B) of a chosen ordered pair (solid fill; acti = the map's
spatial maximum), *contribution* (dotted fill): the contributions of the last step of the chain whose source is
this layer (Eq. 7/8), or, without one, the contribution to the prediction, the datapath's own gate z. Beside
it the top 10 maps by the encoded value, maps outside every datapath included and marked. Clicking a cell or
a list entry opens the map in the neuron view.
"""

from __future__ import annotations

import numpy as np
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.analysis.datapaths_pair import PairDatapaths
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, guarded
from advlens.app.datapaths import network
from advlens.app.datapaths.river_figure import ROLE_COLORS, ROLE_NAMES
from advlens.app.datapaths.state import (
    DIFF,
    DIFFS,
    ENCODING,
    ENCODINGS,
    LAYER,
    MAP,
    READY,
    ROLE,
    ROLES,
    TRACE,
    aoi_cells,
    check_layer,
    check_map,
    check_trace,
)
from advlens.app.datapaths.treemap_figure import HEIGHT, WIDTH, treemap_figure
from advlens.datapaths.treemap import treemap_layout

TREEMAP = "dp-treemap"
CAPTION = "dp-treemap-caption"
TOP = "dp-top"
TOP_ITEM = "dp-top-item"
TOP_COUNT = 10
DIFF_LABELS = {"auto": "auto (src − adv when diverging, adv − tar when merging)",
               **{d: f"{d.split('-')[0]} − {d.split('-')[1]}" for d in DIFFS if d != "auto"}}


def resolve_diff(session: Session, paths: PairDatapaths, layer: str, diff: str) -> tuple[str, str]:
    """The ordered pair (A, B) of the activation difference; ``auto``: adv − tar in a merging segment, else
    src − adv (the case study's "large = lost in the adversarial")."""
    if diff != "auto":
        a, b = diff.split("-")
        return a, b
    return ("adv", "tar") if network.layer_phase(session, paths, layer) == "merging" else ("src", "adv")


def step_for(trace: list[dict], layer: str) -> dict | None:
    """The last step of the chain whose source layer is ``layer``."""
    return next((step for step in reversed(trace) if step["source"] == layer), None)


def contribution_values(session: Session, paths: PairDatapaths, step: dict) -> tuple[np.ndarray, float]:
    """(contribution of every map of the step's source layer for the step's role, seconds)."""
    gate = session.check_datapath_layer(step["layer"])
    result = session.datapath_contribution(paths.pair, step["layer"], step["map"], step["source"], role=step["role"],
                                           aoi=aoi_cells(step["aoi"], gate.grid), method=step["method"])
    return result.values.astype(np.float64), result.seconds


def encoded(session: Session, paths: PairDatapaths, layer: str, encoding: str, diff: str, trace: list[dict],
            role: str) -> tuple[np.ndarray, str]:
    """(value of every map of ``layer``, what the values are)."""
    if encoding == "activation":
        a, b = resolve_diff(session, paths, layer, diff)
        acti = paths.layer_acti(layer).astype(np.float64)
        return acti[paths.row(a)] - acti[paths.row(b)], (f"activation difference acti({a}) − acti({b}) (spatial "
                                                         "max; solid fill rises for > 0, drops for < 0)")
    step = step_for(trace, layer)
    if step is not None:
        values, _ = contribution_values(session, paths, step)
        where = "the area of interest of" if step["aoi"] is not None else "the whole of"
        return values, (f"contribution ({step['method'].upper()}, seen from the {ROLE_NAMES[step['role']]}) to "
                        f"{where} map {step['map']} of {step['layer']} (dotted fill ∝ z)")
    role = "adv" if role == "auto" else role
    return (paths.layer_z(layer)[paths.row(role)].astype(np.float64),
            f"contribution to the prediction: the {ROLE_NAMES[role]} datapath's gates z (dotted fill ∝ z)")


def hovers(paths: PairDatapaths, layer: str, values: np.ndarray) -> dict[int, str]:
    acti = paths.layer_acti(layer)
    z = paths.layer_z(layer)
    critical = paths.layer_critical(layer)
    rows = {role: paths.row(role) for role in ROLES}
    out = {}
    for m in range(acti.shape[1]):
        sets = [ROLE_NAMES[r] for r in ROLES if critical[rows[r], m]] or ["no datapath"]
        out[m] = "<br>".join([
            f"<b>map {m}</b> · in {', '.join(sets)}", f"value {values[m]:+.3f}",
            "acti (max) " + " · ".join(f"{r} {acti[rows[r], m]:.3f}" for r in ROLES),
            "z " + " · ".join(f"{r} {z[rows[r], m]:.2f}" for r in ROLES), "click to open its neuron view"])
    return out


def set_legend(sets: list[list[int]]) -> list:
    """The three sets with their colours and sizes (a set whose maps are all shared has no cell of its own)."""
    items = [html.Span([html.Span(className="dp-swatch", style={"background": ROLE_COLORS[r]}),
                        f"{ROLE_NAMES[r]} {len(s)} maps"], className="legend-item") for r, s in zip(ROLES, sets)]
    items.append(html.Span("· a shared group sits in its largest set and carries the frames of all its sets; every "
                           "map is an equal cell", className="legend-item"))
    return items


def top_list(paths: PairDatapaths, layer: str, values: np.ndarray, selected: int | None) -> list:
    """The top :data:`TOP_COUNT` maps by value, maps outside every datapath marked."""
    critical = paths.layer_critical(layer)
    anywhere = critical[[paths.row(r) for r in ROLES]].any(axis=0)
    order = sorted(range(len(values)), key=lambda m: (-values[m], m))[:TOP_COUNT]
    items = []
    for rank, m in enumerate(order, start=1):
        chips = [html.Span(className="dp-swatch", style={"background": ROLE_COLORS[r]}, title=ROLE_NAMES[r])
                 for r in ROLES if critical[paths.row(r), m]]
        items.append(html.Li(html.Button(
            [f"{rank}. map {m}", *chips, html.Span(f" {values[m]:+.3f}", className="dp-top-value"),
             html.Span(" outside every datapath", className="dp-outside") if not anywhere[m] else ""],
            id={"type": TOP_ITEM, "map": int(m)}, n_clicks=0,
            className="dp-top-button" + (" selected" if m == selected else ""))))
    return [html.Div(f"Top {len(order)} maps of {layer}", className="pw-label"),
            html.Ol(items, className="dp-top-list")]


def draw(session: Session, ready, layer, encoding, diff, trace, map_, role) -> tuple:
    """(treemap figure, caption, top list)."""
    paths = network.ready_paths(session, ready)
    if paths is None:
        return common.empty_figure("The treemap of a layer's critical maps appears here once a pair is open.",
                                   height=HEIGHT), "", []
    layer = check_layer(session, layer)
    if layer is None:
        return common.empty_figure("Click a layer (a column) of the river to see its critical maps: the maps of each "
                                   "datapath, shared and unique.", height=HEIGHT), "", []
    encoding = validate.choice(encoding, ENCODINGS, "encoding")
    diff = validate.choice(diff, DIFFS, "difference")
    role = validate.choice(role, ("auto", *ROLES), "role")
    trace = check_trace(session, trace)
    map_ = check_map(session, layer, map_)
    values, what = encoded(session, paths, layer, encoding, diff, trace, role)
    critical = paths.layer_critical(layer)
    sets = [np.flatnonzero(critical[paths.row(r)]).tolist() for r in ROLES]
    if not any(sets):
        fig = common.empty_figure(f"No map of {layer} is critical for any of the three datapaths: every gate here is "
                                  "below its threshold. Open another layer.", height=HEIGHT)
    else:
        tree = treemap_layout(sets, width=WIDTH, height=HEIGHT, values=values)
        fig = treemap_figure(tree, ROLES, values, encoding, hovers(paths, layer, values), [len(s) for s in sets],
                             map_)
    union = len(set().union(*map(set, sets)))
    caption = (f"{layer}: {union} of {len(values)} maps are critical in at least one datapath "
               f"({', '.join(f'{ROLE_NAMES[r]} {len(s)}' for r, s in zip(ROLES, sets))}; "
               f"{len(values) - union} maps in no datapath are not drawn) · encoded: {what} · click a map")
    return fig, [html.Div(set_legend(sets), className="legend"), caption], top_list(paths, layer, values, map_)


@guarded(lambda text: (common.error_figure(text), "", []))
def draw_view(session: Session, *args) -> tuple:
    return draw(session, *args)


@guarded(lambda text: no_update)
def pick(session: Session, event, layer) -> int:
    """The map of a click on the treemap."""
    if not isinstance(event, dict) or not event.get("points"):
        raise PreventUpdate
    custom = event["points"][0].get("customdata")
    if not isinstance(custom, (list, tuple)) or len(custom) != 2 or custom[0] != "map":
        raise PreventUpdate
    return check_map(session, check_layer(session, layer), custom[1])


@guarded(lambda text: no_update)
def pick_top(session: Session, clicks, layer) -> int:
    """The map of a click in the top list."""
    triggered = ctx.triggered_id if ctx.triggered_id is not None else None
    if not isinstance(triggered, dict) or not any(clicks or []):
        raise PreventUpdate
    return check_map(session, check_layer(session, layer), triggered.get("map"))


def controls(encoding: str, diff: str) -> list:
    return [
        html.Div([html.Label("Encoding", className="pw-label"),
                  dcc.RadioItems(id=ENCODING, value=encoding, inline=True, className="pw-radio",
                                 options=[{"label": "activation difference (solid)", "value": "activation"},
                                          {"label": "contribution (dotted)", "value": "contribution"}])],
                 className="pw-field"),
        html.Div([html.Label("Difference", className="pw-label"),
                  dcc.Dropdown(id=DIFF, value=diff, clearable=False, searchable=False,
                               options=[{"label": DIFF_LABELS[d], "value": d} for d in DIFFS])],
                 className="pw-field dp-diff"),
        html.Div([html.Label("Contribution seen from", className="pw-label"),
                  dcc.RadioItems(id=ROLE, value="auto", inline=True, className="pw-radio",
                                 options=[{"label": "auto", "value": "auto"},
                                          *({"label": ROLE_NAMES[r], "value": r} for r in ROLES)])],
                 className="pw-field"),
    ]


def layout(encoding: str, diff: str) -> html.Section:
    return common.panel("Layer level · treemap of the critical maps", [
        html.Div(controls(encoding, diff), className="dp-controls"),
        html.Div(id=CAPTION, className="summary"),
        html.Div([dcc.Loading(dcc.Graph(id=TREEMAP, config={**GRAPH_CONFIG, "displayModeBar": False},
                                        figure=common.empty_figure("", height=HEIGHT)),
                              delay_show=common.LOADING_DELAY_MS),
                  html.Div(id=TOP, className="dp-top")], className="dp-layer-body"),
    ], [], "dp-layer-panel")


def register(app: Dash, session: Session) -> None:
    app.callback(Output(TREEMAP, "figure"), Output(CAPTION, "children"), Output(TOP, "children"),
                 Input(READY, "data"), Input(LAYER, "data"), Input(ENCODING, "value"), Input(DIFF, "value"),
                 Input(TRACE, "data"), Input(MAP, "data"), Input(ROLE, "value"))(
        lambda *args: draw_view(session, *args))
    app.callback(Output(MAP, "data", allow_duplicate=True), Input(TREEMAP, "clickData"), State(LAYER, "data"),
                 prevent_initial_call=True)(lambda event, layer: pick(session, event, layer))
    app.callback(Output(MAP, "data", allow_duplicate=True), Input({"type": TOP_ITEM, "map": ALL}, "n_clicks"),
                 State(LAYER, "data"), prevent_initial_call=True)(
        lambda clicks, layer: pick_top(session, clicks, layer))
