"""Callback-level tests of the Model page: the Architecture View's figure against the model's modules, the
layer selection (presets, toggling, refusal of a non-sequential selection, drill-down), the URL state, the
server-side checks of layer and channel ids, the channel gallery and details against the store's features
stage, the feature-image route, and the message when the features stage is missing.

The store-backed tests run on the tiny store of ``tests/app_fixtures.py`` (a plain chain of layers). The
residual cases use the demo model's graph (``fashion-resnet``, shipped weights; no store needed) behind a
minimal session (graph, analysed layer and cache are all the figure and the selection read).
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from dash import no_update
from dash.exceptions import PreventUpdate
from PIL import Image
from torch import nn

from app_fixtures import TINY_CONFIG, texts, tiny_store, walk

from advlens.analysis import Session
from advlens.analysis.cache import BoundedCache
from advlens.app import create_app, shell, validate
from advlens.app.factory import PAGES
from advlens.app.model import architecture, channel, gallery, layout, selection, state, tiles, url_query
from advlens.app.model.architecture_figure import KIND_COLORS, SHORTCUT_COLOR, figure_size
from advlens.app.model.graph_layout import layout_graph
from advlens.errors import ModelError

BLUE, RED, GREY = "#1f77b4", "#d62728", "#9aa0a6"


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root, model = tiny_store(tmp_path_factory)
    return Session(root, model=model, device="cpu")


@pytest.fixture(scope="module")
def demo_model():
    from advlens.models import load_model

    return load_model("fashion-resnet")


@pytest.fixture
def demo(demo_model):
    """What the Architecture View and the selection read of a session: the model (graph) and a cache."""
    return SimpleNamespace(model=demo_model, cache=BoundedCache(16))


def trace(figure: dict, name: str) -> dict:
    go.Figure(figure)  # Plotly validates every property
    return next(t for t in figure["data"] if t["name"] == name)


TYPE_COLORS = {"Conv2d": BLUE, "Linear": BLUE, "BatchNorm2d": RED}
"""The spec's colours by layer type (A13): conv/linear blue, batch norm red, everything else grey."""


def expected_color(net: nn.Module, name: str, op: str) -> str:
    """The spec's colour of a layer, from its type; a layer named after a leaf module has that module's type."""
    module = dict(net.named_modules()).get(name)
    if module is not None and not list(module.children()):
        assert op == type(module).__name__, (name, op)
    return TYPE_COLORS.get(op, GREY)


def segments(points: dict) -> set[tuple[tuple[float, float], tuple[float, float]]]:
    """(first point, last point) of every polyline of a None-separated line trace."""
    found, line = set(), []
    for x, y in zip(points["x"] + [None], points["y"] + [None]):
        if x is None:
            if line:
                found.add((line[0], line[-1]))
            line = []
        else:
            line.append((x, y))
    return found


# ------------------------------------------------------------------------------------------------ figure
def test_layer_colours_and_shapes_follow_the_modules(demo, demo_model):
    figure = architecture.draw(demo, [], None)
    layers = trace(figure, "layers")
    net = demo_model.net
    names = layers["customdata"]
    colors = dict(zip(names, layers["marker"]["color"]))
    symbols = dict(zip(names, layers["marker"]["symbol"]))
    assert set(names) == set(demo_model.graph.names())
    for name in names:
        node = demo_model.graph[name]
        assert colors[name] == expected_color(net, name, node.op), name
    # hand-checked: the spec's A13 colours
    assert colors["stem.0"] == colors["layer2.shortcut.0"] == colors["fc"] == BLUE
    assert colors["stem.1"] == colors["layer3.bn2"] == colors["layer2.shortcut"] == RED
    assert colors["layer1.relu"] == colors["layer1.add"] == colors["avgpool"] == colors["flatten"] == GREY
    assert colors["stem"] == colors["layer4"] == GREY  # ReLU modules / functional relu ending a block
    assert symbols["input"] == symbols["fc"] == "circle"
    assert {s for n, s in symbols.items() if n not in ("input", "fc")} == {"square"}
    assert KIND_COLORS == {"other": GREY, "weighted": BLUE, "parametric": RED}


