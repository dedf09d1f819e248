"""Contribution analysis step by step (spec-003 §2, §4 selection flow; paper 003 Fig. 4) and its breadcrumb.

With a map open (and optionally an AOI drawn), the user picks an earlier gate layer and SGD (Eq. 8) or the fast
first-order approximation, and traces: the contributions of every map of that layer to the AOI of the open map
are computed for the three examples jointly (``session.datapath_contribution``), the step is appended to the
chain, and the earlier layer opens in the treemap in contribution mode, whose top contributor the user clicks
next. The AOI is kept. The breadcrumb lists the chain; clicking a step goes back to it (undo).

A step is ``{"layer", "map", "aoi", "source", "method", "role"}``: ids only. Its role is whose contributions the
treemap shows: by default the example whose AOI is more active (where the feature *is* detected).
"""

from __future__ import annotations

import time

import numpy as np
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import guarded
from advlens.app.datapaths import network
from advlens.app.datapaths.layer_view import contribution_values
from advlens.app.datapaths.river_figure import ROLE_NAMES
from advlens.app.datapaths.state import (
    AOI,
    ENCODING,
    LAYER,
    MAP,
    METHOD,
    METHODS,
    READY,
    ROLE,
    ROLES,
    SOURCE,
    TRACE,
    aoi_cells,
    check_aoi,
    check_layer,
    check_map,
    check_trace,
)

RUN = "dp-trace-run"
STATUS = "dp-trace-status"
CRUMBS = "dp-crumbs"
CRUMB = "dp-crumb"


def sources(session: Session, layer: str | None) -> list[dict]:
    """The gate layers before ``layer`` that feed it (the layers a contribution can come from), nearest first."""
    if layer is None:
        return []
    names = [g.name for g in session.datapath_layers()]
    graph = session.model.graph
    earlier = [n for n in names[:names.index(layer)] if graph.reaches(n, layer)]
    return [{"label": n, "value": n} for n in reversed(earlier)]


def source_choices(session: Session, layer, current) -> tuple[list[dict], str | None]:
    """(options, value) of the source-layer dropdown for the open layer (the current value kept when valid)."""
    options = sources(session, check_layer(session, layer))
    values = [o["value"] for o in options]
    return options, current if current in values else (values[0] if values else None)


def auto_role(session: Session, pair: int, layer: str, map_: int, aoi: dict | None) -> str:
    """The example whose AOI of the map is most active (spec-003 §2 "Shown")."""
    found = session.datapath_activation_maps(pair, layer, map_)
    mask = aoi_cells(aoi, found.maps.shape[1:])
    means = [float(m[mask].mean()) if mask is not None else float(m.mean()) for m in found.maps]
    return ROLES[int(np.argmax(means))]


def run(session: Session, ready, layer, map_, aoi, source, method, role, trace) -> tuple:
    """(chain, layer, map, encoding, status) after tracing the open map's AOI back to ``source``."""
    paths = network.ready_paths(session, ready)
    if paths is None:
        raise validate.InvalidSelection("no pair is open: pick a pair first")
    layer = check_layer(session, layer)
    map_ = check_map(session, layer, map_) if layer is not None else None
    if layer is None or map_ is None:
        raise validate.InvalidSelection("open a map first (click one in the treemap), then trace its contributions")
    source = check_layer(session, source)
    if source is None or source not in [o["value"] for o in sources(session, layer)]:
        raise validate.InvalidSelection(f"pick a source layer before {layer} that feeds it")
    method = validate.choice(method, METHODS, "method")
    role = validate.choice(role, ("auto", *ROLES), "role")
    aoi = check_aoi(aoi)
    trace = check_trace(session, trace)
    if role == "auto":
        role = auto_role(session, paths.pair, layer, map_, aoi)
    step = {"layer": layer, "map": map_, "aoi": aoi, "source": source, "method": method, "role": role}
    started = time.perf_counter()
    values, _ = contribution_values(session, paths, step)
    seconds = time.perf_counter() - started
    top = int(np.argmax(values))
    status = (f"{source} → map {map_} of {layer} ({method.upper()}, {ROLE_NAMES[role]}; {seconds:.1f} s): top "
              f"contributor map {top} (z = {values[top]:.2f}). Click a map in the treemap to follow it.")
    return [*trace, step], source, None, "contribution", status


@guarded(lambda text: (no_update, no_update, no_update, no_update, common.message(text, "error")))
def run_view(session: Session, *args) -> tuple:
    return run(session, *args)


