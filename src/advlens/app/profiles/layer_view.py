"""The Layer View panel (paper 002 §4.4; spec-002 §2.3): the layer opened from the Flow View reduced over a
set (the pair, a background class, the brushed group), its unit-scalar heatmap and activation maps, the
pair's top diverging units (Fig. 9b) and the change against the class means (Fig. 7), the unit detail
(maps, feature visualisation, top-5 in/out connections) and the CSV/NPZ export."""

from __future__ import annotations

from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.analysis.profiles import IMAGES, LayerView
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, guarded
from advlens.app.images import data_uri
from advlens.app.model.tiles import thumbnail
from advlens.app.profiles.flow import check_group
from advlens.app.profiles.layer_figures import (
    class_change_figure,
    maps_figure,
    strength_figure,
    unit_grid_figure,
    unit_maps_figure,
)
from advlens.app.profiles.state import (
    AXIS,
    GROUP,
    IMAGE,
    LAYERS,
    PAIR,
    REDUCTION,
    SCALAR,
    SET,
    UNIT,
    check_axis,
    check_layers,
    check_set,
    check_unit,
)
from advlens.profiles import REDUCTIONS, UNIT_SCALARS

CAPTION = "profiles-layer-caption"
GRID = "profiles-unit-grid"
MAPS = "profiles-maps"
STRENGTH = "profiles-strength-chart"
CLASS_CHANGE = "profiles-class-chart"
CHARTS = "profiles-charts"
DETAIL = "profiles-unit-detail"
BODY = "profiles-layer-body"
IMAGE_BOX = "profiles-image-box"
EXPORT_CSV = "profiles-export-csv"
EXPORT_NPZ = "profiles-export-npz"
DOWNLOAD = "profiles-download"
SCALAR_LABELS = {"auto": "auto", "max": "max", "abs_sum": "Σ|·|"}
SMALL = {**GRAPH_CONFIG, "displayModeBar": False}


def set_options(session: Session, group_size: int | None) -> list[dict]:
    """The pair, each background class with its size (images predicted it), and the brushed group."""
    preds = session.profiles_background().preds
    options = [{"label": "the pair (benign, adversarial)", "value": "pair"}]
    for label, name in enumerate(session.class_names):
        count = int((preds == label).sum())
        options.append({"label": f"background: predicted {name} ({count})", "value": f"class:{label}",
                        "disabled": count == 0})
    options.append({"label": f"brushed group ({group_size} images)" if group_size else "brushed group (brush an axis)",
                    "value": "group", "disabled": not group_size})
    return options


def checked(session: Session, pair, axis, reduction, image_set, scalar, image, group, layers) -> dict:
    layers = check_layers(session, layers)
    indices = check_group(session, group, layers)
    return {"pair": validate.pair_id(session, pair), "layer": check_axis(session, axis),
            "reduction": validate.choice(reduction, REDUCTIONS, "reduction"), "set": check_set(session, image_set),
            "scalar": validate.choice(scalar, UNIT_SCALARS, "unit scalar"),
            "image": validate.choice(image, IMAGES, "image"),
            "group": None if indices is None else indices.tolist()}


def caption(session: Session, view: LayerView) -> list:
    shape = "×".join(str(s) for s in view.reduced.shape)
    what = {"difference": "adversarial − benign (blue: stronger in the adversarial, red: in the benign)",
            "direct": "one image's output", "mean": f"mean over {view.set_size} images",
            "max": f"unit-wise maximum over {view.set_size} images"}[view.reduction]
    text = (f"{view.layer} ({shape}) · {what} · heatmap: unit {SCALAR_LABELS[view.unit_scalar]} per unit, "
            f"{len(view.values)} units on a {view.grid.shape[0]}×{view.grid.shape[1]} grid · click a unit for its detail")
    return [html.Span(text, className="summary")]


