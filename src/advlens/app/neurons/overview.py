"""Data Overview (paper 001, §5.1, Fig. 2-a): t-SNE scatterplots of the benign and the adversarial
images and the Prediction Matrix; lasso/box selection in either plot or a click on a matrix cell
selects pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate
from plotly.colors import sequential

from advlens.analysis import Session
from advlens.app import common, validate
from advlens.app.common import GRAPH_CONFIG, class_color, empty_figure, error_figure, guarded
from advlens.app.figures import figure, typed_array
from advlens.app.neurons.state import CLASSES, SELECTION, cell_selection

COLOR_BY = "overview-color-by"
SCATTER_BENIGN = "scatter-benign"
SCATTER_ADVERSARIAL = "scatter-adversarial"
MATRIX = "prediction-matrix"
CLEAR = "overview-clear"
ROWS = "subset-rows"
COLS = "subset-cols"
LEGEND = "overview-legend"
SUMMARY = "overview-summary"

SCATTER_CONFIG = {**GRAPH_CONFIG, "modeBarButtons": [["lasso2d", "select2d", "zoom2d", "pan2d", "resetScale2d"]]}

SIDES = {"benign": ("benign_tsne", "benign_pred"), "adversarial": ("adv_tsne", "adv_pred")}
COLOR_CHOICES = ("true", "predicted")


# ---------------------------------------------------------------------------------------------- classes
def default_classes(session: Session) -> dict:
    """All classes, or for more than :data:`common.MAX_FULL_CLASSES` the class subset of §6.2.2."""
    if session.num_classes <= common.MAX_FULL_CLASSES:
        every = list(range(session.num_classes))
        return {"rows": every, "cols": every}
    subset = session.class_subset()
    return {"rows": [int(c) for c in subset.benign], "cols": [int(c) for c in subset.adversarial]}


def visible_pairs(session: Session, classes: dict | None) -> np.ndarray:
    """Pairs whose true label is a shown row and whose adversarial label a shown column."""
    table = session.table
    if not classes:
        return np.arange(session.num_pairs)
    keep = np.isin(table["label"], classes["rows"]) & np.isin(table["adv_pred"], classes["cols"])
    return np.flatnonzero(keep)


# ---------------------------------------------------------------------------------------------- figures
def _marker_size(count: int) -> float:
    return float(np.clip(9.0 - 1.6 * np.log10(max(count, 1)), 3.0, 7.0))


def scatter_groups(session: Session, side: str, color_by: str = "true",
                   classes: dict | None = None) -> list[tuple[int, np.ndarray]]:
    """The scatterplot's traces: (class id, pair ids) in trace order (one trace per colour class).

    Selection events name points by trace and position; this maps them back to pair ids.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {tuple(SIDES)}, got {side!r}")
    ids = visible_pairs(session, classes)
    colour = session.overview()["label" if color_by == "true" else SIDES[side][1]][ids]
    return [(int(label), ids[colour == label]) for label in np.unique(colour)]


