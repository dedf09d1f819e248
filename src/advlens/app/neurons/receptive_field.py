"""Receptive Field View (paper 001, §5.2.1 and §5.3, Fig. 2-d).

The selected neuron's RFs on the benign and the adversarial image (the same threshold on both), each
with its class-probability bars; with dendrogram nodes selected, the union or intersection of their
neurons' RFs. Below: the bMap and aMap (Alg. 1) binarized at the top p% (default 20%). The RF
threshold (a quantile level of the stored statistics) and p are set here and used by every view.
Clicking an RF opens the context images (see :mod:`advlens.app.context_view`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np
from dash import Dash, Input, Output, State, dcc, html, no_update

from advlens import measures
from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import class_color, guarded
from advlens.app.images import DETAIL_SIZE, data_uri, image_png, map_overlay, rf_overlay
from advlens.app.neurons.cluster_view import active_nodes, selected_neurons
from advlens.app.neurons.state import COMBINE_OP, MAPS_DRAWN, NEURON, NODES, PAIR, RF_QUANTILE, TOP_PERCENT
from advlens.errors import AdvlensError

logger = logging.getLogger(__name__)

BENIGN_IMG = "rf-benign-img"
ADVERSARIAL_IMG = "rf-adversarial-img"
BENIGN_PROBS = "rf-benign-probs"
ADVERSARIAL_PROBS = "rf-adversarial-probs"
BENIGN_TITLE = "rf-benign-title"
ADVERSARIAL_TITLE = "rf-adversarial-title"
BMAP_IMG = "bmap-img"
AMAP_IMG = "amap-img"
RF_CAPTION = "rf-caption"
MAP_CAPTION = "map-caption"
CONTENT = "rf-content"
EMPTY = "rf-empty"
MAPS_PAIR = "maps-pair-store"
"""The pair whose vulnerability maps to draw, set once the RFs are drawn: the forward passes of Alg. 1 start
after the quick views, not in competition with them. The server starts them as soon as it has drawn the RFs
(:func:`start_masks`), so the maps callback, which the browser sends only once it has taken the RFs in (after
drawing the other views), finds them computed or under way."""

MAX_BARS = 10
OPS = ("union", "intersection")


def probability_bars(session: Session, probabilities: np.ndarray, highlight: int) -> list:
    """Horizontal class-probability bars (all classes up to :data:`MAX_BARS`, else the largest)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    classes = (np.arange(len(probs)) if len(probs) <= MAX_BARS
               else np.sort(np.argsort(-probs, kind="stable")[:MAX_BARS]))
    rows = []
    for c in classes:
        rows.append(html.Div([
            html.Span(session.class_names[c], className="bar-name" + (" bar-strong" if c == highlight else "")),
            html.Span(html.Span(style={"width": f"{100 * probs[c]:.1f}%", "background": class_color(c)},
                                className="bar-fill"), className="bar-track"),
            html.Span(f"{probs[c]:.2f}", className="bar-value"),
        ], className="bar-row", title=f"{session.class_names[c]}: {probs[c]:.4f}"))
    return rows


def rf_neurons(session: Session, pair: int, neuron: int | None, nodes: Sequence[int] | None,
               quantile: float | None = None, tree: tuple[str, str | None] = (measures.DEFAULT_METRIC, None)
               ) -> np.ndarray:
    """The neurons whose RFs are shown: those under the selected dendrogram nodes (of the clustering ``tree``,
    a distance and a linkage), else the neuron."""
    if nodes:
        return selected_neurons(session, pair, nodes, quantile, *tree)
    if neuron is None:
        return np.zeros(0, dtype=np.int64)
    return np.array([int(neuron)], dtype=np.int64)


def rf_panel(session: Session, pair: int | None, neuron: int | None = None, nodes: Sequence[int] | None = None,
             op: str = "union", quantile: float | None = None,
             tree: tuple[str, str | None] = (measures.DEFAULT_METRIC, None)) -> dict:
    """Everything the RF half of the view shows, as plain values (image data URIs, bars, texts).

    Every argument is checked (:mod:`advlens.app.validate`); a bad one raises ``InvalidSelection``.
    """
    pair = validate.pair_id(session, pair)
    neuron = validate.neuron_id(session, neuron)
    nodes = validate.node_ids(session, nodes)
    op = validate.choice(op, OPS, "combination")
    quantile = validate.rf_quantile(session, quantile)
    if pair is None:
        return {"empty": "Pick a pair in the Image Grid, then a neuron in the Neuron Vulnerability View."}
    info = session.pair_info(pair)
    benign, adversarial = (a[0] for a in session.pair_images([pair]))
    neurons = rf_neurons(session, pair, neuron, nodes, quantile, tree)
    out = {"empty": None, "benign_probs": probability_bars(session, info["benign_probs"], info["label"]),
           "adversarial_probs": probability_bars(session, info["adv_probs"], info["adv_pred"])}
    if neurons.size == 0:
        out.update(benign_src=data_uri(image_png(benign, DETAIL_SIZE)),
                   adversarial_src=data_uri(image_png(adversarial, DETAIL_SIZE)),
                   benign_title=f"benign · {info['label_name']}",
                   adversarial_title=f"adversarial · {info['adv_name']}",
                   caption="No neuron selected: click a neuron in the Neuron Vulnerability View or nodes of the "
                           "dendrogram to see receptive fields.")
        return out
    if neurons.size == 1:
        b_rfs, a_rfs = session.receptive_fields(pair, quantile)
        b_mask, a_mask = b_rfs[int(neurons[0])].numpy(), a_rfs[int(neurons[0])].numpy()
        what = f"neuron {int(neurons[0])}"
    else:
        b_mask, a_mask = (m.numpy() for m in session.combined_rf(pair, neurons, op, quantile))
        what = f"{op} of {neurons.size} neurons"
    level = quantile if quantile is not None else session.default_rf_quantile
    out.update(
        benign_src=data_uri(rf_overlay(benign, b_mask)), adversarial_src=data_uri(rf_overlay(adversarial, a_mask)),
        benign_title=f"benign RF · {info['label_name']} · {100 * b_mask.mean():.0f}% of the image",
        adversarial_title=f"adversarial RF · {info['adv_name']} · {100 * a_mask.mean():.0f}% of the image",
        caption=f"{what} · threshold: quantile {level:g} of each neuron's activations · click an RF for its "
                "context images",
    )
    return out


