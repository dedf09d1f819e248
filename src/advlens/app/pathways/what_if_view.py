"""The Pathways page's what-if panel (issue 13, item 3, "pinned pathway nodes"): the neurons pinned in the Graph
Summary View — channels of several layers — restored to benign, set to adversarial or zeroed, at all their layers
at once, in the class pair's attacked images at the page's attack and strength.

Bluff's pathways are class-level, so the panel is too: it shows the mean class probabilities over the attacked
images (original benign, original adversarial, edited) and how many images the edit sends back to the original
class (restore, zero in the adversarial pass) or over to the target (set to adversarial, zero in the benign pass).
The images are the class pair's attacked set at the slider's strength (at most
:data:`~advlens.app.pathways.graph_view.PAGE_MAX_IMAGES`, the graph's own sample); at strength 0 (the benign
pathways) there is nothing attacked to edit, and the panel asks for a strength. The computation is
:func:`advlens.analysis.pathways_what_if.edit_pathway`; the panel's frame is :mod:`advlens.app.what_if`. The
pinned neurons and the edit are in the URL (``pinned``, ``edit``; see :mod:`advlens.app.pathways.state`).
"""

from __future__ import annotations

import textwrap

import numpy as np
from dash import Dash, Input, Output

from advlens.analysis import Session
from advlens.analysis.pathways_what_if import PathwayEdit, edit_pathway
from advlens.app import validate, what_if
from advlens.app.common import ERROR_COLOR, class_color, empty_figure, guarded
from advlens.app.figures import figure
from advlens.app.pathways.graph_view import PAGE_MAX_IMAGES, check_pair
from advlens.app.pathways.state import ATTACK, PAIR, PINNED, STRENGTH, check_pinned, strength_index, strength_label

IDS = what_if.WhatIfIds("pathways-what-if")

PIN_HINT = ("Pin neurons in the graph: click a node to pin it (click it again to unpin). The pinned neurons are "
            "edited at all their layers at once in the class pair's attacked images.")
BENIGN_HINT = ("Move the strength slider above 0: the benign pathways have no attacked images to edit.")
ACTION = {"restore": "restored to benign in the adversarial pass", "attack": "set to adversarial in the benign pass",
          "zero_adversarial": "zeroed in the adversarial pass", "zero_benign": "zeroed in the benign pass"}
MAX_LISTED = 4
"""Pinned neurons named in the summary (the rest counted)."""
MIN_SHOWN = 0.02
"""A class other than the pair's gets its own bars from this mean probability on."""
HINT_WIDTH = 44
"""Characters per line of an empty state's message (Plotly does not wrap; the column is narrow)."""


def nodes_text(nodes) -> str:
    """``"3 neurons at 2 layers (layer3:5, layer4:40, …)"``."""
    layers = len({layer for layer, _ in nodes})
    shown = ", ".join(f"{layer}:{channel}" for layer, channel in nodes[:MAX_LISTED])
    more = f" and {len(nodes) - MAX_LISTED} more" if len(nodes) > MAX_LISTED else ""
    return (f"{len(nodes)} neuron{'s' if len(nodes) != 1 else ''} at {layers} layer{'s' if layers != 1 else ''} "
            f"({shown}{more})")


def hint_figure(text: str, error: bool = False) -> dict:
    """An empty state (or an error) wrapped to the panel's width."""
    fig = empty_figure("<br>".join(textwrap.wrap(text, HINT_WIDTH)))
    if error:
        fig["layout"]["annotations"][0]["font"]["color"] = ERROR_COLOR
    return fig


def share(part: float, count: int) -> str:
    return f"{round(part * count)} of {count} ({part:.0%})"


def summary(session: Session, edit: PathwayEdit, label: str) -> str:
    """What was edited, in which images, and what it did to their predictions."""
    names = session.class_names
    original, target = names[edit.original], names[edit.target]
    sampled = f" (a seeded sample of {edit.count})" if edit.available > edit.count else ""
    where = (f"{ACTION[edit.mode].capitalize()}: {nodes_text(edit.nodes)}, in the {edit.available} {original} images "
             f"{edit.attack.upper()} at {label} sends to {target}{sampled}.")
    if edit.side == "adversarial":
        outcome = (f"{share(edit.returned, edit.count)} predict {original} again (unedited: "
                   f"{round(edit.unedited_returned * edit.count)})")
        cls, before = edit.original, edit.mean_adversarial
    else:
        outcome = (f"{share(edit.flipped, edit.count)} now predict {target} (unedited: "
                   f"{round(edit.unedited_flipped * edit.count)})")
        cls, before = edit.target, edit.mean_benign
    return f"{where} {outcome}; mean p({names[cls]}) {before[cls]:.2f} → {edit.mean_edited[cls]:.2f}."


