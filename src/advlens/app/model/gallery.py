"""Channel gallery: the focused layer's channels, each as its feature visualisation, a page at a time.

Tiles come from the ``/model-features`` route (:mod:`advlens.app.model.tiles`), labelled with their
channel id; a tile's tooltip gives the channel's median and 99th-percentile activation. Clicking a tile
picks the channel (its dataset examples and statistics open beside the gallery). When the store has no
``features`` stage, or the layer is not one the stage covers, the gallery says so and how to add it.
"""

from __future__ import annotations

from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import guarded
from advlens.app.model.state import FOCUS, PAGE, check_focus
from advlens.app.model.tiles import feature_url
from advlens.errors import AdvlensError, StoreError

PAGE_SIZE = 64

BODY = "gallery-body"
PAGER = "gallery-pager"
PREV = "gallery-prev"
NEXT = "gallery-next"
CAPTION = "gallery-caption"
TILE = "channel-tile"


def page_count(total: int) -> int:
    return max(1, -(-total // PAGE_SIZE))


def page_of_channel(channel: int | None) -> int:
    return 0 if channel is None else channel // PAGE_SIZE


def no_features_text(session: Session, layer: str) -> str | None:
    """Why ``layer`` has no gallery (no features stage, or a layer the stage does not cover), or None."""
    library = session.features  # StoreError naming the command when the stage is missing
    if library.has(layer):
        return None
    covered = library.layers()
    return (f"No feature visualisations for {layer}: the features stage covers the spatial activation layers "
            f"({', '.join(covered) if covered else 'none'}). Click one of those.")


def tile(layer_index: int, channel: int, selected: bool, tooltip: str) -> html.Div:
    return html.Div([
        html.Img(src=feature_url(layer_index, channel), className="tile-img", alt=f"channel {channel}"),
        html.Div(f"{channel}", className="tile-label"),
    ], id={"type": TILE, "channel": channel}, n_clicks=0, title=tooltip,
        className="channel-tile selected" if selected else "channel-tile")


def gallery(session: Session, focus, page) -> tuple[list, str, str, bool, bool]:
    """The tiles of one page of the focused layer, the pager text, the caption and the pager's states."""
    layer, channel = check_focus(session, focus)
    if layer is None:
        return [common.message("Click a layer of the Architecture View to see its channels (the activation "
                               "layers have feature visualisations).")], "", "", True, True
    try:
        reason = no_features_text(session, layer)
    except StoreError as exc:  # no features stage: say so and give the command that adds it
        return [common.message(str(exc), "warning")], "", layer, True, True
    if reason:
        return [common.message(reason)], "", layer, True, True
    library = session.features
    channels = library.num_channels(layer)
    pages = page_count(channels)
    page = validate.page_number(page, pages)
    first, last = page * PAGE_SIZE, min(channels, (page + 1) * PAGE_SIZE)
    index = library.layers().index(layer)
    levels = library.quantile_levels
    tiles = []
    for c in range(first, last):
        stats = library.channel_stats(layer, c)
        median = stats.max_quantiles[levels.index(0.5)] if 0.5 in levels else stats.max_mean
        tip = (f"channel {c} of {layer}: maximal activation, median {common.fmt(float(median))}, "
               f"{100 * levels[-1]:g}th percentile {common.fmt(float(stats.max_quantiles[-1]))}")
        tiles.append(tile(index, c, c == channel, tip))
    caption = (f"{layer} · {channels} channels · feature visualisations (images that maximise each channel's mean "
               f"activation); {100 * library.acceptance(layer):.0f}% reach the channel's "
               f"{100 * float(library.attrs['acceptance_level']):g}th percentile over the examined images")
    pager = f"{first}–{last - 1} of {channels} · page {page + 1}/{pages}"
    return tiles, pager, caption, page <= 0, page >= pages - 1


@guarded(lambda text: ([common.message(text, "error")], "", "", True, True))
def draw_gallery(session: Session, focus, page) -> tuple:
    return gallery(session, focus, page)


@guarded(lambda text: no_update)
def turn_page(session: Session, trigger, focus, page) -> int:
    """The page after ‹ or ›; the page holding the picked channel when the focus changes."""
    layer, channel = check_focus(session, focus)
    if trigger == FOCUS:
        new = page_of_channel(channel)
        return no_update if new == page else new
    if layer is None:
        raise PreventUpdate
    try:
        pages = page_count(session.features.num_channels(layer))
    except AdvlensError:
        raise PreventUpdate from None
    page = validate.page_number(page, pages)
    new = min(max(0, page + (-1 if trigger == PREV else 1)), pages - 1)
    return no_update if new == page else new


@guarded(lambda text: no_update)
def pick(session: Session, trigger, clicked: bool, focus) -> dict:
    """The focus with the channel of a clicked tile."""
    if not isinstance(trigger, dict) or not clicked:
        raise PreventUpdate  # tiles appearing, not a click
    layer, current = check_focus(session, focus)
    if layer is None:
        raise PreventUpdate
    channel = validate.channel_id(trigger.get("channel"), session.model.graph[layer].channels, layer)
    return no_update if channel == current else {"layer": layer, "channel": channel}


def layout(session: Session, focus: dict, page: int) -> html.Section:
    controls = common.pager(PREV, PAGER, NEXT)
    return common.panel("Channels", [
        dcc.Store(id=PAGE, data=page),
        html.Div(id=CAPTION, className="summary"),
        dcc.Loading(html.Div(id=BODY, className="gallery-body"), delay_show=common.LOADING_DELAY_MS,
                    parent_className="gallery-scroll"),
    ], controls, "channel-gallery")


def register(app: Dash, session: Session) -> None:
    app.callback(Output(BODY, "children"), Output(PAGER, "children"), Output(CAPTION, "children"),
                 Output(PREV, "disabled"), Output(NEXT, "disabled"), Input(FOCUS, "data"), Input(PAGE, "data"))(
        lambda focus, page: draw_gallery(session, focus, page))

    @app.callback(Output(PAGE, "data"), Input(PREV, "n_clicks"), Input(NEXT, "n_clicks"), Input(FOCUS, "data"),
                  State(PAGE, "data"), prevent_initial_call=True)
    def _turn_page(_prev, _next, focus, page):
        return turn_page(session, ctx.triggered_id, focus, page)

    @app.callback(Output(FOCUS, "data", allow_duplicate=True), Input({"type": TILE, "channel": ALL}, "n_clicks"),
                  State(FOCUS, "data"), prevent_initial_call=True)
    def _pick(_clicks, focus):
        clicked = bool(ctx.triggered and ctx.triggered[0]["value"])
        return pick(session, ctx.triggered_id, clicked, focus)
