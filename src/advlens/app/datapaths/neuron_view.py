"""Neuron level (spec-003 §4, paper 003 Fig. 1A–E, 9): the open map's learned features and its activation maps.

Left: the map's feature visualisation and its top dataset examples (receptive-field patches of the images
that excite it most, from the ``features`` stage). Right: its activation maps on the adversarial, the source
and the representative target, side by side on one green scale (darker = higher), optionally over their images.
A box or lasso drawn on any of the three selects the area of interest (AOI), the same positions on all three;
it is kept in fractions of the map's extent, so it covers the same image region when the user moves on to
another layer.
"""

from __future__ import annotations

import numpy as np
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from advlens.analysis import Session
from advlens.app import common
from advlens.app.common import GRAPH_CONFIG, guarded
from advlens.app.datapaths import network
from advlens.app.datapaths.river_figure import ROLE_COLORS, ROLE_NAMES
from advlens.app.datapaths.state import AOI, LAYER, MAP, READY, ROLES, aoi_cells, check_aoi, check_layer, check_map
from advlens.app.figures import figure
from advlens.app.images import data_uri, image_png
from advlens.app.model.tiles import example_url, feature_url

FEATURES = "dp-features"
MAPS = "dp-maps"
CAPTION = "dp-neuron-caption"
OVERLAY = "dp-overlay"
CLEAR_AOI = "dp-clear-aoi"
EXAMPLES = 9
"""Top dataset examples shown (the paper's Fig. 1A shows 9 patches)."""
GREENS = "Greens"
"""Plotly's Greens runs dark to light; reversed, darker = higher (paper 003 §5.1)."""
AOI_COLOR = "#d62728"
PANEL_PX = 190
GAP = 0.04


def features_block(session: Session, layer: str, channel: int) -> list:
    """The feature visualisation and the top dataset examples of one map (or why there are none)."""
    found = session.datapath_features(layer, channel)
    if found.problem is not None:
        return [common.message(f"No learned features: {found.problem}.", "warning")]
    index = session.features.layers().index(layer)
    count = min(EXAMPLES, len(found.examples.indices)) if found.examples is not None else 0
    names = session.class_names
    tiles = [html.Figure([html.Img(src=example_url(index, channel, rank), className="dp-example-img",
                                   alt=f"example {rank + 1}"),
                          html.Figcaption(names[int(found.examples.labels[rank])])], className="dp-example")
             for rank in range(count)] if found.examples is not None and found.examples.patches is not None else []
    return [html.Div([html.Img(src=feature_url(index, channel, "large"), className="dp-vis",
                               alt=f"feature visualisation of {layer} map {channel}", title="feature visualisation"),
                      html.Div([html.Div("Learned features", className="pw-label"),
                                html.Div("feature visualisation (left) and the receptive-field patches of the test "
                                         "images that excite this map most", className="pw-hint")])],
                     className="dp-vis-row"),
            html.Div(tiles or [common.message("the features stage kept no patches of this layer", "hint")],
                     className="dp-examples")]


