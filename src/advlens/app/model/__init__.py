"""The Model page: a microscope for the store's model (issue 8, item 8).

Top: the Architecture View (spec-002 §2.1) of ``session.model.graph`` and the layer selection the
Profiles page will reuse (:mod:`advlens.app.model.selection`). Below: the gallery of the focused
layer's channels as feature visualisations, and the picked channel's dataset examples and activation
statistics, read from the store's ``features`` stage. The selection lives in the URL
(:mod:`advlens.app.model.state`).
"""

from __future__ import annotations

from dash import Dash, Input, Output, State, dcc, html, no_update

from advlens.analysis import Session
from advlens.app import common
from advlens.app.common import URL, URL_WRITTEN, guarded
from advlens.app.model import architecture, channel, gallery, tiles
from advlens.app.model.state import FOCUS, PROBLEMS, SELECTION, check_focus, query_string, state_from_query
from advlens.app.model.selection import check as check_layers
from advlens.app.urls import parse_query
from advlens.errors import AdvlensError

PATH = "/model"
TITLE = "Model"


def layout(session: Session, search: str | None = None) -> html.Div:
    """The page opened on the selection of the URL query ``search``."""
    try:
        state = state_from_query(session, search)
    except AdvlensError as exc:  # e.g. the model cannot be loaded: the page says why
        return html.Div(common.message(common.error_text(exc), "error"), className="page model-page")
    focus = {"layer": state.layer, "channel": state.channel}
    problems = html.Div(common.message([html.Div(p) for p in state.problems], "warning") if state.problems else None,
                        id=PROBLEMS, className="url-problems")
    return html.Div([
        dcc.Store(id=SELECTION, data=state.layers), dcc.Store(id=FOCUS, data=focus), problems,
        *architecture.layout(session, state.layers, focus),
        html.Div([gallery.layout(session, focus, gallery.page_of_channel(state.channel)), channel.layout()],
                 className="model-lower"),
    ], className="page model-page")


@guarded(lambda text: (no_update, no_update))
def url_query(session: Session, layers, focus, current: str | None = None) -> tuple:
    """The URL query of the page's selection (twice: for the URL and the record of what was written);
    nothing to write when the URL already says the same."""
    layers = check_layers(session.model.graph, layers or [])
    layer, picked = check_focus(session, focus)
    query = query_string(session, layers, layer, picked, current if isinstance(current, str) else None)
    if parse_query(query) == parse_query(current if isinstance(current, str) else ""):
        return no_update, no_update
    return query, query


def register(app: Dash, session: Session) -> None:
    tiles.register_routes(app.server, session)
    for view in (architecture, gallery, channel):
        view.register(app, session)
    app.callback(Output(URL, "search", allow_duplicate=True), Output(URL_WRITTEN, "data", allow_duplicate=True),
                 Input(SELECTION, "data"), Input(FOCUS, "data"), State(URL, "search"), prevent_initial_call=True)(
        lambda layers, focus, current: url_query(session, layers, focus, current))
