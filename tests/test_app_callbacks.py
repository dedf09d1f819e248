"""Callback-level tests of the web app: the plain functions behind each page's callbacks, the server-side
checks of every id from the browser, the shared error handling, the router and URL state, the image route
and the app factory.

They run on the tiny store of ``tests/conftest.py``'s model (3 classes, 6 neurons, 8×8 images; built in
seconds), so they need nothing outside the repository. ``advlens serve`` is tested in
``tests/test_app_serve.py``; the browser walk on the real demo store in ``tests/test_app_browser.py``.
"""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest
from dash import no_update
from dash.exceptions import PreventUpdate
from PIL import Image

from app_fixtures import texts, tiny_store, walk

from advlens.analysis import NEURON_MEASURES, SORT_ORDERS, Session
from advlens.analysis.cache import BoundedCache
from advlens.app import common, images, shell, validate
from advlens.app.figures import decode, typed_array
from advlens.app.model import architecture
from advlens.app.factory import PAGES, build_layout, create_app
from advlens.app.neurons import cluster_view, context_view, image_grid, neuron_view, overview, receptive_field
from advlens.app.neurons import layout as neurons_layout
from advlens.app.neurons import state as neurons_state
from advlens.app.neurons import PROBLEMS, url_query
from advlens.app.placeholder import carried_selection, placeholder
from advlens.app.urls import parse_query
from advlens.errors import StoreError


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    root, model = tiny_store(tmp_path_factory)
    return Session(root, model=model, device="cpu")


@pytest.fixture(scope="module")
def cell(session) -> tuple[int, int]:
    """The fullest Prediction Matrix cell of the tiny store."""
    matrix = session.prediction_matrix()
    return tuple(int(i) for i in np.unravel_index(np.argmax(matrix), matrix.shape))


@pytest.fixture(scope="module")
def pair(session, cell) -> int:
    return int(session.sort_pairs(session.pairs_in_cell(*cell), "perturbation_asc")[0])


def component_ids(component) -> set:
    """Every id in a Dash component tree."""
    return {node.id if isinstance(node.id, str) else str(node.id)
            for node in walk(component) if getattr(node, "id", None) is not None}


def find(component, component_id):
    """The component with ``component_id`` in a tree (``None`` when absent)."""
    return next((node for node in walk(component) if getattr(node, "id", None) == component_id), None)


def as_figure(figure: dict) -> go.Figure:
    """A view's figure dictionary as a Plotly figure: Plotly validates every property on the way."""
    assert isinstance(figure, dict) and set(figure) == {"data", "layout"}
    return go.Figure(figure)


def figure_message(figure: dict) -> str:
    """The message an empty-state or error figure carries (line breaks removed)."""
    return as_figure(figure).layout.annotations[0].text.replace("<br>", " ")


