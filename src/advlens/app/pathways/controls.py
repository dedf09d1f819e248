"""The Pathways page's control sidebar (spec-004 §6, Bluff Fig. 1A): class pair ordered by attack count,
attack and strength (0 = benign), highlight mode and top-x%, filter, compare mode, and the pinned neurons."""

from __future__ import annotations

import numpy as np
from dash import dcc, html

from advlens.analysis import Session
from advlens.app import common
from advlens.app.pathways.state import (
    ATTACK,
    COMPARE,
    FILTER,
    MODE,
    PAIR,
    STRENGTH,
    TOP,
    VS,
    VS_BOX,
    PathwaysState,
)
from advlens.pathways import HIGHLIGHT_MODES

CLEAR_PINS = "pathways-clear-pins"
PINS = "pathways-pins"
SETS = "pathways-sets"

MODE_LABELS = {"activated": "most activated", "changed": "most changed", "excited": "most excited",
               "inhibited": "most inhibited"}
FILTER_LABELS = {"all": "all", "pinned": "pinned", "highlighted": "highlighted"}
COMPARE_LABELS = {"none": "off", "strengths": "two strengths", "attacks": "two attacks"}


def pair_value(original: int, target: int) -> str:
    return f"{original}-{target}"


def pair_options(session: Session, attack: str, keep: tuple[int, int] | None = None) -> list[dict]:
    """The class pairs, most attacked first, labelled with their count over all strengths.

    With more than :data:`common.MAX_FULL_CLASSES` classes only the pairs the attack sent at least one image
    across are listed (a 1,000-class model has 999,000 ordered pairs, most of them never attacked), plus ``keep``
    (the pair the page shows) and the most attacked pair.
    """
    pairs = session.pathway_class_pairs(attack)
    names = session.class_names
    eps = pairs.eps * 255
    shown = np.ones(len(pairs.total), dtype=bool)
    if len(names) > common.MAX_FULL_CLASSES:
        shown = pairs.total > 0
        shown[:1] = True
        if keep is not None:
            shown |= (pairs.original == keep[0]) & (pairs.target == keep[1])
    options = []
    for o, t, total, counts in zip(pairs.original[shown].tolist(), pairs.target[shown].tolist(),
                                   pairs.total[shown].tolist(), pairs.counts[shown].tolist()):
        per = ", ".join(f"{e:g}/255: {c}" for e, c in zip(eps, counts))
        options.append({"label": f"{names[o]} → {names[t]} · {total}", "value": pair_value(o, t),
                        "title": f"sampled {names[o]} images the attack turns into {names[t]} per strength ({per})"})
    return options


def strength_marks(session: Session) -> dict:
    eps = session.sweep_info().eps
    return {0: "0", **{i + 1: f"{e * 255:g}" for i, e in enumerate(eps)}}


def _field(label: str, control, hint: str | None = None) -> html.Div:
    return html.Div([html.Label(label, className="pw-label"), control,
                     html.Div(hint, className="pw-hint") if hint else None], className="pw-field")


def layout(session: Session, state: PathwaysState) -> html.Aside:
    info = session.sweep_info()
    marks = strength_marks(session)
    per_class = f"≤ {info.per_class} per class" if info.per_class else "a per-class sample"
    return html.Aside([
        _field("Class pair (original → target)", dcc.Dropdown(
            id=PAIR, options=pair_options(session, state.attack, (state.original, state.target)),
            value=pair_value(state.original, state.target),
            clearable=False, searchable=True, optionHeight=30),
            f"ordered by how often the attack maps one to the other ({per_class} sampled true positives)"),
        _field("Attack", dcc.RadioItems(id=ATTACK, options=[{"label": a.upper(), "value": a} for a in info.attacks],
                                        value=state.attack, inline=True, className="pw-radio")),
        _field("Strength ε (/255)", dcc.Slider(id=STRENGTH, min=0, max=len(info.eps), step=1, marks=marks,
                                               value=state.strength, included=False),
               "0 = the benign pathways"),
        _field("Highlight", dcc.RadioItems(id=MODE, options=[{"label": MODE_LABELS[m], "value": m}
                                                             for m in HIGHLIGHT_MODES],
                                           value=state.mode, className="pw-radio")),
        _field("Top x% of each layer", dcc.Slider(id=TOP, min=5, max=100, step=5, value=state.top,
                                                  marks={v: f"{v}" for v in (5, 20, 40, 60, 80, 100)},
                                                  included=True)),
        _field("Show", dcc.RadioItems(id=FILTER, options=[{"label": FILTER_LABELS[f], "value": f}
                                                          for f in FILTER_LABELS],
                                      value=state.filter, inline=True, className="pw-radio")),
        _field("Compare", dcc.RadioItems(id=COMPARE, options=[{"label": COMPARE_LABELS[c], "value": c}
                                                              for c in COMPARE_LABELS],
                                         value=state.compare, inline=True, className="pw-radio")),
        html.Div(_field("Stronger strength ε (/255)", dcc.Slider(id=VS, min=0, max=len(info.eps), step=1, marks=marks,
                                                                value=state.vs, included=False),
                        "inner square: the weaker strength; outer: the stronger"),
                 id=VS_BOX, style={} if state.compare == "strengths" else {"display": "none"}),
        html.Div(id=SETS, className="pw-sets"),
        html.Div([html.Div(id=PINS, className="pw-pins"),
                  html.Button("Clear pins", id=CLEAR_PINS, n_clicks=0, className="button")],
                 className="pw-field"),
    ], className="pw-sidebar panel")
