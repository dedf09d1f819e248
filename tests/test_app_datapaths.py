"""The Datapaths page's callbacks as plain functions on the tiny store (features stage included): the job that
computes a pair's datapaths, the river and its clicks, the treemap's encodings, the neuron view and its AOI, the
contribution chain and its breadcrumb, the URL state and the refusal of bad ids. Expected values come from the
model's own forward passes and the stored gates, computed here by hand, not from the page's helpers."""

from __future__ import annotations

import time

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from app_fixtures import texts, tiny_pathways_store, walk
from dash import no_update

from advlens.analysis import Session
from advlens.app import datapaths as page
from advlens.app.datapaths import layer_view, network, neuron_view, picker, river_figure, trace
from advlens.app.datapaths.state import aoi_cells, check_aoi, query_string, state_from_query
from advlens.app.jobs import JobRunner
from advlens.app.validate import InvalidSelection

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = ("1", "3")
"""The tiny model's gate layers (its two ReLUs): 4 maps of 8×8, then 6 maps of 4×4."""


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path, model = tiny_pathways_store(tmp_path_factory)
    return Session(path, model=model)


@pytest.fixture(scope="module")
def ready(session):
    """A pair whose datapaths the job computed (fewer solver steps than the page's default are not needed:
    the tiny model takes well under a second)."""
    runner = JobRunner()
    try:
        pair = 0
        first = network.start(session, runner, pair)
        assert first[0] is None and first[1] is False  # not stored: a job, the poll enabled
        deadline = time.monotonic() + 60
        while True:
            out = network.poll(session, runner, pair)
            if out[0] == pair or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert out[0] == pair and out[1] is True, out
        assert runner.state(network.job_key(pair)) is None  # forgotten once done: the store keeps the result
    finally:
        runner.shutdown()
    return pair


def images_of(session, paths):
    """adv, src and the representative target's images, from the store by hand."""
    benign, adversarial = session.pair_images([paths.pair])
    target = session.store.array("attack", "benign")[int(paths.target_rows[paths.representative])]
    return torch.from_numpy(np.concatenate([adversarial, benign, target[None]]).astype(np.float32))


def test_opening_a_stored_pair_is_ready_at_once_and_the_job_is_not_run_twice(session, ready):
    runner = JobRunner()
    try:
        assert network.start(session, runner, ready)[:2] == (ready, True)
        assert runner.state(network.job_key(ready)) is None
        assert network.start(session, runner, None)[:2] == (None, True)
    finally:
        runner.shutdown()
    with pytest.raises(InvalidSelection, match="pair"):
        network.start(session, JobRunner(), 10_000)


def test_river_points_follow_the_rms_distances_of_the_representative(session, ready):
    fig, caption = network.draw(session, ready, [], None)
    go.Figure(fig)
    paths = session.stored_pair_datapaths(ready)
    z = paths.z.astype(np.float64)
    rep = 2 + int(np.argmin([np.linalg.norm(z[2 + k] - z[0]) for k in range(paths.num_targets)]))
    d = {}
    for name, (a, b) in {"d1": (1, rep), "d2": (0, 1), "d3": (0, rep)}.items():
        d[name] = [np.linalg.norm(z[a, s] - z[b, s]) / np.sqrt(s.stop - s.start)
                   for s in (paths.layer_slice(layer) for layer in LAYERS)]
    scale = 1.0 / max(d["d1"])
    curves = {t["name"]: t["y"] for t in fig["data"] if t.get("type") == "scatter" and t.get("mode") == "lines+markers"}
    for i in range(len(LAYERS)):
        src, tar = -scale * d["d1"][i] / 2, scale * d["d1"][i] / 2
        total = d["d2"][i] + d["d3"][i]
        adv = src + scale * d["d1"][i] * d["d2"][i] / total if total > 0 else 0.0
        assert curves["source"][i] == pytest.approx(src, abs=1e-5)
        assert curves["target"][i] == pytest.approx(tar, abs=1e-5)
        assert curves["adversarial"][i] == pytest.approx(adv, abs=1e-5)
    assert "nearest the adversarial" in caption
    hover = next(t for t in fig["data"] if t.get("type") == "bar")["hovertext"][1]
    counts = [int(paths.critical[row, paths.layer_slice("3")].sum()) for row in (0, 1, rep)]
    assert f"adversarial {counts[0]}, source {counts[1]}, target {counts[2]}" in hover


