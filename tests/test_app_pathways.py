"""The Pathways page's callbacks as plain functions on the tiny store with a sweep: the pair picker, the four
highlight modes, compare mode, pinning, the detail view, the URL state and the refusal of bad ids."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
from app_fixtures import texts, tiny_core_store, tiny_pathways_store, walk
from dash import dcc, no_update

from advlens.analysis import Session
from advlens.app import pathways as page
from advlens.app.pathways import detail, display, graph_figure, graph_view
from advlens.app.pathways.state import PAIR, PROBLEMS, state_from_query

LAYERS = ("1", "3")
"""The tiny model's pathway layers (its two ReLUs)."""


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path, model = tiny_pathways_store(tmp_path_factory)
    return Session(path, model=model)


@pytest.fixture(scope="module")
def pair(session):
    pairs = session.pathway_class_pairs("pgd")
    return int(pairs.original[0]), int(pairs.target[0])


def draw(session, pair, strength=3, mode="activated", top=20, filter_="all", compare="none", vs=0, pinned=()):
    out = graph_view.draw(session, f"{pair[0]}-{pair[1]}", "pgd", strength, mode, top, filter_, compare, vs,
                          [list(p) for p in pinned])
    go.Figure(out[0])  # a valid Plotly figure
    return out


def opacity_by_node(figure) -> dict[tuple[int, int], float]:
    """(layer position, channel) → opacity of its feature-visualisation image (the tile URL names both)."""
    found = {}
    for image in figure["layout"]["images"]:
        _, _, layer, channel, _ = image["source"].split("/")
        found[(int(layer), int(channel))] = image["opacity"]
    return found


def hand_opaque(graph, strength: int, mode: str, top: int) -> set[tuple[int, int]]:
    """The top ⌈x·m⌉ drawn neurons of each layer under ``mode``, by a plain sort (ties: earlier node first)."""
    attacked = graph.attacked()[strength - 1]
    excitation = attacked - graph.importance[0]
    chosen = set()
    for layer in range(len(graph.layers)):
        nodes = np.flatnonzero(graph.node_layer == layer)
        score = {"activated": attacked, "excited": excitation, "inhibited": -excitation,
                 "changed": np.abs(excitation)}[mode][nodes]
        eligible = {"activated": np.ones(len(nodes), bool), "excited": excitation[nodes] > 0,
                    "inhibited": excitation[nodes] < 0, "changed": excitation[nodes] != 0}[mode]
        order = sorted((i for i in range(len(nodes)) if eligible[i]), key=lambda i: (-score[i], i))
        for i in order[:math.ceil(top / 100 * len(nodes))]:
            chosen.add((layer, int(graph.node_channel[nodes[i]])))
    return chosen


def test_page_opens_on_the_most_attacked_pair_with_the_picker_ordered_by_count(session, pair):
    tree = page.layout(session, "")
    picker = next(node for node in walk(tree) if getattr(node, "id", None) == PAIR)
    assert picker.value == f"{pair[0]}-{pair[1]}"
    counts = [int(option["label"].rsplit("·", 1)[1]) for option in picker.options]
    assert counts == sorted(counts, reverse=True) and len(counts) == 6


def test_a_many_class_store_lists_only_the_attacked_class_pairs(session, pair, monkeypatch):
    """Above MAX_FULL_CLASSES classes (a 1,000-class model: 999,000 ordered pairs) the picker lists the pairs
    with attacked images, the most attacked pair and the pair shown, in count order (checked by a plain loop)."""
    from advlens.app import common
    from advlens.app.pathways import controls

    pairs = session.pathway_class_pairs("pgd")
    everything = controls.pair_options(session, "pgd")
    assert len(everything) == len(pairs.total)  # few classes: every pair
    monkeypatch.setattr(common, "MAX_FULL_CLASSES", 1)
    unattacked = [(int(o), int(t)) for o, t, n in zip(pairs.original, pairs.target, pairs.total) if n == 0]
    assert unattacked, "the tiny sweep leaves some class pairs unattacked"
    keep = unattacked[-1]
    expected = [f"{o}-{t}" for i, (o, t, n) in enumerate(zip(pairs.original.tolist(), pairs.target.tolist(),
                                                              pairs.total.tolist()))
                if n > 0 or i == 0 or (o, t) == keep]
    assert [o["value"] for o in controls.pair_options(session, "pgd", keep)] == expected
    assert f"{keep[0]}-{keep[1]}" not in [o["value"] for o in controls.pair_options(session, "pgd")]
    refreshed = graph_view.refresh_pairs(session, "pgd", f"{keep[0]}-{keep[1]}")
    assert [o["value"] for o in refreshed] == expected
    assert [o["value"] for o in graph_view.refresh_pairs(session, "pgd", "x-1")] == [
        v for v in expected if v != f"{keep[0]}-{keep[1]}"]  # a malformed pair from the browser keeps nothing


