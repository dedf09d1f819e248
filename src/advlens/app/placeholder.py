"""A page whose system is not built yet: what it will show, the command that will prepare it, and the
selection the URL carries (checked), with a link back to that selection on the Neurons page."""

from __future__ import annotations

from dash import dcc, html

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.urls import SHARED_KEYS, make_query, parse_query
from advlens.errors import AdvlensError


def carried_selection(session: Session, search: str | None) -> tuple[list[str], list[str], str]:
    """What the URL selects in terms every page understands: descriptions, problems, and the valid query."""
    params = parse_query(search)
    said, problems, valid = [], [], {}
    checks = {
        "true": lambda v: validate.class_id(session, v, "true class"),
        "adv": lambda v: validate.class_id(session, v, "adversarial class"),
        "pair": lambda v: validate.pair_id(session, v),
        "neuron": lambda v: validate.neuron_id(session, v),
    }
    for key in SHARED_KEYS:
        if key in params:
            try:
                valid[key] = checks[key](params[key])
            except AdvlensError as exc:
                problems.append(f"URL parameter {key}={params[key]!r}: {exc}")
    names = session.class_names
    if "true" in valid and "adv" in valid:
        said.append(f"class pair {names[valid['true']]} → {names[valid['adv']]}")
    if "pair" in valid:
        info = session.pair_info(valid["pair"])
        said.append(f"pair {valid['pair']} ({info['label_name']} → {info['adv_name']})")
    if "neuron" in valid:
        said.append(f"neuron {valid['neuron']}")
    return said, problems, make_query(valid)


def placeholder(session: Session, search: str | None, title: str, will_show: list[str], prepared_by: list,
                issue: str) -> html.Div:
    """The page of a system still to be built (``prepared_by``: text and commands, the commands as ``html.Code``)."""
    said, problems, query = carried_selection(session, search)
    body = [
        html.H2(title),
        html.P(f"This page is not built yet ({issue}). It will show:"),
        html.Ul([html.Li(line) for line in will_show]),
        html.P(["Prepared by ", *prepared_by, "."]),
    ]
    if said:
        body.append(html.P(["The URL selects ", ", ".join(said), ". ",
                            dcc.Link("Open it on the Neurons page", href=f"/neurons{query}"), "."]))
    if problems:
        body.append(common.message([html.Div(p) for p in problems], "warning"))
    return html.Div(html.Article(body, className="placeholder"), className="page placeholder-page")
