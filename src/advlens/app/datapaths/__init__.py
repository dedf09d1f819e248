"""The Datapaths page (paper 003, AEVis; spec-003). A placeholder until issue 11 lands."""

from __future__ import annotations

from dash import Dash, html

from advlens.analysis import Session
from advlens.app.placeholder import placeholder

PATH = "/datapaths"
TITLE = "Datapaths"


def layout(session: Session, search: str | None = None) -> html.Div:
    return placeholder(session, search, "Datapaths", [
        "for a pair, the datapaths (critical feature maps) of its adversarial image, its benign source and images "
        "of the adversarial class, as a river over the model's layers (source blue, adversarial orange, target "
        "purple);",
        "per layer, a treemap of the shared and the exclusive feature maps;",
        "per feature map, its learned features and activation maps, with an area of interest whose contributions "
        "from an earlier layer can be traced back step by step.",
    ], ["computing a pair's datapaths when it is opened (≈ 8 s), or ahead of time ",
        html.Code("advlens datapaths STORE --pairs …")], "issue 11")


def register(app: Dash, session: Session) -> None:
    """No callbacks yet."""
