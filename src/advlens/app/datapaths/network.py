"""Network level (spec-003 §4): the pair's datapaths, computed as a job when the store does not hold them yet,
and the river view over the gate DAG.

Opening a pair whose datapaths are not stored submits ``session.pair_datapaths`` to the app's job runner
(:mod:`advlens.app.jobs`); a ``dcc.Interval``, enabled only while the job runs, polls it and draws the progress
bar. When the datapaths are there, :data:`~advlens.app.datapaths.state.READY` holds the pair id and every view
draws. Clicking a collapsed group's column (or a group's label) opens or closes the group; clicking a gate
point's column opens that layer in the layer view.
"""

from __future__ import annotations

from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.analysis.datapaths_pair import PairDatapaths
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, guarded
from advlens.app.datapaths.river_figure import ROLE_COLORS, ROLE_NAMES, TRACK, gate_edges, river_figure
from advlens.app.datapaths.state import EXPANDED, LAYER, MAP, PAIR, READY, check_groups, check_layer, groups
from advlens.app.jobs import JobRunner, jobs_for, progress_bar
from advlens.datapaths.river import PHASES, RiverLayout, river_columns, river_layout

RIVER = "dp-river"
CAPTION = "dp-river-caption"
PROGRESS = "dp-progress"
POLL = "dp-poll"
POLL_MS = 700


def job_key(pair: int) -> tuple:
    return ("datapaths", int(pair))


def ready_paths(session: Session, ready) -> PairDatapaths | None:
    """The datapaths of the READY pair (None when no pair is ready)."""
    pair = validate.pair_id(session, ready)
    return None if pair is None else session.stored_pair_datapaths(pair)


def start(session: Session, runner: JobRunner, pair) -> tuple:
    """(ready pair, poll disabled, progress) on opening ``pair``: ready at once when stored, else a job."""
    pair = validate.pair_id(session, pair)
    if pair is None:
        return None, True, progress_bar(None)
    if session.stored_pair_datapaths(pair) is not None:
        return pair, True, progress_bar(None)
    state = runner.submit(job_key(pair), lambda progress: session.pair_datapaths(pair, progress=progress).pair)
    return None, False, progress_bar(state, f"datapaths of pair {pair}")


def poll(session: Session, runner: JobRunner, pair) -> tuple:
    """(ready pair, poll disabled, progress) while the job runs; the job is forgotten once done (the session and
    the store keep the result)."""
    pair = validate.pair_id(session, pair)
    if pair is None:
        return None, True, progress_bar(None)
    state = runner.state(job_key(pair))
    if state is None:
        return start(session, runner, pair)
    if state.status == "done":
        runner.forget(job_key(pair))
        return pair, True, progress_bar(None)
    if state.status == "failed":
        return None, True, progress_bar(state, f"datapaths of pair {pair}")
    return no_update, False, progress_bar(state, f"datapaths of pair {pair}")


def critical_counts(paths: PairDatapaths) -> dict[str, list[int]]:
    """Critical maps per role (the representative target for ``tar``) and gate point."""
    return {role: [int(paths.layer_critical(layer)[paths.row(role)].sum()) for layer in paths.layers]
            for role in ("adv", "src", "tar")}


def river_of(session: Session, paths: PairDatapaths, expanded: list[str]) -> RiverLayout:
    d1, d2, d3 = paths.river_distances()
    return river_layout(paths.layers, d1, d2, d3, groups=groups(session), expanded=expanded, height=TRACK)


def layer_phase(session: Session, paths: PairDatapaths, layer: str) -> str | None:
    """Whether ``layer`` lies in a diverging or merging segment of the river with every group open."""
    river = river_of(session, paths, [name for name, members in groups(session) if len(members) > 1])
    column = river.column_of(layer)
    return None if column is None else river.phase(column)


def legend() -> list:
    items = [html.Span([html.Span(className="dp-swatch", style={"background": ROLE_COLORS[r]}),
                        f"{ROLE_NAMES[r]}"], className="legend-item") for r in ("src", "adv", "tar")]
    items += [html.Span([html.Span(className=f"dp-swatch dp-tint-{p}"), f"{p} (d{2 if p == 'diverging' else 3} "
                         f"{'rises' if p == 'diverging' else 'falls'} over ≥ 2 columns; tint "
                         f"{'below' if p == 'diverging' else 'above'} the axis)"], className="legend-item")
              for p in PHASES]
    items.append(html.Span("· dotted arcs: skip links; gap ∝ d1 = dist(src, tar), the adversarial curve splits it "
                           "d2 : d3 (RMS distance of the gates per map)", className="legend-item"))
    return items