def shown_classes(edit: PathwayEdit) -> list[int]:
    """The classes the bars name: the original, the target, and any other class with a mean probability of at least
    :data:`MIN_SHOWN` in one of the three series (the rest are summed into one "other classes" bar)."""
    series = np.stack([edit.mean_benign, edit.mean_adversarial, edit.mean_edited])
    others = [c for c in range(series.shape[1]) if c not in (edit.original, edit.target)
              and series[:, c].max() >= MIN_SHOWN]
    return [edit.original, edit.target, *others]


def probabilities_figure(session: Session, edit: PathwayEdit) -> dict:
    """Grouped bars per class (:func:`shown_classes`, then "other classes"): the mean probabilities of the original
    benign and adversarial images and of the edited ones (colours as the Neurons page's what-if panel: the original
    class's, the target's, black). The right column is narrow, so ten classes would not read."""
    names = session.class_names
    shown = shown_classes(edit)
    rest = [c for c in range(len(names)) if c not in shown]
    labels = [names[c] for c in shown] + (["other classes"] if rest else [])
    series = [(f"benign ({names[edit.original]} images)", edit.mean_benign, class_color(edit.original)),
              (f"adversarial (predicted {names[edit.target]})", edit.mean_adversarial, class_color(edit.target)),
              (f"edited ({edit.side} pass)", edit.mean_edited, what_if.EDITED_COLOR)]
    traces = [{"type": "bar", "x": labels,
               "y": [round(float(values[c]), 5) for c in shown] + ([round(float(values[rest].sum()), 5)] if rest
                                                                   else []),
               "name": label.split(" (")[0], "marker": {"color": color, "line": {"width": 0}},
               "hovertemplate": f"{label}<br>%{{x}}: mean %{{y:.3f}}<extra></extra>"}
              for label, values, color in series]
    return figure(traces, {
        "barmode": "group", "bargap": 0.2, "bargroupgap": 0.05, "plot_bgcolor": "white",
        "margin": {"l": 34, "r": 4, "t": 16, "b": 4},
        "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom", "font": {"size": 9},
                   "entrywidth": 0.33, "entrywidthmode": "fraction"},
        "xaxis": {"tickfont": {"size": 9}, "automargin": True, "fixedrange": True},
        "yaxis": {"range": [0, 1.02], "title": {"text": "mean prob.", "font": {"size": 9}},
                  "tickfont": {"size": 9}, "gridcolor": "#f0f0f0", "fixedrange": True, "nticks": 3},
        "uirevision": "pathways-what-if",
    })


def panel_outputs(session: Session, pair, attack, strength, pinned, mode) -> tuple[dict, str]:
    """The panel's figure and summary for the page's selection (each value from the browser checked)."""
    original, target = check_pair(session, pair)
    attack = validate.choice(attack, session.sweep_info().attacks, "attack")
    strength = strength_index(session, strength)
    pinned = check_pinned(session, pinned)
    mode = validate.choice(mode, what_if.MODE_LABELS, "edit")
    if not pinned:
        return hint_figure(PIN_HINT), ""
    if strength == 0:
        return hint_figure(BENIGN_HINT), ""
    eps = session.sweep_info().eps
    label = strength_label(eps, strength)
    edit = edit_pathway(session, original, target, attack, float(eps[strength - 1]), [tuple(p) for p in pinned],
                        mode, max_images=PAGE_MAX_IMAGES)
    if not edit.count:
        names = session.class_names
        return hint_figure(f"No sampled {names[original]} image is predicted {names[target]} at {label}: nothing "
                            "to edit. Choose a stronger strength."), ""
    return probabilities_figure(session, edit), summary(session, edit, label)


@guarded(lambda text: (hint_figure(text, error=True), ""))
def draw(session: Session, pair, attack, strength, pinned, mode) -> tuple[dict, str]:
    return panel_outputs(session, pair, attack, strength, pinned, mode)


def layout(mode: str = what_if.DEFAULT_MODE):
    return what_if.layout(IDS, [], mode, title="What if (pinned neurons)")


def register(app: Dash, session: Session) -> None:
    app.callback(Output(IDS.graph, "figure"), Output(IDS.summary, "children"),
                 Input(PAIR, "value"), Input(ATTACK, "value"), Input(STRENGTH, "value"), Input(PINNED, "data"),
                 Input(IDS.mode, "value"))(
        lambda pair, attack, strength, pinned, mode: draw(session, pair, attack, strength, pinned, mode))
