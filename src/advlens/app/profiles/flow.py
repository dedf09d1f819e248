"""The Flow View panel (spec-002 §2.2): the figure, its options, the fit job of a new layer selection, and
the interactions — click an axis (the Layer View opens on it), click between two axes (drill down: the
layers between them become the axes, fitted as a job when no fit is kept), drag a box over an axis (the
background images inside become a group the Layer View can reduce over)."""

from __future__ import annotations

import numpy as np
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, guarded
from advlens.app.jobs import JobRunner, jobs_for, progress_bar
from advlens.app.profiles.flow_figure import HEIGHT, flow_figure
from advlens.profiles import RECOMMENDED_BACKGROUND
from advlens.app.profiles.state import (
    AXIS,
    BETA,
    COLOUR,
    GROUP,
    LAYERS,
    MODE,
    PAIR,
    TAU,
    TAU_RANGE,
    UNIT,
    check_layers,
    check_tau,
)
from advlens.analysis.profiles import COLOUR_BY, FLOW_MODES

GRAPH = "profiles-flow"
CAPTION = "profiles-flow-caption"
JOB = "profiles-job"
POLL = "profiles-job-poll"
FIT = "profiles-fit-button"
FIT_BOX = "profiles-fit-box"
POLL_MS = 700
COLOUR_LABELS = {"pred": "predicted label", "true": "true label"}
MODE_LABELS = {"lines": "bundled lines", "histograms": "profile histograms"}


def job_key(session: Session, layers: list[str]) -> tuple:
    return ("profiles-fit", str(session.store.root), tuple(layers))


def check_group(session: Session, group, layers: list[str]) -> np.ndarray | None:
    """The brushed group record ``{"layers", "layer", "low", "high"}`` → background indices, or None when there
    is none or it was brushed on another selection's axes."""
    if group is None:
        return None
    if not isinstance(group, dict) or not {"layers", "layer", "low", "high"} <= set(group):
        raise validate.InvalidSelection(f"brushed group {str(group)[:80]!r} is not {{layers, layer, low, high}}")
    if check_layers(session, group["layers"]) != layers:
        return None
    low = validate.number(group["low"], "brushed low", -1e12, 1e12)
    high = validate.number(group["high"], "brushed high", -1e12, 1e12)
    return session.brushed_group(validate.layer_name(session.model.graph, group["layer"]), low, high, layers)


def fit_message(session: Session, layers: list[str], state) -> list:
    dims = [int(np.prod(session.model.graph[name].shape)) for name in layers]
    size = session.profiles_background().size
    if state is not None and state.status == "failed":
        text = f"The fit of these {len(layers)} layers failed: {state.error}"
        return [common.message(text, "error")]
    if state is not None and state.running:
        return [common.message(f"Fitting the aligned profiles of {len(layers)} layers on the {size} background "
                               "images; the Flow View draws when it is done.")]
    return [common.message(f"These {len(layers)} layers ({', '.join(layers)}; {sum(dims):,} values per image) have no "
                           f"fitted profiles yet. Fitting them on the {size} background images takes about a minute "
                           "(more for wide layers; the first fit of a server also compiles UMAP's code).")]