def maps_panel(session: Session, pair: int | None, top_percent: float = 20.0) -> dict:
    """The bMap and aMap overlays (top ``top_percent`` %) as data URIs, and a caption."""
    pair = validate.pair_id(session, pair)
    top_percent = validate.number(top_percent, "top p%", 1, 100)
    if pair is None:
        return {"bmap_src": "", "amap_src": "", "caption": ""}
    benign, adversarial = (a[0] for a in session.pair_images([pair]))
    try:
        bmask, amask = (m.numpy() for m in session.vulnerability_masks(pair, top_percent))
    except AdvlensError as exc:
        return {"bmap_src": "", "amap_src": "", "caption": f"vulnerability maps unavailable: {exc}"}
    info = session.pair_info(pair)
    return {
        "bmap_src": data_uri(map_overlay(benign, bmask)), "amap_src": data_uri(map_overlay(adversarial, amask)),
        "caption": f"top {top_percent:g}% of the pixels whose substitution lowers P({info['label_name']}) (bMap) "
                   f"/ raises P({info['adv_name']}) (aMap) the most",
    }


def _cell(title_id: str, image_id: str, probs_id: str | None, title: str = "", clickable: bool = False) -> html.Div:
    image = html.Img(id=image_id, className="rf-img clickable" if clickable else "rf-img",
                     title="click: context images" if clickable else None, n_clicks=0)
    body = [dcc.Loading(image, delay_show=common.LOADING_DELAY_MS, parent_className="rf-img-wrap")]
    if probs_id:
        body.append(html.Div(id=probs_id, className="prob-bars"))
    return html.Div([html.Div(title, id=title_id, className="cell-title"), html.Div(body, className="rf-cell-body")],
                    className="rf-cell")


def layout(session: Session, quantile: float | None = None) -> html.Section:
    """The view, its RF threshold set to ``quantile`` (default: the store's)."""
    levels = session.rf_quantile_levels
    default = session.default_rf_quantile
    controls = html.Div([
        html.Label(["RF threshold (quantile)", dcc.Dropdown(
            id=RF_QUANTILE, options=[{"label": f"{q:g}" + (" (default)" if q == default else ""), "value": q}
                                     for q in levels], value=default if quantile is None else quantile,
            clearable=False, searchable=False,
            className="quantile-dropdown")], className="control"),
        html.Label(["vulnerable pixels: top p%", dcc.Slider(
            id=TOP_PERCENT, min=1, max=100, step=1, value=20, marks={1: "1", 20: "20", 50: "50", 100: "100"},
            updatemode="mouseup", allow_direct_input=False, className="top-slider")], className="control wide"),
    ], className="rf-controls")
    grid = html.Div([
        _cell(BENIGN_TITLE, BENIGN_IMG, BENIGN_PROBS, clickable=True),
        _cell(ADVERSARIAL_TITLE, ADVERSARIAL_IMG, ADVERSARIAL_PROBS, clickable=True),
        _cell("bmap-title", BMAP_IMG, None, "bMap: benign probability decrease"),
        _cell("amap-title", AMAP_IMG, None, "aMap: adversarial probability increase"),
    ], className="rf-grid")
    combine = [html.Span("several neurons:", className="label"), dcc.RadioItems(
        id=COMBINE_OP, options=[{"label": "union", "value": "union"},
                                {"label": "intersection", "value": "intersection"}],
        value="union", inline=True, className="radio")]
    return common.panel("Receptive Field View", [
        dcc.Store(id=MAPS_PAIR, data=None), dcc.Store(id=MAPS_DRAWN, data=None),
        controls,
        html.Div(id=EMPTY, className="rf-empty"),
        html.Div([grid, html.Div(id=RF_CAPTION, className="summary"), html.Div(id=MAP_CAPTION, className="summary")],
                 id=CONTENT),
    ], combine, "rf-view")