def maps_figure(maps: np.ndarray, images: np.ndarray | None, vmax: float, aoi: dict | None) -> dict:
    """Three heatmaps (adv, src, tar) on one scale, each with a transparent marker per neuron (what box and lasso
    select) and the AOI outlined.

    Shape: maps (3, h, w); images (3, C, H, W) in [0, 1] or None (no overlay).
    """
    count, h, w = maps.shape
    width = (1 - GAP * (count - 1)) / count
    rows, cols = np.mgrid[0:h, 0:w]
    mask = aoi_cells(aoi, (h, w))
    data, layout_axes, annotations, shapes, pictures = [], {}, [], [], []
    for i, role in enumerate(ROLES[:count]):
        suffix = "" if i == 0 else str(i + 1)
        xa, ya = f"x{suffix}", f"y{suffix}"
        data.append({"type": "heatmap", "z": maps[i].tolist(), "coloraxis": "coloraxis", "xaxis": xa, "yaxis": ya,
                     "opacity": 0.62 if images is not None else 1.0, "name": role,
                     "hovertemplate": f"{ROLE_NAMES[role]}<br>row %{{y}}, column %{{x}}: %{{z:.3f}}<extra></extra>"})
        data.append({"type": "scatter", "mode": "markers", "x": cols.ravel().tolist(), "y": rows.ravel().tolist(),
                     "xaxis": xa, "yaxis": ya, "marker": {"size": 4, "color": "rgba(0,0,0,0)"}, "hoverinfo": "skip",
                     "showlegend": False, "name": f"{role}-cells",
                     "selected": {"marker": {"color": "rgba(0,0,0,0)"}},
                     "unselected": {"marker": {"color": "rgba(0,0,0,0)", "opacity": 0}}})
        x0 = i * (width + GAP)
        layout_axes[f"xaxis{suffix}"] = {"domain": [x0, x0 + width], "range": [-0.5, w - 0.5], "visible": False,
                                         "anchor": ya, "constrain": "domain"}
        layout_axes[f"yaxis{suffix}"] = {"domain": [0, 0.9], "range": [h - 0.5, -0.5], "visible": False,
                                         "anchor": xa, "scaleanchor": xa, "constrain": "domain"}
        annotations.append({"text": ROLE_NAMES[role], "x": x0 + width / 2, "y": 1.0, "xref": "paper", "yref": "paper",
                            "showarrow": False, "font": {"color": ROLE_COLORS[role], "size": 12}})
        if images is not None:
            pictures.append({"source": data_uri(image_png(images[i], 112)), "xref": xa, "yref": ya, "x": -0.5,
                             "y": -0.5, "sizex": w, "sizey": h, "sizing": "stretch", "layer": "below"})
        if mask is not None:
            for r, c in zip(*np.nonzero(mask)):
                shapes.append({"type": "rect", "xref": xa, "yref": ya, "x0": c - 0.5, "x1": c + 0.5, "y0": r - 0.5,
                               "y1": r + 0.5, "line": {"width": 0}, "fillcolor": "rgba(214,39,40,0.08)"})
            shapes.extend(_outline(mask, xa, ya))
    return figure(data, {
        "height": PANEL_PX + 60, "margin": {"l": 4, "r": 4, "t": 22, "b": 4}, "dragmode": "select",
        "plot_bgcolor": "white", "paper_bgcolor": "white", "hovermode": "closest", "showlegend": False,
        "coloraxis": {"colorscale": GREENS, "reversescale": True, "cmin": 0.0, "cmax": max(vmax, 1e-6),
                      "colorbar": {"thickness": 10, "len": 0.9, "y": 0.45, "title": {"text": "act.", "side": "right"}}},
        "annotations": annotations, "shapes": shapes, "images": pictures, "uirevision": "maps", **layout_axes})


def _outline(mask: np.ndarray, xa: str, ya: str) -> list[dict]:
    """Line shapes along the AOI's boundary (cell edges with an outside neighbour)."""
    h, w = mask.shape
    padded = np.pad(mask, 1)
    lines = []
    for r, c in zip(*np.nonzero(mask)):
        for dr, dc, x0, y0, x1, y1 in ((-1, 0, -0.5, -0.5, 0.5, -0.5), (1, 0, -0.5, 0.5, 0.5, 0.5),
                                       (0, -1, -0.5, -0.5, -0.5, 0.5), (0, 1, 0.5, -0.5, 0.5, 0.5)):
            if not padded[r + 1 + dr, c + 1 + dc]:
                lines.append({"type": "line", "xref": xa, "yref": ya, "x0": c + x0, "x1": c + x1, "y0": r + y0,
                              "y1": r + y1, "line": {"color": AOI_COLOR, "width": 2}})
    return lines


def draw(session: Session, ready, layer, map_, aoi, overlay) -> tuple:
    """(learned features, activation-map figure, caption)."""
    paths = network.ready_paths(session, ready)
    layer = check_layer(session, layer)
    map_ = check_map(session, layer, map_) if layer is not None else None
    if paths is None or layer is None or map_ is None:
        hint = ("Click a map in the treemap (or in its top list)<br>to see what it has learned and where it fires "
                "on the three images." if paths is not None and layer is not None else
                "Open a layer of the river, then click one of its maps.")
        return [], common.empty_figure(hint, height=PANEL_PX + 60), ""
    aoi = check_aoi(aoi)
    found = session.datapath_activation_maps(paths.pair, layer, map_)
    grid = found.maps.shape[1:]
    mask = aoi_cells(aoi, grid)
    fig = maps_figure(found.maps, found.images if overlay else None, found.vmax, aoi)
    means = ("" if mask is None else " · mean activation in the AOI: " + ", ".join(
        f"{ROLE_NAMES[r]} {found.maps[i][mask].mean():.3f}" for i, r in enumerate(ROLES)))
    caption = (f"{layer} · map {map_} ({grid[0]}×{grid[1]} neurons) · one scale 0 … {found.vmax:.3f} · "
               + ("AOI: whole map — drag a box or a lasso (toolbar) on any map to select neurons"
                  if mask is None else f"AOI: {int(mask.sum())} neurons") + means)
    return features_block(session, layer, map_), fig, caption