def test_the_four_highlight_modes_choose_the_opaque_nodes(session, pair):
    graph = session.pathway_graph(*pair, "pgd", max_images=graph_view.PAGE_MAX_IMAGES)
    opaque = {}
    for mode in ("activated", "changed", "excited", "inhibited"):
        figure = draw(session, pair, strength=3, mode=mode, top=40)[0]
        seen = opacity_by_node(figure)
        assert len(seen) == graph.num_nodes  # every node shows its feature visualisation
        opaque[mode] = {node for node, alpha in seen.items() if alpha == 1.0}
        assert opaque[mode] == hand_opaque(graph, 3, mode, 40), mode
        assert all(alpha == graph_figure.FADED for node, alpha in seen.items() if node not in opaque[mode])
    assert opaque["excited"] != opaque["inhibited"]
    assert opaque["activated"] != opaque["inhibited"]
    assert opaque["excited"] | opaque["inhibited"] >= opaque["changed"]
    # a strength at which no image of the pair is attacked has nothing to highlight
    assert graph.counts()[0] == 0
    assert not display.node_highlight(graph, 1, "activated", 40).any()


def test_edge_widths_use_one_scale_per_layer_pair_and_the_strongest_30_percent(session, pair):
    graph = session.pathway_graph(*pair, "pgd", max_images=graph_view.PAGE_MAX_IMAGES)
    values = np.nan_to_num(graph.influence[2 + 2])
    shown = display.display(graph, 3, "activated", 100, "all", [])
    positive = values > 0
    np.testing.assert_allclose(shown.edge_width[positive], 4 * values[positive] / values.max())
    assert shown.edge_strong.sum() == math.ceil(0.3 * positive.sum())
    assert values[shown.edge_strong].min() >= values[positive & ~shown.edge_strong].max()


def test_compare_mode_draws_inner_and_outer_squares_with_a_legend(session, pair):
    graph = session.pathway_graph(*pair, "pgd", max_images=graph_view.PAGE_MAX_IMAGES)
    figure, _, legend, *_ = draw(session, pair, strength=3, mode="activated", top=40, compare="strengths", vs=2)
    for entry in ("weaker only", "stronger only", "both", "neither"):
        assert entry in texts(legend)
    assert not figure["layout"]["images"]  # compare mode shows the rectangles, not the visualisations
    rects = [s for s in figure["layout"]["shapes"] if s.get("line", {}).get("color") == "#555"]
    assert len(rects) == 2 * graph.num_nodes
    weaker, stronger = hand_opaque(graph, 2, "activated", 40), hand_opaque(graph, 3, "activated", 40)
    placed = {}
    for outer, inner in zip(rects[::2], rects[1::2]):
        x = round((outer["x0"] + outer["x1"]) / 2, 6)
        y = round((outer["y0"] + outer["y1"]) / 2, 6)
        placed[(x, y)] = (outer["fillcolor"] != "#ececec", inner["fillcolor"] != "#ffffff")
    hover = next(t for t in figure["data"] if t.get("name") == "neurons")
    for (layer, channel), x, y in zip(hover["customdata"], hover["x"], hover["y"]):
        node = (LAYERS.index(layer), channel)
        assert placed[(round(x, 6), round(y, 6))] == (node in stronger, node in weaker)
    attacks = texts(draw(session, pair, strength=3, compare="attacks")[2])
    assert "PGD only" in attacks and "FGSM only" in attacks


