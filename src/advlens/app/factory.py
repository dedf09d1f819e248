"""``create_app``: the Dash app of the primary system (paper 001, Fig. 2) over one analysis store.

Image space on the left (Data Overview, Image Grid), neuron space on the right (Neuron Vulnerability,
Receptive Field and Neuron Cluster Views). Heavy data stays in the server-side :class:`Session`; the
browser holds ids only (``dcc.Store``, see :mod:`advlens.app.common`).
"""

from __future__ import annotations

from pathlib import Path

from dash import Dash, dcc, html

from advlens.analysis import Session
from advlens.app import cluster_view, common, context_view, image_grid, neuron_view, overview, receptive_field
from advlens.app.routes import register_routes
from advlens.store import AnalysisStore

ASSETS = Path(__file__).resolve().parent / "assets"
VIEWS = (overview, image_grid, neuron_view, receptive_field, cluster_view, context_view)


def _header(session: Session) -> html.Header:
    config = session.store.config
    attack = config.get("attack", {})
    eps = attack.get("eps")
    attack_text = attack.get("name", "?") + (f" ε={eps * 255:.3g}/255" if isinstance(eps, float) else "")
    facts = (f"{config['model']['spec']} · layer {config['model']['analysed_layer']} · "
             f"{config['dataset']['name']}/{config['dataset']['split']} · {attack_text} · "
             f"{session.num_pairs} successful attacks · {session.num_classes} classes")
    return html.Header([html.H1("advlens"), html.Span(facts, className="facts")], className="app-header")


def build_layout(session: Session) -> html.Div:
    """The page: the five views in the arrangement of Fig. 2, or a message when there is nothing to show."""
    if session.num_pairs == 0:
        return html.Div([_header(session), common.message(
            "This store holds no successful attacks, so there is nothing to analyse. Prepare it again with a "
            "stronger attack (e.g. a larger --eps or more --steps).", "warning")], className="app")
    stores = [
        dcc.Store(id=common.SELECTION, data=None), dcc.Store(id=common.PAIR, data=None),
        dcc.Store(id=common.NEURON, data=None), dcc.Store(id=common.NODES, data=None),
        dcc.Store(id=common.CLASSES, data=overview.default_classes(session)), dcc.Store(id=common.CONTEXT, data=None),
    ]
    image_space = html.Div([overview.layout(session), image_grid.layout(session)], className="image-space")
    neuron_space = html.Div([
        neuron_view.layout(session),
        html.Div([receptive_field.layout(session), cluster_view.layout(session)], className="neuron-lower"),
    ], className="neuron-space")
    return html.Div([*stores, _header(session), html.Main([image_space, neuron_space], className="workspace"),
                     context_view.layout(session)], className="app")


def create_app(session_or_store: Session | AnalysisStore | str | Path, *, title: str = "advlens",
               device: str | None = None) -> Dash:
    """The web app over a :class:`Session` (or a store or its path, opened with ``device``)."""
    session = (session_or_store if isinstance(session_or_store, Session)
               else Session(session_or_store, device=device))
    app = Dash(__name__, title=title, assets_folder=str(ASSETS), update_title=None, serve_locally=True)
    app.layout = build_layout(session)
    if session.num_pairs > 0:
        for view in VIEWS:
            view.register(app, session)
    register_routes(app.server, session)
    return app
