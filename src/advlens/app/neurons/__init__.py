"""The Neurons page (paper 001, Fig. 2): image space on the left (Data Overview, Image Grid, and the what-if
panel of issue 13), neuron space on the right (Neuron Vulnerability, Receptive Field and Neuron Cluster Views),
context images on demand.

One module per view, each with ``layout(session, …)``, ``register(app, session)`` and the plain functions
behind its callbacks (taking the session and the browser's values, checking them, returning outputs).
The page's selection is kept in the URL (:mod:`advlens.app.neurons.state`).
"""

from __future__ import annotations

from dash import Dash, Input, Output, State, dcc, html, no_update

from advlens import measures
from advlens.analysis import NEURON_MEASURES, SORT_ORDERS, Session
from advlens.app import common, validate
from advlens.app.common import URL, URL_WRITTEN, guarded
from advlens.app.neurons import (
    badges,
    cluster_view,
    context_view,
    image_grid,
    neuron_view,
    overview,
    receptive_field,
    what_if_view,
)
from advlens.app.neurons.state import (
    CLASSES,
    CLUSTER_METHOD,
    CLUSTER_METRIC,
    CONTEXT,
    EDIT_SOURCES,
    NEURON,
    NODES,
    PAIR,
    RF_QUANTILE,
    SELECTION,
    VIEWS_PAIR,
    edit_k,
    initial_selection,
    page_of_pair,
    query_string,
    state_from_query,
)
from advlens.app.urls import parse_query
from advlens.faithfulness.what_if import EDIT_MODES

PATH = "/neurons"
TITLE = "Neurons"
VIEWS = (overview, image_grid, neuron_view, badges, receptive_field, cluster_view, context_view, what_if_view)
PROBLEMS = "neurons-url-problems"


def layout(session: Session, search: str | None = None) -> html.Div:
    """The five views in the arrangement of Fig. 2, opened on the selection of the URL query ``search``."""
    if session.num_pairs == 0:
        return html.Div(common.message(
            "This store holds no successful attacks, so there is nothing to analyse. Prepare it again with a "
            "stronger attack (e.g. a larger --eps or more --steps).", "warning"), className="page neurons-page")
    state = state_from_query(session, parse_query(search))
    selection = initial_selection(session, state)
    stores = [
        dcc.Store(id=SELECTION, data=selection), dcc.Store(id=PAIR, data=state.pair),
        dcc.Store(id=VIEWS_PAIR, data=state.pair),
        dcc.Store(id=NEURON, data=state.neuron), dcc.Store(id=NODES, data=state.nodes_record(session)),
        dcc.Store(id=CLASSES, data=overview.default_classes(session)), dcc.Store(id=CONTEXT, data=None),
    ]
    page = page_of_pair(session, selection, state.pair, state.sort, image_grid.PAGE_SIZE)
    problems = html.Div(common.message([html.Div(p) for p in state.problems], "warning") if state.problems else None,
                        id=PROBLEMS, className="url-problems")
    image_space = html.Div([overview.layout(session), image_grid.layout(session, state.sort, page),
                            what_if_view.layout(session, state.edit, state.edit_of, state.k)],
                           className="image-space")
    neuron_space = html.Div([
        neuron_view.layout(session, state.measure),
        html.Div([receptive_field.layout(session, state.quantile),
                  cluster_view.layout(session, state.metric, state.method)], className="neuron-lower"),
    ], className="neuron-space")
    return html.Div([*stores, problems, html.Main([image_space, neuron_space], className="workspace"),
                     context_view.layout(session)], className="page neurons-page")


@guarded(lambda text: (no_update, no_update))
def url_query(session: Session, selection, pair, neuron, measure, sort, current: str | None = None,
              edit: str | None = None, edit_of: str | None = None, k=None, nodes=None, quantile=None, metric=None,
              method=None) -> tuple:
    """The URL query of the page's selection, the what-if panel's state and the Neuron Cluster View's selected
    nodes and tree (twice: for the URL and for the record of what was written); nothing to write when the URL
    already says the same (e.g. the page just opened on it). An invalid k (typed into its box) leaves the URL as
    it is; the panel says what is wrong."""
    selection = validate.selection(session, selection)
    pair = validate.pair_id(session, pair)
    quantile = validate.rf_quantile(session, quantile)
    metric, method = (None, None) if metric is None else cluster_view.tree_choice(metric, method)
    record = validate.nodes_record(session, nodes)
    active = cluster_view.active_nodes(record, pair, quantile, metric or measures.DEFAULT_METRIC, method)
    query = query_string(session, selection, pair, validate.neuron_id(session, neuron),
                         validate.choice(measure, NEURON_MEASURES, "measure"),
                         validate.choice(sort, SORT_ORDERS, "sort order"),
                         None if edit is None else validate.choice(edit, EDIT_MODES, "edit"),
                         None if edit_of is None else validate.choice(edit_of, EDIT_SOURCES, "edited selection"),
                         None if k is None else edit_k(session, k), active, quantile, metric, method)
    if parse_query(query) == parse_query(current if isinstance(current, str) else ""):
        return no_update, no_update
    return query, query


def register(app: Dash, session: Session) -> None:
    if session.num_pairs == 0:
        return
    for view in VIEWS:
        view.register(app, session)
    # the gate of the page's secondary parts (VIEWS_PAIR): opened in the browser, no request to the server
    app.clientside_callback(
        """function (_figure, _caption, pair, shown) {
            return pair === shown ? window.dash_clientside.no_update : pair;
        }""",
        Output(VIEWS_PAIR, "data"), Input(cluster_view.GRAPH, "figure"), Input(cluster_view.CAPTION, "children"),
        State(PAIR, "data"), State(VIEWS_PAIR, "data"), prevent_initial_call=True)
    app.callback(Output(URL, "search", allow_duplicate=True), Output(URL_WRITTEN, "data", allow_duplicate=True),
                 Input(SELECTION, "data"), Input(VIEWS_PAIR, "data"), Input(NEURON, "data"),
                 Input(neuron_view.MEASURE, "value"), Input(image_grid.SORT, "value"),
                 Input(what_if_view.IDS.mode, "value"), Input(what_if_view.SOURCE, "value"),
                 Input(what_if_view.K, "value"), Input(NODES, "data"), Input(RF_QUANTILE, "value"),
                 Input(CLUSTER_METRIC, "value"), Input(CLUSTER_METHOD, "value"), State(URL, "search"),
                 prevent_initial_call=True)(
        lambda selection, pair, neuron, measure, sort, edit, edit_of, k, nodes, quantile, metric, method, current:
        url_query(session, selection, pair, neuron, measure, sort, current, edit, edit_of, k, nodes, quantile, metric,
                  method))