@guarded(lambda text: ([common.message(text, "error")], common.error_figure(text), ""))
def draw_view(session: Session, *args) -> tuple:
    return draw(session, *args)


def _axis_values(record: dict, axis: str) -> list | None:
    """The values of a selection record for the x or y axis of whichever subplot was used."""
    for key, values in record.items():
        if key.startswith(axis) and (key == axis or key[1:].isdigit()):
            return values
    return None


@guarded(lambda text: no_update)
def aoi_from_selection(session: Session, selected, ready, layer, map_) -> dict | None:
    """The AOI (fractions of the map's extent) of a box or lasso drawn on one of the activation maps."""
    if not isinstance(selected, dict):
        raise PreventUpdate
    layer = check_layer(session, layer)
    if layer is None or map_ is None:
        raise PreventUpdate
    h, w = session.check_datapath_layer(layer).grid
    if isinstance(selected.get("range"), dict):
        xs, ys, kind = _axis_values(selected["range"], "x"), _axis_values(selected["range"], "y"), "box"
    elif isinstance(selected.get("lassoPoints"), dict):
        xs, ys, kind = (_axis_values(selected["lassoPoints"], "x"), _axis_values(selected["lassoPoints"], "y"),
                        "lasso")
    else:
        raise PreventUpdate
    if not isinstance(xs, list) or not isinstance(ys, list) or not xs or len(xs) != len(ys):
        raise PreventUpdate
    fx = [min(max((float(x) + 0.5) / w, 0.0), 1.0) for x in xs]
    fy = [min(max((float(y) + 0.5) / h, 0.0), 1.0) for y in ys]
    return check_aoi({"kind": kind, "x": fx, "y": fy})


def layout() -> html.Section:
    return common.panel("Neuron level · learned features and activation maps", [
        html.Div(id=CAPTION, className="summary"),
        html.Div([
            dcc.Loading(html.Div(id=FEATURES, className="dp-features"), delay_show=common.LOADING_DELAY_MS),
            html.Div([
                dcc.Graph(id=MAPS, figure=common.empty_figure("", height=PANEL_PX + 60),
                          config={**GRAPH_CONFIG, "displayModeBar": True,
                                  "modeBarButtonsToRemove": [*GRAPH_CONFIG["modeBarButtonsToRemove"], "zoom2d",
                                                             "pan2d", "zoomIn2d", "zoomOut2d", "resetScale2d",
                                                             "toImage"]}),
                html.Div([dcc.Checklist(id=OVERLAY, options=[{"label": " over the images", "value": "on"}], value=[],
                                        inline=True, className="pw-radio"),
                          html.Button("Clear AOI", id=CLEAR_AOI, n_clicks=0, className="button")],
                         className="dp-map-controls"),
            ], className="dp-maps"),
        ], className="dp-neuron-body"),
    ], [], "dp-neuron-panel")


def register(app: Dash, session: Session) -> None:
    app.callback(Output(FEATURES, "children"), Output(MAPS, "figure"), Output(CAPTION, "children"),
                 Input(READY, "data"), Input(LAYER, "data"), Input(MAP, "data"), Input(AOI, "data"),
                 Input(OVERLAY, "value"))(
        lambda ready, layer, map_, aoi, overlay: draw_view(session, ready, layer, map_, aoi, bool(overlay)))
    app.callback(Output(AOI, "data"), Input(MAPS, "selectedData"), State(READY, "data"), State(LAYER, "data"),
                 State(MAP, "data"), prevent_initial_call=True)(
        lambda selected, ready, layer, map_: aoi_from_selection(session, selected, ready, layer, map_))
    app.callback(Output(AOI, "data", allow_duplicate=True), Input(CLEAR_AOI, "n_clicks"),
                 prevent_initial_call=True)(lambda _n: None)