def draw(session: Session, runner: JobRunner, pair, layers, colour, mode, beta, group, tau=1.0) -> tuple:
    """(figure, caption, job progress, poll disabled, fit-button box style) of the Flow View."""
    pair = validate.pair_id(session, pair)
    if layers and len(layers) < 2:
        return (common.empty_figure("Select at least two layers in the Architecture View: one axis each.", HEIGHT),
                [], progress_bar(None), True, {"display": "none"})
    layers = check_layers(session, layers)
    colour = validate.choice(colour, COLOUR_BY, "colour by")
    mode = validate.choice(mode, FLOW_MODES, "view")
    beta = validate.number(beta, "bundling strength", 0.0, 1.0)
    tau = check_tau(tau)
    state = runner.state(job_key(session, layers))
    if session.profiles_selection(layers) is None:
        running = state is not None and state.running
        return (common.empty_figure("No fit of these layers yet" + (" — fitting…" if running else ""), HEIGHT),
                fit_message(session, layers, state), progress_bar(state, "fitting the profiles"), not running,
                {"display": "none"} if running else {})
    indices = check_group(session, group, layers)
    flow = session.flow_data(pair, colour, mode, layers, beta, threshold=tau)
    info = session.pair_info(pair)
    names = session.class_names
    fig = flow_figure(flow, names, f"pair {pair} ({info['label_name']} → {info['adv_name']})", indices)
    div = flow.divergence
    badge = (html.Span(div.describe(flow.layers), className="pf-badge") if div.segment is not None else
             html.Span(f"no clear divergence (largest jump {div.jump:.2f} IQR < {div.threshold:g})",
                       className="pf-badge pf-badge-none"))
    caption = [badge, html.Span(
        f" · {flow.background.shape[0]} background images coloured by {COLOUR_LABELS[colour]} · benign solid, "
        "adversarial dashed · click an axis for the Layer View, between two axes to drill down, drag a box over "
        "an axis to brush a group", className="summary")]
    if flow.background.shape[0] < RECOMMENDED_BACKGROUND:
        caption.append(html.Span(
            f" · a background of {flow.background.shape[0]} images is below the {RECOMMENDED_BACKGROUND:,} that paper "
            "002 (§6) found representative: treat the class context as weak (prepare with a larger "
            "--profiles-background)", className="summary pf-warning"))
    if flow.disconnected.any():
        caption.append(html.Span(f" · not drawn (disconnected by UMAP) per axis: {flow.disconnected.tolist()}",
                                 className="summary"))
    if indices is not None:
        caption.append(html.Span(f" · brushed group: {len(indices)} images", className="summary pf-group-note"))
    return fig, caption, progress_bar(None), True, {"display": "none"}


def start_fit(session: Session, runner: JobRunner, layers) -> tuple:
    """Submit the fit of the axes as a job (nothing to do when it is kept or already running)."""
    layers = check_layers(session, layers)
    if session.profiles_selection(layers) is not None:
        raise PreventUpdate
    state = runner.submit(job_key(session, layers), lambda progress: session.fit_profiles(layers, progress))
    return progress_bar(state, "fitting the profiles"), False


def clicked(session: Session, runner: JobRunner, click, layers) -> tuple:
    """A click on an axis (→ the Layer View's layer) or in a gap (→ drill-down axes, fitted as a job)."""
    points = (click or {}).get("points") or []
    custom = points[0].get("customdata") if points else None
    if not isinstance(custom, (list, tuple)) or len(custom) != 2 or custom[0] not in ("axis", "gap"):
        raise PreventUpdate
    layers = check_layers(session, layers)
    index = validate.integer(custom[1], "axis")
    if custom[0] == "axis":
        if not 0 <= index < len(layers):
            raise validate.InvalidSelection(f"axis {index} does not exist: the Flow View has {len(layers)} axes")
        return no_update, layers[index], None, no_update, no_update
    inner = session.drill_down(layers, index)
    if len(inner) < 2 or inner == layers:
        raise PreventUpdate
    if session.profiles_selection(inner) is None:
        state = runner.submit(job_key(session, inner), lambda progress: session.fit_profiles(inner, progress))
        return inner, no_update, no_update, progress_bar(state, "fitting the profiles"), False
    return inner, no_update, no_update, no_update, no_update


def brushed(session: Session, selected, layers) -> dict | None:
    """A box drawn over an axis → the group record (the axis nearest the box's centre, its y interval)."""
    box = (selected or {}).get("range") or {}
    if "x" not in box or "y" not in box:
        raise PreventUpdate
    layers = check_layers(session, layers)
    x0, x1 = (validate.number(v, "brush x", -1e6, 1e6) for v in box["x"])
    y0, y1 = (validate.number(v, "brush y", -1e12, 1e12) for v in box["y"])
    axis = int(round((x0 + x1) / 2))
    if not 0 <= axis < len(layers):
        raise PreventUpdate
    return {"layers": layers, "layer": layers[axis], "low": min(y0, y1), "high": max(y0, y1)}


