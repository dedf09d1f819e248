"""The Profiles page's top row: the pair picker (any pair of the store, with its images, labels and links to
the other pages) and the Architecture View with the profile presets, where the Flow View's axes are chosen
(spec-002 §2.1: presets, click to toggle a layer, the sequential-selection rule, fill path)."""

from __future__ import annotations

from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, guarded
from advlens.app.model import selection as layer_selection
from advlens.app.model.architecture import graph_layout
from advlens.app.model.architecture_figure import architecture_figure, figure_size
from advlens.app.profiles.state import AXIS, LAYERS, PAIR, check_layers
from advlens.app.routes import pair_image_url
from advlens.app.urls import make_query
from advlens.profiles import PROFILE_PRESETS

PAIR_INFO = "profiles-pair-info"
PREV = "profiles-pair-prev"
NEXT = "profiles-pair-next"
ARCH = "profiles-architecture"
ARCH_MESSAGE = "profiles-architecture-message"
ARCH_SUMMARY = "profiles-architecture-summary"
PRESET = "profiles-preset"
FILL = "profiles-fill"
RESET = "profiles-reset"


def pair_summary(session: Session, pair: int) -> list:
    """The pair's two images, labels and confidences, and links to it on the Neurons and Datapaths pages."""
    info = session.pair_info(pair)
    query = make_query({"pair": pair})
    return [
        html.Div([html.Img(src=pair_image_url(pair, "benign"), className="pf-thumb", alt="benign image",
                           title="benign (control)"),
                  html.Img(src=pair_image_url(pair, "adversarial"), className="pf-thumb", alt="adversarial image",
                           title="adversarial")], className="pf-thumbs"),
        html.Div([html.B(f"{info['label_name']} → {info['adv_name']}"),
                  html.Div(f"benign {info['benign_prob']:.0%} {info['label_name']}, adversarial "
                           f"{info['adv_prob']:.0%} {info['adv_name']} · L∞ {info['linf'] * 255:.3g}/255"),
                  html.Div([dcc.Link("this pair on the Neurons page", href=f"/neurons{query}",
                                     id="profiles-neurons-link"), " · ",
                            dcc.Link("its datapaths", href=f"/datapaths{query}", id="profiles-datapaths-link")],
                           className="pf-links")], className="pf-pair-facts"),
    ]


def pair_picker(session: Session, pair: int) -> html.Div:
    return html.Div([
        html.Label("Pair", className="pw-label", htmlFor=PAIR),
        html.Div([html.Button("‹", id=PREV, n_clicks=0, className="button pager-button", title="previous pair"),
                  dcc.Input(id=PAIR, type="number", min=0, max=session.num_pairs - 1, step=1, value=pair,
                            debounce=True, className="pf-pair-input"),
                  html.Button("›", id=NEXT, n_clicks=0, className="button pager-button", title="next pair"),
                  html.Span(f"of {session.num_pairs} successful attacks", className="pw-hint")],
                 className="pf-pair-row"),
        html.Div(pair_summary(session, pair), id=PAIR_INFO, className="pf-pair-info"),
    ], className="pf-pair panel")


def draw_architecture(session: Session, layers, axis) -> dict:
    """The Architecture View with the axes highlighted and the Layer View's layer outlined."""
    graph = session.model.graph
    layers = validate.layer_names(graph, layers or []) or session.profile_layers()
    placed, facts = graph_layout(session)
    return architecture_figure(graph, placed, facts, layers, axis if axis in graph else None)


def summary(layers: list[str]) -> list:
    return [html.Span([html.B(f"{i + 1}"), f" {name}"], className="selection-chip") for i, name in enumerate(layers)]


