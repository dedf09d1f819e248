"""The Profiles page (paper 002, activation profiles; spec-002 §2): where, layer by layer, an adversarial image
leaves its own class and joins the one the model sees.

Top: the pair picker and the Architecture View whose selection is the Flow View's axes
(:mod:`~advlens.app.profiles.controls`). Middle: the Flow View (:mod:`~advlens.app.profiles.flow`, figure in
:mod:`~advlens.app.profiles.flow_figure`). Bottom: the Layer View of the clicked axis
(:mod:`~advlens.app.profiles.layer_view`, figures in :mod:`~advlens.app.profiles.layer_figures`) and the what-if
panel that edits the layer's top diverging units (:mod:`~advlens.app.profiles.what_if_view`). The
selection lives in the URL (:mod:`~advlens.app.profiles.state`; the Neurons page links here as
``/profiles?pair=N``); the computations are :class:`advlens.analysis.profiles.ProfilesAnalysis`. A new layer
selection is fitted as a job with progress (:mod:`advlens.app.jobs`). Without a ``profiles`` stage the page
names the command that adds it.
"""

from __future__ import annotations

from dash import Dash, Input, Output, State, dcc, html, no_update

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import URL, URL_WRITTEN, guarded
from advlens.app.profiles import controls, flow, layer_view, what_if_view
from advlens.app.profiles.state import (
    AXIS,
    COLOUR,
    DEFAULTS,
    EDIT_OF,
    GROUP,
    IMAGE,
    LAYERS,
    MODE,
    PAIR,
    PROBLEMS,
    REDUCTION,
    SCALAR,
    SET,
    TAU,
    UNIT,
    check_axis,
    check_edit_k,
    check_layers,
    check_set,
    check_tau,
    check_unit,
    query_string,
    state_from_query,
)
from advlens.app.urls import parse_query
from advlens.errors import AdvlensError
from advlens.faithfulness.what_if import EDIT_MODES
from advlens.profiles import REDUCTIONS, UNIT_SCALARS

PATH = "/profiles"
TITLE = "Profiles"


def no_profiles(session: Session) -> html.Div:
    """The empty state of a store without the profiles stage: what the page shows and the command that adds it."""
    return html.Div(html.Article([
        html.H2("Activation profiles"),
        html.P("This page shows where, layer by layer, an adversarial image leaves its own class and joins the one "
               "the model sees: every background image as a line through its aligned 1-D position on each selected "
               "layer, the chosen pair in black, the layers where the pair parts in red, and a Layer View of any "
               "layer. It reads the profiles stage of the store, which this store does not hold yet. Add it with:"),
        html.Pre(html.Code(session.profiles_command()), className="pw-command"),
        html.P("(a seeded background of 2,000 benign images, --profiles-background; about 2 minutes on 2 CPU cores, "
               "UMAP's code compilation included)."),
    ], className="placeholder"), className="page placeholder-page")


def layout(session: Session, search: str | None = None) -> html.Div:
    """The page opened on the selection of the URL query ``search``."""
    if not session.has_profiles():
        return no_profiles(session)
    try:
        state = state_from_query(session, search)
    except AdvlensError as exc:  # a damaged stage, a model that cannot be loaded: the page says why
        return html.Div(common.message(common.error_text(exc), "error"), className="page profiles-page")
    problems = html.Div(common.message([html.Div(p) for p in state.problems], "warning") if state.problems else None,
                        id=PROBLEMS, className="url-problems")
    return html.Div([
        dcc.Store(id=LAYERS, data=state.layers), dcc.Store(id=AXIS, data=state.layer),
        dcc.Store(id=UNIT, data=state.unit), dcc.Store(id=GROUP, data=None), problems,
        html.Div([controls.pair_picker(session, state.pair), controls.architecture(session, state.layers, state.layer)],
                 className="pf-top"),
        flow.layout(state.colour, state.view, state.tau),
        layer_view.layout(state.reduction, state.image_set, state.scalar, state.image),
        what_if_view.layout(state.edit, state.edit_of, state.k),
    ], className="page profiles-page")


@guarded(lambda text: (no_update, no_update))
def url_query(session: Session, pair, layers, axis, unit, colour, mode, reduction, image_set, scalar, image, tau,
              current: str | None = None, edit=None, edit_of=None, k=None) -> tuple:
    """The URL query of the page's selection (twice: the URL and the record of what was written); nothing to
    write when the URL already says the same or a value is not valid yet (the views report it)."""
    pair = validate.pair_id(session, pair)
    if pair is None or (layers and len(layers) < 2):
        return no_update, no_update
    layer = check_axis(session, axis)
    options = {"colour": validate.choice(colour, ("pred", "true"), "colour by"),
               "view": validate.choice(mode, ("lines", "histograms"), "view"),
               "reduction": validate.choice(reduction, REDUCTIONS, "reduction"), "set": check_set(session, image_set),
               "scalar": validate.choice(scalar, UNIT_SCALARS, "unit scalar"),
               "image": validate.choice(image, ("benign", "adversarial"), "image"), "tau": check_tau(tau),
               "edit": validate.choice(DEFAULTS["edit"] if edit is None else edit, EDIT_MODES, "edit"),
               "edit_of": validate.choice(DEFAULTS["edit_of"] if edit_of is None else edit_of, EDIT_OF,
                                          "edited units"),
               "k": DEFAULTS["k"] if k is None else check_edit_k(k)}
    current = current if isinstance(current, str) else None
    query = query_string(session, pair, check_layers(session, layers), layer, check_unit(session, layer, unit),
                         options, current)
    if parse_query(query) == parse_query(current or ""):
        return no_update, no_update
    return query, query


def register(app: Dash, session: Session) -> None:
    if not session.has_profiles():
        return
    controls.register(app, session)
    flow.register(app, session)
    layer_view.register(app, session)
    what_if_view.register(app, session)
    app.callback(Output(URL, "search", allow_duplicate=True), Output(URL_WRITTEN, "data", allow_duplicate=True),
                 Input(PAIR, "value"), Input(LAYERS, "data"), Input(AXIS, "data"), Input(UNIT, "data"),
                 Input(COLOUR, "value"), Input(MODE, "value"), Input(REDUCTION, "value"), Input(SET, "value"),
                 Input(SCALAR, "value"), Input(IMAGE, "value"), Input(TAU, "value"),
                 Input(what_if_view.IDS.mode, "value"), Input(what_if_view.SOURCE, "value"),
                 Input(what_if_view.K, "value"), State(URL, "search"), prevent_initial_call=True)(
        lambda pair, layers, axis, unit, colour, mode, reduction, image_set, scalar, image, tau, edit, edit_of, k,
        current: url_query(session, pair, layers, axis, unit, colour, mode, reduction, image_set, scalar, image, tau,
                           current, edit, edit_of, k))