def options(colour: str, mode: str, tau: float) -> list:
    return [
        html.Span("colour by", className="label"),
        dcc.RadioItems(id=COLOUR, options=[{"label": v, "value": k} for k, v in COLOUR_LABELS.items()], value=colour,
                       inline=True, className="radio"),
        html.Span("background", className="label"),
        dcc.RadioItems(id=MODE, options=[{"label": v, "value": k} for k, v in MODE_LABELS.items()], value=mode,
                       inline=True, className="radio"),
        html.Span("bundling β", className="label"),
        html.Div(dcc.Slider(id=BETA, min=0, max=1, step=0.1, value=0.8, marks={0: "0", 0.5: "0.5", 1: "1"}),
                 className="pf-beta"),
        html.Span("diverges at τ ≥", className="label", title="smallest jump of the pair's gap, in background "
                                                                "interquartile ranges, reported as a diverging point"),
        dcc.Input(id=TAU, type="number", min=TAU_RANGE[0], max=TAU_RANGE[1], step="any", value=tau, debounce=True,
                  className="pf-tau"),
        html.Span("IQR", className="label"),
    ]


def layout(colour: str, mode: str, tau: float) -> html.Section:
    return common.panel("Flow View", [
        html.Div(id=CAPTION, className="pf-caption"),
        html.Div(id=JOB, className="pf-job"),
        html.Div(html.Button("Fit these layers", id=FIT, n_clicks=0, className="button pf-fit"), id=FIT_BOX,
                 style={"display": "none"}),
        dcc.Interval(id=POLL, interval=POLL_MS, disabled=True),
        dcc.Loading(dcc.Graph(id=GRAPH, config={**GRAPH_CONFIG, "displayModeBar": False}, style={"height": f"{HEIGHT}px"}),
                    delay_show=common.LOADING_DELAY_MS),
    ], options(colour, mode, tau), "pf-flow")


def register(app: Dash, session: Session) -> None:
    runner = jobs_for(app)
    error = guarded(lambda text: (common.error_figure(text), [], progress_bar(None), True, {"display": "none"}))
    app.callback(Output(GRAPH, "figure"), Output(CAPTION, "children"), Output(JOB, "children"),
                 Output(POLL, "disabled"), Output(FIT_BOX, "style"),
                 Input(PAIR, "value"), Input(LAYERS, "data"), Input(COLOUR, "value"), Input(MODE, "value"),
                 Input(BETA, "value"), Input(GROUP, "data"), Input(TAU, "value"), Input(POLL, "n_intervals"))(
        error(lambda pair, layers, colour, mode, beta, group, tau, _tick: draw(session, runner, pair, layers, colour,
                                                                               mode, beta, group, tau)))
    app.callback(Output(JOB, "children", allow_duplicate=True), Output(POLL, "disabled", allow_duplicate=True),
                 Input(FIT, "n_clicks"), State(LAYERS, "data"), prevent_initial_call=True)(
        guarded(lambda text: (common.message(text, "error"), True))(
            lambda _n, layers: start_fit(session, runner, layers)))
    app.callback(Output(LAYERS, "data", allow_duplicate=True), Output(AXIS, "data", allow_duplicate=True),
                 Output(UNIT, "data", allow_duplicate=True), Output(JOB, "children", allow_duplicate=True),
                 Output(POLL, "disabled", allow_duplicate=True), Input(GRAPH, "clickData"), State(LAYERS, "data"),
                 prevent_initial_call=True)(
        guarded(lambda text: (no_update, no_update, no_update, common.message(text, "error"), no_update))(
            lambda click, layers: clicked(session, runner, click, layers)))
    app.callback(Output(GROUP, "data"), Input(GRAPH, "selectedData"), State(LAYERS, "data"),
                 prevent_initial_call=True)(
        guarded(lambda text: no_update)(lambda selected, layers: brushed(session, selected, layers)))