def crumbs(session: Session, trace, layer, map_) -> list:
    """The chain as a breadcrumb: every step (a button back to it), then where the user is now."""
    trace = check_trace(session, trace)
    layer = check_layer(session, layer)
    items: list = []
    for i, step in enumerate(trace):
        aoi = "AOI" if step["aoi"] is not None else "whole map"
        items.append(html.Button(f"{step['layer']} · map {step['map']} ({aoi})",
                                 id={"type": CRUMB, "index": i}, n_clicks=0, className="dp-crumb",
                                 title=f"go back to this map (undo the steps after it); traced to {step['source']} "
                                       f"with {step['method'].upper()}"))
        items.append(html.Span(f" ← {step['source']} ({step['method'].upper()}) ", className="dp-crumb-arrow"))
    if layer is not None:
        here = f"{layer} · map {map_}" if map_ is not None else f"{layer} (pick a map)"
        items.append(html.Span(here, className="dp-crumb-here"))
    if not items:
        return [html.Span("The chain of traced maps appears here: open a map, draw an AOI, trace it to an earlier "
                          "layer, click a contributor, repeat.", className="pw-hint")]
    return items


def back(session: Session, clicks, trace) -> tuple:
    """(chain, layer, map, AOI) restored to the clicked step (the steps from it on are undone)."""
    triggered = ctx.triggered_id
    if not isinstance(triggered, dict) or not any(clicks or []):
        raise PreventUpdate
    trace = check_trace(session, trace)
    index = validate.integer(triggered.get("index"), "step")
    if not 0 <= index < len(trace):
        raise validate.InvalidSelection(f"step {index} is not in the chain of {len(trace)} steps")
    step = trace[index]
    return trace[:index], step["layer"], step["map"], step["aoi"]


def layout() -> html.Div:
    return html.Div([
        html.Div([
            html.Label("Trace the AOI back to", className="pw-label"),
            dcc.Dropdown(id=SOURCE, options=[], value=None, clearable=False, searchable=False,
                         placeholder="an earlier layer", className="dp-source"),
            dcc.RadioItems(id=METHOD, value="sgd", inline=True, className="pw-radio",
                           options=[{"label": "SGD (Eq. 8)", "value": "sgd"},
                                    {"label": "fast (first order)", "value": "fast"}]),
            html.Button("Trace contributions", id=RUN, n_clicks=0, className="button dp-run"),
        ], className="dp-trace-controls"),
        dcc.Loading(html.Div(id=STATUS, className="dp-hint"), delay_show=common.LOADING_DELAY_MS),
        html.Div([html.Span("Chain: ", className="pw-label"), html.Span(id=CRUMBS)], className="dp-crumbs"),
    ], className="dp-trace")


def register(app: Dash, session: Session) -> None:
    app.callback(Output(SOURCE, "options"), Output(SOURCE, "value"), Input(LAYER, "data"), State(SOURCE, "value"))(
        guarded(lambda text: ([], None))(lambda layer, current: source_choices(session, layer, current)))
    app.callback(Output(TRACE, "data"), Output(LAYER, "data", allow_duplicate=True),
                 Output(MAP, "data", allow_duplicate=True), Output(ENCODING, "value", allow_duplicate=True),
                 Output(STATUS, "children"), Input(RUN, "n_clicks"), State(READY, "data"), State(LAYER, "data"),
                 State(MAP, "data"), State(AOI, "data"), State(SOURCE, "value"), State(METHOD, "value"),
                 State(ROLE, "value"), State(TRACE, "data"), prevent_initial_call=True)(
        lambda _n, *args: run_view(session, *args))
    app.callback(Output(CRUMBS, "children"), Input(TRACE, "data"), Input(LAYER, "data"), Input(MAP, "data"))(
        guarded(lambda text: [common.message(text, "error")])(lambda trace, layer, map_: crumbs(session, trace, layer,
                                                                                                   map_)))
    app.callback(Output(TRACE, "data", allow_duplicate=True), Output(LAYER, "data", allow_duplicate=True),
                 Output(MAP, "data", allow_duplicate=True), Output(AOI, "data", allow_duplicate=True),
                 Input({"type": CRUMB, "index": ALL}, "n_clicks"), State(TRACE, "data"), prevent_initial_call=True)(
        guarded(lambda text: (no_update,) * 4)(lambda clicks, trace: back(session, clicks, trace)))
