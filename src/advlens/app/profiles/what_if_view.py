"""The Profiles page's what-if panel (issue 13, item 3): the pair's top-k diverging units of the Layer View's layer
(paper 002's divergence ranking, ``Σ_hw |a_adv − a_benign|``, the ranking of the view's Fig. 9b chart), or the unit
whose detail is open, restored to benign, set to adversarial or zeroed, with the class probabilities beside the
original ones.

The panel itself is :mod:`advlens.app.what_if`; this module picks the units. The edit, the selection and k are in
the URL (``edit``, ``edit_of``, ``k``; see :mod:`advlens.app.profiles.state`).
"""

from __future__ import annotations

import numpy as np
from dash import Dash, Input, Output, dcc, html

from advlens.analysis import Session
from advlens.app import common, validate, what_if
from advlens.app.common import error_figure, guarded
from advlens.app.profiles.state import (
    AXIS,
    DEFAULT_EDIT,
    DEFAULT_EDIT_K,
    DEFAULT_EDIT_OF,
    EDIT_OF,
    PAIR,
    UNIT,
    check_axis,
    check_edit_k,
    check_unit,
)
from advlens.profiles import divergence_ranking

IDS = what_if.WhatIfIds("pf-what-if")
SOURCE = "pf-what-if-of"
K = "pf-what-if-k"

SOURCE_LABELS = {"top": "the top", "unit": "the open unit"}
assert tuple(SOURCE_LABELS) == EDIT_OF


def top_diverging(session: Session, pair: int, layer: str, k: int) -> np.ndarray:
    """The pair's ``k`` units of ``layer`` with the largest ``Σ_hw |a_adv − a_benign|`` (ties: lower index first).
    Shape: (k,) int64."""
    benign, adversarial = session.pair_outputs(pair, [layer])
    return divergence_ranking(adversarial[0], benign[0], top=k).units.astype(np.int64)


def chosen_units(session: Session, pair, layer, source: str, k, unit) -> tuple[int | None, str | None, np.ndarray,
                                                                                 str, str]:
    """(pair, layer, the units ``source`` selects, how the panel names them, the hint when there are none);
    checked, ``pair`` or ``layer`` None while there is nothing to edit. A k above the layer's units edits them all."""
    none = np.zeros(0, dtype=np.int64)
    pair = validate.pair_id(session, pair)
    if pair is None:
        return None, None, none, "", "Pick a pair (its number above), then open a layer to edit its units."
    layer = check_axis(session, layer)
    if layer is None:
        return pair, None, none, "", ("Click an axis of the Flow View to open its layer: this panel edits the "
                                      "layer's top diverging units, or the unit you open.")
    if source == "unit":
        unit = check_unit(session, layer, unit)
        if unit is None:
            return pair, layer, none, "", (f"Click a unit of {layer} (heatmap, map or chart) to edit it, or edit the "
                                           "top k.")
        return pair, layer, np.array([unit], dtype=np.int64), f"{layer} unit {unit}", ""
    if k is None:  # the k box is empty
        return pair, layer, none, "", "Set k, the number of top diverging units to edit."
    k = min(check_edit_k(k), session.model.graph[layer].channels)
    return pair, layer, top_diverging(session, pair, layer, k), f"the top {k} diverging units of {layer}", ""


@guarded(lambda text: (error_figure(text), ""))
def draw(session: Session, pair, layer, mode, source, k, unit) -> tuple[dict, str]:
    """The panel's figure and summary for the page's selection."""
    source = validate.choice(source, SOURCE_LABELS, "edited units")
    validate.choice(mode, what_if.MODE_LABELS, "edit")
    pair, layer, channels, what, hint = chosen_units(session, pair, layer, source, k, unit)
    if pair is None or layer is None:
        return common.empty_figure(hint), ""
    return what_if.panel_outputs(session, pair, mode, layer, channels.tolist(), hint, what)


def layout(mode: str = DEFAULT_EDIT, source: str = DEFAULT_EDIT_OF, k: int = DEFAULT_EDIT_K) -> html.Section:
    selection = [
        html.Span("edit", className="label"),
        dcc.RadioItems(id=SOURCE, options=[{"label": v, "value": s} for s, v in SOURCE_LABELS.items()], value=source,
                       inline=True, className="radio"),
        html.Span("k", className="label"),
        dcc.Input(id=K, type="number", min=1, step=1, value=k, debounce=True, className="what-if-k"),
        html.Span("diverging units of the Layer View's layer (Σ|adv − benign|, Fig. 9b's order)", className="label"),
    ]
    return what_if.layout(IDS, selection, mode, title="What if · the layer's diverging units")


def register(app: Dash, session: Session) -> None:
    app.callback(Output(IDS.graph, "figure"), Output(IDS.summary, "children"),
                 Input(PAIR, "value"), Input(AXIS, "data"), Input(IDS.mode, "value"), Input(SOURCE, "value"),
                 Input(K, "value"), Input(UNIT, "data"))(
        lambda pair, layer, mode, source, k, unit: draw(session, pair, layer, mode, source, k, unit))