def test_shortcut_edges_of_a_residual_model_are_drawn(demo):
    figure = architecture.draw(demo, [], None)
    placed = layout_graph(demo.model.graph)
    pos = placed.position
    shortcut = trace(figure, "shortcuts")
    assert shortcut["line"]["color"] == SHORTCUT_COLOR
    drawn = segments(shortcut)
    # the identity shortcut of layer1 and the projection shortcuts of layers 2–4, by hand
    expected = [("stem", "layer1.add")]
    for i, previous in ((2, "layer1"), (3, "layer2"), (4, "layer3")):
        expected += [(previous, f"layer{i}.shortcut.0"), (f"layer{i}.shortcut", f"layer{i}.add")]
    for source, target in expected:
        assert (tuple(map(float, pos[source])), tuple(map(float, pos[target]))) in \
            {(tuple(map(float, a)), tuple(map(float, b))) for a, b in drawn}, (source, target)
    assert sorted(placed.shortcut_edges()) == sorted(expected)
    # the main path runs on lane 0 at consecutive depths; the projection shortcuts below it
    main = [n for n in demo.model.graph.names() if "shortcut" not in n]
    assert list(placed.main_path) == main
    assert [pos[n] for n in main] == [(i, 0) for i in range(len(main))]
    assert all(pos[n][1] < 0 for n in demo.model.graph.names() if "shortcut" in n)
    # the identity shortcut arcs above the main lane
    arc = next(e for e in placed.edges if (e.source, e.target) == ("stem", "layer1.add"))
    assert min(y for _, y in arc.points[1:-1]) > 0.3


def test_a_plain_chain_has_no_shortcuts_and_no_lanes(tiny):
    figure = architecture.draw(tiny, [], None)
    assert trace(figure, "shortcuts")["x"] == []
    assert set(trace(figure, "layers")["y"]) == {0}
    graph = tiny.model.graph
    colors = dict(zip(trace(figure, "layers")["customdata"], trace(figure, "layers")["marker"]["color"]))
    assert [colors[n] for n in graph.names()] == [GREY, BLUE, GREY, BLUE, GREY, GREY, GREY, BLUE]


