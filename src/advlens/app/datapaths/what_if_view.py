"""The Datapaths page's what-if panel (issue 13, item 3): the open layer's critical maps of one datapath (the
adversarial's, the source's or the representative target's), or the map open in the neuron view, restored to
benign, set to adversarial or zeroed in the pair's forward pass, with the class probabilities beside the original
ones.

One layer at a time: the layer open in the layer view (a column of the river). The datapaths gate whole feature
maps, so a critical map is one channel of its gate layer, and the edit replaces that channel's whole map. The panel
itself is :mod:`advlens.app.what_if`; the edit and the edited maps are in the URL (``edit``, ``edit_of``; see
:mod:`advlens.app.datapaths.state`).
"""

from __future__ import annotations

import numpy as np
from dash import Dash, Input, Output, dcc, html

from advlens.analysis import Session
from advlens.app import common, validate, what_if
from advlens.app.common import error_figure, guarded
from advlens.app.datapaths import network
from advlens.app.datapaths.river_figure import ROLE_NAMES
from advlens.app.datapaths.state import (
    DEFAULT_EDIT,
    DEFAULT_EDIT_OF,
    EDIT_OF,
    LAYER,
    MAP,
    READY,
    check_layer,
    check_map,
)

IDS = what_if.WhatIfIds("dp-what-if")
SOURCE = "dp-what-if-of"

SOURCE_LABELS = {"adv": "the adversarial's critical maps", "src": "the source's", "tar": "the target's",
                 "map": "the open map"}
assert tuple(SOURCE_LABELS) == EDIT_OF


def chosen_maps(session: Session, ready, layer, map_, source: str) -> tuple[int | None, str | None, np.ndarray,
                                                                              str, str]:
    """(pair, layer, the maps ``source`` selects at the open layer, how the panel names them, the hint when there
    are none). Checked; ``pair`` or ``layer`` is None while there is nothing to edit yet."""
    paths = network.ready_paths(session, ready)
    none = np.zeros(0, dtype=np.int64)
    if paths is None:
        return None, None, none, "", ("Open a pair (click a row of the table above); once its datapaths are drawn, "
                                      "click a layer of the river to edit its critical maps here.")
    layer = check_layer(session, layer)
    if layer is None:
        return paths.pair, None, none, "", ("Click a layer (a column) of the river: this panel edits that layer's "
                                            "critical maps, one layer at a time.")
    if source == "map":
        map_ = check_map(session, layer, map_)
        if map_ is None:
            return paths.pair, layer, none, "", (f"Click a map of {layer} in the treemap (or its top list) to edit it, "
                                                 "or edit a datapath's critical maps.")
        return paths.pair, layer, np.array([map_], dtype=np.int64), f"{layer} map {map_}", ""
    critical = np.flatnonzero(paths.layer_critical(layer)[paths.row(source)]).astype(np.int64)
    what = f"the {ROLE_NAMES[source]}'s {len(critical)} critical map{'s' if len(critical) != 1 else ''} of {layer}"
    hint = (f"No map of {layer} is critical for the {ROLE_NAMES[source]} datapath: choose another datapath or "
            "open another layer.")
    return paths.pair, layer, critical, what, hint


@guarded(lambda text: (error_figure(text), ""))
def draw(session: Session, ready, layer, map_, mode, source) -> tuple[dict, str]:
    """The panel's figure and summary for the page's selection."""
    source = validate.choice(source, SOURCE_LABELS, "edited maps")
    validate.choice(mode, what_if.MODE_LABELS, "edit")
    pair, layer, channels, what, hint = chosen_maps(session, ready, layer, map_, source)
    if pair is None or layer is None:
        return common.empty_figure(hint), ""
    return what_if.panel_outputs(session, pair, mode, layer, channels.tolist(), hint, what)


def layout(mode: str = DEFAULT_EDIT, source: str = DEFAULT_EDIT_OF) -> html.Section:
    selection = [
        html.Span("edit", className="label"),
        dcc.RadioItems(id=SOURCE, options=[{"label": v, "value": s} for s, v in SOURCE_LABELS.items()], value=source,
                       inline=True, className="radio"),
        html.Span("at the open layer", className="label"),
    ]
    return what_if.layout(IDS, selection, mode, title="What if · the open layer's critical maps")


def register(app: Dash, session: Session) -> None:
    app.callback(Output(IDS.graph, "figure"), Output(IDS.summary, "children"),
                 Input(READY, "data"), Input(LAYER, "data"), Input(MAP, "data"), Input(IDS.mode, "value"),
                 Input(SOURCE, "value"))(
        lambda ready, layer, map_, mode, source: draw(session, ready, layer, map_, mode, source))
