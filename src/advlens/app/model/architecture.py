"""Architecture View (spec-002 §2.1) and the layer selection under it.

A click on a layer either opens its channels in the gallery or toggles it in the selection (the
"click a layer to" switch); the presets put the graph's activation layers, block outputs or weighted
layers in the selection; "fill path" selects every layer on the main path between the first and the
last selected one. A change that would make the selection non-sequential is refused with the graph's
message. The logic is :mod:`advlens.app.model.selection`; the figure is
:mod:`advlens.app.model.architecture_figure`.
"""

from __future__ import annotations

from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, guarded
from advlens.app.model import selection as layer_selection
from advlens.app.model.architecture_figure import (
    KIND_COLORS,
    KIND_LABELS,
    SELECTED_HALO,
    SHORTCUT_COLOR,
    NodeFacts,
    architecture_figure,
    figure_size,
    node_facts,
)
from advlens.app.model.graph_layout import GraphLayout, layout_graph
from advlens.app.model.state import FOCUS, MESSAGE, SELECTION, check_focus

GRAPH = "architecture-graph"
MODE = "architecture-click-mode"
SUMMARY = "selection-summary"
PRESET_BUTTON = "selection-preset"
FILL = "selection-fill"
CLEAR = "selection-clear"

CONFIG = {**GRAPH_CONFIG, "responsive": True, "doubleClick": "reset"}
"""Fills its place (at least the width its columns need); a double click returns to the whole model."""

MODES = {"inspect": "show its channels", "select": "add it to / remove it from the selection"}


def graph_layout(session: Session) -> tuple[GraphLayout, NodeFacts]:
    """The placed graph and the per-layer facts of the session's model (computed once, cached)."""
    def compute():
        graph = session.model.graph
        placed = layout_graph(graph)
        return placed, node_facts(graph, placed)
    return session.cache.get_or_compute(("model-architecture",), compute)


def draw(session: Session, layers, focus) -> dict:
    """The Architecture View with the selection highlighted and the focused layer outlined."""
    graph = session.model.graph
    layers = validate.layer_names(graph, layers or [])
    layer, _ = check_focus(session, focus)
    placed, facts = graph_layout(session)
    return architecture_figure(graph, placed, facts, layers, layer)


@guarded(lambda text: common.error_figure(text))
def draw_figure(session: Session, layers, focus) -> dict:
    return draw(session, layers, focus)


def _legend() -> html.Div:
    items = [html.Span([html.Span(className="chip square", style={"background": color}), KIND_LABELS[kind]],
                       className="legend-item") for kind, color in KIND_COLORS.items()]
    items += [
        html.Span([html.Span(className="chip", style={"background": "#9aa0a6"}), "model input / output"],
                  className="legend-item"),
        html.Span([html.Span(className="chip line", style={"background": SHORTCUT_COLOR}), "shortcut"],
                  className="legend-item"),
        html.Span([html.Span(className="chip square", style={"background": SELECTED_HALO}), "selected"],
                  className="legend-item"),
        html.Span([html.Span(className="chip square focus"), "channels shown"], className="legend-item"),
    ]
    return html.Div(items, className="legend architecture-legend")


WIDE_PX = 1600
"""Views wider than this do not fit a laptop screen: the caption says the rest is a sideways scroll away."""


def scroll_hint(width: int) -> str:
    """`` · W px wide: scroll sideways for the rest`` for a view wider than :data:`WIDE_PX`, else ''."""
    return f" · {width:,} px wide: scroll sideways for the rest" if width > WIDE_PX else ""


