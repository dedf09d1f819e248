"""Context images (paper 001, §5.3 "One Neuron–Multiple Images", Fig. 5): clicking an RF in the
Receptive Field View opens the top-m benign and adversarial images of the selected pairs for the
selected neuron, ranked by the neuron's maximal activation or by prediction confidence, each with the
neuron's RF.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import class_color, guarded
from advlens.app.images import data_uri, rf_overlay
from advlens.app.neurons.receptive_field import ADVERSARIAL_IMG, BENIGN_IMG
from advlens.app.neurons.state import CONTEXT, NEURON, RF_QUANTILE, SELECTION

MODAL = "context-modal"
CLOSE = "context-close"
BY = "context-by"
COUNT = "context-m"
BODY = "context-body"
TITLE = "context-title"

BY_LABELS = {"activation": "maximal activation of the neuron", "confidence": "prediction confidence"}


SCORE_NAMES = {"activation": "max activation", "confidence": "confidence"}
COUNTS = (6, 12)
SIDES = ("benign", "adversarial")


def context_tiles(session: Session, ids: np.ndarray, scores: np.ndarray, rfs, side: str,
                  by: str = "activation") -> list:
    """One tile per context image: the image masked by the neuron's RF, its labels and score."""
    if len(ids) == 0:
        return [common.message("no images")]
    benign, adversarial = session.pair_images(ids)
    images = benign if side == "benign" else adversarial
    tiles = []
    for i, pair in enumerate(ids):
        info = session.pair_info(int(pair))
        label = info["label"] if side == "benign" else info["adv_pred"]
        name = info["label_name"] if side == "benign" else info["adv_name"]
        tiles.append(html.Div([
            html.Img(src=data_uri(rf_overlay(images[i], rfs[i].numpy(), target=112)), className="context-img",
                     style={"borderColor": class_color(label)}),
            html.Div(f"pair {int(pair)} · {name}", className="context-label"),
            html.Div(f"{SCORE_NAMES[by]} {float(scores[i]):.3f} · RF {100 * float(rfs[i].float().mean()):.0f}%",
                     className="context-score"),
        ], className="context-tile"))
    return tiles


def context_body(session: Session, neuron: int | None, selection: dict | None, side: str = "benign",
                 by: str = "activation", m: int = 6, quantile: float | None = None) -> tuple[str, list]:
    """The modal's title and rows (the clicked side's row first).

    Every argument is checked (:mod:`advlens.app.validate`); a bad one raises ``InvalidSelection``.
    """
    neuron = validate.neuron_id(session, neuron)
    selection = validate.selection(session, selection)
    side = validate.choice(side, SIDES, "side")
    by = validate.choice(by, tuple(BY_LABELS), "ranking")
    m = validate.choice(m, COUNTS, "number of images")
    quantile = validate.rf_quantile(session, quantile)
    if neuron is None:
        return "Context images", [common.message(
            "Context images need one neuron: click a neuron in the Neuron Vulnerability View.")]
    pairs: Sequence[int] | None = selection["pairs"] if selection and selection["pairs"] else None
    scope = (f"the {len(pairs)} selected pairs ({selection['label']})" if pairs is not None
             else f"all {session.num_pairs} pairs")
    result = session.context(int(neuron), pairs, m=m, by=by, quantile=quantile)
    rows = {
        "benign": html.Div([
            html.H3(f"benign images: top {len(result.benign)} by {BY_LABELS[by]}"),
            html.Div(context_tiles(session, result.benign, result.benign_scores, result.benign_rfs, "benign", by),
                     className="context-row")], className="context-section"),
        "adversarial": html.Div([
            html.H3(f"adversarial images: top {len(result.adversarial)} by {BY_LABELS[by]}"),
            html.Div(context_tiles(session, result.adversarial, result.adversarial_scores, result.adversarial_rfs,
                                   "adversarial", by), className="context-row")], className="context-section"),
    }
    order = ["benign", "adversarial"] if side == "benign" else ["adversarial", "benign"]
    return f"Context images of neuron {int(neuron)} among {scope}", [rows[s] for s in order]


def layout(session: Session) -> html.Div:
    dialog = html.Div([
        html.Div([
            html.H2(id=TITLE),
            html.Button("×", id=CLOSE, n_clicks=0, className="button close-button", title="close"),
        ], className="modal-header"),
        html.Div([
            html.Label(["rank by", dcc.RadioItems(id=BY, options=[{"label": "activation", "value": "activation"},
                                                                 {"label": "confidence", "value": "confidence"}],
                                                  value="activation", inline=True, className="radio")],
                       className="control"),
            html.Label(["images", dcc.RadioItems(id=COUNT, options=[{"label": "6", "value": 6},
                                                                    {"label": "12", "value": 12}],
                                                 value=6, inline=True, className="radio")], className="control"),
        ], className="modal-controls"),
        dcc.Loading(html.Div(id=BODY, className="context-body"), delay_show=common.LOADING_DELAY_MS),
    ], className="modal-dialog", role="dialog")
    return html.Div(dialog, id=MODAL, className="modal", style={"display": "none"})


# ---------------------------------------------------------------------------------------------- callbacks
def open_close(trigger) -> dict | None:
    """Which RF was clicked (the modal opens on that side), or ``None`` when closed."""
    if trigger == CLOSE:
        return None
    return {"side": "benign" if trigger == BENIGN_IMG else "adversarial"}


@guarded(lambda text: ({"display": "flex"}, "Context images", [common.message(text, "error")]))
def draw(session: Session, context, by, m, neuron, quantile, selection) -> tuple:
    if not context:
        return {"display": "none"}, no_update, no_update
    if not isinstance(context, dict):
        raise validate.InvalidSelection(f"context {str(context)[:60]!r} is not {{'side': ...}}")
    title, body = context_body(session, neuron, selection, context.get("side"), by, m, quantile)
    return {"display": "flex"}, title, body


def register(app: Dash, session: Session) -> None:
    app.callback(Output(CONTEXT, "data"), Input(BENIGN_IMG, "n_clicks"), Input(ADVERSARIAL_IMG, "n_clicks"),
                 Input(CLOSE, "n_clicks"), prevent_initial_call=True)(lambda *_: open_close(ctx.triggered_id))
    app.callback(Output(MODAL, "style"), Output(TITLE, "children"), Output(BODY, "children"),
                 Input(CONTEXT, "data"), Input(BY, "value"), Input(COUNT, "value"), Input(NEURON, "data"),
                 Input(RF_QUANTILE, "value"), State(SELECTION, "data"))(
        lambda context, by, m, neuron, quantile, selection: draw(session, context, by, m, neuron, quantile,
                                                                 selection))
