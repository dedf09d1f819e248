"""``create_app``: one Dash app over one analysis store, with a page per system.

The shell (:mod:`advlens.app.shell`) draws the header and navigation and routes the URL to a page:
``/neurons`` (paper 001, :mod:`advlens.app.neurons`), ``/model``, ``/pathways``, ``/profiles`` and
``/datapaths``. Heavy data stays in the server-side :class:`Session`; the browser holds ids only.
"""

from __future__ import annotations

from pathlib import Path

from dash import Dash, html

from advlens.analysis import Session
from advlens.app import datapaths, model, neurons, pathways, profiles, shell
from advlens.app.routes import register_routes
from advlens.store import AnalysisStore

ASSETS = Path(__file__).resolve().parent / "assets"
PAGES = (neurons, model, pathways, profiles, datapaths)
"""The pages in navigation order; ``/`` redirects to the first."""


def build_layout(session: Session) -> html.Div:
    """The shell: header, navigation and the place the router fills with the page of the URL."""
    return shell.layout(session, PAGES)


def create_app(session_or_store: Session | AnalysisStore | str | Path, *, title: str = "advlens",
               device: str | None = None) -> Dash:
    """The web app over a :class:`Session` (or a store or its path, opened with ``device``)."""
    session = (session_or_store if isinstance(session_or_store, Session)
               else Session(session_or_store, device=device))
    app = Dash(__name__, title=title, assets_folder=str(ASSETS), update_title=None, serve_locally=True)
    app.layout = build_layout(session)
    # every page's components, so that Dash can check each callback against them before a page is shown
    app.validation_layout = html.Div([app.layout, *(page.layout(session, "") for page in PAGES)])
    for page in PAGES:
        page.register(app, session)
    shell.register(app, session, PAGES)
    register_routes(app.server, session)
    return app