def draw(session: Session, ready, expanded, layer) -> tuple:
    """(river figure, caption)."""
    paths = ready_paths(session, ready)
    if paths is None:
        return common.empty_figure("The river of the three datapaths appears here once a pair is open and its "
                                   "datapaths are computed (pick a pair in the table above).", height=200), ""
    expanded = check_groups(session, expanded)
    layer = check_layer(session, layer)
    river = river_of(session, paths, expanded)
    fig = river_figure(river, groups(session), expanded, gate_edges(session.model.graph, paths.layers),
                       critical_counts(paths), paths.layers, layer)
    t = paths.representative
    names = session.class_names
    labels = paths.labels
    caption = (f"adversarial (predicted {names[labels[0]]}), its source ({names[labels[1]]}) and the target "
               f"{t + 1} of {paths.num_targets} of class {names[labels[paths.row('tar')]]} nearest the adversarial's "
               f"datapath · λ̃ {paths.lam:g}, γ̃ {paths.gamma:g}, T {paths.steps}, computed in "
               f"{paths.seconds:.1f} s · "
               "hover a column for its distances, click a ▸ group to expand it, click a layer to open it")
    return fig, caption


@guarded(lambda text: (common.error_figure(text), ""))
def draw_view(session: Session, ready, expanded, layer) -> tuple:
    return draw(session, ready, expanded, layer)


@guarded(lambda text: (no_update, no_update, no_update))
def click(session: Session, event, expanded, ready) -> tuple:
    """(expanded groups, layer, map) after a click on the river: a group toggles, a gate point opens."""
    if not isinstance(event, dict) or not event.get("points"):
        raise PreventUpdate
    custom = event["points"][0].get("customdata")
    if not isinstance(custom, (list, tuple)) or len(custom) != 2:
        raise PreventUpdate
    expanded = check_groups(session, expanded)
    kind, value = custom
    if kind == "group":
        name = check_groups(session, [value])[0]
        return ([g for g in expanded if g != name] if name in expanded else [*expanded, name]), no_update, no_update
    if kind != "column":
        raise PreventUpdate
    paths = ready_paths(session, ready)
    if paths is None:
        raise PreventUpdate
    columns = river_columns(paths.layers, groups(session), expanded)
    index = validate.integer(value, "river column")
    if not 0 <= index < len(columns):
        raise validate.InvalidSelection(f"river column {index} does not exist: the river shows {len(columns)}")
    column = columns[index]
    if column.collapsed:
        return [*expanded, column.group], no_update, no_update
    return no_update, column.layer, None


def layout() -> html.Section:
    return common.panel("Network level · river of the datapaths", [
        html.Div(id=PROGRESS), dcc.Interval(id=POLL, interval=POLL_MS, disabled=True),
        html.Div(legend(), className="legend dp-legend"),
        html.Div(id=CAPTION, className="summary"),
        dcc.Loading(html.Div(dcc.Graph(id=RIVER, config={**GRAPH_CONFIG, "displayModeBar": False},
                                       figure=common.empty_figure("", height=200)), className="dp-river-box"),
                    delay_show=common.LOADING_DELAY_MS),
    ], [], "dp-river-panel")


def register(app: Dash, session: Session) -> None:
    runner = jobs_for(app)
    app.callback(Output(READY, "data"), Output(POLL, "disabled"), Output(PROGRESS, "children"),
                 Input(PAIR, "data"))(guarded(lambda text: (None, True, common.message(text, "error")))(
                     lambda pair: start(session, runner, pair)))
    app.callback(Output(READY, "data", allow_duplicate=True), Output(POLL, "disabled", allow_duplicate=True),
                 Output(PROGRESS, "children", allow_duplicate=True), Input(POLL, "n_intervals"), State(PAIR, "data"),
                 prevent_initial_call=True)(guarded(lambda text: (None, True, common.message(text, "error")))(
                     lambda _n, pair: poll(session, runner, pair)))
    app.callback(Output(RIVER, "figure"), Output(CAPTION, "children"), Input(READY, "data"), Input(EXPANDED, "data"),
                 Input(LAYER, "data"))(lambda ready, expanded, layer: draw_view(session, ready, expanded, layer))
    app.callback(Output(EXPANDED, "data"), Output(LAYER, "data", allow_duplicate=True),
                 Output(MAP, "data", allow_duplicate=True), Input(RIVER, "clickData"), State(EXPANDED, "data"),
                 State(READY, "data"), prevent_initial_call=True)(
        lambda event, expanded, ready: click(session, event, expanded, ready))