def png(data_uri_or_bytes) -> np.ndarray:
    raw = data_uri_or_bytes
    if isinstance(raw, str):
        assert raw.startswith("data:image/png;base64,")
        raw = base64.b64decode(raw.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


# ------------------------------------------------------------------------------------------------ shared
def test_class_colours_are_fixed_per_class_id():
    assert common.class_color(0) == "#1F77B4" and common.class_color(1) == "#FF7F0E"  # D3 / Tab10
    assert common.class_color(3) == common.class_color(3 + len(common.PALETTE))
    assert len(set(common.PALETTE[:10])) == 10
    assert common.rgba("#ff7f0e", 0.5) == "rgba(255,127,14,0.5)"
    assert figure_message(common.empty_figure("nothing here")) == "nothing here"
    assert figure_message(common.error_figure("a " * 60)).count("a") == 60  # wrapped, not cut


def test_typed_arrays_round_trip():
    values = np.array([0.5, -1.25, 3e6], dtype=np.float32)
    assert np.array_equal(decode(typed_array(values)), values)
    assert decode(typed_array([3, 70000], "i4")).tolist() == [3, 70000]
    assert typed_array([1.0], "f8") == {"dtype": "f8", "bdata": "AAAAAAAA8D8="}  # little-endian IEEE 754


def test_images_scale_up_with_nearest_neighbour():
    image = np.zeros((1, 28, 28), dtype=np.float32)
    image[0, 3, 5] = 1.0
    out = png(images.image_png(image, 84))
    assert out.shape == (84, 84, 3)
    assert (out[9:12, 15:18] == 255).all() and out[8, 15].sum() == 0 and out[12, 15].sum() == 0
    colour = png(images.image_png(np.ones((3, 32, 32), dtype=np.float32) * np.array([1, 0, 0])[:, None, None], 84))
    assert colour.shape == (96, 96, 3) and (colour[..., 0] == 255).all() and (colour[..., 1] == 0).all()


def test_rf_overlay_dims_outside_and_outlines_the_field():
    image = np.full((1, 28, 28), 0.8, dtype=np.float32)
    mask = np.zeros((28, 28), dtype=bool)
    mask[10:20, 10:20] = True
    out = png(images.rf_overlay(image, mask, "#ffd400", target=56))
    assert out.shape == (56, 56, 3)
    assert tuple(out[30, 30]) == (204, 204, 204)  # inside the RF: untouched
    assert out[2, 2, 0] < 60  # outside: dimmed
    assert tuple(out[20, 30]) == (255, 212, 0)  # its border: outlined
    assert tuple(png(images.rf_overlay(image, np.zeros((28, 28), bool), target=28))[5, 5]) == (45, 45, 45)
    tinted = png(images.map_overlay(image, mask, "#e4002b", target=28))
    assert tinted[15, 15, 0] > tinted[15, 15, 1] + 60 and abs(int(tinted[2, 2, 0]) - int(tinted[2, 2, 1])) < 2


# ------------------------------------------------------------------------------------------------ route
def test_pair_image_route_serves_store_items_only(session, tmp_path):
    client = create_app(session).server.test_client()
    response = client.get("/pair-image/0/adversarial.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    served = png(response.data)
    expected = session.pair_images([0])[1][0, 0]
    factor = -(-84 // expected.shape[0])  # scaled up by an integer factor to at least 84 pixels
    assert served.shape == (factor * expected.shape[0], factor * expected.shape[1], 3)
    assert np.abs(served[::factor, ::factor, 0] / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
    assert client.get(f"/pair-image/{session.num_pairs - 1}/benign.png").status_code == 200
    (tmp_path / "secret.png").write_bytes(b"x")
    for url in (f"/pair-image/{session.num_pairs}/benign.png", "/pair-image/-1/benign.png",
                "/pair-image/0/other.png", "/pair-image/0/benign.jpg", "/pair-image/abc/benign.png",
                "/pair-image/0/../../../etc/passwd", f"/pair-image/0/{tmp_path}/secret.png",
                "/pair-image/%2e%2e/benign.png", "/pair-image/0/benign.png/extra", "/pair-image/1e3/benign.png",
                "/pair-image/+1/benign.png", "/pair-image/ 1/benign.png"):
        assert client.get(url).status_code == 404, url


# ------------------------------------------------------------------------------------------------ validation
def test_ids_from_the_browser_are_checked_not_wrapped(session):
    k, p, c = session.num_neurons, session.num_pairs, session.num_classes
    assert validate.neuron_id(session, k - 1) == k - 1 and validate.neuron_id(session, None) is None
    for bad in (-1, k, True, 1.0, "x", [0], {"a": 1}):
        with pytest.raises(validate.InvalidSelection, match="neuron"):
            validate.neuron_id(session, bad)
    with pytest.raises(validate.InvalidSelection, match=rf"neuron -1 does not exist: .* 0–{k - 1}"):
        validate.neuron_id(session, -1)
    with pytest.raises(validate.InvalidSelection, match=rf"pair {p} does not exist"):
        validate.pair_id(session, p)
    assert validate.pair_id(session, "3") == 3  # from the URL
    with pytest.raises(validate.InvalidSelection, match="dendrogram node"):
        validate.node_ids(session, [0, 2 * k - 1])
    with pytest.raises(validate.InvalidSelection, match="class"):
        validate.class_view(session, {"rows": [0, c], "cols": [0]})
    with pytest.raises(validate.InvalidSelection, match="selected pair -2"):
        validate.selection(session, {"pairs": [0, -2], "label": "x", "cell": None})
    with pytest.raises(validate.InvalidSelection, match="not one of"):
        validate.choice("random", SORT_ORDERS, "sort order")
    with pytest.raises(validate.InvalidSelection, match="not stored"):
        validate.rf_quantile(session, 0.42)
    assert validate.rf_quantile(session, session.default_rf_quantile) == session.default_rf_quantile
    for bad in (0, 101, float("nan"), "20", None):
        with pytest.raises(validate.InvalidSelection, match="top p%"):
            validate.number(bad, "top p%", 1, 100)
    with pytest.raises(validate.InvalidSelection, match="page 3 does not exist: this selection has 2 pages"):
        validate.page_number(2, 2)


def test_neuron_minus_one_is_an_error_in_every_neuron_view_not_the_last_neuron(session, pair):
    neuron_message = "neuron -1 does not exist"
    assert neuron_message in figure_message(neuron_view.draw(session, pair, "band_gap", -1, None, 20))
    assert neuron_message in figure_message(cluster_view.draw(session, pair, -1, None, None)[0])
    empty, style, *rest = receptive_field.draw_rfs(session, pair, -1, None, "union", None, None)
    assert neuron_message in texts(empty) and "message-error" in empty.className and style == {"display": "none"}
    assert all(v in ("", [], no_update) for v in rest)  # nothing of another neuron is drawn
    style, title, body = context_view.draw(session, {"side": "benign"}, "activation", 6, -1, None, None)
    assert style == {"display": "flex"} and neuron_message in texts(body)
    # a valid neuron draws: the checks do not refuse what the views offer
    last = session.num_neurons - 1
    assert f"neuron {last}" in receptive_field.draw_rfs(session, pair, last, None, "union", None, None)[8]


@pytest.mark.parametrize("view", ["neuron", "rfs", "maps", "cluster", "grid", "scatter", "matrix", "context"])
def test_every_view_says_what_is_wrong_with_a_bad_pair(session, view):
    bad = session.num_pairs + 5
    wanted = f"pair {bad} does not exist"
    selection = {"pairs": [0, bad], "label": "x", "cell": None}
    if view == "neuron":
        shown = figure_message(neuron_view.draw(session, bad, "band_gap", None, None, 20))
    elif view == "rfs":
        shown = texts(receptive_field.draw_rfs(session, bad, None, None, "union", None, None)[0])
    elif view == "maps":
        shown = texts(receptive_field.draw_maps(session, bad, 20)[2])
    elif view == "cluster":
        shown = figure_message(cluster_view.draw(session, bad, None, None, None)[0])
    elif view == "grid":
        shown = texts(image_grid.draw_grid(session, None, "perturbation_asc", 0, bad)[0])
    elif view == "scatter":
        shown = figure_message(overview.draw_scatter(session, "true", None, selection)[0])
        wanted = f"selected pair {bad} does not exist"
    elif view == "matrix":
        shown = texts(overview.draw_matrix(session, None, selection)[2])
        wanted = f"selected pair {bad} does not exist"
    else:
        shown = texts(context_view.draw(session, {"side": "benign"}, "activation", 6, 0, None, selection)[2])
        wanted = f"selected pair {bad} does not exist"
    assert wanted in shown, shown


def test_bad_choices_are_named_in_the_view(session, pair):
    assert "measure 'random' is not one of" in figure_message(neuron_view.draw(session, pair, "random", None, None,
                                                                              20))
    assert "top p% 500" in figure_message(neuron_view.draw(session, pair, "band_gap", None, None, 500))
    assert "RF threshold quantile 0.42" in figure_message(cluster_view.draw(session, pair, None, None, 0.42)[0])
    assert "combination 'xor'" in texts(receptive_field.draw_rfs(session, pair, 0, None, "xor", None, None)[0])
    node = 2 * session.num_neurons - 1
    record = {"pair": pair, "quantile": None, "nodes": [node]}
    assert f"dendrogram node {node} does not exist" in figure_message(
        cluster_view.draw(session, pair, None, record, None)[0])
    assert "sort order 'random'" in texts(image_grid.draw_grid(session, None, "random", 0, None)[0])
    assert "colour 'blue'" in figure_message(overview.draw_scatter(session, "blue", None, None)[0])
    assert "number of images 7" in texts(context_view.draw(session, {"side": "benign"}, "activation", 7, 0, None,
                                                           None)[2])
    assert "side 'left'" in texts(context_view.draw(session, {"side": "left"}, "activation", 6, 0, None, None)[2])


def test_a_grid_page_that_does_not_exist_is_an_error_not_the_last_page(session):
    everything = list(range(session.num_pairs))
    pages = image_grid.page_count(len(everything))
    selection = {"pairs": everything, "label": "all", "cell": None}
    cards, pager, caption, prev_off, next_off = image_grid.draw_grid(session, selection, "perturbation_asc", pages,
                                                                     None)
    assert f"page {pages + 1} does not exist: this selection has {pages} pages" in texts(cards)
    assert (pager, prev_off, next_off) == ("", True, True)
    negative = image_grid.draw_grid(session, selection, "perturbation_asc", -1, None)[0]
    assert "page index -1 is negative" in texts(negative)
    with pytest.raises(validate.InvalidSelection):
        image_grid.page_of(session, everything, "perturbation_asc", pages)


def test_pickers_refuse_ids_that_are_not_the_stores(session, pair):
    k = session.num_neurons
    assert neuron_view.pick(session, {"points": [{"customdata": -1}]}, None) is no_update
    assert neuron_view.pick(session, {"points": [{"customdata": k}]}, None) is no_update
    assert neuron_view.pick(session, {"points": [{"customdata": [2, 0.5]}]}, None) == 2
    assert image_grid.pick(session, {"type": "pair-card", "pair": -1}, True, None) is no_update
    assert image_grid.pick(session, {"type": "pair-card", "pair": session.num_pairs}, True, None) is no_update
    assert image_grid.pick(session, {"type": "pair-card", "pair": pair}, True, None) == pair
    with pytest.raises(PreventUpdate):
        image_grid.pick(session, {"type": "pair-card", "pair": pair}, False, None)  # cards appearing
    click = {"points": [{"customdata": 2 * k - 1}]}
    assert cluster_view.pick(session, cluster_view.GRAPH, click, None, pair, None) is no_update
    assert cluster_view.pick(session, cluster_view.GRAPH, {"points": [{"customdata": k}]}, None, pair, None) == {
        "pair": pair, "quantile": None, "metric": "rf_l2", "method": "ward", "nodes": [k]}
    assert cluster_view.pick(session, cluster_view.GRAPH, {"points": [{"customdata": k}]}, None, -3, None) is no_update
    assert overview.select(session, overview.MATRIX, None, None, {"points": [{"x": 0, "y": 0}]},
                           {"rows": [99], "cols": [0]}, "true", None) is no_update
    assert overview.set_classes(session, [0, 99], [0], None) is no_update
    assert image_grid.turn_page(session, image_grid.NEXT, None, 7) is no_update


# ------------------------------------------------------------------------------------------------ errors
STORE_MESSAGE = ("array activations/benign_maps of the store at /x is damaged (chunk 0.0.0.0 missing); rebuild its "
                 "stage with `advlens prepare --out /x --overwrite`")


class BrokenStoreSession:
    """A session whose every store read fails as a damaged store does (ids and sizes still answer)."""

    READS = {"table", "overview", "prediction_matrix", "pairs_in_cell", "sort_pairs", "pair_info", "pair_images",
             "feature_maps", "receptive_fields", "curves", "bands", "band_gap", "neuron_ranking", "pooled",
             "vulnerability_maps", "vulnerability_masks", "image_perturbation", "substitution", "clustering",
             "combined_rf", "context", "class_subset", "thresholds"}

    def __init__(self, session: Session) -> None:
        self._session = session

    def __getattr__(self, name):
        if name in self.READS:
            def fail(*args, **kwargs):
                raise StoreError(STORE_MESSAGE)
            return fail() if name == "table" else fail
        return getattr(self._session, name)


def test_every_view_shows_a_store_error_instead_of_going_stale(session, pair):
    broken = BrokenStoreSession(session)
    shown = {
        "scatter": figure_message(overview.draw_scatter(broken, "true", None, None)[0]),
        "matrix": texts(overview.draw_matrix(broken, None, None)[2]),
        "grid": texts(image_grid.draw_grid(broken, {"pairs": [0, 1], "label": "x", "cell": None}, "perturbation_asc",
                                           0, None)[0]),
        "neuron": figure_message(neuron_view.draw(broken, pair, "band_gap", 0, None, 20)),
        "rfs": texts(receptive_field.draw_rfs(broken, pair, 0, None, "union", None, None)[0]),
        "maps": texts(receptive_field.draw_maps(broken, pair, 20)[2]),
        "cluster": figure_message(cluster_view.draw(broken, pair, 0, None, None)[0]),
        "context": texts(context_view.draw(broken, {"side": "benign"}, "activation", 6, 0, None, None)[2]),
        "page": texts(shell.route(broken, PAGES, "/neurons", "?pair=0", ["url.pathname"], None)),
    }
    for view, text in shown.items():
        assert "activations/benign_maps" in text and "advlens prepare --out /x --overwrite" in text, view


def test_an_unexpected_error_is_logged_and_shown_not_raised(session, caplog):
    class Exploding(BrokenStoreSession):
        def __getattr__(self, name):
            if name == "overview":
                raise_it = ZeroDivisionError("boom")

                def fail(*args, **kwargs):
                    raise raise_it
                return fail
            return getattr(self._session, name)

    with caplog.at_level("ERROR"):
        figure = overview.draw_scatter(Exploding(session), "true", None, None)[0]
    assert "Unexpected error (ZeroDivisionError: boom)" in figure_message(figure)
    assert "Traceback" in caplog.text and "ZeroDivisionError" in caplog.text


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_a_damaged_chunk_on_disk_shows_in_the_views(session, pair, tmp_path, damage):
    """A real store whose feature-map chunks were overwritten or deleted: the neuron views name the array and
    the command that rebuilds its stage (a missing chunk must not read back as zeros, i.e. empty RFs)."""
    import shutil

    root = tmp_path / "damaged"
    shutil.copytree(session.store.root, root)
    chunks = [p for p in (root / "activations" / "benign_maps").rglob("*")
              if p.is_file() and not p.name.startswith(("zarr.json", "."))]
    assert chunks, "the store should hold chunk files"
    for chunk in chunks:
        if damage == "garbage":
            chunk.write_bytes(b"\x00garbage" * 7)
        else:
            chunk.unlink()
    damaged = Session(root, model=session.model, device="cpu")
    for view, text in (("cluster", figure_message(cluster_view.draw(damaged, pair, 0, None, None)[0])),
                       ("rfs", texts(receptive_field.draw_rfs(damaged, pair, 0, None, "union", None, None)[0])),
                       ("context", texts(context_view.draw(damaged, {"side": "benign"}, "activation", 6, 0, None,
                                                           None)[2]))):
        assert "activations/benign_maps" in text and "advlens prepare" in text and "--redo activations" in text, \
            (view, text)


# ------------------------------------------------------------------------------------------------ overview
def test_scatterplots_show_every_pair_once_coloured_by_the_chosen_label(session):
    overview_data = session.overview()
    for side, pred in (("benign", "benign_pred"), ("adversarial", "adv_pred")):
        for colour_by, key in (("true", "label"), ("predicted", pred)):
            figure = as_figure(overview.scatter_figure(session, side, colour_by))
            ids = np.concatenate([decode(t.customdata) for t in figure.data])
            assert sorted(ids.tolist()) == list(range(session.num_pairs))
            for trace in figure.data:
                label = session.class_names.index(trace.name)
                assert trace.marker.color == common.class_color(label)
                assert (overview_data[key][decode(trace.customdata)] == label).all()
                assert trace.type == "scattergl"
            assert all(t.selectedpoints is None for t in figure.data)


def test_scatterplots_fade_all_but_the_selection(session, cell):
    chosen = session.pairs_in_cell(*cell)
    figure = as_figure(overview.scatter_figure(session, "adversarial", "true", None, chosen.tolist()))
    kept = [decode(t.customdata)[list(t.selectedpoints)] for t in figure.data]
    assert sorted(np.concatenate(kept).tolist()) == sorted(chosen.tolist())


def test_a_cleared_selection_clears_the_lasso_in_the_browser(session, cell):
    """Under a constant uirevision Plotly keeps a lasso's points selected unless the figure says otherwise:
    without an explicit null ``selectedpoints`` and empty ``selections``, "Clear selection" re-selects them."""
    cleared = overview.scatter_figure(session, "adversarial", "true", None, None)
    assert all("selectedpoints" in t and t["selectedpoints"] is None for t in cleared["data"])
    assert cleared["layout"]["selections"] == []
    chosen = overview.scatter_figure(session, "adversarial", "true", None, session.pairs_in_cell(*cell).tolist())
    assert "selections" not in chosen["layout"]  # a lasso the user drew stays drawn while it is the selection


def test_prediction_matrix_counts_and_the_selected_cell(session, cell):
    figure = as_figure(overview.matrix_figure(session, None, cell))
    heatmap = figure.data[0]
    table = session.table
    expected = np.zeros((session.num_classes, session.num_classes), dtype=np.int64)
    for true_label, adv_label in zip(table["label"], table["adv_pred"]):  # an independent count
        expected[true_label, adv_label] += 1
    assert np.array_equal(np.asarray(heatmap.z), expected)
    assert heatmap.colorscale[0][1] == "rgb(255,245,235)" and heatmap.colorscale[-1][1] == "rgb(127,39,4)"
    assert heatmap.text[cell[0]][cell[1]] == str(expected[cell])
    assert heatmap.text[0][0] == ""  # the diagonal (no successful attack) stays blank
    assert list(figure.layout.yaxis.ticktext) == session.class_names
    (rect,) = figure.layout.shapes
    assert (rect.x0, rect.y0) == (cell[1] - 0.5, cell[0] - 0.5)


def test_a_single_class_gets_a_message_instead_of_a_matrix(session):
    assert "single class" in figure_message(overview.matrix_figure(session, {"rows": [2], "cols": [2]}))


def test_clicking_a_cell_selects_its_pairs(session, cell):
    click = {"points": [{"curveNumber": 0, "x": cell[1], "y": cell[0], "z": 3}]}
    selection = overview.select(session, overview.MATRIX, None, None, click, None, "true", None)
    table = session.table
    members = [i for i in range(session.num_pairs) if (table["label"][i], table["adv_pred"][i]) == cell]
    assert selection["pairs"] == members and selection["cell"] == list(cell)
    names = session.class_names
    assert selection["label"] == f"{names[cell[0]]} → {names[cell[1]]}"
    assert overview.select(session, overview.MATRIX, None, None, click, None, "true", selection) is no_update
    assert overview.select(session, overview.CLEAR, None, None, click, None, "true", selection) is None
    # with a class subset, positions map to the shown classes
    subset = {"rows": [cell[0]], "cols": [0, cell[1]] if cell[1] != 0 else [cell[1], 1]}
    position = subset["cols"].index(cell[1])
    assert overview.selection_from_cell(session, {"points": [{"x": position, "y": 0}]}, subset)["cell"] == list(cell)
    assert overview.selection_from_cell(session, {"points": [{"x": 7, "y": 0}]}, subset) is None
    assert overview.selection_from_cell(session, None) is None


def test_lasso_selection_and_the_redraw_event_that_must_not_clear_it(session):
    groups = overview.scatter_groups(session, "adversarial", "predicted")
    expected = sorted({int(groups[0][1][0]), int(groups[1][1][2])})
    points = [{"curveNumber": 0, "pointNumber": 0}, {"curveNumber": 1, "pointNumber": 2},
              {"curveNumber": 0, "pointNumber": 0}, {"curveNumber": 99, "pointNumber": 0}]
    lasso = {"points": points, "lassoPoints": {"x": [], "y": []}}
    selection = overview.select(session, overview.SCATTER_ADVERSARIAL, None, lasso, None, None, "predicted", None)
    assert selection["pairs"] == expected and "adversarial plot" in selection["label"]
    assert overview.selection_from_points(session, {"points": []}, "benign") is None  # plot redrawn
    empty = overview.selection_from_points(session, {"points": [], "range": {"x": [0, 1], "y": [0, 1]}}, "benign")
    assert empty["pairs"] == []
    assert overview.selection_from_points(session, None, "benign") is None


def test_the_class_pickers_change_the_shown_classes_only_when_they_change(session):
    assert overview.set_classes(session, [2, 0], [1], None) == {"rows": [0, 2], "cols": [1]}
    assert overview.set_classes(session, [2, 0], [1], {"rows": [0, 2], "cols": [1]}) is no_update


def test_more_than_twelve_classes_open_on_the_class_subset():
    names = [f"c{i}" for i in range(20)]
    subset = SimpleNamespace(benign=np.array([3, 1]), adversarial=np.array([1, 7, 3]))
    fake = SimpleNamespace(num_classes=20, class_names=names, class_subset=lambda: subset)
    assert overview.default_classes(fake) == {"rows": [3, 1], "cols": [1, 7, 3]}
    assert overview.default_classes(SimpleNamespace(num_classes=10)) == {"rows": list(range(10)),
                                                                         "cols": list(range(10))}


def test_class_subset_filters_the_overview(session, cell):
    classes = {"rows": [cell[0]], "cols": [cell[1]]}
    assert overview.visible_pairs(session, classes).tolist() == session.pairs_in_cell(*cell).tolist()
    figure = as_figure(overview.scatter_figure(session, "benign", "true", classes))
    assert sum(len(decode(t.customdata)) for t in figure.data) == len(session.pairs_in_cell(*cell))
    assert np.asarray(as_figure(overview.matrix_figure(session, classes)).data[0].z).shape == (1, 1)


# ------------------------------------------------------------------------------------------------ image grid
def test_grid_pages_follow_the_sort_order(session):
    everything = list(range(session.num_pairs))
    table = session.table
    for order in SORT_ORDERS:
        expected = session.sort_pairs(everything, order)
        pages = image_grid.page_count(len(everything))
        shown = sum((image_grid.page_of(session, everything, order, p) for p in range(pages)), [])
        assert shown == expected.tolist()
    assert image_grid.page_count(0) == 1 and image_grid.page_count(24) == 1 and image_grid.page_count(25) == 2
    l2 = table["l2"][image_grid.page_of(session, everything, "perturbation_desc", 0)]
    assert (np.diff(l2) <= 0).all()


def test_grid_cards_encode_labels_probabilities_and_perturbation(session, pair):
    card = image_grid.pair_card(session, pair, selected=True)
    info = session.pair_info(pair)
    assert card.id == {"type": "pair-card", "pair": pair} and "selected" in card.className
    benign_side, adversarial_side = card.children[0].children
    for side, label, prob, name in ((benign_side, info["label"], info["benign_prob"], "benign"),
                                    (adversarial_side, info["adv_pred"], info["adv_prob"], "adversarial")):
        bar, image = side.children
        assert bar.children.style["background"] == common.class_color(label)
        assert bar.children.style["width"] == f"{100 * prob:.1f}%"
        assert image.style["borderColor"] == common.class_color(label)
        assert image.src == f"/pair-image/{pair}/{name}.png"
    caption = texts(card.children[1])
    assert f"L2 {info['l2']:.3f}" in caption and f"{info['benign_prob']:.2f} → {info['adv_prob']:.2f}" in caption


def test_grid_empty_states_and_paging(session):
    cards, pager, caption, prev_off, next_off = image_grid.draw_grid(session, None, "perturbation_asc", 0, None)
    assert "Nothing selected" in texts(cards) and pager == "" and caption == "" and prev_off and next_off
    lasso = {"pairs": [], "label": "lasso in the benign plot", "cell": None}
    assert "No pairs in this selection" in texts(image_grid.draw_grid(session, lasso, "perturbation_asc", 0,
                                                                      None)[0])
    selection = {"pairs": list(range(30)), "label": "x", "cell": None}
    cards, pager, caption, prev_off, next_off = image_grid.draw_grid(session, selection, "benign_drop", 1, 3)
    assert len(cards) == 6 and "page 2/2" in pager and "25–30 of 30" in pager
    assert caption == "x · sorted by drop of the benign probability" and not prev_off and next_off
    assert image_grid.turn_page(session, image_grid.NEXT, selection, 0) == 1
    assert image_grid.turn_page(session, image_grid.NEXT, selection, 1) is no_update  # the last page
    assert image_grid.turn_page(session, image_grid.PREV, selection, 1) == 0
    assert image_grid.turn_page(session, image_grid.SORT, selection, 1) == 0


# ------------------------------------------------------------------------------------------------ neuron view
@pytest.mark.parametrize("measure", NEURON_MEASURES)
def test_neuron_view_orders_curves_and_bands_by_the_measure(session, pair, measure):
    order, scores = session.neuron_ranking(pair, measure)
    neuron = int(order[3])
    figure = as_figure(neuron_view.draw(session, pair, measure, neuron, None, 20))
    info = session.pair_info(pair)
    # independent: activation × dense weight from the stored pooled vectors and the stored dense weight
    benign_pooled, adversarial_pooled = (a.numpy() for a in session.pooled(pair))
    weight = session.store.load("statistics", "dense_weight")
    benign_curve = benign_pooled * weight[info["label"]]
    adversarial_curve = adversarial_pooled * weight[info["adv_pred"]]
    bands = session.bands()
    by_name = {t.name: t for t in figure.data if t.name}
    benign = by_name[f"benign ({info['label_name']})"]
    adversarial = by_name[f"adversarial ({info['adv_name']})"]
    assert list(benign.x) == [f"#{n}" for n in order] and list(benign.customdata) == order.tolist()
    assert np.allclose(decode(benign.y), benign_curve[order], atol=1e-6)
    assert np.allclose(decode(adversarial.y), adversarial_curve[order], atol=1e-6)
    assert benign.line.color == common.class_color(info["label"])
    assert adversarial.line.color == common.class_color(info["adv_pred"])
    band = by_name[f"{info['adv_name']} band"]
    assert np.allclose(decode(band.y), bands.high[info["adv_pred"]].numpy()[order]) and band.fill == "tonexty"
    bars = [t for t in figure.data if t.type == "bar"][0]
    assert np.allclose(decode(bars.y), np.asarray(scores)[order])
    assert [s.x0 for s in figure.layout.shapes] == [f"#{neuron}"] * 2
    assert figure.layout.shapes[0].line.color == common.SELECTED_COLOR
    assert figure.layout.hovermode == "x unified" and figure.layout.yaxis.fixedrange
    assert f"pair {pair}:" in figure.layout.title.text


def test_the_band_kind_is_chosen_in_the_view(session, pair):
    info = session.pair_info(pair)
    highs = {}
    for kind in ("ci", "percentile"):
        figure = as_figure(neuron_view.draw(session, pair, "band_gap", None, None, 20, kind))
        order, gap = session.neuron_ranking(pair, "band_gap", kind=kind)
        band = next(t for t in figure.data if t.name == f"{info['adv_name']} band")
        highs[kind] = decode(band.y)
        assert np.allclose(highs[kind], session.bands(kind=kind).high[info["adv_pred"]].numpy()[order])
        bars = next(t for t in figure.data if t.type == "bar")
        assert np.allclose(decode(bars.y), gap[order])
        assert neuron_view.band_label(session, kind) in figure.layout.title.text
    assert not np.allclose(np.sort(highs["ci"]), np.sort(highs["percentile"]))  # the choice reaches the figure
    assert neuron_view.band_label(session, "percentile") == "class 10th–90th percentile"
    assert neuron_view.band_label(session, "ci") == "95% CI of the class mean"
    assert "band kind 'iqr'" in figure_message(neuron_view.draw(session, pair, "band_gap", None, None, 20, "iqr"))


def test_band_gap_order_puts_excited_neurons_first_and_inhibited_last(session, pair):
    order, gap = session.neuron_ranking(pair, "band_gap")
    assert np.all(np.diff(gap[order]) <= 1e-7), "signed band gap, largest (most excited) first"


def test_neuron_view_empty_state_and_clicks(session):
    assert "Pick a pair" in figure_message(neuron_view.draw(session, None, "band_gap", None, None, 20))
    assert neuron_view.neuron_from_click(session, {"points": [{"customdata": 5}]}) == 5
    assert neuron_view.neuron_from_click(session, {"points": [{"customdata": [5, 0.1]}]}) == 5
    assert neuron_view.neuron_from_click(session, {"points": [{"x": "#3"}]}) is None
    assert neuron_view.neuron_from_click(session, None) is None
    with pytest.raises(validate.InvalidSelection):
        neuron_view.neuron_from_click(session, {"points": [{"customdata": session.num_neurons}]})


# ------------------------------------------------------------------------------------------------ RF view
def test_rf_panel_shows_one_neuron_with_the_same_threshold_on_both_images(session, pair):
    neuron = int(session.neuron_ranking(pair, "band_gap")[0][0])
    empty, style, b_src, a_src, b_probs, a_probs, b_title, a_title, caption, maps = receptive_field.draw_rfs(
        session, pair, neuron, None, "union", None, None)
    assert empty is None and style is None and maps == pair and f"neuron {neuron}" in caption
    # independent: upsample the stored maps bilinearly and threshold with the stored per-neuron quantile
    import torch

    benign_maps, adversarial_maps = session.feature_maps(pair)
    levels = list(session.rf_quantile_levels)
    limit = session.store.load("statistics", "neuron_quantiles")[levels.index(session.default_rf_quantile), neuron]
    size = session.rf_size
    b_rf = torch.nn.functional.interpolate(benign_maps[None, neuron:neuron + 1], size=size, mode="bilinear")[0, 0]
    a_rf = torch.nn.functional.interpolate(adversarial_maps[None, neuron:neuron + 1], size=size, mode="bilinear")[0, 0]
    assert f"{100 * (b_rf > limit).float().mean():.0f}% of the image" in b_title
    assert f"{100 * (a_rf > limit).float().mean():.0f}% of the image" in a_title
    assert png(b_src).shape == (168, 168, 3)
    info = session.pair_info(pair)
    assert len(b_probs) == session.num_classes
    bar = a_probs[info["adv_pred"]]
    assert "bar-strong" in bar.children[0].className
    assert bar.children[1].children.style["width"] == f"{100 * info['adv_probs'][info['adv_pred']]:.1f}%"
    assert receptive_field.draw_rfs(session, pair, neuron, None, "union", None, pair)[9] is no_update


def test_rf_panel_combines_the_neurons_of_selected_nodes(session, pair):
    clustering = session.clustering(pair)
    k = clustering.n_neurons_
    node = 2 * k - 3  # the second-highest merge
    members = clustering.members(node)
    assert 2 <= len(members) < k
    record = {"pair": pair, "quantile": None, "nodes": [node]}
    union = receptive_field.draw_rfs(session, pair, None, record, "union", None, None)
    intersection = receptive_field.draw_rfs(session, pair, None, record, "intersection", None, None)
    assert f"union of {len(members)} neurons" in union[8]
    assert f"intersection of {len(members)} neurons" in intersection[8]
    benign_rf, adversarial_rf = session.receptive_fields(pair)
    u = adversarial_rf[members].any(0)
    assert f"{100 * u.float().mean():.0f}%" in union[7]
    assert f"{100 * adversarial_rf[members].all(0).float().mean():.0f}%" in intersection[7]
    assert receptive_field.rf_neurons(session, pair, 5, [node]).tolist() == sorted(members.tolist())
    # nodes of another pair's clustering are not applied to this pair
    other = {"pair": (pair + 1) % session.num_pairs, "quantile": None, "nodes": [node]}
    assert "neuron 1" in receptive_field.draw_rfs(session, pair, 1, other, "union", None, None)[8]


def test_rf_panel_empty_states(session, pair):
    empty = receptive_field.draw_rfs(session, None, None, None, "union", None, None)[0]
    assert "Pick a pair" in texts(empty)
    out = receptive_field.draw_rfs(session, pair, None, None, "union", None, None)
    assert out[0] is None and "No neuron selected" in out[8]


def test_vulnerability_map_overlays_follow_the_top_percent(session, pair):
    for percent in (5.0, 20.0):
        bmask, amask = session.vulnerability_masks(pair, percent)
        assert 0 < bmask.float().mean() <= percent / 100 + 0.02
        bmap_src, amap_src, caption = receptive_field.draw_maps(session, pair, percent)
        assert png(bmap_src).shape == (168, 168, 3) and f"top {percent:g}%" in caption
    assert receptive_field.draw_maps(session, None, 20)[0] == ""
    assert receptive_field.maps_outputs(session, pair, 20)[3] == pair  # the badges wait for this


def test_the_masks_are_computed_ahead_of_the_maps_callback(tmp_path_factory, pair):
    root, model = tiny_store(tmp_path_factory)
    fresh = Session(root, model=model, device="cpu")
    assert receptive_field.start_masks(fresh, pair, 500) is None  # a bad p: the maps callback says so
    receptive_field.start_masks(fresh, pair, 20).join(timeout=60)
    images = []
    handle = model.net.register_forward_hook(lambda _m, inputs, _o: images.append(inputs[0].shape[0]))
    try:
        bmap_src, amap_src, _ = receptive_field.draw_maps(fresh, pair, 20)
    finally:
        handle.remove()
    assert images == [] and bmap_src.startswith("data:image/png")  # read from the cache: no forward pass


# ------------------------------------------------------------------------------------------------ cluster view
def test_dendrogram_geometry_matches_the_clustering(session, pair):
    clustering = session.clustering(pair)
    geo = cluster_view.geometry(session, pair)
    k = clustering.n_neurons_
    assert sorted(geo.x[:k].tolist()) == list(range(k))
    assert geo.x[clustering.leaves_].tolist() == list(range(k))
    root = 2 * k - 2
    assert geo.parent[root] == -1 and geo.size[root] == k
    for node in (root, k + 1, 3):
        leaves = sorted(n for n in geo.subtree(node) if n < k)
        assert leaves == sorted(clustering.members(node).tolist())
    a, b = geo.children[root]
    assert min(geo.x[a], geo.x[b]) <= geo.x[root] <= max(geo.x[a], geo.x[b])


def test_dendrogram_figure_marks_the_neuron_and_the_selected_subtrees(session, pair):
    clustering = session.clustering(pair)
    k = clustering.n_neurons_
    neuron, node = 4, 2 * k - 3
    figure, caption = cluster_view.draw(session, pair, neuron, {"pair": pair, "quantile": None, "nodes": [node]},
                                        None)
    figure = as_figure(figure)
    red = [t for t in figure.data if getattr(t.line, "color", None) == common.SELECTED_COLOR]
    assert red and red[0].x[0] == cluster_view.geometry(session, pair).x[neuron]
    merges = [t for t in figure.data if t.mode == "markers" and len(t.customdata) == k - 1][0]
    assert list(merges.customdata) == list(range(k, 2 * k - 1))
    assert merges.marker.color[node - k] == common.GROUP_COLOR
    assert f"{len(clustering.members(node))} neurons selected" in figure.layout.title.text
    assert f"{len(clustering.members(node))} neurons selected" in caption
    assert len(figure.layout.shapes) == 1  # the shaded subtree
    assert "Pick a pair" in figure_message(cluster_view.draw(session, None, None, None, None)[0])


def test_the_distance_and_linkage_are_chosen_in_the_view(session, pair):
    from scipy.cluster.hierarchy import linkage

    heights = {}
    for method in ("ward", "complete", "average"):
        figure = as_figure(cluster_view.draw(session, pair, None, None, None, "activation_l2", method)[0])
        merges = next(t for t in figure.data if t.mode == "markers" and len(t.customdata) == session.num_neurons - 1)
        heights[method] = np.sort(decode(merges.y))
        # independent: SciPy's linkage of the neurons' stored feature maps (benign and adversarial, flattened)
        benign, adversarial = (m.numpy().reshape(session.num_neurons, -1) for m in session.feature_maps(pair))
        expected = linkage(np.concatenate([benign, adversarial], axis=1).astype(np.float64), method)[:, 2]
        assert np.allclose(heights[method], np.sort(expected), rtol=1e-4, atol=1e-5), method
        assert f"L2 of the feature maps · {cluster_view.METHOD_LABELS[method]} linkage" in figure.layout.yaxis.title.text
    assert not np.allclose(heights["ward"], heights["average"])
    message = figure_message(cluster_view.draw(session, pair, None, None, None, "rf_iou", "ward")[0])
    assert "Ward linkage needs L2 distances" in message
    assert "distance 'cosine'" in figure_message(cluster_view.draw(session, pair, None, None, None, "cosine", None)[0])


def test_selected_nodes_belong_to_one_pair_and_threshold():
    record = {"pair": 4, "quantile": 0.9, "nodes": [8, 7]}
    assert cluster_view.active_nodes(record, 4, 0.9) == [8, 7]
    assert cluster_view.active_nodes(record, 5, 0.9) == []  # another pair: another tree
    assert cluster_view.active_nodes(record, 4, 0.95) == []  # another RF threshold: another tree
    assert cluster_view.active_nodes(None, 4, 0.9) == []


def test_clicking_nodes_toggles_them(session, pair):
    assert cluster_view.toggle_node([], 8) == [8]
    assert cluster_view.toggle_node([8, 7], 8) == [7]
    assert cluster_view.toggle_node(None, 5) == [5]
    k = session.num_neurons
    first = cluster_view.pick(session, cluster_view.GRAPH, {"points": [{"customdata": k + 1}]}, None, pair, None)
    assert first == {"pair": pair, "quantile": None, "metric": "rf_l2", "method": "ward", "nodes": [k + 1]}
    assert cluster_view.pick(session, cluster_view.GRAPH, {"points": [{"customdata": k + 1}]}, first, pair,
                             None)["nodes"] == []
    assert cluster_view.pick(session, cluster_view.CLEAR, None, first, pair, None) is None
    assert cluster_view.pick(session, cluster_view.CLEAR, None, None, pair, None) is no_update
    # another distance or linkage is another tree: its selection starts empty
    assert cluster_view.pick(session, "cluster-method", None, first, pair, None, "rf_l2", "complete") is None
    assert cluster_view.active_nodes(first, pair, None, "rf_l2", "complete") == []
    assert cluster_view.active_nodes(first, pair, None, "rf_l2", "ward") == [k + 1]
    assert cluster_view.node_from_click(session, {"points": [{"x": 1}]}) is None


# ------------------------------------------------------------------------------------------------ context
def test_context_images_of_the_selected_pairs(session, pair, cell):
    pairs = session.pairs_in_cell(*cell).tolist()
    selection = {"pairs": pairs, "label": "cell", "cell": list(cell)}
    neuron = int(session.neuron_ranking(pair, "band_gap")[0][0])
    benign_max = session.store.load("activations", "benign_max")[:, neuron]
    for by in ("activation", "confidence"):
        style, title, rows = context_view.draw(session, {"side": "adversarial"}, by, 6, neuron, None, selection)
        assert style == {"display": "flex"}
        assert f"neuron {neuron}" in title and f"the {len(pairs)} selected pairs" in title
        assert texts(rows[0]).startswith("adversarial images")  # the clicked side first
        tiles = rows[1].children[1].children
        shown = [int(re.search(r"pair (\d+)", texts(t)).group(1)) for t in tiles]
        if by == "activation":  # independent: the six largest stored maxima among the selected pairs
            expected = sorted(pairs, key=lambda p: -benign_max[p])[:6]
            assert sorted(benign_max[shown].tolist()) == sorted(benign_max[expected].tolist())
        else:
            assert shown == session.context(neuron, pairs, 6, by).benign.tolist()
    style, title, rows = context_view.draw(session, {"side": "benign"}, "activation", 12, neuron, None, None)
    assert f"all {session.num_pairs} pairs" in title and len(rows[0].children[1].children) == 12
    assert "need one neuron" in texts(context_view.draw(session, {"side": "benign"}, "activation", 6, None, None,
                                                        selection)[2])
    assert context_view.draw(session, None, "activation", 6, neuron, None, None)[0] == {"display": "none"}
    assert context_view.open_close(context_view.CLOSE) is None
    assert context_view.open_close(receptive_field.BENIGN_IMG) == {"side": "benign"}


# ------------------------------------------------------------------------------------------------ URL state
def test_the_url_opens_a_pair_and_a_neuron(session, pair):
    info = session.pair_info(pair)
    neuron = session.num_neurons - 2
    page = neurons_layout(session, f"?pair={pair}&neuron={neuron}&measure=iou_bmap&sort=benign_drop")
    assert find(page, neurons_state.PAIR).data == pair and find(page, neurons_state.NEURON).data == neuron
    selection = find(page, neurons_state.SELECTION).data
    assert selection["cell"] == [info["label"], info["adv_pred"]] and pair in selection["pairs"]
    assert find(page, neuron_view.MEASURE).value == "iou_bmap" and find(page, image_grid.SORT).value == "benign_drop"
    ordered = session.sort_pairs(selection["pairs"], "benign_drop").tolist()
    assert find(page, image_grid.PAGE).data == ordered.index(pair) // image_grid.PAGE_SIZE
    assert find(page, PROBLEMS).children is None


@pytest.mark.parametrize("query, problem", [
    ("?neuron=-1", "neuron -1 does not exist"),
    ("?neuron=abc", "neuron 'abc' is not an id"),
    ("?pair=99999", "pair 99999 does not exist"),
    ("?pair=1.5", "pair '1.5' is not an id"),
    ("?measure=random", "measure 'random' is not one of"),
    ("?sort=x", "sort order 'x' is not one of"),
    ("?true=0", "true and adv name a Prediction Matrix cell together"),
    ("?true=0&adv=77", "adversarial class 77 does not exist"),
])
def test_an_invalid_url_says_so_and_opens_without_it(session, query, problem):
    page = neurons_layout(session, query)
    shown = texts(find(page, PROBLEMS))
    assert problem in shown, shown
    assert find(page, neurons_state.NEURON).data is None and find(page, neurons_state.PAIR).data is None


def test_a_url_pair_outside_the_urls_cell_opens_its_own_cell(session, pair):
    info = session.pair_info(pair)
    other = next((t, a) for t in range(session.num_classes) for a in range(session.num_classes)
                 if t != a and (t, a) != (info["label"], info["adv_pred"]))
    page = neurons_layout(session, f"?true={other[0]}&adv={other[1]}&pair={pair}")
    assert find(page, neurons_state.SELECTION).data["cell"] == [info["label"], info["adv_pred"]]
    assert "is not in the cell" in texts(find(page, PROBLEMS))


def test_a_new_selection_is_written_into_the_url(session, pair, cell):
    info = session.pair_info(pair)
    own = (info["label"], info["adv_pred"])
    selection = neurons_state.cell_selection(session, *own)
    query, written = url_query(session, selection, pair, 3, "band_gap", "perturbation_asc", "")
    assert query == written == f"?pair={pair}&neuron=3"  # the pair opens its own cell: no need to name it
    other = next((t, a) for t in range(session.num_classes) for a in range(session.num_classes)
                 if t != a and (t, a) != own)
    query = url_query(session, neurons_state.cell_selection(session, *other), pair, None, "band_gap",
                      "perturbation_asc", "")[0]
    assert query == f"?true={other[0]}&adv={other[1]}&pair={pair}"
    assert url_query(session, selection, None, None, "band_gap", "perturbation_asc", "")[0] == \
        f"?true={own[0]}&adv={own[1]}"
    lasso = {"pairs": [1, 2], "label": "lasso in the benign plot", "cell": None}
    assert url_query(session, lasso, None, None, "substitution", "benign_drop", "")[0] == \
        "?measure=substitution&sort=benign_drop"
    assert url_query(session, None, pair, -1, "band_gap", "perturbation_asc", "") == (no_update, no_update)
    # the URL the page opened on is not written again (no extra history entry), whatever its order
    assert url_query(session, selection, pair, 3, "band_gap", "perturbation_asc", f"?neuron=3&pair={pair}") == \
        (no_update, no_update)
    # what is written reads back as the same selection
    for query in (f"?pair={pair}&neuron=3", f"?true={other[0]}&adv={other[1]}"):
        state = neurons_state.state_from_query(session, parse_query(query))
        page = neurons_layout(session, query)
        assert state.problems == []
        assert url_query(session, find(page, neurons_state.SELECTION).data, state.pair, state.neuron, "band_gap",
                         "perturbation_asc", "")[0] == query


def test_selected_dendrogram_nodes_are_written_into_the_url_and_restored(session, pair):
    tree = cluster_view.geometry(session, pair, None, "rf_l2", "complete")
    merge = session.num_neurons + 3  # a merge node: its subtree's leaves, counted by hand from the linkage
    leaves = sorted(m for m in tree.subtree(merge) if m < session.num_neurons)
    level = session.default_rf_quantile  # the RF threshold dropdown's value on a fresh page
    record = cluster_view.pick(session, cluster_view.GRAPH, {"points": [{"customdata": merge}]}, None, pair, level,
                               "rf_l2", "complete")
    selection = neurons_state.cell_selection(session, *(session.pair_info(pair)[k] for k in ("label", "adv_pred")))
    query = url_query(session, selection, pair, None, "band_gap", "perturbation_asc", "", None, None, None, record,
                      level, "rf_l2", "complete")[0]
    assert parse_query(query) == {"pair": str(pair), "nodes": str(merge), "linkage": "complete"}
    # nodes of another tree (another linkage than the view's) are not the view's selection: not written
    assert "nodes" not in url_query(session, selection, pair, None, "band_gap", "perturbation_asc", "", None, None,
                                    None, record, level, "rf_l2", "ward")[0]
    # reload: the page opens on the same tree and nodes, and the views show the same neurons
    page = neurons_layout(session, query)
    assert find(page, PROBLEMS).children is None
    restored = find(page, neurons_state.NODES).data
    assert restored == record
    assert find(page, cluster_view.CLUSTER_METHOD).value == "complete"
    assert find(page, cluster_view.CLUSTER_METRIC).value == "rf_l2"
    figure, caption = cluster_view.draw(session, pair, None, restored, level, "rf_l2", "complete")
    assert caption.startswith(f"{len(leaves)} neurons selected")
    assert f"union of {len(leaves)} neurons" in receptive_field.draw_rfs(session, pair, None, restored, "union",
                                                                          level, None)[8]
    # a stored RF threshold other than the default travels too
    other = next(q for q in session.rf_quantile_levels if q != level)
    query = url_query(session, selection, pair, None, "band_gap", "perturbation_asc", "", None, None, None,
                      {**record, "quantile": other}, other, "rf_l2", "complete")[0]
    page = neurons_layout(session, query)
    assert find(page, "rf-quantile").value == other and find(page, neurons_state.NODES).data["quantile"] == other


@pytest.mark.parametrize("query, problem", [
    ("nodes=99999", "dendrogram node 99999 does not exist"),
    ("nodes=-1", "dendrogram node -1 does not exist"),
    ("nodes=3,x", "dendrogram node 'x' is not an id"),
    ("nodes=", "no dendrogram node ids"),
    ("distance=cosine", "distance 'cosine' is not one of"),
    ("distance=rf_iou&linkage=ward", "Ward linkage needs L2 distances"),
    ("rfq=0.123", "RF threshold quantile 0.123 is not stored"),
])
def test_bad_dendrogram_values_in_the_url_are_refused_with_a_message(session, pair, query, problem):
    page = neurons_layout(session, f"?pair={pair}&{query}")
    shown = texts(find(page, PROBLEMS))
    assert problem in shown, shown
    assert find(page, neurons_state.NODES).data is None or "nodes" not in query
    assert find(page, neurons_state.PAIR).data == pair  # the rest of the URL still opens


def test_nodes_without_a_pair_are_ignored_with_a_message(session):
    page = neurons_layout(session, "?nodes=3")
    assert "without a pair it is ignored" in texts(find(page, PROBLEMS))
    assert find(page, neurons_state.NODES).data is None


def test_the_router_draws_each_page_and_says_when_there_is_none(session):
    paths = [page.PATH for page in PAGES]
    assert paths == ["/neurons", "/model", "/pathways", "/profiles", "/datapaths"]
    neurons_page = shell.route(session, PAGES, "/neurons", "", ["url.pathname"], None)
    assert neuron_view.GRAPH in component_ids(neurons_page)
    model_page = shell.route(session, PAGES, "/model", "", ["url.pathname"], None)
    assert architecture.GRAPH in component_ids(model_page) and "not built yet" not in texts(model_page)
    pathways_page = shell.route(session, PAGES, "/pathways", "", ["url.pathname"], None)
    assert "pathways-graph" in component_ids(pathways_page) and "not built yet" not in texts(pathways_page)
    for path in ("/profiles", "/datapaths"):  # built by now, or a placeholder naming what prepares them
        page = shell.route(session, PAGES, path, "", ["url.pathname"], None)
        assert "There is no page" not in texts(page) and "Unexpected error" not in texts(page), path
    missing = shell.route(session, PAGES, "/nowhere", "", ["url.pathname"], None)
    assert "There is no page at '/nowhere'" in texts(missing)
    with pytest.raises(PreventUpdate):  # the page's own selection written into the URL: no redraw
        shell.route(session, PAGES, "/neurons", "?pair=1", ["url.search"], "?pair=1")
    back = shell.route(session, PAGES, "/neurons", "?pair=1", ["url.search"], "?pair=2")  # back/forward
    assert find(back, neurons_state.PAIR).data == 1


def test_pages_link_to_each_other_with_the_selection(session, pair):
    links = [{"type": shell.NAV_LINK, "page": page.PATH} for page in PAGES]
    hrefs, classes = shell.nav_links(PAGES, "/neurons", f"?true=0&adv=2&pair={pair}&neuron=3&measure=iou_bmap",
                                     links)
    assert hrefs == [f"{p.PATH}?true=0&adv=2&pair={pair}&neuron=3" for p in PAGES]
    assert classes[0] == "nav-link active" and classes[1:] == ["nav-link"] * 4
    said, problems, query = carried_selection(session, f"?pair={pair}&neuron=-1")
    assert any(f"pair {pair}" in s for s in said) and "neuron -1 does not exist" in problems[0]
    assert query == f"?pair={pair}"
    page = placeholder(session, f"?pair={pair}&neuron=2", "A page", ["something"], ["advlens prepare"], "issue 0")
    assert "not built yet" in texts(page) and f"pair {pair}" in texts(page) and "neuron 2" in texts(page)
    link = next(c for c in _walk(page) if type(c).__name__ == "Link")
    assert link.href == f"/neurons?pair={pair}&neuron=2"


def _walk(component):
    stack = [component]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(node)
            continue
        yield node
        children = getattr(node, "children", None)
        if children is not None and not isinstance(children, str):
            stack.append(children)


def test_the_root_redirects_to_the_neurons_page_with_its_query(session):
    client = create_app(session).server.test_client()
    response = client.get("/?pair=3&neuron=1")
    assert response.status_code == 302 and response.headers["Location"].endswith("/neurons?pair=3&neuron=1")
    assert client.get("/neurons?pair=3").status_code == 200
    assert client.get("/model").status_code == 200


# ------------------------------------------------------------------------------------------------ app factory
def test_layout_holds_the_shell_and_the_page_holds_the_five_views_and_id_only_stores(session):
    app = create_app(session)
    shell_ids = component_ids(app.layout)
    assert {common.URL, common.URL_WRITTEN, common.PAGE_CONTENT, common.NAV} <= shell_ids
    page = neurons_layout(session, "")
    ids = component_ids(page)
    for view_id in ("scatter-benign", "scatter-adversarial", "prediction-matrix", "grid-body", "neuron-graph",
                    "rf-benign-img", "bmap-img", "dendrogram", "context-modal", "combine-op", "rf-quantile",
                    "top-percent", "grid-sort", "neuron-measure", "overview-color-by"):
        assert view_id in ids
    stores = [c for c in page.children if type(c).__name__ == "Store"]
    assert {s.id for s in stores} == {neurons_state.SELECTION, neurons_state.PAIR, neurons_state.NEURON,
                                      neurons_state.NODES, neurons_state.CLASSES, neurons_state.CONTEXT,
                                      neurons_state.VIEWS_PAIR}
    assert all(s.data is None for s in stores if s.id != neurons_state.CLASSES)
    assert len(app.callback_map) >= 17
    assert component_ids(app.validation_layout) >= ids | shell_ids


def test_every_callback_goes_through_the_error_handler():
    """Each callback of the Neurons page and the shell is a guarded plain function (or refuses by itself)."""
    guarded = [overview.set_classes, overview.draw_scatter, overview.draw_matrix, overview.select, image_grid.turn_page,
               image_grid.draw_grid, image_grid.pick, neuron_view.draw, neuron_view.pick,
               receptive_field.draw_rfs, receptive_field.draw_maps, cluster_view.draw, cluster_view.pick,
               context_view.draw, url_query, shell.route]
    assert all(hasattr(f, "on_error") for f in guarded)


def test_apps_do_not_share_state(session):
    import dash._callback

    first, second = create_app(session), create_app(session)
    assert first.callback_map is not second.callback_map and first.callback_map.keys() == second.callback_map.keys()
    assert dash._callback.GLOBAL_CALLBACK_LIST == []  # callbacks registered on the app, not globally


def test_a_store_without_successful_attacks_gets_a_message():
    fake = SimpleNamespace(num_pairs=0, num_classes=3)
    assert "no successful attacks" in texts(neurons_layout(fake, ""))
    config = {"model": {"spec": "m", "analysed_layer": "l"}, "dataset": {"name": "d", "split": "test"},
              "attack": {"name": "pgd", "eps": 1e-6}}
    shell_fake = SimpleNamespace(num_pairs=0, num_classes=3, store=SimpleNamespace(config=config))
    assert "0 successful attacks" in texts(build_layout(shell_fake))


# ------------------------------------------------------------------------------------------------ cache
def test_cache_computes_a_value_once_under_concurrent_requests():
    cache = BoundedCache(4)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return 42

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [42] * 4 and len(calls) == 1 and cache.misses == 1 and cache.hits == 3

    def failing():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("bad", failing)
    assert cache.get_or_compute("bad", lambda: 1) == 1  # a failure is not cached and does not block


def test_the_neurons_page_links_to_the_class_pathways_of_its_pair(session, pair):
    from advlens.app.neurons.neuron_view import pathways_link

    info = session.pair_info(pair)
    link = pathways_link(session, pair, 3)
    assert link.href == f"/pathways?true={info['label']}&adv={info['adv_pred']}&neuron=3"
    assert pathways_link(session, pair, None).href == f"/pathways?true={info['label']}&adv={info['adv_pred']}"
    assert pathways_link(session, None, None) is None
    assert "does not exist" in texts(pathways_link(session, session.num_pairs + 3, None))
