"""The Datapaths page (paper 003, AEVis; spec-003 §4): where an adversarial example's datapath leaves its source
image's and joins the target class's, and which earlier feature maps cause it.

Top: the example picker (:mod:`~advlens.app.datapaths.picker`) and the pair's images with links to the Neurons
and Profiles pages. Network level: the river of the three datapaths over the gate DAG, computed as a job when the
store does not hold them (:mod:`~advlens.app.datapaths.network`). Layer level: the treemap set view
(:mod:`~advlens.app.datapaths.layer_view`). Neuron level: learned features and activation maps with the area of
interest (:mod:`~advlens.app.datapaths.neuron_view`), and the contribution chain with its breadcrumb
(:mod:`~advlens.app.datapaths.trace`). Beside them the what-if panel edits the open layer's critical maps
(:mod:`~advlens.app.datapaths.what_if_view`). The selection lives in the URL and in stores of ids
(:mod:`~advlens.app.datapaths.state`); the computations are :class:`advlens.analysis.datapaths.DatapathAnalysis`.
"""

from __future__ import annotations

from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import URL, URL_WRITTEN, guarded
from advlens.app.datapaths import layer_view, network, neuron_view, picker, trace, what_if_view
from advlens.app.datapaths.state import (
    AOI,
    DEFAULT_EDIT,
    DEFAULT_EDIT_OF,
    DIFF,
    DIFFS,
    EDIT_OF,
    ENCODING,
    ENCODINGS,
    EXPANDED,
    LAYER,
    MAP,
    PAIR,
    PROBLEMS,
    READY,
    TRACE,
    check_groups,
    check_layer,
    check_map,
    query_string,
    state_from_query,
)
from advlens.app.urls import make_query, parse_query
from advlens.errors import AdvlensError
from advlens.faithfulness.what_if import EDIT_MODES

PATH = "/datapaths"
TITLE = "Datapaths"


def layout(session: Session, search: str | None = None) -> html.Div:
    """The page opened on the selection of the URL query ``search``."""
    try:
        state = state_from_query(session, search)
        top = picker.layout(session, state.pair)
    except AdvlensError as exc:  # a model that cannot be loaded, a damaged store: the page says why
        return html.Div(common.message(common.error_text(exc), "error"), className="page datapaths-page")
    problems = html.Div(common.message([html.Div(p) for p in state.problems], "warning") if state.problems else None,
                        id=PROBLEMS, className="url-problems")
    return html.Div([
        dcc.Store(id=PAIR, data=state.pair), dcc.Store(id=READY, data=None), dcc.Store(id=LAYER, data=state.layer),
        dcc.Store(id=MAP, data=state.map), dcc.Store(id=EXPANDED, data=state.expanded), dcc.Store(id=AOI, data=None),
        dcc.Store(id=TRACE, data=[]), problems,
        html.Div([top, common.panel("Pair", [html.Div(picker.summary(session, state.pair), id=picker.SUMMARY)], [],
                                    "dp-summary-panel")], className="dp-top-row"),
        network.layout(),
        html.Div([layer_view.layout(state.encoding, state.diff),
                  html.Div([neuron_view.layout(), common.panel("Contribution chain", [trace.layout()], [],
                                                               "dp-trace-panel"),
                            what_if_view.layout(state.edit, state.edit_of)], className="dp-right")],
                 className="dp-lower"),
    ], className="page datapaths-page")


def summary(session: Session, ready, pair) -> list:
    """The pair's images, the representative target's once its datapaths are ready."""
    pair = validate.pair_id(session, pair)
    paths = network.ready_paths(session, ready)
    if paths is None:
        return picker.summary(session, pair)
    t = paths.representative
    image = session.datapath_images(paths.pair, paths.target_rows[[t]])[2]
    names = session.class_names
    row = paths.row("tar")
    return picker.summary(session, pair, image, f"{names[int(paths.labels[row])]} (target {t + 1} of "
                                                f"{paths.num_targets}, nearest datapath)")


@guarded(lambda text: no_update)
def open_pair(session: Session, cell, current) -> str:
    """The URL query that opens the clicked row's pair (the router draws the page anew)."""
    if not isinstance(cell, dict) or cell.get("row_id") is None:
        raise PreventUpdate
    pair = validate.pair_id(session, cell["row_id"])
    kept = {k: v for k, v in parse_query(current if isinstance(current, str) else None).items()
            if k in ("true", "adv", "neuron")}
    return make_query({"pair": pair, **kept})


@guarded(lambda text: (no_update, no_update))
def url_query(session: Session, layer, map_, expanded, encoding, diff, pair, current, edit=None,
              edit_of=None) -> tuple:
    """The URL query of the page's selection and the what-if panel's state (twice: the URL and the record of what
    was written)."""
    layer = check_layer(session, layer)
    map_ = check_map(session, layer, map_) if layer is not None else None
    query = query_string(validate.pair_id(session, pair), layer, map_, check_groups(session, expanded),
                         validate.choice(encoding, ENCODINGS, "encoding"), validate.choice(diff, DIFFS, "difference"),
                         current if isinstance(current, str) else None,
                         validate.choice(DEFAULT_EDIT if edit is None else edit, EDIT_MODES, "edit"),
                         validate.choice(DEFAULT_EDIT_OF if edit_of is None else edit_of, EDIT_OF, "edited maps"))
    if parse_query(query) == parse_query(current if isinstance(current, str) else ""):
        return no_update, no_update
    return query, query


def register(app: Dash, session: Session) -> None:
    network.register(app, session)
    layer_view.register(app, session)
    neuron_view.register(app, session)
    trace.register(app, session)
    what_if_view.register(app, session)
    picker.register(app, session)
    app.callback(Output(picker.SUMMARY, "children"), Input(READY, "data"), State(PAIR, "data"))(
        guarded(lambda text: [common.message(text, "error")])(lambda ready, pair: summary(session, ready, pair)))
    app.callback(Output(URL, "search", allow_duplicate=True), Input(picker.TABLE, "active_cell"),
                 State(URL, "search"), prevent_initial_call=True)(
        lambda cell, current: open_pair(session, cell, current))
    app.callback(Output(URL, "search", allow_duplicate=True), Output(URL_WRITTEN, "data", allow_duplicate=True),
                 Input(LAYER, "data"), Input(MAP, "data"), Input(EXPANDED, "data"), Input(ENCODING, "value"),
                 Input(DIFF, "value"), Input(what_if_view.IDS.mode, "value"), Input(what_if_view.SOURCE, "value"),
                 State(PAIR, "data"), State(URL, "search"), prevent_initial_call=True)(
        lambda layer, map_, expanded, encoding, diff, edit, edit_of, pair, current: url_query(
            session, layer, map_, expanded, encoding, diff, pair, current, edit, edit_of))
