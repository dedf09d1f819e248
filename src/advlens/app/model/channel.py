"""Channel details: the picked channel's feature visualisation, its top dataset examples (the patch around
each image's peak, with the activation value and, for an attacked image, a link to its pair on the Neurons
page) and its activation statistics over the examined images.

On the analysed layer a channel is the Neurons page's neuron: a link opens it there, carrying the class
pair and pair of the URL.
"""

from __future__ import annotations

import numpy as np
from dash import Dash, Input, Output, State, dcc, html

from advlens.analysis import Session
from advlens.app import common
from advlens.app.common import URL, guarded
from advlens.app.model.state import FOCUS, check_focus
from advlens.app.model.tiles import example_url, feature_url
from advlens.app.routes import pair_image_url
from advlens.app.urls import SHARED_KEYS, make_query, parse_query
from advlens.errors import StoreError

BODY = "channel-body"


def pair_of_index(session: Session) -> dict[int, int]:
    """Dataset index → pair id, for the examined images that were attacked successfully."""
    return session.cache.get_or_compute(
        ("model-pair-of-index",),
        lambda: {int(i): p for p, i in enumerate(np.asarray(session.table["dataset_index"]).tolist())})


def neurons_link(session: Session, search: str | None, **params) -> str:
    """``/neurons`` with ``params`` and the class pair / pair of the current URL (``params`` win)."""
    kept = {k: v for k, v in parse_query(search).items() if k in SHARED_KEYS and k != "neuron"}
    if "pair" in params:
        kept.pop("true", None)
        kept.pop("adv", None)
    return "/neurons" + make_query({**kept, **{k: v for k, v in params.items() if v is not None}})


def stats_table(session: Session, layer: str, channel: int) -> html.Table:
    """Quantiles of the channel's maximal and mean activation, and its activation on its visualisation."""
    library = session.features
    stats = library.channel_stats(layer, channel)
    images = library.attrs.get("images")
    head = html.Tr([html.Th("activation"), *[html.Th(f"{100 * q:g}th") for q in stats.quantile_levels]])
    rows = [html.Tr([html.Td("maximum over the map"), *[html.Td(common.fmt(float(v))) for v in stats.max_quantiles]]),
            html.Tr([html.Td("mean over the map"), *[html.Td(common.fmt(float(v))) for v in stats.mean_quantiles]])]
    verdict = "above" if stats.accepted else "below"
    notes = html.Ul([
        html.Li(f"mean of the maximum: {common.fmt(stats.max_mean)} (over {images} examined images)"),
        html.Li([f"on its visualisation (mean over the map): {common.fmt(stats.vis_activation)}, ",
                 html.B(verdict), f" the {100 * stats.acceptance_level:g}th percentile"]),
    ], className="stats-notes")
    return html.Div([html.Table([html.Thead(head), html.Tbody(rows)], className="stats-table"), notes],
                    className="channel-stats")


def example_tiles(session: Session, layer: str, channel: int, neuron: int | None, search: str | None) -> list:
    """One tile per top dataset example: its patch, activation, label → prediction and pair link."""
    library = session.features
    examples = library.examples(layer, channel)
    index = library.layers().index(layer)
    pairs = pair_of_index(session)
    names = session.class_names
    tiles = []
    for rank, (image, value) in enumerate(zip(examples.indices.tolist(), examples.values.tolist())):
        label, prediction = int(examples.labels[rank]), int(examples.predictions[rank])
        top, left, bottom, right = (int(v) for v in examples.windows[rank])
        where = f"rows {top}–{bottom - 1}, columns {left}–{right - 1} of image {image}"
        pair = pairs.get(int(image))
        if examples.patches is not None:
            picture = html.Img(src=example_url(index, channel, rank), className="example-img",
                               alt=f"example {rank + 1}", title=where)
        elif pair is not None:
            picture = html.Img(src=pair_image_url(pair, "benign"), className="example-img", title=where,
                               alt=f"example {rank + 1}")
        else:
            picture = html.Div(where, className="example-img example-missing")
        caption = [html.Div(f"{common.fmt(value)}", className="example-value", title="maximal activation"),
                   html.Div(f"{names[label]} → {names[prediction]}", className="example-label",
                            title=f"label → the model's prediction (image {image})")]
        if pair is not None:
            caption.append(dcc.Link(f"pair {pair}", href=neurons_link(session, search, pair=pair, neuron=neuron),
                                    className="example-link", title="open this pair on the Neurons page"))
        else:
            caption.append(html.Div(f"image {image}", className="example-index",
                                    title="not a pair of the store (the attack did not succeed or the model "
                                          "misclassified it)"))
        tiles.append(html.Div([picture, *caption], className="example-tile"))
    return tiles


def details(session: Session, focus, search: str | None = None) -> list:
    """The picked channel's visualisation, statistics and dataset examples (or what to do)."""
    layer, channel = check_focus(session, focus)
    if layer is None or channel is None:
        return [common.message("Click a channel in the gallery to see its dataset examples and activation "
                               "statistics.")]
    try:
        library = session.features
    except StoreError as exc:  # no features stage: say so and give the command that adds it
        return [common.message(str(exc), "warning")]
    if not library.has(layer):
        return [common.message(f"No features for {layer}.")]
    index = library.layers().index(layer)
    analysed = layer == session.model.analysed_layer_name
    neuron = channel if analysed else None
    head = [html.H3(f"{layer} · channel {channel}")]
    if analysed:
        head.append(dcc.Link(f"Open neuron {channel} on the Neurons page",
                             href=neurons_link(session, search, neuron=channel), className="neuron-link",
                             title="the analysed layer's channels are the Neurons page's neurons"))
    k = library.k
    return [
        html.Div(head, className="channel-head"),
        html.Div([
            html.Img(src=feature_url(index, channel, "large"), className="channel-vis",
                     alt=f"feature visualisation of channel {channel}", title="feature visualisation"),
            stats_table(session, layer, channel),
        ], className="channel-top"),
        html.H4(f"Top {k} dataset examples (receptive field of the maximal unit; value: maximal activation)"),
        html.Div(example_tiles(session, layer, channel, neuron, search), className="example-row"),
    ]


@guarded(lambda text: [common.message(text, "error")])
def draw(session: Session, focus, search=None) -> list:
    return details(session, focus, search if isinstance(search, str) else None)


def layout() -> html.Section:
    return common.panel("Channel", [
        dcc.Loading(html.Div(id=BODY, className="channel-body"), delay_show=common.LOADING_DELAY_MS,
                    parent_className="channel-scroll"),
    ], [], "channel-details")


def register(app: Dash, session: Session) -> None:
    app.callback(Output(BODY, "children"), Input(FOCUS, "data"), State(URL, "search"))(
        lambda focus, search: draw(session, focus, search))
