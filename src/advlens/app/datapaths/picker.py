"""The example picker (spec-003 §4 "Inputs"): the store's pairs with their classes and the adversarialness
proxy, sortable; picking a row opens that pair (``/datapaths?pair=N``). Beside it the pair's summary: its
adversarial, source and representative target images with their predictions, and links to the same pair on
the Neurons and Profiles pages."""

from __future__ import annotations

import math

import numpy as np
from dash import Dash, Input, Output, dash_table, dcc, html, no_update

from advlens.analysis import Session
from advlens.analysis.datapaths import DatapathExamples
from advlens.app import common, validate
from advlens.app.common import guarded
from advlens.app.datapaths.river_figure import ROLE_COLORS, ROLE_NAMES
from advlens.app.images import data_uri, image_png
from advlens.app.routes import pair_image_url
from advlens.app.urls import make_query

TABLE = "dp-picker"
SUMMARY = "dp-summary"
SUGGESTED = 10
"""Pairs of medium adversarialness marked in the picker (the expert's usual pick, paper 003 §6.2)."""


def rows(examples: DatapathExamples) -> list[dict]:
    """One row per pair: id, classes, score, whether suggested and whether its datapaths are stored."""
    names = examples.class_names
    medium = set(examples.medium(SUGGESTED).tolist())
    return [{"id": int(p), "pair": int(p), "true": names[int(t)], "adv": names[int(a)], "score": round(float(s), 3),
             "suggested": "medium" if int(p) in medium else "", "stored": "yes" if bool(d) else ""}
            for p, t, a, s, d in zip(examples.pair, examples.label, examples.adv_pred, examples.adversarialness,
                                     examples.stored)]


PAGE_SIZE = 8
SORTABLE = ("pair", "true", "adv", "score", "suggested", "stored")


def page_rows(session: Session, page, sort_by) -> list[dict]:
    """One page of the picker, sorted on the server (the browser never holds every pair's row).

    ``sort_by``: DataTable's ``[{"column_id", "direction"}]`` (checked); ties keep the pair order.
    """
    data = rows(session.datapath_examples())
    page = validate.page_number(page, max(1, math.ceil(len(data) / PAGE_SIZE)))
    if sort_by:
        if not isinstance(sort_by, list) or len(sort_by) > len(SORTABLE):
            raise validate.InvalidSelection(f"sort order {str(sort_by)[:60]!r} is not a list of columns")
        for rule in reversed(sort_by):
            if not isinstance(rule, dict):
                raise validate.InvalidSelection(f"sort rule {str(rule)[:60]!r} is not a column and a direction")
            column = validate.choice(rule.get("column_id"), SORTABLE, "sort column")
            direction = validate.choice(rule.get("direction"), ("asc", "desc"), "sort direction")
            data.sort(key=lambda r: r[column], reverse=direction == "desc")
    return data[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]


def layout(session: Session, pair: int | None) -> html.Section:
    examples = session.datapath_examples()
    count = len(examples.pair)
    page = 0 if pair is None else int(np.flatnonzero(examples.pair == pair)[0]) // PAGE_SIZE
    table = dash_table.DataTable(
        id=TABLE, data=page_rows(session, page, []), page_size=PAGE_SIZE, page_current=page,
        page_count=max(1, math.ceil(count / PAGE_SIZE)), page_action="custom", sort_action="custom",
        sort_mode="single", sort_by=[], cell_selectable=True,
        columns=[{"name": "pair", "id": "pair", "type": "numeric"}, {"name": "true class", "id": "true"},
                 {"name": "predicted (adv.)", "id": "adv"},
                 {"name": "adversarialness", "id": "score", "type": "numeric"},
                 {"name": "", "id": "suggested"}, {"name": "stored", "id": "stored"}],
        style_as_list_view=True, style_cell={"fontSize": 12, "padding": "2px 6px", "textAlign": "left",
                                             "cursor": "pointer", "fontFamily": "inherit"},
        style_header={"fontWeight": 600, "background": "#f2f4f7"},
        style_data_conditional=[{"if": {"filter_query": f"{{id}} = {pair}"}, "backgroundColor": "#fff3d6",
                                 "fontWeight": 600}] if pair is not None else [],
        tooltip_header={"score": examples.score_label})
    return common.panel("Adversarial examples", [
        html.Div(["Click a row to open its datapaths (computed on first opening, about 8 s on the demo model, "
                  "then kept in the store). ", html.Span("adversarialness", className="dp-term"),
                  f": {examples.score_label}; 'medium' marks the {SUGGESTED} pairs nearest the "
                  "median score."], className="dp-hint"),
        table,
    ], [], "dp-picker-panel")


def _tile(src: str, role: str, caption: str) -> html.Figure:
    return html.Figure([html.Img(src=src, className="dp-pair-img", alt=f"{ROLE_NAMES[role]} image"),
                        html.Figcaption([html.Span(ROLE_NAMES[role], style={"color": ROLE_COLORS[role]},
                                                   className="dp-role"), html.Br(), caption])],
                       className="dp-pair-tile")


def summary(session: Session, pair: int | None, target_image: np.ndarray | None = None,
            target_caption: str | None = None) -> list:
    """The pair's images and links (the target once its datapaths are known)."""
    if pair is None:
        return [common.message("Pick an adversarial example in the table: its datapaths, those of its source "
                               "image and of images of the class the attack turns it into are compared below.")]
    info = session.pair_info(pair)
    tiles = [_tile(pair_image_url(pair, "adversarial"), "adv", f"predicted {info['adv_name']}"),
             _tile(pair_image_url(pair, "benign"), "src", f"{info['label_name']} (true class)")]
    if target_image is not None:
        tiles.append(_tile(data_uri(image_png(target_image)), "tar", target_caption or ""))
    query = make_query({"pair": pair})
    links = html.Div([dcc.Link("this pair on the Neurons page", href=f"/neurons{query}", id="dp-neurons-link"),
                      dcc.Link("on the Profiles page", href=f"/profiles{query}", id="dp-profiles-link")],
                     className="dp-links")
    return [html.H3(f"Pair {pair}: {info['label_name']} → {info['adv_name']}"), html.Div(tiles, className="dp-tiles"),
            links]


def register(app: Dash, session: Session) -> None:
    app.callback(Output(TABLE, "data"), Input(TABLE, "page_current"), Input(TABLE, "sort_by"),
                 prevent_initial_call=True)(
        guarded(lambda text: no_update)(lambda page, sort_by: page_rows(session, page, sort_by)))
