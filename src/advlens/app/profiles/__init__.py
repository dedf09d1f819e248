"""The Profiles page (paper 002, activation profiles; spec-002). A placeholder until issue 10 lands."""

from __future__ import annotations

from dash import Dash, html

from advlens.analysis import Session
from advlens.app.placeholder import placeholder

PATH = "/profiles"
TITLE = "Profiles"


def layout(session: Session, search: str | None = None) -> html.Div:
    return placeholder(session, search, "Activation profiles", [
        "the Flow View: one axis per selected layer, every background image as a line through its 1-D aligned UMAP "
        "position at each layer (bundled, coloured by true or predicted label), the selected pair in black, and the "
        "layers where the benign and the adversarial image part ways in red;",
        "the Layer View of one layer: unit heatmaps under four reductions (mean, max, difference, direct), activation "
        "maps and the strongest connections;",
        "the layer selection of the Model page (sequential layers only).",
    ], ["the profiles stage of ", html.Code("advlens prepare"), " (", html.Code("--profiles-background"),
        ": 2,000 benign test images)"], "issue 10")


def register(app: Dash, session: Session) -> None:
    """No callbacks yet."""
