"""Callback-level tests of the web app: the plain functions behind each view's callbacks, the image
route, the app factory and ``advlens serve``, on a small real store (demo model, Fashion-MNIST)."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dash")

from app_fixtures import small_store_path  # noqa: E402

from advlens.analysis import NEURON_MEASURES, SORT_ORDERS, Session  # noqa: E402
from advlens.analysis.cache import BoundedCache  # noqa: E402
from advlens.app import cluster_view, common, context_view, image_grid, images, neuron_view, overview  # noqa: E402
from advlens.app import receptive_field  # noqa: E402
from advlens.app.factory import build_layout, create_app  # noqa: E402
from advlens.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    return Session(small_store_path(tmp_path_factory), device="cpu")


@pytest.fixture(scope="module")
def cell(session) -> tuple[int, int]:
    """The fullest Prediction Matrix cell of the small store."""
    matrix = session.prediction_matrix()
    return tuple(int(i) for i in np.unravel_index(np.argmax(matrix), matrix.shape))


@pytest.fixture(scope="module")
def pair(session, cell) -> int:
    return int(session.sort_pairs(session.pairs_in_cell(*cell), "perturbation_asc")[0])


def component_ids(component) -> set:
    """Every id in a Dash component tree."""
    found = set()
    stack = [component]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(node)
            continue
        if getattr(node, "id", None) is not None:
            found.add(node.id if isinstance(node.id, str) else str(node.id))
        children = getattr(node, "children", None)
        if children is not None and not isinstance(children, str):
            stack.append(children)
    return found


def texts(component) -> str:
    """All text of a Dash component tree, joined."""
    parts = []
    stack = [component]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, (list, tuple)):
            stack.extend(reversed(node))
        elif getattr(node, "children", None) is not None:
            stack.append(node.children)
    return " ".join(parts)


def png(data_uri_or_bytes) -> np.ndarray:
    raw = data_uri_or_bytes
    if isinstance(raw, str):
        import base64

        assert raw.startswith("data:image/png;base64,")
        raw = base64.b64decode(raw.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


# ------------------------------------------------------------------------------------------------ shared
def test_class_colours_are_fixed_per_class_id():
    assert common.class_color(0) == "#1F77B4" and common.class_color(1) == "#FF7F0E"  # D3 / Tab10
    assert common.class_color(3) == common.class_color(3 + len(common.PALETTE))
    assert len(set(common.PALETTE[:10])) == 10
    assert common.rgba("#ff7f0e", 0.5) == "rgba(255,127,14,0.5)"
    assert common.empty_figure("nothing here").layout.annotations[0].text == "nothing here"


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
    assert served.shape == (84, 84, 3)
    assert np.abs(served[::3, ::3, 0] / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
    assert client.get(f"/pair-image/{session.num_pairs - 1}/benign.png").status_code == 200
    (tmp_path / "secret.png").write_bytes(b"x")
    for url in (f"/pair-image/{session.num_pairs}/benign.png", "/pair-image/-1/benign.png",
                "/pair-image/0/other.png", "/pair-image/0/benign.jpg", "/pair-image/abc/benign.png",
                "/pair-image/0/../../../etc/passwd", f"/pair-image/0/{tmp_path}/secret.png",
                "/pair-image/%2e%2e/benign.png", "/pair-image/0/benign.png/extra"):
        assert client.get(url).status_code == 404, url


# ------------------------------------------------------------------------------------------------ overview
def test_scatterplots_show_every_pair_once_coloured_by_the_chosen_label(session):
    overview_data = session.overview()
    for side, pred in (("benign", "benign_pred"), ("adversarial", "adv_pred")):
        for colour_by, key in (("true", "label"), ("predicted", pred)):
            figure = overview.scatter_figure(session, side, colour_by)
            ids = np.concatenate([np.asarray(t.customdata) for t in figure.data])
            assert sorted(ids.tolist()) == list(range(session.num_pairs))
            for trace in figure.data:
                label = session.class_names.index(trace.name)
                assert trace.marker.color == common.class_color(label)
                assert (overview_data[key][np.asarray(trace.customdata)] == label).all()
            assert all(t.selectedpoints is None for t in figure.data)


def test_scatterplots_fade_all_but_the_selection(session, cell):
    chosen = session.pairs_in_cell(*cell)
    figure = overview.scatter_figure(session, "adversarial", "true", None, chosen.tolist())
    kept = [np.asarray(t.customdata)[list(t.selectedpoints)] for t in figure.data]
    assert sorted(np.concatenate(kept).tolist()) == sorted(chosen.tolist())


def test_prediction_matrix_counts_and_the_selected_cell(session, cell):
    figure = overview.matrix_figure(session, None, cell)
    heatmap = figure.data[0]
    matrix = session.prediction_matrix()
    assert np.array_equal(np.asarray(heatmap.z), matrix)
    assert heatmap.colorscale[0][1] == "rgb(255,245,235)" and heatmap.colorscale[-1][1] == "rgb(127,39,4)"
    assert heatmap.text[cell[0]][cell[1]] == str(matrix[cell])
    assert heatmap.text[0][0] == ""  # the diagonal (no successful attack) stays blank
    assert list(figure.layout.yaxis.ticktext) == session.class_names
    (rect,) = figure.layout.shapes
    assert (rect.x0, rect.y0) == (cell[1] - 0.5, cell[0] - 0.5)


def test_a_single_class_gets_a_message_instead_of_a_matrix(session):
    figure = overview.matrix_figure(session, {"rows": [2], "cols": [2]})
    assert "single class" in figure.layout.annotations[0].text


def test_clicking_a_cell_selects_its_pairs(session, cell):
    click = {"points": [{"curveNumber": 0, "x": cell[1], "y": cell[0], "z": 3}]}
    selection = overview.selection_from_cell(session, click)
    assert selection["pairs"] == session.pairs_in_cell(*cell).tolist() and selection["cell"] == list(cell)
    names = session.class_names
    assert selection["label"] == f"{names[cell[0]]} → {names[cell[1]]}"
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
    selection = overview.selection_from_points(session, lasso, "adversarial", "predicted")
    assert selection["pairs"] == expected and "adversarial plot" in selection["label"]
    assert overview.selection_from_points(session, {"points": []}, "benign") is None  # plot redrawn
    empty = overview.selection_from_points(session, {"points": [], "range": {"x": [0, 1], "y": [0, 1]}}, "benign")
    assert empty["pairs"] == []
    assert overview.selection_from_points(session, None, "benign") is None


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
    figure = overview.scatter_figure(session, "benign", "true", classes)
    assert sum(len(t.customdata) for t in figure.data) == len(session.pairs_in_cell(*cell))
    assert np.asarray(overview.matrix_figure(session, classes).data[0].z).shape == (1, 1)


# ------------------------------------------------------------------------------------------------ image grid
def test_grid_pages_follow_the_sort_order(session):
    everything = list(range(session.num_pairs))
    for order in SORT_ORDERS:
        expected = session.sort_pairs(everything, order)
        pages = image_grid.page_count(len(everything))
        shown = sum((image_grid.page_of(session, everything, order, p) for p in range(pages)), [])
        assert shown == expected.tolist()
    assert image_grid.page_of(session, everything, "perturbation_asc", 999) == image_grid.page_of(
        session, everything, "perturbation_asc", pages - 1)
    assert image_grid.page_count(0) == 1 and image_grid.page_count(24) == 1 and image_grid.page_count(25) == 2
    l2 = session.table["l2"][image_grid.page_of(session, everything, "perturbation_desc", 0)]
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


def test_grid_empty_states(session):
    cards, pager = image_grid.grid_children(session, None, "perturbation_asc", 0)
    assert "Nothing selected" in texts(cards) and pager == ""
    lasso = {"pairs": [], "label": "lasso in the benign plot"}
    cards, _ = image_grid.grid_children(session, lasso, "perturbation_asc", 0)
    assert "No pairs in this selection" in texts(cards)
    selection = {"pairs": list(range(min(30, session.num_pairs))), "label": "x"}
    cards, pager = image_grid.grid_children(session, selection, "perturbation_asc", 1, selected_pair=None)
    assert len(cards) == max(0, len(selection["pairs"]) - 24) and "page 2/2" in pager


# ------------------------------------------------------------------------------------------------ neuron view
@pytest.mark.parametrize("measure", NEURON_MEASURES)
def test_neuron_view_orders_curves_and_bands_by_the_measure(session, pair, measure):
    order, scores = session.neuron_ranking(pair, measure)
    figure = neuron_view.neuron_figure(session, pair, measure, neuron=int(order[3]))
    info = session.pair_info(pair)
    curves, bands = session.curves(pair), session.bands()
    by_name = {t.name: t for t in figure.data if t.name}
    benign = by_name[f"benign ({info['label_name']})"]
    adversarial = by_name[f"adversarial ({info['adv_name']})"]
    assert list(benign.x) == [f"#{n}" for n in order] and list(benign.customdata) == order.tolist()
    assert np.allclose(benign.y, curves.benign.numpy()[order])
    assert np.allclose(adversarial.y, curves.adversarial.numpy()[order])
    assert benign.line.color == common.class_color(info["label"])
    assert adversarial.line.color == common.class_color(info["adv_pred"])
    band = by_name[f"{info['adv_name']} band"]
    assert np.allclose(band.y, bands.high[info["adv_pred"]].numpy()[order]) and band.fill == "tonexty"
    bars = [t for t in figure.data if t.type == "bar"][0]
    assert np.allclose(bars.y, np.asarray(scores)[order])
    assert [s.x0 for s in figure.layout.shapes] == [f"#{int(order[3])}"] * 2
    assert figure.layout.shapes[0].line.color == common.SELECTED_COLOR
    assert figure.layout.hovermode == "x unified" and figure.layout.yaxis.fixedrange
    assert f"pair {pair}:" in figure.layout.title.text


def test_band_gap_order_puts_excited_neurons_first_and_inhibited_last(session, pair):
    order, gap = session.neuron_ranking(pair, "band_gap")
    assert gap[order[0]] >= 0 >= gap[order[-1]]


def test_neuron_view_empty_state_and_clicks(session):
    assert "Pick a pair" in neuron_view.neuron_figure(session, None).layout.annotations[0].text
    assert neuron_view.neuron_from_click(session, {"points": [{"customdata": 17}]}) == 17
    assert neuron_view.neuron_from_click(session, {"points": [{"customdata": [5, 0.1]}]}) == 5
    assert neuron_view.neuron_from_click(session, {"points": [{"x": "#3"}]}) is None
    assert neuron_view.neuron_from_click(session, {"points": [{"customdata": session.num_neurons}]}) is None
    assert neuron_view.neuron_from_click(session, None) is None


# ------------------------------------------------------------------------------------------------ RF view
def test_rf_panel_shows_one_neuron_with_the_same_threshold_on_both_images(session, pair):
    neuron = int(session.neuron_ranking(pair, "band_gap")[0][0])
    out = receptive_field.rf_panel(session, pair, neuron)
    benign_rf, adversarial_rf = session.receptive_fields(pair)
    assert out["empty"] is None and f"neuron {neuron}" in out["caption"]
    assert f"{100 * benign_rf[neuron].float().mean():.0f}% of the image" in out["benign_title"]
    assert f"{100 * adversarial_rf[neuron].float().mean():.0f}% of the image" in out["adversarial_title"]
    assert png(out["benign_src"]).shape == (168, 168, 3)
    info = session.pair_info(pair)
    assert len(out["benign_probs"]) == session.num_classes
    bar = out["adversarial_probs"][info["adv_pred"]]
    assert "bar-strong" in bar.children[0].className
    assert bar.children[1].children.style["width"] == f"{100 * info['adv_probs'][info['adv_pred']]:.1f}%"


def test_rf_panel_combines_the_neurons_of_selected_nodes(session, pair):
    clustering = session.clustering(pair)
    node = clustering.n_neurons_ + len(clustering.linkage_) - 10  # a merge high in the tree
    members = clustering.members(node)
    union = receptive_field.rf_panel(session, pair, None, [node], "union")
    intersection = receptive_field.rf_panel(session, pair, None, [node], "intersection")
    assert f"union of {len(members)} neurons" in union["caption"]
    assert f"intersection of {len(members)} neurons" in intersection["caption"]
    u, i = session.combined_rf(pair, members, "union"), session.combined_rf(pair, members, "intersection")
    assert bool((i[0] <= u[0]).all()) and f"{100 * u[1].float().mean():.0f}%" in union["adversarial_title"]
    assert receptive_field.rf_neurons(session, pair, 5, [node]).tolist() == members.tolist()


def test_rf_panel_empty_states(session, pair):
    assert "Pick a pair" in receptive_field.rf_panel(session, None)["empty"]
    out = receptive_field.rf_panel(session, pair)
    assert out["empty"] is None and "No neuron selected" in out["caption"]


def test_vulnerability_map_overlays_follow_the_top_percent(session, pair):
    for percent in (5.0, 20.0):
        bmask, amask = session.vulnerability_masks(pair, percent)
        assert 0 < bmask.float().mean() <= percent / 100 + 0.02
        out = receptive_field.maps_panel(session, pair, percent)
        assert png(out["bmap_src"]).shape == (168, 168, 3) and f"top {percent:g}%" in out["caption"]
    assert receptive_field.maps_panel(session, None)["bmap_src"] == ""


# ------------------------------------------------------------------------------------------------ cluster view
def test_dendrogram_geometry_matches_the_clustering(session, pair):
    clustering = session.clustering(pair)
    geo = cluster_view.geometry(session, pair)
    k = clustering.n_neurons_
    assert sorted(geo.x[:k].tolist()) == list(range(k))
    assert geo.x[clustering.leaves_].tolist() == list(range(k))
    root = 2 * k - 2
    assert geo.parent[root] == -1 and geo.size[root] == k
    for node in (root, k + 5, 3):
        leaves = sorted(n for n in geo.subtree(node) if n < k)
        assert leaves == clustering.members(node).tolist()
    a, b = geo.children[root]
    assert min(geo.x[a], geo.x[b]) <= geo.x[root] <= max(geo.x[a], geo.x[b])


def test_dendrogram_figure_marks_the_neuron_and_the_selected_subtrees(session, pair):
    clustering = session.clustering(pair)
    neuron, node = 7, clustering.n_neurons_ + 40
    figure = cluster_view.dendrogram_figure(session, pair, neuron, [node])
    red = [t for t in figure.data if getattr(t.line, "color", None) == common.SELECTED_COLOR]
    assert red and red[0].x[0] == cluster_view.geometry(session, pair).x[neuron]
    merges = [t for t in figure.data if t.mode == "markers" and len(t.customdata) == clustering.n_neurons_ - 1][0]
    assert list(merges.customdata) == list(range(clustering.n_neurons_, 2 * clustering.n_neurons_ - 1))
    assert merges.marker.color[node - clustering.n_neurons_] == common.GROUP_COLOR
    assert f"{len(clustering.members(node))} neurons selected" in figure.layout.title.text
    assert len(figure.layout.shapes) == 1  # the shaded subtree
    assert "Pick a pair" in cluster_view.dendrogram_figure(session, None).layout.annotations[0].text


def test_selected_nodes_belong_to_one_pair_and_threshold():
    record = {"pair": 4, "quantile": 0.9, "nodes": [300, 280]}
    assert cluster_view.active_nodes(record, 4, 0.9) == [300, 280]
    assert cluster_view.active_nodes(record, 5, 0.9) == []  # another pair: another tree
    assert cluster_view.active_nodes(record, 4, 0.95) == []  # another RF threshold: another tree
    assert cluster_view.active_nodes(None, 4, 0.9) == []


def test_clicking_nodes_toggles_them(session):
    assert cluster_view.toggle_node([], 300) == [300]
    assert cluster_view.toggle_node([300, 260], 300) == [260]
    assert cluster_view.toggle_node(None, 5) == [5]
    total = 2 * session.num_neurons - 1
    assert cluster_view.node_from_click({"points": [{"customdata": 300}]}, total) == 300
    assert cluster_view.node_from_click({"points": [{"customdata": total}]}, total) is None
    assert cluster_view.node_from_click({"points": [{"x": 1}]}, total) is None


# ------------------------------------------------------------------------------------------------ context
def test_context_images_of_the_selected_pairs(session, pair, cell):
    pairs = session.pairs_in_cell(*cell).tolist()
    selection = {"pairs": pairs, "label": "cell", "cell": list(cell)}
    neuron = int(session.neuron_ranking(pair, "band_gap")[0][0])
    for by in ("activation", "confidence"):
        title, rows = context_view.context_body(session, neuron, selection, "adversarial", by, 6)
        assert f"neuron {neuron}" in title and f"the {len(pairs)} selected pairs" in title
        assert texts(rows[0]).startswith("adversarial images")  # the clicked side first
        expected = session.context(neuron, pairs, 6, by)
        tiles = rows[1].children[1].children
        assert [int(re.search(r"pair (\d+)", texts(t)).group(1)) for t in tiles] == expected.benign.tolist()
    title, rows = context_view.context_body(session, neuron, None, "benign", "activation", 12)
    assert f"all {session.num_pairs} pairs" in title and len(rows[0].children[1].children) == 12
    title, rows = context_view.context_body(session, None, selection)
    assert "need one neuron" in texts(rows)


# ------------------------------------------------------------------------------------------------ app factory
def test_layout_holds_the_five_views_and_id_only_stores(session):
    app = create_app(session)
    ids = component_ids(app.layout)
    for view_id in ("scatter-benign", "scatter-adversarial", "prediction-matrix", "grid-body", "neuron-graph",
                    "rf-benign-img", "bmap-img", "dendrogram", "context-modal", "combine-op", "rf-quantile",
                    "top-percent", "grid-sort", "neuron-measure", "overview-color-by"):
        assert view_id in ids
    stores = [c for c in app.layout.children if type(c).__name__ == "Store"]
    assert {s.id for s in stores} == {common.SELECTION, common.PAIR, common.NEURON, common.NODES, common.CLASSES,
                                      common.CONTEXT}
    assert all(s.data is None for s in stores if s.id != common.CLASSES)
    assert len(app.callback_map) >= 15


def test_apps_do_not_share_state(session):
    import dash._callback

    first, second = create_app(session), create_app(session)
    assert first.callback_map is not second.callback_map and first.callback_map.keys() == second.callback_map.keys()
    assert dash._callback.GLOBAL_CALLBACK_LIST == []  # callbacks registered on the app, not globally


def test_a_store_without_successful_attacks_gets_a_message():
    config = {"model": {"spec": "m", "analysed_layer": "l"}, "dataset": {"name": "d", "split": "test"},
              "attack": {"name": "pgd", "eps": 1e-6}}
    fake = SimpleNamespace(num_pairs=0, num_classes=3, store=SimpleNamespace(config=config))
    assert "no successful attacks" in texts(build_layout(fake))


# ------------------------------------------------------------------------------------------------ cache, CLI
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


def test_serve_parser_defaults_and_errors(tmp_path, capsys):
    from advlens.cli import build_parser

    args = build_parser().parse_args(["serve", "some/store"])
    assert (args.host, args.port, args.store) == ("127.0.0.1", 8050, "some/store")
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no analysis store" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2


def test_serve_reports_a_taken_port(session, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(session.store.root), "--port", str(port), "--device", "cpu"]) == 2
    assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_advlens_serve_binds_localhost_and_serves_the_app(session):
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "advlens.cli", "serve", str(session.store.root), "--port",
                                str(port), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "advlens serve did not come up"
                time.sleep(0.3)
        assert "advlens" in page
        image = urllib.request.urlopen(f"http://127.0.0.1:{port}/pair-image/0/benign.png", timeout=5)
        assert image.headers["Content-Type"] == "image/png"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/pair-image/{session.num_pairs}/benign.png", timeout=5)
        assert missing.value.code == 404
        try:  # where `ss` is available: only the loopback address listens
            listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        except FileNotFoundError:
            listening = ""
        local = [line.split()[3] for line in listening.splitlines() if line.strip()]
        assert all(address == f"127.0.0.1:{port}" for address in local), local
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert f"http://127.0.0.1:{port}/" in output