def layout(session: Session, layers: list[str], focus: dict) -> list:
    """The Architecture View panel and the layer-selection panel."""
    placed, facts = graph_layout(session)
    width, height = figure_size(placed, facts)
    graph = session.model.graph
    traced = "torch.fx" if graph.method == "fx" else "module hooks (functional ops are not shown)"
    view = common.panel("Architecture", [
        _legend(),
        html.Div(dcc.Graph(id=GRAPH, figure=draw(session, layers, focus), config=CONFIG,
                           style={"minWidth": f"{width}px", "height": f"{height}px"}),
                 className="architecture-scroll"),
        html.Div(f"{len(graph)} layers · {len(placed.blocks)} blocks · {len(placed.shortcut_edges())} shortcut "
                 f"edges · traced with {traced}{scroll_hint(width)}"
                 " · hover a layer for its type, output shape and receptive field; drag to zoom, double-click to "
                 "reset", className="summary"),
    ], [html.Span("click a layer to", className="label"),
        dcc.RadioItems(id=MODE, options=[{"label": v, "value": k} for k, v in MODES.items()], value="inspect",
                       inline=True, className="radio")], "architecture-view")
    buttons = [html.Button(label, id={"type": PRESET_BUTTON, "preset": key}, n_clicks=0, className="button",
                           title=f"select the model's {label}")
               for key, (label, _) in layer_selection.PRESETS.items()]
    buttons += [html.Button("fill path", id=FILL, n_clicks=0, className="button",
                            title="select every layer on the main path between the first and the last selected"),
                html.Button("clear", id=CLEAR, n_clicks=0, className="button", title="select no layer")]
    chooser = common.panel("Layer selection", [
        html.Div(id=MESSAGE, className="selection-message"),
        html.Div(summary(layers), id=SUMMARY, className="selection-summary"),
    ], [html.Span("presets", className="label"), *buttons], "layer-selection")
    return [view, chooser]


def summary(layers: list[str]) -> list:
    """The selected layers as numbered chips (the order of the Flow View's axes)."""
    if not layers:
        return [html.Span("No layer selected: switch clicks to selection or use a preset. A selection must be "
                          "sequential (each layer feeds the next), as the Profiles page's axes are.",
                          className="label")]
    return [html.Span([html.B(f"{i + 1}"), f" {name}"], className="selection-chip") for i, name in enumerate(layers)]


# ---------------------------------------------------------------------------------------------- callbacks
def _refusal(text: str):
    return no_update, no_update, common.message(text, "error")


@guarded(_refusal)
def select(session: Session, trigger, mode, click, layers, focus) -> tuple:
    """A click on the Architecture View or a selection control → (selection, focus, message)."""
    graph = session.model.graph
    layers = layer_selection.check(graph, layers or [])
    if trigger == CLEAR:
        return [], no_update, ""
    if isinstance(trigger, dict) and trigger.get("type") == PRESET_BUTTON:
        change = layer_selection.preset(graph, trigger.get("preset"))
    elif trigger == FILL:
        change = layer_selection.fill_path(graph, layers)
    elif trigger == GRAPH:
        points = (click or {}).get("points") or []
        if not points or "customdata" not in points[0]:
            raise PreventUpdate  # a click on an edge or a box, not on a layer
        layer = validate.layer_name(graph, points[0]["customdata"])
        mode = validate.choice(mode, MODES, "click mode")
        if mode == "inspect":
            current, _ = check_focus(session, focus)
            return no_update, ({"layer": layer, "channel": None} if layer != current else no_update), ""
        change = layer_selection.toggle(graph, layers, layer)
    else:
        raise PreventUpdate
    note = common.message(change.message, "error" if change.refused else "hint") if change.message else ""
    return list(change.layers), no_update, note


def register(app: Dash, session: Session) -> None:
    @app.callback(Output(SELECTION, "data"), Output(FOCUS, "data"), Output(MESSAGE, "children"),
                  Input(GRAPH, "clickData"), Input({"type": PRESET_BUTTON, "preset": "activation"}, "n_clicks"),
                  Input({"type": PRESET_BUTTON, "preset": "blocks"}, "n_clicks"),
                  Input({"type": PRESET_BUTTON, "preset": "weighted"}, "n_clicks"), Input(FILL, "n_clicks"),
                  Input(CLEAR, "n_clicks"), State(MODE, "value"), State(SELECTION, "data"), State(FOCUS, "data"),
                  prevent_initial_call=True)
    def _select(click, _a, _b, _w, _fill, _clear, mode, layers, focus):
        return select(session, ctx.triggered_id, mode, click, layers, focus)

    app.callback(Output(GRAPH, "figure"), Input(SELECTION, "data"), Input(FOCUS, "data"),
                 prevent_initial_call=True)(lambda layers, focus: draw_figure(session, layers, focus))

    @app.callback(Output(SUMMARY, "children"), Input(SELECTION, "data"), prevent_initial_call=True)
    @guarded(lambda text: common.message(text, "error"))
    def _summary(layers):
        return summary(validate.layer_names(session.model.graph, layers or []))