def draw(session: Session, pair, axis, reduction, image_set, scalar, image, group, layers) -> tuple:
    """(caption, grid, maps, maps style, Fig. 9b, Fig. 7, set options, image-choice style, body style)."""
    c = checked(session, pair, axis, reduction, image_set, scalar, image, group, layers)
    options = set_options(session, None if c["group"] is None else len(c["group"]))
    image_style = {} if c["reduction"] == "direct" else {"display": "none"}
    if c["layer"] is None:
        hint = [common.message("Click an axis of the Flow View to open its layer here.")]
        return hint, {}, {}, {"display": "none"}, {}, {}, options, image_style, {"display": "none"}
    if c["set"] != "pair" and c["reduction"] in ("difference", "direct"):
        hint = [common.message(f"The {c['reduction']} reduction compares the pair's two images: choose the pair set, "
                               "or mean / max for a background set.", "warning")]
        return hint, {}, {}, {"display": "none"}, {}, {}, options, image_style, {"display": "none"}
    view = session.layer_view(c["pair"], c["layer"], c["reduction"], c["set"], c["scalar"], c["image"], c["group"])
    info = session.pair_info(c["pair"])
    maps = maps_figure(view)
    change = (class_change_figure(view, (info["label_name"], info["adv_name"])) if view.class_change is not None
              else common.empty_figure(view.class_change_problem or "", 120))
    return (caption(session, view), unit_grid_figure(view), maps, {} if maps else {"display": "none"},
            strength_figure(view), change, options, image_style, {})


def unit_of(event) -> int:
    """The unit a click on the grid, a map or a chart names (its ``customdata``, or the bar's x)."""
    points = (event or {}).get("points") or []
    if not points:
        raise PreventUpdate
    value = points[0].get("customdata", points[0].get("x"))
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None or value == -1:
        raise PreventUpdate
    return validate.integer(value, "unit")


def picked_unit(session: Session, event, axis) -> int:
    layer = check_axis(session, axis)
    if layer is None:
        raise PreventUpdate
    return check_unit(session, layer, unit_of(event))


def _tile(image, title: str) -> html.Img:
    return html.Img(src=data_uri(thumbnail(image, 76)), className="pf-vis", alt=title, title=title)


def _connections(title: str, layer: str | None, links, pictures) -> html.Div:
    if not links:
        return html.Div([html.H4(title), html.Div("none on the main path", className="pw-hint")])
    top = max(link.strength for link in links) or 1.0
    rows = []
    for link, picture in zip(links, pictures):
        sign = "pf-pos" if link.sign > 0 else "pf-neg" if link.sign < 0 else ""
        rows.append(html.Div([
            _tile(picture, f"{layer} channel {link.channel}") if picture is not None else html.Span(className="pf-novis"),
            html.Span(f"{link.channel}", className="pf-conn-id"),
            html.Div(html.Div(className=f"pf-conn-bar {sign}", style={"width": f"{100 * link.strength / top:.0f}%"}),
                     className="pf-conn-track", title=f"Σ|w| = {link.strength:.3g}, kernel sum sign {link.sign:+d}"),
        ], className="pf-conn"))
    return html.Div([html.H4(title), *rows])


def detail(session: Session, pair, axis, unit, scalar) -> list:
    layer = check_axis(session, axis)
    unit = check_unit(session, layer, unit)
    if layer is None or unit is None:
        return [common.message("Click a unit of the heatmap or a map to see its maps, feature visualisation and "
                               "strongest connections.")]
    d = session.unit_detail(validate.pair_id(session, pair), layer, unit,
                            validate.choice(scalar, UNIT_SCALARS, "unit scalar"))
    c = d.connections
    picture = (_tile(d.visualization, f"feature visualisation of {layer} unit {unit}") if d.visualization is not None
               else html.Div("no feature visualisation", className="pf-novis-note",
                             title=d.features_problem or "the features stage has none of this layer"))
    facts = html.Ul([html.Li(f"{SCALAR_LABELS[d.unit_scalar]}: benign {common.fmt(d.benign_value)}, adversarial "
                             f"{common.fmt(d.adversarial_value)} ({d.adversarial_value - d.benign_value:+.3g})")],
                    className="stats-notes")
    maps = unit_maps_figure(d)
    return [
        html.H3(f"{layer} · unit {unit}"),
        html.Div([picture, facts], className="pw-detail-top"),
        dcc.Graph(figure=maps, config=SMALL) if maps else None,
        html.Div([
            _connections(f"in: from {c.incoming_from} via {c.incoming_via}" if c.incoming_via else "in",
                         d.incoming_layer, c.incoming, d.incoming_visualizations),
            _connections(f"out: to {c.outgoing_to}" if c.outgoing_to else "out", d.outgoing_layer, c.outgoing,
                         d.outgoing_visualizations),
        ], className="pf-connections"),
        html.Div(d.features_problem, className="pw-hint") if d.features_problem else None,
    ]


def export(session: Session, trigger, pair, axis, reduction, image_set, scalar, image, group, layers) -> dict:
    c = checked(session, pair, axis, reduction, image_set, scalar, image, group, layers)
    if c["layer"] is None:
        raise PreventUpdate
    fmt = "csv" if trigger == EXPORT_CSV else "npz"
    data = session.layer_export(c["pair"], c["layer"], c["reduction"], c["set"], c["scalar"], fmt, c["image"],
                                c["group"])
    name = f"profiles-pair{c['pair']}-{c['layer']}-{c['reduction']}-{c['set'].replace(':', '')}.{fmt}"
    return dcc.send_bytes(data, name)


