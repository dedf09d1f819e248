"""The what-if panel (issue 13, item 3): edit a pair's selected neurons — restore them to benign in the adversarial
pass, set them to adversarial in the benign pass, or zero them — and see the class probabilities change beside the
original ones.

A reusable component: a page lays it out with :func:`layout` under its own id prefix (:class:`WhatIfIds`), adds its
own controls for *which* neurons (a neuron, a subtree, a ranking's top-k …), and answers its callback with
:func:`panel_outputs`, giving the pair, the layer and the channels it selected, or the hint of what to select when
there are none. The pair's unedited forward pass and the layer's maps are kept in the session's cache, so an edit
costs one forward pass of one image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from dash import dcc, html

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, class_color, empty_figure
from advlens.app.figures import figure
from advlens.faithfulness.what_if import EDIT_MODES, EDITED_SIDE, PairEdit

MODE_LABELS = {
    "restore": "restore to benign",
    "attack": "set to adversarial",
    "zero_adversarial": "zero (adversarial pass)",
    "zero_benign": "zero (benign pass)",
}
assert tuple(MODE_LABELS) == EDIT_MODES
DEFAULT_MODE = "restore"
EDITED_COLOR = "#222222"
MAX_LISTED = 5
"""Neuron ids named in the summary (the rest counted)."""


@dataclass(frozen=True)
class WhatIfIds:
    """Component ids of one panel, under a page's prefix."""

    prefix: str

    @property
    def mode(self) -> str:
        return f"{self.prefix}-mode"

    @property
    def graph(self) -> str:
        return f"{self.prefix}-graph"

    @property
    def summary(self) -> str:
        return f"{self.prefix}-summary"


def pair_edit(session: Session, pair: int, layer: str, channels: Sequence[int], mode: str) -> PairEdit:
    """The session's what-if edit of one stored pair (:meth:`~advlens.analysis.Session.edit_pair`)."""
    return session.edit_pair(pair, channels, mode, layer)


def neuron_list(channels: Sequence[int]) -> str:
    shown = ", ".join(f"#{int(c)}" for c in channels[:MAX_LISTED])
    return shown + (f" and {len(channels) - MAX_LISTED} more" if len(channels) > MAX_LISTED else "")


def summary(session: Session, pair: int, edit: PairEdit, what: str) -> str:
    """One line: what was edited, in which pass, and the edited prediction against the original ones."""
    info = session.pair_info(pair)
    names = session.class_names
    probs = edit.edited.probabilities[0].numpy()
    top = int(np.argmax(probs))
    count = len(edit.channels)
    neurons = f"{count} neuron{'s' if count != 1 else ''} ({neuron_list(edit.channels)})"
    action = {"restore": "restored to benign in the adversarial pass", "attack": "set to adversarial in the benign pass",
              "zero_adversarial": "zeroed in the adversarial pass", "zero_benign": "zeroed in the benign pass"}
    if edit.side == "adversarial":
        outcome = ("the attack is undone" if top == info["label"] else
                   "the attack still succeeds" if top == info["adv_pred"] else "another class wins")
    else:
        outcome = ("the attack's class wins" if top == info["adv_pred"] else
                   "the benign class holds" if top == info["label"] else "another class wins")
    return (f"{what}: {neurons} {action[edit.mode]} → predicts {names[top]} ({probs[top]:.2f}): {outcome} "
            f"(benign {info['label_name']}, adversarial {info['adv_name']}).")


def probabilities_figure(session: Session, pair: int, edit: PairEdit) -> dict:
    """Grouped bars per class: the original benign and adversarial probabilities and the edited ones.

    Benign bars in the true class's colour, adversarial in the adversarial class's, edited in black (as the
    Neuron Vulnerability View colours the two curves).
    """
    info = session.pair_info(pair)
    names = list(session.class_names)
    series = [
        (f"original benign ({info['label_name']})", edit.benign.probabilities[0], class_color(info["label"])),
        (f"original adversarial ({info['adv_name']})", edit.adversarial.probabilities[0],
         class_color(info["adv_pred"])),
        (f"edited ({EDITED_SIDE[edit.mode]} pass)", edit.edited.probabilities[0], EDITED_COLOR),
    ]
    traces = [{"type": "bar", "x": names, "y": [round(float(v), 5) for v in values], "name": label,
               "marker": {"color": color, "line": {"width": 0}},
               "hovertemplate": f"{label}<br>%{{x}}: %{{y:.3f}}<extra></extra>"}
              for label, values, color in series]
    return figure(traces, {
        "barmode": "group", "bargap": 0.25, "bargroupgap": 0.05, "plot_bgcolor": "white",
        "margin": {"l": 40, "r": 8, "t": 18, "b": 4},
        "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom", "font": {"size": 10}},
        "xaxis": {"tickfont": {"size": 10}, "automargin": True, "fixedrange": True},
        "yaxis": {"range": [0, 1.02], "title": {"text": "probability", "font": {"size": 10}}, "tickfont": {"size": 9},
                  "gridcolor": "#f0f0f0", "fixedrange": True},
        "uirevision": "what-if",
    })


def panel_outputs(session: Session, pair, mode, layer: str, channels: Sequence[int] | None,
                  hint: str, what: str) -> tuple[dict, str]:
    """The panel's figure and summary for ``channels`` of ``layer`` (``None`` or none: ``hint`` says what to select).

    Args:
        pair: the page's selected pair (checked; ``None``: the hint to pick one).
        mode: one of :data:`MODE_LABELS` (checked).
        what: how the page names the selection ("neuron 40", "cluster of 12 neurons", "top 10 by band gap").
    """
    pair = validate.pair_id(session, pair)
    mode = validate.choice(mode, MODE_LABELS, "edit")
    if pair is None:
        return empty_figure("Pick a pair in the Image Grid, then select neurons to edit."), ""
    if not channels:
        return empty_figure(hint), ""
    edit = pair_edit(session, pair, layer, channels, mode)
    return probabilities_figure(session, pair, edit), summary(session, pair, edit, what)


def layout(ids: WhatIfIds, selection_controls: list, mode: str = DEFAULT_MODE,
           title: str = "What if") -> html.Section:
    """The panel: the edit (mode) and the page's selection controls above the probability bars and a summary."""
    controls = [dcc.RadioItems(id=ids.mode, options=[{"label": v, "value": k} for k, v in MODE_LABELS.items()],
                               value=mode, inline=True, className="radio what-if-mode")]
    return common.panel(title, [
        html.Div(selection_controls, className="what-if-selection"),
        dcc.Loading(dcc.Graph(id=ids.graph, config={**GRAPH_CONFIG, "displayModeBar": False},
                              className="what-if-graph"),
                    delay_show=common.LOADING_DELAY_MS),
        html.Div(id=ids.summary, className="summary what-if-summary"),
    ], controls, "what-if")