def test_click_pins_and_the_pinned_filter_keeps_only_pinned(session, pair):
    click = {"points": [{"customdata": ["3", 1]}]}
    pinned = graph_view.toggle_pin(session, click, [])
    assert pinned == [["3", 1]]
    assert graph_view.toggle_pin(session, click, pinned) == []
    figure = draw(session, pair, filter_="pinned", pinned=[("3", 1)])[0]
    assert set(opacity_by_node(figure)) == {(1, 1)}
    assert len([t for t in figure["data"] if t.get("mode") == "markers" and t.get("name") != "neurons"]) == 1
    assert graph_view.toggle_pin(session, {"points": [{"customdata": ["3", 99]}]}, []) is no_update


def test_detail_view_shows_examples_the_strength_chart_and_a_neurons_link(session, pair):
    layer = session.model.analysed_layer_name
    body = detail.details(session, [layer, 2], f"{pair[0]}-{pair[1]}", "pgd", 2)
    images = [n for n in walk(body) if getattr(n, "className", None) == "example-img"]
    assert len(images) >= 4
    chart = next(n for n in walk(body) if isinstance(n, dcc.Graph)).figure
    go.Figure(chart)
    info = session.pathway_neuron_detail(layer, 2, *pair, "pgd")
    lines = sorted(s["y0"] for s in chart["layout"]["shapes"] if s.get("line", {}).get("dash") == "dash")
    assert lines == pytest.approx(sorted([info.original_importance, info.target_importance]))
    assert chart["data"][0]["y"] == pytest.approx(info.attacked[np.isfinite(info.attacked)].tolist())
    link = next(n for n in walk(body) if isinstance(n, dcc.Link))
    pairs = session.pairs_in_cell(*pair)
    assert link.href == f"/neurons?pair={int(pairs[0])}&neuron=2"
    assert detail.details(session, None, "0-1", "pgd", 0)[0].children.startswith("Hover a neuron")


def test_the_url_holds_the_selection(session, pair):
    query, _ = page.url_query(session, f"{pair[1]}-{pair[0]}", "fgsm", 2, "inhibited", 35, "highlighted",
                              "strengths", 4, [["3", 4]], "restore", "")
    state = state_from_query(session, query)
    assert (state.original, state.target, state.attack, state.strength, state.mode, state.top, state.filter,
            state.compare, state.vs, state.pinned) == (pair[1], pair[0], "fgsm", 2, "inhibited", 35, "highlighted",
                                                       "strengths", 4, [["3", 4]])
    assert not state.problems
    # the Neurons page's shared keys: the analysed layer's neuron opens the detail view
    state = state_from_query(session, f"?true={pair[0]}&adv={pair[1]}&pair=0&neuron=4")
    assert state.focus == [session.model.analysed_layer_name, 4] and not state.problems
    assert "neuron=4" in page.url_query(session, f"{pair[0]}-{pair[1]}", "pgd", 0, "activated", 20, "all", "none",
                                        0, [], "restore", "?neuron=4")[0]


def test_bad_url_values_are_refused_with_a_message(session, pair):
    tree = page.layout(session, "?true=7&adv=1&eps=3&mode=loud&x=500&pinned=nope:1&compare=sideways")
    problems = texts(next(n for n in walk(tree) if getattr(n, "id", None) == PROBLEMS))
    for key in ("true=", "eps=", "mode=", "x=", "pinned=", "compare="):
        assert f"URL parameter {key}" in problems, key
    assert "original class 7 does not exist" in problems
    picker = next(node for node in walk(tree) if getattr(node, "id", None) == PAIR)
    assert picker.value == f"{pair[0]}-{pair[1]}"  # the default pair instead
    figure, caption, *_ = graph_view.draw_view(session, "1-1", "pgd", 0, "activated", 20, "all", "none", 0, [])
    assert "names one class twice" in figure["layout"]["annotations"][0]["text"]
    figure = graph_view.draw_view(session, "0-1", "pgd", 9, "activated", 20, "all", "none", 0, [])[0]
    assert "strength index 9 does not exist" in figure["layout"]["annotations"][0]["text"]


def test_a_store_without_sweep_names_the_prepare_command(tmp_path_factory):
    path, model = tiny_core_store(tmp_path_factory)
    session = Session(path, model=model)
    text = texts(page.layout(session, "?true=0&adv=1"))
    assert session.sweep_command() in text and "--stages sweep" in text