def architecture(session: Session, layers: list[str], axis: str | None) -> html.Section:
    placed, facts = graph_layout(session)
    width, height = figure_size(placed, facts)
    buttons = [html.Button(label, id={"type": PRESET, "preset": key}, n_clicks=0, className="button",
                           title=f"axes: the model's {label}") for key, (label, _) in PROFILE_PRESETS.items()]
    buttons += [html.Button("fill path", id=FILL, n_clicks=0, className="button",
                            title="every layer on the main path between the first and the last axis"),
                html.Button("stage layers", id=RESET, n_clicks=0, className="button",
                            title="the layers the profiles stage fitted")]
    return common.panel("Architecture: the Flow View's axes", [
        html.Div(dcc.Graph(id=ARCH, figure=draw_architecture(session, layers, axis),
                           config={**GRAPH_CONFIG, "responsive": True, "displayModeBar": False},
                           style={"minWidth": f"{width}px", "height": f"{height}px"}), className="architecture-scroll"),
        html.Div(id=ARCH_MESSAGE, className="selection-message"),
        html.Div(summary(layers), id=ARCH_SUMMARY, className="selection-summary"),
    ], [html.Span("click a layer to add or remove it · presets", className="label"), *buttons],
        "pf-architecture")


def _refusal(text: str):
    return no_update, common.message(text, "error")


@guarded(_refusal)
def select(session: Session, trigger, click, layers) -> tuple:
    """A click on the Architecture View or a preset → (axes, message); a non-sequential change is refused."""
    graph = session.model.graph
    layers = layer_selection.check(graph, layers or []) or session.profile_layers()
    if trigger == RESET:
        return session.profile_layers(), ""
    if isinstance(trigger, dict) and trigger.get("type") == PRESET:
        preset = validate.choice(trigger.get("preset"), PROFILE_PRESETS, "preset")
        chosen = PROFILE_PRESETS[preset][1](graph)
        return chosen, common.message(f"{len(chosen)} axes: {PROFILE_PRESETS[preset][0]}", "hint")
    if trigger == FILL:
        change = layer_selection.fill_path(graph, layers)
    elif trigger == ARCH:
        points = (click or {}).get("points") or []
        if not points or "customdata" not in points[0]:
            raise PreventUpdate
        change = layer_selection.toggle(graph, layers, validate.layer_name(graph, points[0]["customdata"]))
    else:
        raise PreventUpdate
    note = common.message(change.message, "error" if change.refused else "hint") if change.message else ""
    return (no_update if change.refused else list(change.layers)), note


@guarded(lambda text: no_update)
def step_pair(session: Session, trigger, pair) -> int:
    """The previous or next pair (wrapping is refused: the buttons stop at the ends)."""
    pair = validate.pair_id(session, pair if pair is not None else 0)
    target = pair - 1 if trigger == PREV else pair + 1
    if not 0 <= target < session.num_pairs:
        raise PreventUpdate
    return target


def register(app: Dash, session: Session) -> None:
    app.callback(Output(LAYERS, "data", allow_duplicate=True), Output(ARCH_MESSAGE, "children"),
                 Input(ARCH, "clickData"), *[Input({"type": PRESET, "preset": key}, "n_clicks")
                                             for key in PROFILE_PRESETS],
                 Input(FILL, "n_clicks"), Input(RESET, "n_clicks"), State(LAYERS, "data"), prevent_initial_call=True)(
        lambda click, *rest: select(session, ctx.triggered_id, click, rest[-1]))
    app.callback(Output(ARCH, "figure"), Output(ARCH_SUMMARY, "children"), Input(LAYERS, "data"), Input(AXIS, "data"),
                 prevent_initial_call=True)(
        guarded(lambda text: (common.error_figure(text), []))(
            lambda layers, axis: (draw_architecture(session, layers, axis),
                                  summary(validate.layer_names(session.model.graph, layers or [])
                                          or session.profile_layers()))))
    app.callback(Output(PAIR, "value"), Input(PREV, "n_clicks"), Input(NEXT, "n_clicks"), State(PAIR, "value"),
                 prevent_initial_call=True)(lambda _p, _n, pair: step_pair(session, ctx.triggered_id, pair))
    app.callback(Output(PAIR_INFO, "children"), Input(PAIR, "value"), prevent_initial_call=True)(
        guarded(lambda text: common.message(text, "error"))(
            lambda pair: pair_summary(session, validate.pair_id(session, pair))))


__all__ = ["architecture", "pair_picker", "pair_summary", "select", "step_pair", "register", "check_layers"]
