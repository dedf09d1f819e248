"""The what-if panel of the Neurons page (issue 13, item 3), its URL state, and the page's links to the pair on the
Profiles and Datapaths pages (item 4): the plain functions behind the callbacks, on the tiny store of
``tests/conftest.py`` (3 classes, 6 neurons), checked against a manual forward pass with the test's own hook."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from dash import no_update
from dash.exceptions import PreventUpdate

from app_fixtures import texts, tiny_store, walk
from conftest import manual_pair_edit

from advlens.analysis import Session
from advlens.app import what_if
from advlens.app.figures import decode
from advlens.app.neurons import layout as neurons_layout
from advlens.app.neurons import neuron_view, url_query, what_if_view
from advlens.app.neurons import state as neurons_state
from advlens.app.neurons import PROBLEMS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    root, model = tiny_store(tmp_path_factory)
    return Session(root, model=model, device="cpu")


@pytest.fixture(scope="module")
def pair(session) -> int:
    """A pair whose attack a full restoration undoes (every pair of the store: the analysed layer feeds the head)."""
    return int(session.sort_pairs(np.arange(session.num_pairs), "perturbation_asc")[0])


def find(component, component_id):
    return next((node for node in walk(component) if getattr(node, "id", None) == component_id), None)


def message(figure: dict) -> str:
    return go.Figure(figure).layout.annotations[0].text.replace("<br>", " ")


def bars(figure: dict) -> dict[str, np.ndarray]:
    """The panel's bar series by their first word (original / original adversarial / edited)."""
    go.Figure(figure)  # Plotly validates every property
    out = {}
    for trace in figure["data"]:
        key = "edited" if trace["name"].startswith("edited") else trace["name"].split(" (")[0]
        out[key] = np.asarray(decode(trace["y"]), dtype=np.float64)
    return out


def manual_edit(session: Session, pair: int, channels, mode: str) -> np.ndarray:
    """The edited probabilities with the test's own forward hooks on the raw network (conftest.manual_pair_edit)."""
    benign, adversarial = (torch.from_numpy(a) for a in session.pair_images([pair]))
    logits = manual_pair_edit(session.model, benign, adversarial, session.model_config["analysed_layer"], channels,
                              mode)
    return logits.softmax(1)[0].numpy()


def draw(session, pair, mode="restore", source="neuron", k=10, neuron=None, record=None, measure="band_gap"):
    return what_if_view.draw(session, pair, mode, source, k, neuron, record, None, measure, 20.0, None)


# ------------------------------------------------------------------------------------------------ the panel
@pytest.mark.parametrize("mode", ["restore", "attack", "zero_adversarial", "zero_benign"])
def test_the_panel_shows_the_edited_probabilities_beside_the_original_ones(session, pair, mode):
    info = session.pair_info(pair)
    figure, summary = draw(session, pair, mode, "neuron", neuron=4)
    shown = bars(figure)
    np.testing.assert_allclose(shown["original benign"], info["benign_probs"], atol=1e-4)  # the store's own record
    np.testing.assert_allclose(shown["original adversarial"], info["adv_probs"], atol=1e-4)
    np.testing.assert_allclose(shown["edited"], manual_edit(session, pair, [4], mode), atol=1e-4)
    assert [t["x"] for t in figure["data"]] == [list(session.class_names)] * 3
    assert summary.startswith("neuron 4: 1 neuron (#4)")
    assert ("adversarial pass" in summary) == (mode in ("restore", "zero_adversarial"))


def test_restoring_every_neuron_gives_the_benign_prediction_back(session, pair):
    """The analysed layer alone feeds the head: all neurons restored is the benign pass, all set to adversarial
    is the adversarial pass (k = all identities, against the probabilities the store recorded)."""
    info = session.pair_info(pair)
    every = np.arange(session.num_neurons)
    layer = session.model_config["analysed_layer"]
    figure, summary = what_if.panel_outputs(session, pair, "restore", layer, every.tolist(), "hint", "every neuron")
    np.testing.assert_allclose(bars(figure)["edited"], info["benign_probs"], atol=1e-4)
    assert f"predicts {info['label_name']}" in summary and "the attack is undone" in summary
    figure, summary = what_if.panel_outputs(session, pair, "attack", layer, every.tolist(), "hint", "every neuron")
    np.testing.assert_allclose(bars(figure)["edited"], info["adv_probs"], atol=1e-4)
    assert "the attack's class wins" in summary