def test_river_click_opens_a_layer_and_refuses_bad_columns(session, ready):
    event = {"points": [{"customdata": ["column", 1]}]}
    assert network.click(session, event, [], ready) == (no_update, "3", None)
    assert network.click(session, {"points": [{"customdata": ["column", 7]}]}, [], ready) == (no_update,) * 3
    assert network.click(session, {"points": [{"customdata": ["group", "nope"]}]}, [], ready) == (no_update,) * 3


def test_gate_dag_of_the_demo_resnet_has_the_block_shortcuts():
    from advlens.datapaths import default_gate_layers
    from advlens.datapaths.river import river_layout
    from advlens.models import load_model

    model = load_model("fashion-resnet")
    layers = default_gate_layers(model)
    edges = river_figure.gate_edges(model.graph, layers)
    for block, before in (("layer1", "stem"), ("layer2", "layer1"), ("layer3", "layer2"), ("layer4", "layer3")):
        # each basic block: input → inner ReLU → output, and the shortcut input → output
        assert {(before, f"{block}.relu"), (f"{block}.relu", block), (before, block)} <= set(edges)
    assert len(edges) == 12
    groups = [("stem", ["stem"])] + [(b, [f"{b}.relu", b]) for b in ("layer1", "layer2", "layer3", "layer4")]
    flat = river_layout(layers, [1.0] * 9, [1.0] * 9, [1.0] * 9, groups=groups)
    assert river_figure.skip_links(flat, edges) == []  # collapsed: every shortcut joins adjacent columns
    opened = river_layout(layers, [1.0] * 9, [1.0] * 9, [1.0] * 9, groups=groups, expanded={"layer2"})
    assert river_figure.skip_links(opened, edges) == [(1, 3)]  # layer1 → layer2 passes layer2.relu


def test_treemap_activation_difference_matches_a_hand_forward_pass(session, ready):
    paths = session.stored_pair_datapaths(ready)
    images = images_of(session, paths)
    with torch.no_grad():
        maxima = session.model.capture(images, ["3"], reduce="max")["3"].reshape(3, -1).numpy()
    fig, caption, top = layer_view.draw(session, ready, "3", "activation", "src-adv", [], None, "auto")
    go.Figure(fig)
    hand = maxima[1] - maxima[0]
    cells = next(t for t in fig["data"] if t.get("name") == "maps")
    critical = paths.layer_critical("3")[[0, 1, paths.row("tar")]]
    assert sorted(c[1] for c in cells["customdata"]) == np.flatnonzero(critical.any(axis=0)).tolist()
    for (kind, m), hover in zip(cells["customdata"], cells["hovertext"]):
        assert f"value {hand[m]:+.3f}" in hover
    order = sorted(range(len(hand)), key=lambda m: (-hand[m], m))
    listed = [node.id["map"] for node in walk(top) if isinstance(getattr(node, "id", None), dict)]
    assert listed == order[:len(listed)]
    assert "acti(src) − acti(adv)" in texts(caption)
    reverse = layer_view.draw(session, ready, "3", "activation", "adv-src", [], None, "auto")[0]
    again = next(t for t in reverse["data"] if t.get("name") == "maps")
    m = again["customdata"][0][1]
    assert f"value {-hand[m]:+.3f}" in again["hovertext"][0]


def test_contribution_mode_without_a_chain_shows_the_datapath_gates(session, ready):
    paths = session.stored_pair_datapaths(ready)
    fig, caption, _ = layer_view.draw(session, ready, "1", "contribution", "auto", [], None, "src")
    z = paths.z[1, paths.layer_slice("1")]
    cells = next(t for t in fig["data"] if t.get("name") == "maps")
    for (_, m), hover in zip(cells["customdata"], cells["hovertext"]):
        assert f"value {z[m]:+.3f}" in hover
    assert any(t.get("fillpattern", {}).get("shape") == "." for t in fig["data"]) or not (z > 0).any()
    assert "source datapath's gates" in texts(caption)


