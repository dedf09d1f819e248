"""The Pathways page (paper 004, Bluff; spec-004). A placeholder until issue 9 lands."""

from __future__ import annotations

from dash import Dash, html

from advlens.analysis import Session
from advlens.app.placeholder import placeholder

PATH = "/pathways"
TITLE = "Pathways"


def layout(session: Session, search: str | None = None) -> html.Div:
    return placeholder(session, search, "Activation pathways", [
        "for a class pair (true → adversarial label), the neurons of every activation layer that carry the benign "
        "images of each class and the attacked images, grouped original-only / both / target-only / attack-only, "
        "and the connections between them (Graph Summary View);",
        "how they change with the attack strength (slider over ε, FGSM against PGD in compare mode);",
        "a neuron's detail: feature visualisation, dataset examples, importance against strength; a link to the "
        "Neurons page for a pair of the class pair.",
    ], ["the strength sweep stage of ", html.Code("advlens prepare"), "; for one class pair, ",
        html.Code("advlens pathways STORE --original C --target C [--targeted]")], "issue 9")


def register(app: Dash, session: Session) -> None:
    """No callbacks yet."""