def scatter_figure(session: Session, side: str, color_by: str = "true", classes: dict | None = None,
                   selected: Sequence[int] | None = None) -> dict:
    """The t-SNE scatterplot of one side, one WebGL trace per class (colour: true or predicted label).

    ``selected`` pairs stay opaque, the others fade; ``None`` means no selection. WebGL (``scattergl``)
    draws thousands of points in a fraction of the time SVG markers take, and restyles a selection
    without redrawing them.
    """
    groups = scatter_groups(session, side, color_by, classes)
    title = "Benign images" if side == "benign" else "Adversarial images"
    if not groups:
        return empty_figure(f"{title}: no pairs in the shown classes")
    coords = session.overview()[SIDES[side][0]]
    chosen = None if selected is None else np.asarray(selected, dtype=np.int64)
    names = session.class_names
    size = _marker_size(sum(len(g) for _, g in groups))
    traces = []
    for label, members in groups:
        # typed arrays (base64): lists of thousands of numbers slow the Dash renderer down
        trace = {
            "type": "scattergl", "x": typed_array(coords[members, 0]), "y": typed_array(coords[members, 1]),
            "mode": "markers", "name": names[label], "customdata": typed_array(members, "i4"),
            "marker": {"color": class_color(label), "size": size, "line": {"width": 0}},
            "hovertemplate": f"pair %{{customdata}}<br>{'true' if color_by == 'true' else 'predicted'}: "
                             f"{names[label]}<extra></extra>",
            "unselected": {"marker": {"opacity": 0.12}}, "showlegend": False,
        }
        # null clears a previous selection: a missing key would leave the lasso's points selected under uirevision
        trace["selectedpoints"] = None if chosen is None else np.flatnonzero(np.isin(members, chosen)).tolist()
        traces.append(trace)
    return figure(traces, {
        "title": {"text": f"{title} <span style='color:#888;font-size:11px'>({color_by} label)</span>",
                  "x": 0.02, "y": 0.98, "font": {"size": 13}},
        "margin": {"l": 4, "r": 28, "t": 26, "b": 4}, "dragmode": "lasso", "plot_bgcolor": "#fafafa",
        "modebar": {"orientation": "v"},
        "xaxis": {"visible": False}, "yaxis": {"visible": False, "scaleanchor": "x"}, "hovermode": "closest",
        "uirevision": f"{side}-{classes}", "clickmode": "event+select",
        **({"selections": []} if chosen is None else {}),  # "Clear selection" also removes the lasso outline
    })


ORANGES = [[i / (len(sequential.Oranges) - 1), c] for i, c in enumerate(sequential.Oranges)]
"""ColorBrewer Oranges as an explicit colour scale (Plotly.js has no built-in scale of that name)."""


def matrix_figure(session: Session, classes: dict | None = None, cell: Sequence[int] | None = None) -> dict:
    """The Prediction Matrix: rows true label, columns adversarial label, orange darkness = count."""
    classes = classes or default_classes(session)
    rows, cols = list(classes["rows"]), list(classes["cols"])
    if len(set(rows) | set(cols)) < 2:
        return empty_figure("A single class is shown: an attack cannot change its label.<br>"
                            "Add classes to see the Prediction Matrix.")
    counts = session.prediction_matrix()[np.ix_(rows, cols)]
    names = session.class_names
    row_names, col_names = [names[r] for r in rows], [names[c] for c in cols]
    text = [[str(v) if v else "" for v in row] for row in counts]
    hovertext = [[f"{row_names[i]} → {col_names[j]}: {counts[i, j]} pairs" for j in range(len(cols))]
                 for i in range(len(rows))]
    heatmap = {
        "type": "heatmap", "z": counts.tolist(), "x": list(range(len(cols))), "y": list(range(len(rows))),
        "text": text, "texttemplate": "%{text}", "textfont": {"size": 10 if len(cols) <= 10 else 8},
        "hovertext": hovertext, "hovertemplate": "%{hovertext}<extra></extra>", "colorscale": ORANGES, "zmin": 0,
        "showscale": False, "xgap": 1, "ygap": 1,
    }
    shapes = []
    if cell is not None and cell[0] in rows and cell[1] in cols:
        i, j = rows.index(cell[0]), cols.index(cell[1])
        shapes.append({"type": "rect", "x0": j - 0.5, "x1": j + 0.5, "y0": i - 0.5, "y1": i + 0.5,
                       "line": {"color": "#222", "width": 2.5}})
    return figure([heatmap], {
        "title": {"text": "Prediction Matrix", "x": 0.02, "y": 0.98, "font": {"size": 13}},
        "margin": {"l": 4, "r": 4, "t": 26, "b": 4}, "plot_bgcolor": "white", "shapes": shapes,
        "xaxis": {"tickvals": list(range(len(cols))), "ticktext": col_names, "tickangle": -45, "side": "bottom",
                  "title": {"text": "adversarial label", "font": {"size": 11}, "standoff": 2},
                  "tickfont": {"size": 10}, "automargin": True, "fixedrange": True, "showgrid": False,
                  "zeroline": False},
        "yaxis": {"tickvals": list(range(len(rows))), "ticktext": row_names, "autorange": "reversed",
                  "title": {"text": "true label", "font": {"size": 11}, "standoff": 2}, "tickfont": {"size": 10},
                  "automargin": True, "fixedrange": True, "showgrid": False, "zeroline": False},
    })


