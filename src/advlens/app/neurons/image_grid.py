"""Image Grid View (paper 001, §5.1, Fig. 2-b): the selected pairs, benign left and adversarial right.

Each image's border has its predicted label's colour and the bar above it the predicted probability;
below the pair: the L2 perturbation and the two probabilities. Four orders; one page of
:data:`PAGE_SIZE` pairs at a time (images come from the ``/pair-image`` route, a page at a time).
Clicking a pair selects it. A pair whose card the pointer rests on (150 ms, ``assets/pair_hover.js``) has its
vulnerability maps started on the server before the click (:func:`prefetch_hovered`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import SORT_ORDERS, Session
from advlens.app import common, validate
from advlens.app.common import class_color, guarded
from advlens.app.neurons.receptive_field import start_masks
from advlens.app.neurons.state import DEFAULT_SORT, PAIR, SELECTION, TOP_PERCENT
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
HOVER = "hover-pair-store"
"""The pair whose card the pointer rests on (set in the browser by ``assets/pair_hover.js``)."""

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
    """The pair ids shown on one page of the sorted selection (a page that does not exist is an error)."""
    order = validate.choice(order, SORT_ORDERS, "sort order")
    page = validate.page_number(page, page_count(len(pairs), page_size))
    ordered = session.sort_pairs(pairs, order)
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
    first = page * PAGE_SIZE + 1
    text = f"{first}–{first + len(ids) - 1} of {len(pairs)} · page {page + 1}/{pages}"
    return [pair_card(session, p, p == selected_pair) for p in ids], text


def layout(session: Session, sort: str = DEFAULT_SORT, page: int = 0) -> html.Section:
    controls = [
        html.Span("sort by", className="label"),
        dcc.Dropdown(id=SORT, options=[{"label": v, "value": k} for k, v in SORT_LABELS.items()],
                     value=sort, clearable=False, searchable=False, className="sort-dropdown"),
        *common.pager(PREV, PAGER, NEXT),
    ]
    return common.panel("Image Grid", [
        dcc.Store(id=PAGE, data=page), dcc.Store(id=HOVER, data=None),
        html.Div(id=CAPTION, className="summary"),
        dcc.Loading(html.Div(id=BODY, className="grid-body"), delay_show=common.LOADING_DELAY_MS,
                    parent_className="grid-scroll"),
    ], controls, "image-grid")


# ---------------------------------------------------------------------------------------------- callbacks
@guarded(lambda text: no_update)
def turn_page(session: Session, trigger, selection, page) -> int:
    """The page after ‹ or ›; back to the first page when the selection or the order changes."""
    if trigger in (SELECTION, SORT):
        return 0
    selection = validate.selection(session, selection)
    last = page_count(0 if selection is None else len(selection["pairs"])) - 1
    page = validate.page_number(page, last + 1)
    new = min(max(0, page + (-1 if trigger == PREV else 1)), last)
    return no_update if new == page else new


@guarded(lambda text: ([common.message(text, "error")], "", "", True, True))
def draw_grid(session: Session, selection, order, page, pair) -> tuple:
    """The cards of a page, the pager text, the caption and the pager buttons' states."""
    selection = validate.selection(session, selection)
    order = validate.choice(order, SORT_ORDERS, "sort order")
    pair = validate.pair_id(session, pair)
    page = validate.page_number(page)
    cards, text = grid_children(session, selection, order, page, pair)
    total = 0 if selection is None else len(selection["pairs"])
    caption = "" if selection is None else f"{selection['label']} · sorted by {SORT_LABELS[order]}"
    return cards, text, caption, page <= 0, page >= page_count(total) - 1


HIGHLIGHT_SCRIPT = """function (pair, ids) {
    return ids.map(id => id.pair === pair ? "pair-card selected" : "pair-card");
}"""
"""The cards' classes, the selected pair's card marked: run in the browser (a pick's first feedback, and no request
to the server while the views are drawn; the pair comes from the page's pair store, which the server checked)."""


@guarded(lambda text: no_update)
def pick(session: Session, trigger, clicked: bool, current) -> int:
    """The pair of a clicked card."""
    if not isinstance(trigger, dict) or not clicked:
        raise PreventUpdate  # cards appearing, not a click
    pair = validate.pair_id(session, trigger.get("pair"))
    return no_update if pair == current else pair


@guarded(lambda text: None)
def prefetch_hovered(session: Session, pair, top_percent, slot: threading.Lock) -> threading.Thread | None:
    """Start the masks of the pair whose card the pointer rests on, as a click would (:func:`start_masks`), so
    that they are computed or under way when the pair is clicked. One at a time (``slot``): a pointer crossing the
    grid does not start a computation per card it passes. Returns the thread, or None when nothing was started."""
    pair = validate.pair_id(session, pair)
    if pair is None or not slot.acquire(blocking=False):
        return None
    thread = start_masks(session, pair, top_percent, done=slot.release)
    if thread is None:
        slot.release()
    return thread


def register(app: Dash, session: Session) -> None:
    slot = threading.Lock()
    app.callback(Input(HOVER, "data"), State(TOP_PERCENT, "value"), prevent_initial_call=True)(
        lambda pair, top_percent: prefetch_hovered(session, pair, top_percent, slot) and None)
    @app.callback(Output(PAGE, "data"), Input(PREV, "n_clicks"), Input(NEXT, "n_clicks"),
                  Input(SELECTION, "data"), Input(SORT, "value"), State(PAGE, "data"), prevent_initial_call=True)
    def _turn_page(_prev, _next, selection, _order, page):
        return turn_page(session, ctx.triggered_id, selection, page)

    app.callback(Output(BODY, "children"), Output(PAGER, "children"), Output(CAPTION, "children"),
                 Output(PREV, "disabled"), Output(NEXT, "disabled"),
                 Input(SELECTION, "data"), Input(SORT, "value"), Input(PAGE, "data"), State(PAIR, "data"))(
        lambda selection, order, page, pair: draw_grid(session, selection, order, page, pair))

    app.clientside_callback(HIGHLIGHT_SCRIPT, Output({"type": CARD, "pair": ALL}, "className"), Input(PAIR, "data"),
                            State({"type": CARD, "pair": ALL}, "id"))

    @app.callback(Output(PAIR, "data"), Input({"type": CARD, "pair": ALL}, "n_clicks"), State(PAIR, "data"),
                  State(TOP_PERCENT, "value"), prevent_initial_call=True)
    def _pick(_clicks, current, top_percent):
        clicked = bool(ctx.triggered and ctx.triggered[0]["value"])
        pair = pick(session, ctx.triggered_id, clicked, current)
        if isinstance(pair, int):  # a new pair (checked): its vulnerability maps' forward passes start now
            start_masks(session, pair, top_percent)
        return pair
