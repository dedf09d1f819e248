"""The Pathways page (paper 004, Bluff; spec-004 §6): class-level activation pathways of an attack.

Left, the control sidebar (:mod:`~advlens.app.pathways.controls`); middle, the Graph Summary View
(:mod:`~advlens.app.pathways.graph_view`, figure in :mod:`~advlens.app.pathways.graph_figure`, what is
highlighted in :mod:`~advlens.app.pathways.display`); right, the what-if panel of the pinned neurons
(:mod:`~advlens.app.pathways.what_if_view`) above the detail view of the hovered neuron
(:mod:`~advlens.app.pathways.detail`). The selection lives in the URL (:mod:`~advlens.app.pathways.state`);
the computations are :class:`advlens.analysis.pathways.PathwayAnalysis`. Without a ``sweep`` stage the page
says which command adds it.
"""

from __future__ import annotations

from dash import Dash, Input, Output, State, dcc, html, no_update

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import URL, URL_WRITTEN, guarded
from advlens.app.pathways import controls, detail, graph_view, what_if_view
from advlens.app.pathways.state import (
    ATTACK,
    COMPARE,
    EDIT_LABELS,
    FILTER,
    MODE,
    PAIR,
    PINNED,
    PROBLEMS,
    STRENGTH,
    TOP,
    VS,
    query_string,
    state_from_query,
)
from advlens.app.urls import parse_query
from advlens.errors import AdvlensError

PATH = "/pathways"
TITLE = "Pathways"
RIGHT_COLUMN = {"display": "flex", "flexDirection": "column", "gap": "8px", "minWidth": 0, "position": "sticky",
                "top": "8px"}
"""The what-if panel above the detail view in the page's right column."""


def no_sweep(session: Session) -> html.Div:
    """The empty state of a store without the strength sweep: what the page shows and the command that adds it."""
    return html.Div(html.Article([
        html.H2("Activation pathways"),
        html.P("This page shows, for a class pair, the neurons of every pathway layer that carry the benign images "
               "of each class and the attacked images, and how they change with the attack strength. It reads the "
               "strength sweep of the store, which this store does not hold yet. Add it with:"),
        html.Pre(html.Code(session.sweep_command()), className="pw-command"),
        html.P("(about 6 minutes on 2 CPU cores for the demo model's defaults; feature visualisations for the nodes "
               "come from the features stage, `--stages features,sweep` adds both)."),
    ], className="placeholder"), className="page placeholder-page")


def layout(session: Session, search: str | None = None) -> html.Div:
    """The page opened on the selection of the URL query ``search``."""
    if not session.has_sweep():
        return no_sweep(session)
    try:
        state = state_from_query(session, search)
    except AdvlensError as exc:  # a damaged sweep, a model that cannot be loaded: the page says why
        return html.Div(common.message(common.error_text(exc), "error"), className="page pathways-page")
    problems = html.Div(common.message([html.Div(p) for p in state.problems], "warning") if state.problems else None,
                        id=PROBLEMS, className="url-problems")
    return html.Div([
        dcc.Store(id=PINNED, data=state.pinned), problems,
        html.Div([controls.layout(session, state), graph_view.layout(),
                  html.Div([what_if_view.layout(state.edit), detail.layout(state.focus)], style=RIGHT_COLUMN)],
                 className="pw-main"),
    ], className="page pathways-page")


@guarded(lambda text: (no_update, no_update))
def url_query(session: Session, pair, attack, strength, mode, top, filter_, compare, vs, pinned, edit,
              current: str | None = None) -> tuple:
    """The URL query of the page's selection (twice: the URL and the record of what was written); nothing to
    write when the URL already says the same."""
    c = graph_view.checked_controls(session, pair, attack, strength, mode, top, filter_, compare, vs, pinned)
    edit = validate.choice(edit, EDIT_LABELS, "edit")
    current = current if isinstance(current, str) else None
    query = query_string(session, c["original"], c["target"], c["attack"], c["strength"], c["mode"], c["top"],
                         c["filter"], c["pinned"], c["compare"], c["vs"], current, edit)
    if parse_query(query) == parse_query(current or ""):
        return no_update, no_update
    return query, query


def register(app: Dash, session: Session) -> None:
    if not session.has_sweep():
        return
    graph_view.register(app, session)
    detail.register(app, session)
    what_if_view.register(app, session)
    app.callback(Output(URL, "search", allow_duplicate=True), Output(URL_WRITTEN, "data", allow_duplicate=True),
                 Input(PAIR, "value"), Input(ATTACK, "value"), Input(STRENGTH, "value"), Input(MODE, "value"),
                 Input(TOP, "value"), Input(FILTER, "value"), Input(COMPARE, "value"), Input(VS, "value"),
                 Input(PINNED, "data"), Input(what_if_view.IDS.mode, "value"), State(URL, "search"),
                 prevent_initial_call=True)(
        lambda *args: url_query(session, *args))
