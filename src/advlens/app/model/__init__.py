"""The Model page: a microscope for the user's own model (issue 8, item 8). A placeholder until it lands."""

from __future__ import annotations

from dash import Dash, html

from advlens.analysis import Session
from advlens.app.placeholder import placeholder

PATH = "/model"
TITLE = "Model"


def layout(session: Session, search: str | None = None) -> html.Div:
    return placeholder(session, search, "Model", [
        "the Architecture View of the store's model (spec-002 §2.1): a horizontal graph of its layers, input and "
        "output circles, layer squares coloured by kind (grey: no parameters, blue: weighted, red: other "
        "trainable), blocks as white rectangles, shortcut edges;",
        "click a layer: a gallery of its channels, each as its feature visualisation;",
        "hover or click a channel: its top dataset examples (patches around the receptive field) and its "
        "activation statistics;",
        "the layer selection (clicks, presets \"activation layers\" / \"block outputs\" / \"weighted layers\") that "
        "the Profiles page reuses.",
    ], ["the features stage of ", html.Code("advlens prepare"), " (feature visualisations and dataset examples of "
        "every channel)"], "issue 8")


def register(app: Dash, session: Session) -> None:
    """No callbacks yet."""