def test_the_cluster_and_the_top_k_are_edited(session, pair):
    tree = session.clustering(pair)
    node = 2 * session.num_neurons - 3  # the last merge but one: a subtree of several neurons
    members = sorted(int(m) for m in tree.members([node]))
    assert 1 < len(members) < session.num_neurons
    record = {"pair": pair, "quantile": None, "metric": "rf_l2", "method": "ward", "nodes": [node]}
    figure, summary = draw(session, pair, "zero_adversarial", "cluster", record=record)
    np.testing.assert_allclose(bars(figure)["edited"], manual_edit(session, pair, members, "zero_adversarial"),
                               atol=1e-4)
    assert summary.startswith(f"the cluster of {len(members)} neurons")
    order, scores = session.neuron_ranking(pair, "substitution")
    top = [int(n) for n in np.argsort(-scores, kind="stable")[:3]]  # highest substitution score first
    assert sorted(top) == sorted(int(n) for n in order[:3])
    figure, summary = draw(session, pair, "restore", "top", k=3, measure="substitution")
    np.testing.assert_allclose(bars(figure)["edited"], manual_edit(session, pair, top, "restore"), atol=1e-4)
    assert summary.startswith("the top 3 by Δ prob.: 3 neurons")
    # another pair's nodes are not this tree's: the hint, not another pair's neurons
    other = {**record, "pair": (pair + 1) % session.num_pairs}
    assert "Select a cluster" in message(draw(session, pair, "restore", "cluster", record=other)[0])


@pytest.mark.parametrize("source, k, words", [
    ("neuron", 10, "Select a neuron (click it in the Neuron Vulnerability View)"),
    ("cluster", 10, "Select a cluster: click a node of the Neuron Cluster View"),
    ("top", None, "Set k, the number of top-ranked neurons to edit"),
])
def test_every_empty_state_says_what_to_select(session, pair, source, k, words):
    figure, summary = draw(session, pair, "restore", source, k=k)
    assert words in message(figure) and summary == ""
    assert "Pick a pair in the Image Grid" in message(draw(session, None, "restore", source, k=k)[0])


@pytest.mark.parametrize("change, words", [
    (dict(mode="bogus"), "edit 'bogus' is not one of"),
    (dict(source="all"), "edited selection 'all' is not one of"),
    (dict(source="top", k=0), "k 0 must be from 1 to 6"),
    (dict(source="top", k=7), "k 7 must be from 1 to 6"),
    (dict(source="top", k=2.5), "k 2.5 is not an id"),
    (dict(neuron=-1), "neuron -1 does not exist"),
    (dict(measure="random", source="top"), "measure 'random' is not one of"),
])
def test_bad_values_from_the_browser_are_named_in_the_panel(session, pair, change, words):
    figure, summary = draw(session, pair, **{"neuron": 1, **change})
    assert words in message(figure) and summary == ""
    assert "pair 9999 does not exist" in message(draw(session, 9999, neuron=1)[0])


def test_the_panels_callbacks_go_through_the_error_handler():
    for function in (what_if_view.draw, neuron_view.pair_links, url_query):
        assert hasattr(function, "on_error")


# ------------------------------------------------------------------------------------------------ URL state
def test_the_url_opens_the_panel_on_its_edit_selection_and_k(session, pair):
    page = neurons_layout(session, f"?pair={pair}&neuron=2&edit=zero_benign&edit_of=top&k=3")
    assert find(page, what_if.WhatIfIds("what-if").mode).value == "zero_benign"
    assert find(page, what_if_view.SOURCE).value == "top" and find(page, what_if_view.K).value == 3
    assert find(page, PROBLEMS).children is None
    plain = neurons_layout(session, f"?pair={pair}")
    assert (find(plain, what_if_view.IDS.mode).value, find(plain, what_if_view.SOURCE).value,
            find(plain, what_if_view.K).value) == ("restore", "neuron", 6)  # 10, at most every neuron


@pytest.mark.parametrize("query, problem", [
    ("?edit=undo", "edit 'undo' is not one of"),
    ("?edit_of=everything", "edited selection 'everything' is not one of"),
    ("?k=0", "k 0 must be from 1 to 6"),
    ("?k=7", "k 7 must be from 1 to 6"),
    ("?k=ten", "k 'ten' is not an id"),
])
def test_an_invalid_edit_in_the_url_says_so_and_opens_on_the_default(session, query, problem):
    page = neurons_layout(session, query)
    assert problem in texts(find(page, PROBLEMS))
    assert (find(page, what_if_view.IDS.mode).value, find(page, what_if_view.SOURCE).value,
            find(page, what_if_view.K).value) == ("restore", "neuron", 6)