class ThreeWay(nn.Module):
    """Three parallel branches joined by a concatenation (an inception-like module), the middle one longest."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b1, self.b2, self.b3 = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.ReLU()
        self.c = nn.Conv2d(1, 2, 5, padding=2)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 3)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b3(self.b2(self.b1(x))), self.c(x)], 1)
        return self.fc(torch.flatten(self.pool(y), 1))


def test_parallel_branches_get_their_own_lanes():
    from advlens.models import AnalysedModel

    graph = AnalysedModel(ThreeWay().eval(), (0.5,), (0.25,), (1, 8, 8), ["0", "1", "2"]).graph
    placed = layout_graph(graph)
    pos = placed.position
    assert list(placed.main_path) == ["input", "b1", "b2", "b3", "cat", "pool", "flatten", "fc"]
    assert pos["a"][0] == pos["c"][0] == 1 and {pos["a"][1], pos["c"][1]} == {-1, -2}
    assert len(set(pos.values())) == len(pos)  # no two layers drawn on one spot
    for edge in placed.edges:  # every edge runs from its source to its target
        assert edge.points[0] == pos[edge.source] and edge.points[-1] == pos[edge.target]
    assert sorted(placed.shortcut_edges()) == sorted([("input", "a"), ("input", "c"), ("a", "cat"), ("c", "cat")])
    assert selection.toggle(graph, ["b2"], "a").refused and not selection.toggle(graph, ["b2"], "cat").refused


def test_blocks_are_white_boxes_around_their_layers(demo):
    figure = architecture.draw(demo, [], None)
    placed = layout_graph(demo.model.graph)
    boxes = {(s["x0"], s["x1"], s["y0"], s["y1"]) for s in figure["layout"]["shapes"] if s["type"] == "rect"}
    assert all(s["fillcolor"] == "#ffffff" for s in figure["layout"]["shapes"])
    expected_blocks = {"stem", "layer1", "layer2", "layer3", "layer4", "layer2.shortcut", "layer3.shortcut",
                       "layer4.shortcut"}
    assert {b.name for b in placed.blocks} == expected_blocks and len(boxes) == len(expected_blocks)
    for box in placed.blocks:
        members = [n for n in demo.model.graph.names() if n == box.name or n.startswith(box.name + ".")]
        assert set(box.layers) == set(members)
        for name in members:
            x, y = placed.position[name]
            assert box.x0 < x < box.x1 and box.y0 < y < box.y1, (box.name, name)
        outside = [n for n in demo.model.graph.names() if n not in members]
        assert not any(box.x0 < placed.position[n][0] < box.x1 and box.y0 < placed.position[n][1] < box.y1
                       for n in outside), box.name
    labels = {a["text"] for a in figure["layout"]["annotations"]}
    assert {"stem", "layer1", "layer2", "layer3", "layer4"} <= labels


def test_hover_names_type_shape_and_receptive_field(demo):
    layers = trace(architecture.draw(demo, [], None), "layers")
    hover = dict(zip(layers["customdata"], layers["hovertext"]))
    text = hover["layer2.conv1"]
    assert "<b>layer2.conv1</b>" in text and "Conv2d" in text and "64×14×14" in text
    # stem 3×3 (3), layer1 two 3×3 (7), layer2.conv1 3×3 stride 2: 7 + 2·1 = 9, jump 2
    assert "receptive field: 9×9 px, stride 2" in text
    assert "receptive field: 3×3 px, stride 1" in hover["stem"]
    assert "not spatial" in hover["fc"] and "model output" in hover["fc"] and "model input" in hover["input"]


def test_selected_layers_are_highlighted_and_the_focus_outlined(demo):
    figure = architecture.draw(demo, ["layer1", "layer2"], {"layer": "layer3", "channel": None})
    placed = layout_graph(demo.model.graph)
    halo = trace(figure, "selected")
    assert list(zip(halo["x"], halo["y"])) == [placed.position["layer1"], placed.position["layer2"]]
    layers = trace(figure, "layers")
    widths = dict(zip(layers["customdata"], layers["marker"]["line"]["width"]))
    assert widths["layer3"] == 3 and {w for n, w in widths.items() if n != "layer3"} == {1}


def test_a_large_model_gets_narrow_columns_and_thinned_labels():
    """EfficientNet-Lite0 (random weights): 16 blocks, 9 residual ones with identity-shortcut arcs, a figure
    wider than a screen (scrolled), labels on weighted layers and block outputs only."""
    from advlens.models import AnalysedModel
    from advlens.models.efficientnet import EFFICIENTNET_INPUT, efficientnet_lite0

    model = AnalysedModel(efficientnet_lite0(pretrained=False), (0.5,) * 3, (0.25,) * 3, EFFICIENTNET_INPUT,
                          [str(i) for i in range(1000)])
    session = SimpleNamespace(model=model, cache=BoundedCache(4))
    figure = architecture.draw(session, [], None)
    graph = model.graph
    placed, facts = architecture.graph_layout(session)
    assert {b.name for b in placed.blocks if b.level == 0} == {f"_blocks.{i}" for i in range(16)}
    arcs = {t for s, t in placed.shortcut_edges() if t.startswith("_blocks.")}
    assert arcs == {f"_blocks.{i}" for i in (2, 4, 6, 7, 9, 10, 12, 13, 14)}  # spec-002 A13
    assert figure_size(placed, facts)[0] > 2500 and figure["layout"]["height"] == figure_size(placed, facts)[1]
    labelled = len(figure["layout"]["annotations"]) - 16
    assert labelled == len(set(graph.weighted_layers()) | set(graph.block_outputs()) | {"input"})


# ------------------------------------------------------------------------------------------------ selection
def test_presets_are_the_graphs_lists(tiny, demo):
    graph = tiny.model.graph
    assert selection.preset(graph, "activation").layers == ("1", "3")  # the two ReLUs of the chain
    assert selection.preset(graph, "weighted").layers == ("0", "2", "6")
    assert selection.preset(graph, "blocks").layers == () and "no block outputs" in \
        selection.preset(graph, "blocks").message
    residual = demo.model.graph
    assert selection.preset(residual, "blocks").layers == ("layer1", "layer2", "layer3", "layer4")
    assert selection.preset(residual, "activation").layers == (
        "stem", "layer1.relu", "layer1", "layer2.relu", "layer2", "layer3.relu", "layer3", "layer4.relu", "layer4")
    weighted = selection.preset(residual, "weighted")
    # the projection shortcuts are not sequential with the main path: left out and named
    assert weighted.layers == ("stem.0", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2",
                               "layer3.conv1", "layer3.conv2", "layer4.conv1", "layer4.conv2", "fc")
    assert "layer2.shortcut.0, layer3.shortcut.0, layer4.shortcut.0" in weighted.message
    for which in selection.PRESETS:
        residual.check_sequential(list(selection.preset(residual, which).layers))


def test_a_non_sequential_selection_is_refused_with_the_graphs_message(demo):
    graph = demo.model.graph
    change = selection.toggle(graph, ["layer2.conv1"], "layer2.shortcut.0")
    assert change.refused and change.layers == ("layer2.conv1",)
    assert "not sequential" in change.message and "'layer2.shortcut.0'" in change.message
    # through the click callback: the selection is kept, the view says why
    click = {"points": [{"customdata": "layer2.shortcut.0"}]}
    layers, focus, note = architecture.select(demo, architecture.GRAPH, "select", click, ["layer2.conv1"], None)
    assert layers == ["layer2.conv1"] and focus is no_update
    assert "not sequential" in texts(note) and "message-error" in note.className
    # consecutive block outputs are accepted (A13); toggling a selected layer removes it
    assert selection.toggle(graph, ["layer1", "layer2"], "layer3").layers == ("layer1", "layer2", "layer3")
    assert selection.toggle(graph, ["layer1", "layer2"], "layer1").layers == ("layer2",)
    layers, _, _ = architecture.select(demo, architecture.GRAPH, "select", {"points": [{"customdata": "stem"}]},
                                       ["layer1"], None)
    assert layers == ["stem", "layer1"]  # kept in execution order
    # a non-sequential selection sent by the browser is refused, not used
    layers, focus, note = architecture.select(demo, architecture.FILL, "select", None,
                                              ["layer2.conv1", "layer2.shortcut.0"], None)
    assert (layers, focus) == (no_update, no_update) and "not sequential" in texts(note)


def test_drill_down_fills_the_main_path_between_two_block_outputs(demo):
    change = selection.fill_path(demo.model.graph, ["layer1", "layer2"])
    assert change.layers == ("layer1", "layer2.conv1", "layer2.bn1", "layer2.relu", "layer2.conv2", "layer2.bn2",
                             "layer2.add", "layer2")
    assert selection.fill_path(demo.model.graph, ["layer1"]).refused
    layers, _, _ = architecture.select(demo, {"type": architecture.PRESET_BUTTON, "preset": "blocks"}, "select",
                                       None, [], None)
    assert layers == ["layer1", "layer2", "layer3", "layer4"]
    assert architecture.select(demo, architecture.CLEAR, "select", None, layers, None)[0] == []


def test_a_click_in_inspect_mode_focuses_the_layer(demo):
    click = {"points": [{"customdata": "layer3.relu"}]}
    layers, focus, _ = architecture.select(demo, architecture.GRAPH, "inspect", click, ["stem"], None)
    assert layers is no_update and focus == {"layer": "layer3.relu", "channel": None}
    with pytest.raises(PreventUpdate):  # a click on an edge or a box
        architecture.select(demo, architecture.GRAPH, "inspect", {"points": [{"x": 1, "y": 0}]}, [], None)


def test_layer_and_channel_ids_from_the_browser_are_checked(demo, tiny):
    graph = demo.model.graph
    for bad in ("layer9", "", None, 3, ["stem"], "x" * 300):
        with pytest.raises(validate.InvalidSelection, match="layer"):
            validate.layer_name(graph, bad)
    with pytest.raises(validate.InvalidSelection, match=r"did you mean layer2.conv2, layer2.conv1"):
        validate.layer_name(graph, "layer2.conv")
    with pytest.raises(validate.InvalidSelection, match="named twice"):
        validate.layer_names(graph, ["stem", "stem"])
    for bad in (-1, 32, True, 1.0, "x", [0]):
        with pytest.raises(validate.InvalidSelection, match="channel"):
            state.check_focus(demo, {"layer": "stem", "channel": bad})
    assert state.check_focus(demo, {"layer": "stem", "channel": 31}) == ("stem", 31)
    with pytest.raises(validate.InvalidSelection, match="focus"):
        state.check_focus(demo, {"layer": "stem", "channel": 1, "extra": 2})
    # through the callbacks: a message in the view, nothing else changes
    bad_click = {"points": [{"customdata": "nope"}]}
    layers, focus, note = architecture.select(demo, architecture.GRAPH, "select", bad_click, [], None)
    assert (layers, focus) == (no_update, no_update) and "'nope' is not a layer" in texts(note)
    shown = go.Figure(architecture.draw_figure(demo, ["nope"], None)).layout.annotations[0].text
    assert "'nope' is not a layer" in shown
    assert "click mode 'drag'" in texts(architecture.select(demo, architecture.GRAPH, "drag",
                                                            {"points": [{"customdata": "stem"}]}, [], None)[2])
    tiles_, *_ = gallery.draw_gallery(tiny, {"layer": "3", "channel": 6}, 0)
    assert "channel 6 does not exist: layer 3 (6 channels) has channel ids 0–5" in texts(tiles_)
    assert "page 2 does not exist" in texts(gallery.draw_gallery(tiny, {"layer": "3", "channel": None}, 1)[0])
    assert gallery.pick(tiny, {"type": gallery.TILE, "channel": -1}, True, {"layer": "3", "channel": None}) \
        is no_update
    assert "channel -1 does not exist" in texts(channel.draw(tiny, {"layer": "3", "channel": -1}))


# ------------------------------------------------------------------------------------------------ URL state
def test_the_url_holds_the_selection_and_invalid_values_are_reported(tiny):
    analysed = tiny.model.analysed_layer_name
    opened = state.state_from_query(tiny, "?layers=1,3&layer=3&channel=2")
    assert (opened.layers, opened.layer, opened.channel, opened.problems) == (["1", "3"], "3", 2, [])
    query = state.query_string(tiny, ["1", "3"], "3", 2, "?pair=4&measure=x")
    assert query == "?layers=1%2C3&layer=3&channel=2&pair=4" + ("&neuron=2" if analysed == "3" else "")
    bad = state.state_from_query(tiny, "?layers=1,nope&layer=zzz&channel=1")
    assert bad.layers == [] and bad.layer is None and bad.channel is None and len(bad.problems) == 2
    assert "'nope' is not a layer" in bad.problems[0] and "'zzz' is not a layer" in bad.problems[1]
    assert state.state_from_query(tiny, "?channel=1").problems == [
        "URL parameter channel needs a layer (layer=…); ignored"]
    assert "channel 9 does not exist" in state.state_from_query(tiny, "?layer=3&channel=9").problems[0]
    # the Neurons page's neuron opens the analysed layer's channel
    carried = state.state_from_query(tiny, "?neuron=4&pair=1")
    assert (carried.layer, carried.channel) == (analysed, 4)
    page = layout(tiny, "?layers=3,1&channel=-1&layer=1")
    assert "URL parameter channel='-1'" in texts(page) or "channel -1 does not exist" in texts(page)
    written = url_query(tiny, ["1", "3"], {"layer": "3", "channel": 2}, "")
    assert written[0] == written[1] and written[0].startswith("?layers=1%2C3&layer=3&channel=2")
    assert url_query(tiny, ["1", "3"], {"layer": "3", "channel": 2}, written[0]) == (no_update, no_update)


# ------------------------------------------------------------------------------------------------ gallery
def test_the_gallery_has_one_tile_per_channel(tiny):
    library = tiny.features
    for layer in library.layers():
        body, pager, caption, prev_off, next_off = gallery.draw_gallery(tiny, {"layer": layer, "channel": None}, 0)
        ids = [c.id["channel"] for c in walk(body) if isinstance(getattr(c, "id", None), dict)]
        assert ids == list(range(tiny.model.graph[layer].channels)), layer
        assert pager == f"0–{len(ids) - 1} of {len(ids)} · page 1/1" and prev_off and next_off
        labels = [c.children for c in walk(body) if getattr(c, "className", "") == "tile-label"]
        assert labels == [str(i) for i in ids]
    assert gallery.page_count(256) == 4 and gallery.page_of_channel(130) == 2


def test_a_tile_click_picks_its_channel_and_the_details_show_examples(tiny):
    layer = tiny.features.layers()[-1]
    focus = gallery.pick(tiny, {"type": gallery.TILE, "channel": 2}, True, {"layer": layer, "channel": None})
    assert focus == {"layer": layer, "channel": 2}
    with pytest.raises(PreventUpdate):  # tiles appearing (n_clicks 0), not a click
        gallery.pick(tiny, {"type": gallery.TILE, "channel": 2}, False, focus)
    body = channel.draw(tiny, focus, "?pair=0")
    examples = tiny.features.examples(layer, 2)
    shown = [c for c in walk(body) if getattr(c, "className", "") == "example-value"]
    assert len(shown) == len(examples.indices) >= 4
    assert [float(c.children) for c in shown] == pytest.approx(examples.values.tolist(), rel=1e-2)
    # attacked images link to their pair on the Neurons page (the neuron too on the analysed layer)
    table = tiny.table
    pairs = {int(i): p for p, i in enumerate(table["dataset_index"].tolist())}
    links = [c.href for c in walk(body) if getattr(c, "className", "") == "example-link"]
    expected = [pairs[int(i)] for i in examples.indices if int(i) in pairs]
    neuron = "&neuron=2" if layer == tiny.model.analysed_layer_name else ""
    assert links == [f"/neurons?pair={p}{neuron}" for p in expected]
    stats = tiny.features.channel_stats(layer, 2)
    assert f"{stats.max_quantiles[-1]:.3f}" in texts(body) or f"{stats.max_quantiles[-1]:.3g}" in texts(body)


def test_the_analysed_layer_links_its_channels_to_the_neurons_page(tiny):
    analysed = tiny.model.analysed_layer_name
    assert tiny.features.has(analysed)
    body = channel.draw(tiny, {"layer": analysed, "channel": 3}, "?true=0&adv=1&neuron=5")
    link = next(c for c in walk(body) if getattr(c, "className", "") == "neuron-link")
    assert link.href == "/neurons?true=0&adv=1&neuron=3"


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255.0


def test_feature_images_are_the_stored_visualisations_and_only_those(tiny):
    client = create_app(tiny).server.test_client()
    library = tiny.features
    layer = library.layers()[0]
    response = client.get(tiles.feature_url(0, 1))
    assert response.status_code == 200 and response.mimetype == "image/png"
    served = png(response.data)
    stored = library.visualization(layer, 1)[0]
    factor = served.shape[0] // stored.shape[0]
    assert served.shape == (factor * stored.shape[0], factor * stored.shape[1]) and factor >= 2
    assert np.abs(served[::factor, ::factor] - stored).max() <= 0.5 / 255 + 1e-3
    examples = library.examples(layer, 1)
    patch = png(client.get(tiles.example_url(0, 1, 0)).data)
    assert examples.patches is not None
    step = patch.shape[0] // examples.patches.shape[2]
    assert np.abs(patch[::step, ::step] - examples.patches[0, 0]).max() <= 0.5 / 255 + 1e-3
    channels = library.num_channels(layer)
    for url in (tiles.feature_url(len(library.layers()), 0), tiles.feature_url(0, channels),
                "/model-features/0/1/huge.png", "/model-features/-1/0/tile.png", "/model-features/0/0/../../x",
                tiles.example_url(0, 1, library.k), "/model-features/0/1/example-x.png"):
        assert client.get(url).status_code == 404, url


def test_a_model_that_cannot_be_loaded_is_reported_on_the_page(tiny):
    class NoModel:
        cache = BoundedCache(4)

        @property
        def model(self):
            raise ModelError("the store names the model 'x:y', which is not built in; pass trust_store_code=True")

    page = shell.route(NoModel(), PAGES, "/model", "?layer=3", ["url.pathname"], None)
    assert "trust_store_code=True" in texts(page) and "message-error" in texts_classes(page)
    shown = go.Figure(architecture.draw_figure(NoModel(), [], None)).layout.annotations[0].text
    assert "trust_store_code=True" in shown


def texts_classes(component) -> str:
    return " ".join(getattr(c, "className", "") or "" for c in walk(component))


# ------------------------------------------------------------------------------------------------ no features
@pytest.fixture(scope="module")
def without_features(tmp_path_factory):
    """The tiny model's store prepared without the features stage."""
    from conftest import tiny_dataset, trained_tiny_model

    from advlens.pipeline import PrepareConfig, prepare
    from advlens.pipeline.stages import default_stages

    model = trained_tiny_model(tiny_dataset())
    root = tmp_path_factory.mktemp("no-features") / "store"
    prepare(PrepareConfig(**{**TINY_CONFIG}), root, model=model, data=tiny_dataset(60),
            stages=[s for s in default_stages() if s != "features"])
    return Session(root, model=model, device="cpu")


def test_without_the_features_stage_the_views_say_how_to_add_it(without_features):
    session = without_features
    focus = {"layer": session.model.analysed_layer_name, "channel": None}
    body, pager, *_ = gallery.draw_gallery(session, focus, 0)
    text = texts(body)
    assert "no feature visualisations" in text and "--stages features" in text and "advlens prepare" in text
    assert "--stages features" in texts(channel.draw(session, {**focus, "channel": 0}))
    # the architecture still draws, from the graph alone
    page = shell.route(session, PAGES, "/model", "", ["url.pathname"], None)
    assert any(getattr(c, "id", None) == architecture.GRAPH for c in walk(page))
    assert create_app(session).server.test_client().get(tiles.feature_url(0, 0)).status_code == 404