def test_neuron_view_maps_share_one_scale_and_the_aoi_selects_the_same_cells(session, ready):
    paths = session.stored_pair_datapaths(ready)
    images = images_of(session, paths)
    with torch.no_grad():
        every = session.model.capture(images, ["3"])["3"].numpy()
    channel = int(np.argmax(every.max(axis=(0, 2, 3))))  # a map that fires on these images
    hand = every[:, channel]
    aoi = {"kind": "box", "x": [0.0, 0.5], "y": [0.5, 1.0]}
    features, fig, caption = neuron_view.draw(session, ready, "3", channel, aoi, False)
    go.Figure(fig)
    heatmaps = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == 3 and {t["coloraxis"] for t in heatmaps} == {"coloraxis"}
    for i in range(3):
        np.testing.assert_allclose(np.asarray(heatmaps[i]["z"]), hand[i], rtol=1e-5, atol=1e-6)
    assert fig["layout"]["coloraxis"]["cmax"] == pytest.approx(float(hand.max()), rel=1e-5)
    # 4×4 grid: the lower-left quarter is rows 2–3, columns 0–1 (cell centres inside the box)
    expected = np.zeros((4, 4), bool)
    expected[2:, :2] = True
    np.testing.assert_array_equal(aoi_cells(aoi, (4, 4)), expected)
    assert "AOI: 4 neurons" in caption
    assert "Learned features" in texts(features)
    # a box drawn on the second map (axis x2/y2, data units = cells) gives the same fractions
    selected = {"range": {"x2": [-0.5, 1.5], "y2": [1.5, 3.5]}, "points": []}
    assert neuron_view.aoi_from_selection(session, selected, ready, "3", channel) == aoi
    lasso = {"lassoPoints": {"x": [-0.5, 1.5, -0.5], "y": [1.5, 3.5, 3.5]}}
    assert neuron_view.aoi_from_selection(session, lasso, ready, "3", channel)["kind"] == "lasso"


def test_neuron_view_empty_states_say_what_to_do(session, ready):
    features, fig, _ = neuron_view.draw(session, ready, "3", None, None, False)
    assert "Click a map in the treemap" in fig["layout"]["annotations"][0]["text"] and features == []
    features, fig, _ = neuron_view.draw(session, None, None, None, None, False)
    assert "Open a layer of the river" in fig["layout"]["annotations"][0]["text"]
    fig, caption, top = layer_view.draw(session, ready, None, "activation", "auto", [], None, "auto")
    assert "Click a layer" in fig["layout"]["annotations"][0]["text"]


def test_trace_appends_a_step_opens_the_source_layer_and_the_breadcrumb_undoes_it(session, ready):
    aoi = {"kind": "box", "x": [0.0, 0.5], "y": [0.0, 0.5]}
    chain, layer, map_, encoding, status = trace.run(session, ready, "3", 2, aoi, "1", "sgd", "adv", [])
    assert (layer, map_, encoding) == ("1", None, "contribution")
    assert chain == [{"layer": "3", "map": 2, "aoi": aoi, "source": "1", "method": "sgd", "role": "adv"}]
    direct = session.datapath_contribution(ready, "3", 2, "1", role="adv", aoi=aoi_cells(aoi, (4, 4)), method="sgd")
    fig, caption, top = layer_view.draw(session, ready, "1", "contribution", "auto", chain, None, "auto")
    cells = next(t for t in fig["data"] if t.get("name") == "maps")
    for (_, m), hover in zip(cells["customdata"], cells["hovertext"]):
        assert f"value {direct.values[m]:+.3f}" in hover
    assert f"top contributor map {int(np.argmax(direct.values))}" in status
    assert "area of interest of map 2 of 3" in texts(caption)
    crumbs = trace.crumbs(session, chain, "1", 0)
    assert "3 · map 2 (AOI)" in texts(crumbs) and "1 · map 0" in texts(crumbs)
    # a bad source (not earlier) and a missing map are refused with what to do
    out = trace.run_view(session, ready, "1", 0, aoi, "3", "sgd", "adv", chain)
    assert out[:4] == (no_update,) * 4 and "source layer before 1" in texts(out[4])
    out = trace.run_view(session, ready, "3", None, aoi, "1", "sgd", "adv", chain)
    assert "open a map first" in texts(out[4])


