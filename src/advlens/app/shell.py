"""The app's shell: the shared header (model, data, attack), the navigation between pages, and the
router that draws the page of the URL with the selection of its query.

Pages are packages with ``PATH``, ``TITLE``, ``layout(session, search)`` and ``register(app, session)``.
The router is a plain ``dcc.Location`` callback (no global page registry), so several apps can live in one
process and every callback stays a plain function.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

from dash import ALL, Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate
from flask import Flask, redirect, request

from advlens.analysis import Session
from advlens.app import common
from advlens.app.common import NAV, PAGE_CONTENT, URL, URL_WRITTEN, guarded
from advlens.app.urls import shared_query

NAV_LINK = "nav-link"
HOME = "/neurons"


def header_facts(session: Session) -> str:
    """Model, analysed layer, data and attack of the store, in one line."""
    config = session.store.config
    attack = config.get("attack", {})
    eps = attack.get("eps")
    attack_text = attack.get("name", "?") + (f" ε={eps * 255:.3g}/255" if isinstance(eps, float) else "")
    return (f"{config['model']['spec']} · layer {config['model']['analysed_layer']} · "
            f"{config['dataset']['name']}/{config['dataset']['split']} · {attack_text} · "
            f"{session.num_pairs} successful attacks · {session.num_classes} classes")


def header(session: Session, pages: Sequence[ModuleType]) -> html.Header:
    links = [dcc.Link(page.TITLE, href=page.PATH, id={"type": NAV_LINK, "page": page.PATH}, className="nav-link")
             for page in pages]
    return html.Header([html.H1("advlens"), html.Nav(links, id=NAV, className="nav"),
                        html.Span(header_facts(session), className="facts")], className="app-header")


def layout(session: Session, pages: Sequence[ModuleType]) -> html.Div:
    """The shell: location, header with navigation, and the place the router fills."""
    return html.Div([
        dcc.Location(id=URL, refresh=False), dcc.Store(id=URL_WRITTEN, data=None),
        header(session, pages), html.Div(id=PAGE_CONTENT, className="page-content"),
    ], className="app")


def not_found(pathname: str, pages: Sequence[ModuleType]) -> html.Div:
    links = [html.Li(dcc.Link(f"{page.TITLE} ({page.PATH})", href=page.PATH)) for page in pages]
    return html.Div(html.Article([
        html.H2("No such page"),
        common.message(f"There is no page at {pathname!r}. The pages are:", "warning"), html.Ul(links),
    ], className="placeholder"), className="page")


def page_for(pathname: str | None, pages: Sequence[ModuleType]) -> ModuleType | None:
    path = (pathname or "/").rstrip("/") or HOME
    return next((page for page in pages if page.PATH == path), None)


@guarded(lambda text: common.message(text, "error"))
def route(session: Session, pages: Sequence[ModuleType], pathname, search, triggered: Sequence[str], written):
    """The page of ``pathname`` opened on ``search``; nothing to do when the only change is the query the page
    itself just wrote into the URL (a new selection, not a navigation)."""
    if pathname is None:
        raise PreventUpdate  # the location is not known yet
    if triggered and all(t.endswith(".search") for t in triggered) and search == written:
        raise PreventUpdate
    if not isinstance(pathname, str) or (search is not None and not isinstance(search, str)):
        raise PreventUpdate
    page = page_for(pathname, pages)
    if page is None:
        return not_found(pathname, pages)
    return page.layout(session, search)


def nav_links(pages: Sequence[ModuleType], pathname, search, link_ids: Sequence[dict]) -> tuple[list, list]:
    """Each page's link carries the selection every page understands; the current page's link is marked."""
    current = page_for(pathname if isinstance(pathname, str) else None, pages)
    query = shared_query(search if isinstance(search, str) else None)
    hrefs = [f"{link['page']}{query}" for link in link_ids]
    classes = ["nav-link active" if current is not None and link["page"] == current.PATH else "nav-link"
               for link in link_ids]
    return hrefs, classes


def redirect_root(server: Flask) -> None:
    """``/`` (with its query) redirects to the Neurons page."""

    @server.before_request
    def _root():
        if request.path == "/":
            query = request.query_string.decode("latin-1")
            return redirect(HOME + (f"?{query}" if query else ""), code=302)
        return None


def register(app: Dash, session: Session, pages: Sequence[ModuleType]) -> None:
    @app.callback(Output(PAGE_CONTENT, "children"), Input(URL, "pathname"), Input(URL, "search"),
                  State(URL_WRITTEN, "data"))
    def _route(pathname, search, written):
        return route(session, pages, pathname, search, [t["prop_id"] for t in ctx.triggered], written)

    @app.callback(Output({"type": NAV_LINK, "page": ALL}, "href"), Output({"type": NAV_LINK, "page": ALL}, "className"),
                  Input(URL, "pathname"), Input(URL, "search"))
    def _nav(pathname, search):
        return nav_links(pages, pathname, search, [o["id"] for o in ctx.outputs_list[0]])

    redirect_root(app.server)
