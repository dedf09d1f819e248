"""Image Grid View (paper 001, §5.1, Fig. 2-b): the selected pairs, benign left and adversarial right.

Each image's border has its predicted label's colour and the bar above it the predicted probability;
below the pair: the L2 perturbation and the two probabilities. Four orders; one page of
:data:`PAGE_SIZE` pairs at a time (images come from the ``/pair-image`` route, a page at a time).
Clicking a pair selects it.
"""

from __future__ import annotations

from collections.abc import Sequence

from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import SORT_ORDERS, Session
from advlens.app import common
from advlens.app.common import PAIR, SELECTION, class_color
from advlens.app.routes import pair_image_url

PAGE_SIZE = 24

SORT = "grid-sort"
PAGE = "grid-page"
PREV = "grid-prev"
NEXT = "grid-next"
PAGER = "grid-pager"
BODY = "grid-body"
CAPTION = "grid-caption"
CARD = "pair-card"

SORT_LABELS = {
    "perturbation_asc": "perturbation (L2), smallest first",
    "perturbation_desc": "perturbation (L2), largest first",
    "benign_drop": "drop of the benign probability",
    "adversarial_rise": "rise of the adversarial probability",
}
assert tuple(SORT_LABELS) == SORT_ORDERS


def page_count(total: int, page_size: int = PAGE_SIZE) -> int:
    return max(1, -(-total // page_size))


def page_of(session: Session, pairs: Sequence[int], order: str, page: int,
            page_size: int = PAGE_SIZE) -> list[int]:
    """The pair ids shown on one page of the sorted selection."""
    ordered = session.sort_pairs(pairs, order)
    page = min(max(0, int(page)), page_count(len(ordered), page_size) - 1)
    return [int(p) for p in ordered[page * page_size:(page + 1) * page_size]]


def _side(pair: int, side: str, label: int, probability: float, name: str) -> html.Div:
    color = class_color(label)
    return html.Div([
        html.Div(html.Div(className="prob-fill", style={"width": f"{100 * probability:.1f}%", "background": color}),
                 className="prob-track", title=f"{name}: {probability:.3f}"),
        html.Img(src=pair_image_url(pair, side), className="pair-img", style={"borderColor": color},
                 alt=f"{side} image of pair {pair}"),
    ], className="pair-side")


def pair_card(session: Session, pair: int, selected: bool = False) -> html.Div:
    """One benign/adversarial pair of the grid (clickable)."""
    info = session.pair_info(pair)
    return html.Div([
        html.Div([_side(pair, "benign", info["label"], info["benign_prob"], info["label_name"]),
                  _side(pair, "adversarial", info["adv_pred"], info["adv_prob"], info["adv_name"])],
                 className="pair-images"),
        html.Div([html.Span(f"L2 {info['l2']:.3f}"),
                  html.Span(f"{info['benign_prob']:.2f} → {info['adv_prob']:.2f}")], className="pair-caption"),
    ], id={"type": CARD, "pair": pair}, n_clicks=0, className="pair-card selected" if selected else "pair-card",
        title=f"pair {pair}: {info['label_name']} ({info['benign_prob']:.2f}) → {info['adv_name']} "
              f"({info['adv_prob']:.2f}), L2 {info['l2']:.3f}, L∞ {info['linf']:.4f}")


def grid_children(session: Session, selection: dict | None, order: str, page: int,
                  selected_pair: int | None = None) -> tuple[list, str]:
    """The cards of one page (or an empty-state message) and the pager text."""
    if selection is None:
        return [common.message("Nothing selected: click a cell of the Prediction Matrix or lasso points in a "
                               "scatterplot.")], ""
    pairs = selection["pairs"]
    if not pairs:
        return [common.message(f"No pairs in this selection ({selection['label']}).")], ""
    ids = page_of(session, pairs, order, page)
    pages = page_count(len(pairs))
    page = min(max(0, int(page)), pages - 1)
    first = page * PAGE_SIZE + 1
    text = f"{first}–{first + len(ids) - 1} of {len(pairs)} · page {page + 1}/{pages}"
    return [pair_card(session, p, p == selected_pair) for p in ids], text


def layout(session: Session) -> html.Section:
    controls = [
        html.Span("sort by", className="label"),
        dcc.Dropdown(id=SORT, options=[{"label": v, "value": k} for k, v in SORT_LABELS.items()],
                     value="perturbation_asc", clearable=False, searchable=False, className="sort-dropdown"),
        html.Button("‹", id=PREV, n_clicks=0, className="button pager-button", title="previous page"),
        html.Span(id=PAGER, className="pager"),
        html.Button("›", id=NEXT, n_clicks=0, className="button pager-button", title="next page"),
    ]
    return common.panel("Image Grid", [
        dcc.Store(id=PAGE, data=0),
        html.Div(id=CAPTION, className="summary"),
        dcc.Loading(html.Div(id=BODY, className="grid-body"), delay_show=common.LOADING_DELAY_MS,
                    parent_className="grid-scroll"),
    ], controls, "image-grid")


def register(app: Dash, session: Session) -> None:
    @app.callback(Output(PAGE, "data"), Input(PREV, "n_clicks"), Input(NEXT, "n_clicks"),
                  Input(SELECTION, "data"), Input(SORT, "value"), State(PAGE, "data"), prevent_initial_call=True)
    def turn_page(_prev, _next, selection, _order, page):
        if ctx.triggered_id in (SELECTION, SORT):
            return 0
        total = 0 if selection is None else len(selection["pairs"])
        last = page_count(total) - 1
        step = -1 if ctx.triggered_id == PREV else 1
        new = min(max(0, (page or 0) + step), last)
        return no_update if new == page else new

    @app.callback(Output(BODY, "children"), Output(PAGER, "children"), Output(CAPTION, "children"),
                  Output(PREV, "disabled"), Output(NEXT, "disabled"),
                  Input(SELECTION, "data"), Input(SORT, "value"), Input(PAGE, "data"), State(PAIR, "data"))
    def draw_grid(selection, order, page, pair):
        cards, text = grid_children(session, selection, order, page or 0, pair)
        total = 0 if selection is None else len(selection["pairs"])
        page = page or 0
        caption = "" if selection is None else f"{selection['label']} · sorted by {SORT_LABELS[order]}"
        return cards, text, caption, page <= 0, page >= page_count(total) - 1

    @app.callback(Output({"type": CARD, "pair": ALL}, "className"), Input(PAIR, "data"))
    def highlight(pair):
        return ["pair-card selected" if o["id"]["pair"] == pair else "pair-card" for o in ctx.outputs_list]

    @app.callback(Output(PAIR, "data"), Input({"type": CARD, "pair": ALL}, "n_clicks"), State(PAIR, "data"),
                  prevent_initial_call=True)
    def pick(clicks, current):
        trigger = ctx.triggered_id
        if not isinstance(trigger, dict) or not ctx.triggered or not ctx.triggered[0]["value"]:
            raise PreventUpdate  # cards appearing, not a click
        pair = int(trigger["pair"])
        if not 0 <= pair < session.num_pairs:
            raise PreventUpdate
        return no_update if pair == current else pair