def legend(session: Session, classes: dict | None) -> list:
    """Class colour chips with names (one legend for both scatterplots)."""
    classes = classes or default_classes(session)
    shown = sorted(set(classes["rows"]) | set(classes["cols"]))
    return [html.Span([html.Span(className="chip", style={"background": class_color(c)}),
                       session.class_names[c]], className="legend-item") for c in shown]


# ---------------------------------------------------------------------------------------------- selection
def selection_from_points(session: Session, selected_data: dict | None, side: str, color_by: str = "true",
                          classes: dict | None = None) -> dict | None:
    """A lasso/box selection of either scatterplot as a selection (``None``: nothing to change).

    Points are named by ``curveNumber`` and ``pointNumber`` of the figure drawn with ``color_by`` and
    ``classes`` (see :func:`scatter_groups`).
    """
    if not selected_data or "points" not in selected_data:
        return None
    if not selected_data["points"] and not ({"range", "lassoPoints"} & set(selected_data)):
        return None  # the plot redrawn with a new selection clears its lasso: not the user's doing
    groups = scatter_groups(session, side, color_by, classes)
    ids = set()
    for point in selected_data["points"]:
        curve, index = point.get("curveNumber"), point.get("pointNumber")
        if isinstance(curve, int) and isinstance(index, int) and 0 <= curve < len(groups) \
                and 0 <= index < len(groups[curve][1]):
            ids.add(int(groups[curve][1][index]))
    ids = sorted(ids)
    return {"pairs": ids, "label": f"lasso in the {side} plot", "cell": None}