# ---------------------------------------------------------------------------------------------- callbacks
@guarded(lambda text: (common.message(text, "error"), {"display": "none"}, "", "", [], [], "", "", "", no_update))
def draw_rfs(session: Session, pair, neuron, record, op, quantile, maps_pair) -> tuple:
    """The RF cells, their titles and caption; then the pair whose maps to draw (once per pair)."""
    record = validate.nodes_record(session, record)
    tree = (measures.DEFAULT_METRIC, None) if record is None else (record["metric"], record["method"])
    out = rf_panel(session, pair, neuron, active_nodes(record, pair, quantile, *tree), op, quantile, tree)
    maps = no_update if pair == maps_pair else pair
    if out["empty"]:
        return common.message(out["empty"]), {"display": "none"}, "", "", [], [], "", "", "", maps
    return (None, None, out["benign_src"], out["adversarial_src"], out["benign_probs"], out["adversarial_probs"],
            out["benign_title"], out["adversarial_title"], out["caption"], maps)


def start_masks(session: Session, pair: int, top_percent,
                done: Callable[[], None] | None = None) -> threading.Thread | None:
    """Compute the pair's top-p% masks into the session's cache in a background thread (the maps callback, and
    the IoU measures, read them there; the cache makes a concurrent request wait for this computation instead of
    repeating it). Nothing is started for a bad p: the maps callback reports it.

    The thread runs at a lower scheduling priority (:func:`lower_thread_priority`), and so do the OpenMP threads
    its forward passes start: they take the cores the views' callbacks (and a browser on the same machine) leave
    idle, instead of sharing them equally. ``done`` is called in the thread when it ends."""
    try:
        percent = validate.number(20.0 if top_percent is None else top_percent, "top p%", 1, 100)
    except AdvlensError:
        return None

    def compute() -> None:
        lower_thread_priority()
        try:
            session.vulnerability_masks(pair, percent)
        except Exception:  # noqa: BLE001 - the maps callback computes again and shows the error
            logger.debug("vulnerability masks of pair %s ahead of the maps callback failed", pair, exc_info=True)
        finally:
            if done is not None:
                done()
    thread = threading.Thread(target=compute, name=f"advlens-masks-{pair}", daemon=True)
    thread.start()
    return thread


BACKGROUND_NICENESS = 10
"""How much :func:`lower_thread_priority` lowers a background computation's priority (Linux nice steps)."""


def lower_thread_priority(steps: int = BACKGROUND_NICENESS) -> None:
    """Lower the calling thread's scheduling priority by ``steps`` nice levels (Linux: the nice value is per
    thread, and threads it starts later, e.g. OpenMP's, inherit it). A no-op where the platform has no per-thread
    priority; a thread cannot raise its priority again, so call it only in a thread that ends with its work."""
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + steps))
    except OSError:  # not permitted here: run at the normal priority
        logger.debug("could not lower the priority of thread %s", threading.get_native_id(), exc_info=True)


@guarded(lambda text: ("", "", common.message(text, "error")))
def draw_maps(session: Session, pair, top_percent) -> tuple:
    out = maps_panel(session, pair, 20.0 if top_percent is None else top_percent)
    return out["bmap_src"], out["amap_src"], out["caption"]


def maps_outputs(session: Session, pair, top_percent) -> tuple:
    """:func:`draw_maps`, then the pair whose maps were drawn (:data:`MAPS_DRAWN`: the faithfulness badges wait
    for it, so that their forward passes do not compete with the maps')."""
    return (*draw_maps(session, pair, top_percent), pair)


def register(app: Dash, session: Session) -> None:
    @app.callback(Output(EMPTY, "children"), Output(CONTENT, "style"),
                  Output(BENIGN_IMG, "src"), Output(ADVERSARIAL_IMG, "src"),
                  Output(BENIGN_PROBS, "children"), Output(ADVERSARIAL_PROBS, "children"),
                  Output(BENIGN_TITLE, "children"), Output(ADVERSARIAL_TITLE, "children"),
                  Output(RF_CAPTION, "children"),
                  Output(MAPS_PAIR, "data"),
                  Input(PAIR, "data"), Input(NEURON, "data"), Input(NODES, "data"), Input(COMBINE_OP, "value"),
                  Input(RF_QUANTILE, "value"), State(MAPS_PAIR, "data"), State(TOP_PERCENT, "value"))
    def _draw_rfs(pair, neuron, record, op, quantile, maps_pair, top_percent):
        out = draw_rfs(session, pair, neuron, record, op, quantile, maps_pair)
        if out[-1] is not no_update and out[-1] is not None:  # a new pair (checked): its maps come next
            start_masks(session, out[-1], top_percent)
        return out

    app.callback(Output(BMAP_IMG, "src"), Output(AMAP_IMG, "src"), Output(MAP_CAPTION, "children"),
                 Output(MAPS_DRAWN, "data"), Input(MAPS_PAIR, "data"), Input(TOP_PERCENT, "value"))(
        lambda pair, top_percent: maps_outputs(session, pair, top_percent))