def test_the_edit_is_written_into_the_url_and_reads_back(session, pair):
    selection = neurons_state.cell_selection(session, *(lambda i: (i["label"], i["adv_pred"]))(session.pair_info(pair)))
    query, written = url_query(session, selection, pair, 2, "band_gap", "perturbation_asc", "", "attack", "top", 4)
    assert query == written == f"?pair={pair}&neuron=2&edit=attack&edit_of=top&k=4"
    state = neurons_state.state_from_query(session, {"pair": str(pair), "neuron": "2", "edit": "attack",
                                                     "edit_of": "top", "k": "4"})
    assert (state.edit, state.edit_of, state.k, state.problems) == ("attack", "top", 4, [])
    # defaults are left out; an empty k box (None) too; a bad k leaves the URL alone
    assert url_query(session, selection, pair, 2, "band_gap", "perturbation_asc", "", "restore", "neuron", 6)[0] == \
        f"?pair={pair}&neuron=2"
    assert url_query(session, selection, pair, 2, "band_gap", "perturbation_asc", "", "restore", "top", None)[0] == \
        f"?pair={pair}&neuron=2&edit_of=top"
    assert url_query(session, selection, pair, 2, "band_gap", "perturbation_asc", "", "restore", "top", 0) == \
        (no_update, no_update)


# ------------------------------------------------------------------------------------------------ links
def test_the_neurons_page_links_to_the_pairs_profile_and_datapaths(session, pair):
    links = [c for c in walk(neuron_view.pair_links(session, pair)) if type(c).__name__ == "Link"]
    assert [link.href for link in links] == [f"/profiles?pair={pair}", f"/datapaths?pair={pair}"]
    assert [link.children for link in links] == ["Open this pair's activation profile", "Open this pair's datapaths"]
    assert neuron_view.pair_links(session, None) is None
    assert "pair 9999 does not exist" in texts(neuron_view.pair_links(session, 9999))
    page = neurons_layout(session, f"?pair={pair}")
    assert find(page, neuron_view.PAIR_LINKS) is not None and find(page, neuron_view.PATHWAYS_LINK) is not None


# ------------------------------------------------------------------------------------------------ badges
def test_the_badges_show_each_measures_insertion_auc_once_computed(session, pair):
    from advlens.app.neurons import badges

    plain, record = badges.request(session, None, None, 20, None)
    assert record is None and [o["label"] for o in plain] == list(neuron_view.MEASURE_LABELS.values())
    pending, record = badges.request(session, pair, None, 20, None)
    assert record == {"pair": pair, "options": {}}  # the view's defaults: the AUCs every caller shares
    assert all(o["label"].endswith(" · AUC …") for o in pending)
    assert badges.request(session, pair, None, 35, "ci")[1]["options"] == {"top_percent": 35.0, "kind": "ci"}
    options = badges.compute(session, record)
    aucs = session.measure_faithfulness(pair, mode="insertion")
    best = max(aucs, key=aucs.get)
    for option in options:
        name, badge = option["label"].split(" · AUC ")
        assert name == neuron_view.MEASURE_LABELS[option["value"]]
        assert badge == f"{aucs[option['value']]:.2f}" + (" (best)" if option["value"] == best else "")
        assert f"pair {pair}" in option["title"]
    assert [o["value"] for o in options] == list(neuron_view.MEASURE_LABELS)


def test_the_badges_wait_for_the_maps_of_their_pair(session, pair):
    from advlens.app.neurons import badges

    record = {"pair": pair, "options": {}}
    for drawn in (None, pair + 1):  # no maps yet, or the previous pair's: the maps' forwards come first
        with pytest.raises(PreventUpdate):
            badges.compute_after_maps(session, record, drawn)
    with pytest.raises(PreventUpdate):
        badges.compute_after_maps(session, None, pair)
    assert badges.compute_after_maps(session, record, pair) == badges.compute(session, record)


def test_the_badges_say_when_there_is_no_auc(session, pair):
    from advlens.app.neurons import badges

    options = badges.measure_options({"band_gap": 0.5, "iou_bmap": float("nan"), "iou_amap": 0.75,
                                      "substitution": 0.25}, pair=pair)
    assert [o["label"].split(" · AUC ")[1] for o in options] == ["0.50", "n/a", "0.75 (best)", "0.25"]
    broken = badges.compute(session, {"pair": 9999, "options": {}})
    assert all(o["label"].endswith("AUC n/a") and "pair 9999 does not exist" in o["title"] for o in broken)
    assert "top p% 500" in badges.compute(session, {"pair": pair, "options": {"top_percent": 500}})[0]["title"]
    assert "badge request" in badges.compute(session, {"pair": pair})[0]["title"]
    with pytest.raises(PreventUpdate):
        badges.compute(session, None)