def selection_from_cell(session: Session, click_data: dict | None, classes: dict | None = None) -> dict | None:
    """A click on a Prediction Matrix cell as a selection of its pairs.

    The matrix's axes are positions 0 … n−1 of the shown rows and columns (``classes``).
    """
    if not click_data or not click_data.get("points"):
        return None
    classes = classes or default_classes(session)
    point = click_data["points"][0]
    try:
        row, col = int(point["y"]), int(point["x"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (0 <= row < len(classes["rows"]) and 0 <= col < len(classes["cols"])):
        return None
    return cell_selection(session, int(classes["rows"][row]), int(classes["cols"][col]))


def summary(session: Session, selection: dict | None) -> str:
    if selection is None:
        return f"{session.num_pairs} successful attacks · lasso a group of points or click a matrix cell"
    return f"selected: {selection['label']} ({len(selection['pairs'])} pairs)"


# ---------------------------------------------------------------------------------------------- layout
def layout(session: Session) -> html.Section:
    classes = default_classes(session)
    options = [{"label": f"{i}: {n}", "value": i} for i, n in enumerate(session.class_names)]
    many = session.num_classes > common.MAX_FULL_CLASSES
    subset = html.Div([
        html.Span("rows (true):"), dcc.Dropdown(id=ROWS, options=options, value=classes["rows"], multi=True),
        html.Span("columns (adversarial):"), dcc.Dropdown(id=COLS, options=options, value=classes["cols"],
                                                          multi=True),
    ], className="class-subset", style=None if many else {"display": "none"})
    controls = [
        dcc.RadioItems(id=COLOR_BY, options=[{"label": "true label", "value": "true"},
                                             {"label": "predicted label", "value": "predicted"}],
                       value="true", inline=True, className="radio"),
        html.Button("Clear selection", id=CLEAR, n_clicks=0, className="button"),
    ]
    graphs = html.Div([
        dcc.Loading(dcc.Graph(id=SCATTER_BENIGN, config=SCATTER_CONFIG, className="overview-graph"),
                    delay_show=common.LOADING_DELAY_MS, parent_className="overview-cell"),
        dcc.Loading(dcc.Graph(id=SCATTER_ADVERSARIAL, config=SCATTER_CONFIG, className="overview-graph"),
                    delay_show=common.LOADING_DELAY_MS, parent_className="overview-cell"),
        dcc.Loading(dcc.Graph(id=MATRIX, config={**GRAPH_CONFIG, "displayModeBar": False},
                              className="overview-graph matrix-graph"),
                    delay_show=common.LOADING_DELAY_MS, parent_className="overview-cell"),
    ], className="overview-plots")
    return common.panel("Data Overview", [
        subset, graphs,
        html.Div([html.Div(id=LEGEND, className="legend"), html.Div(id=SUMMARY, className="summary")],
                 className="overview-footer"),
    ], controls, "overview")


# ---------------------------------------------------------------------------------------------- callbacks
@guarded(lambda text: no_update)
def set_classes(session: Session, rows, cols, current) -> dict:
    """The class pickers' values as the shown classes (no update when they did not change)."""
    if rows is None or cols is None:
        raise PreventUpdate
    classes = validate.class_view(session, {"rows": rows, "cols": cols})
    classes = {"rows": sorted(classes["rows"]), "cols": sorted(classes["cols"])}
    return no_update if classes == current else classes


@guarded(lambda text: (error_figure(text), error_figure(text)))
def draw_scatter(session: Session, color_by, classes, selection) -> tuple[dict, dict]:
    color_by = validate.choice(color_by, COLOR_CHOICES, "colour")
    classes = validate.class_view(session, classes)
    selection = validate.selection(session, selection)
    selected = None if selection is None else selection["pairs"]
    return (scatter_figure(session, "benign", color_by, classes, selected),
            scatter_figure(session, "adversarial", color_by, classes, selected))


@guarded(lambda text: (error_figure(text), [], common.message(text, "error")))
def draw_matrix(session: Session, classes, selection) -> tuple:
    classes = validate.class_view(session, classes)
    selection = validate.selection(session, selection)
    cell = None if selection is None else selection.get("cell")
    return matrix_figure(session, classes, cell), legend(session, classes), summary(session, selection)


@guarded(lambda text: no_update)
def select(session: Session, trigger, benign_selected, adversarial_selected, matrix_click, classes, color_by,
           current):
    """The selection after a lasso, a matrix click, "Clear selection" or a change of the shown classes."""
    if trigger in (CLEAR, CLASSES):
        return None
    classes = validate.class_view(session, classes)
    if trigger == MATRIX:
        selection = selection_from_cell(session, matrix_click, classes)
    elif trigger in (SCATTER_BENIGN, SCATTER_ADVERSARIAL):
        data, side = ((benign_selected, "benign") if trigger == SCATTER_BENIGN
                      else (adversarial_selected, "adversarial"))
        selection = selection_from_points(session, data, side, validate.choice(color_by, COLOR_CHOICES, "colour"),
                                          classes)
    else:
        raise PreventUpdate
    return no_update if selection is None or selection == current else selection


def register(app: Dash, session: Session) -> None:
    app.callback(Output(CLASSES, "data"), Input(ROWS, "value"), Input(COLS, "value"), State(CLASSES, "data"),
                 prevent_initial_call=True)(lambda rows, cols, current: set_classes(session, rows, cols, current))

    app.callback(Output(SCATTER_BENIGN, "figure"), Output(SCATTER_ADVERSARIAL, "figure"),
                 Input(COLOR_BY, "value"), Input(CLASSES, "data"), Input(SELECTION, "data"))(
        lambda color_by, classes, selection: draw_scatter(session, color_by, classes, selection))

    app.callback(Output(MATRIX, "figure"), Output(LEGEND, "children"), Output(SUMMARY, "children"),
                 Input(CLASSES, "data"), Input(SELECTION, "data"))(
        lambda classes, selection: draw_matrix(session, classes, selection))

    @app.callback(Output(SELECTION, "data"),
                  Input(SCATTER_BENIGN, "selectedData"), Input(SCATTER_ADVERSARIAL, "selectedData"),
                  Input(MATRIX, "clickData"), Input(CLEAR, "n_clicks"), Input(CLASSES, "data"),
                  State(COLOR_BY, "value"), State(SELECTION, "data"), prevent_initial_call=True)
    def _select(benign_selected, adversarial_selected, matrix_click, _clear, classes, color_by, current):
        return select(session, ctx.triggered_id, benign_selected, adversarial_selected, matrix_click, classes,
                      color_by, current)