def layout(reduction: str, image_set: str, scalar: str, image: str) -> html.Section:
    controls = [
        html.Span("reduction", className="label"),
        dcc.RadioItems(id=REDUCTION, options=list(REDUCTIONS), value=reduction, inline=True, className="radio"),
        html.Span(dcc.RadioItems(id=IMAGE, options=list(IMAGES), value=image, inline=True, className="radio"),
                  id=IMAGE_BOX),
        html.Span("set", className="label"),
        dcc.Dropdown(id=SET, options=[{"label": image_set, "value": image_set}], value=image_set, clearable=False,
                     className="pf-set"),
        html.Span("unit scalar", className="label"),
        dcc.RadioItems(id=SCALAR, options=[{"label": v, "value": k} for k, v in SCALAR_LABELS.items()], value=scalar,
                       inline=True, className="radio"),
        html.Button("CSV", id=EXPORT_CSV, n_clicks=0, className="button", title="download the per-unit table"),
        html.Button("NPZ", id=EXPORT_NPZ, n_clicks=0, className="button",
                    title="download the reduced data, the table and the background covariance"),
        dcc.Download(id=DOWNLOAD),
    ]
    body = html.Div([
        html.Div([html.H4("Units"), dcc.Graph(id=GRID, config=SMALL)], className="pf-grid"),
        html.Div([html.H4("Activation maps"), dcc.Graph(id=MAPS, config=SMALL)], id="profiles-maps-box",
                 className="pf-maps"),
        html.Div([html.Div([html.H4("Top diverging units: Σ|·| of each image (Fig. 9b)"),
                            dcc.Graph(id=STRENGTH, config=SMALL)]),
                  html.Div([html.H4("Pair change vs class-mean change (Fig. 7)"),
                            dcc.Graph(id=CLASS_CHANGE, config=SMALL)])], id=CHARTS, className="pf-charts"),
        html.Div(id=DETAIL, className="pf-detail"),
    ], id=BODY, className="pf-layer-body")
    return common.panel("Layer View", [html.Div(id=CAPTION), dcc.Loading(body, delay_show=common.LOADING_DELAY_MS)],
                        controls, "pf-layer")


def register(app: Dash, session: Session) -> None:
    inputs = [Input(PAIR, "value"), Input(AXIS, "data"), Input(REDUCTION, "value"), Input(SET, "value"),
              Input(SCALAR, "value"), Input(IMAGE, "value"), Input(GROUP, "data"), Input(LAYERS, "data")]
    failed = (lambda text: ([common.message(text, "error")], {}, {}, {"display": "none"}, {}, {}, no_update,
                            no_update, {"display": "none"}))
    app.callback(Output(CAPTION, "children"), Output(GRID, "figure"), Output(MAPS, "figure"),
                 Output("profiles-maps-box", "style"), Output(STRENGTH, "figure"), Output(CLASS_CHANGE, "figure"),
                 Output(SET, "options"), Output(IMAGE_BOX, "style"), Output(BODY, "style"), *inputs)(
        guarded(failed)(lambda *args: draw(session, *args)))
    app.callback(Output(UNIT, "data"), Input(GRID, "clickData"), Input(MAPS, "clickData"),
                 Input(STRENGTH, "clickData"), State(AXIS, "data"), prevent_initial_call=True)(
        guarded(lambda text: no_update)(
            lambda grid, maps, strength, axis: picked_unit(
                session, {GRID: grid, MAPS: maps, STRENGTH: strength}[ctx.triggered_id], axis)))
    app.callback(Output(DETAIL, "children"), Input(PAIR, "value"), Input(AXIS, "data"), Input(UNIT, "data"),
                 Input(SCALAR, "value"))(
        guarded(lambda text: [common.message(text, "error")])(lambda *args: detail(session, *args)))
    app.callback(Output(DOWNLOAD, "data"), Input(EXPORT_CSV, "n_clicks"), Input(EXPORT_NPZ, "n_clicks"),
                 *[State(i.component_id, i.component_property) for i in inputs], prevent_initial_call=True)(
        guarded(lambda text: no_update)(lambda _c, _n, *args: export(session, ctx.triggered_id, *args)))


__all__ = ["layout", "register", "draw", "detail", "export", "picked_unit", "set_options"]