def test_breadcrumb_back_restores_the_step(session, ready, monkeypatch):
    aoi = {"kind": "box", "x": [0.0, 0.5], "y": [0.0, 0.5]}
    chain = [{"layer": "3", "map": 2, "aoi": aoi, "source": "1", "method": "fast", "role": "adv"}]

    class Ctx:
        triggered_id = {"type": trace.CRUMB, "index": 0}
    monkeypatch.setattr(trace, "ctx", Ctx)
    assert trace.back(session, [1], chain) == ([], "3", 2, aoi)


def test_url_state_round_trip_and_bad_values_reported(session):
    state = state_from_query(session, "?pair=3&layer=3&map=5&expand=&encoding=contribution&diff=adv-tar")
    assert (state.pair, state.layer, state.map, state.encoding, state.diff, state.problems) == (
        3, "3", 5, "contribution", "adv-tar", [])
    assert query_string(3, "3", 5, [], "contribution", "adv-tar", "?neuron=2") == \
        "?pair=3&layer=3&map=5&encoding=contribution&diff=adv-tar&neuron=2"
    bad = state_from_query(session, "?pair=99999&layer=nope&map=1&diff=x")
    assert bad.pair is None and bad.layer is None and len(bad.problems) == 4
    assert state_from_query(session, "?layer=3&map=6").problems  # the layer has 6 maps: 0 … 5
    with pytest.raises(InvalidSelection):
        check_aoi({"kind": "box", "x": [0, 2], "y": [0, 1]})


def test_page_layout_and_picker(session, ready):
    tree = page.layout(session, "")
    assert "Pick an adversarial example" in texts(tree)
    opened = page.layout(session, f"?pair={ready}&layer=3")
    table = next(node for node in walk(opened) if getattr(node, "id", None) == "dp-picker")
    row = next(r for r in table.data if r["id"] == ready)
    assert row["stored"] == "yes"
    info = session.pair_info(ready)
    probs = info["adv_probs"]
    others = np.delete(probs, info["adv_pred"])
    assert row["score"] == pytest.approx(round(1 - (probs[info["adv_pred"]] - others.max()), 3))
    rows = picker.page_rows(session, 0, [{"column_id": "score", "direction": "desc"}])
    scores = session.datapath_examples().adversarialness
    assert [r["score"] for r in rows] == [round(float(v), 3) for v in sorted(scores, reverse=True)[:len(rows)]]
    assert [r["pair"] for r in picker.page_rows(session, 1, [])] == list(range(8, 16))
    with pytest.raises(InvalidSelection):
        picker.page_rows(session, 0, [{"column_id": "__class__", "direction": "asc"}])
    assert page.open_pair(session, {"row": 0, "column": 0, "row_id": 4}, "?pair=1&neuron=3") == "?pair=4&neuron=3"
    rows = picker.page_rows(session, 0, [{"column_id": "score", "direction": "desc"}])
    scores = session.datapath_examples().adversarialness
    assert [r["score"] for r in rows] == [round(float(v), 3) for v in sorted(scores, reverse=True)[:len(rows)]]
    assert [r["pair"] for r in picker.page_rows(session, 1, [])] == list(range(8, 16))
    with pytest.raises(InvalidSelection):
        picker.page_rows(session, 0, [{"column_id": "__class__", "direction": "asc"}])
    assert page.open_pair(session, {"row_id": 10 ** 6}, "") is no_update
    links = [node.href for node in walk(page.summary(session, ready, ready)) if hasattr(node, "href")]
    assert f"/neurons?pair={ready}" in links and f"/profiles?pair={ready}" in links
