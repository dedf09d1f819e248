"""The Profiles page's what-if panel (issue 13, item 3): the pair's top-k diverging units of the Layer View's layer
(ranked here by a plain loop over units, Σ_hw |a_adv − a_benign| from the test's own forward hooks), or the open
unit, edited in the pair's forward pass; the probabilities the panel shows are checked against the test's own hooked
forward pass (``conftest.manual_pair_edit``); the empty states, the refusal of bad ids and the URL state. On the tiny
store with the hand-made profiles background of ``tests/fixtures_profiles.py`` (layers "1", "3": 4 and 6 units)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from app_fixtures import tiny_store, walk
from conftest import manual_pair_edit
from dash import no_update
from fixtures_profiles import profiles_session

from advlens.app import profiles as page
from advlens.app.figures import decode
from advlens.app.profiles import what_if_view
from advlens.app.profiles.state import PROBLEMS, state_from_query

pytestmark = pytest.mark.usefixtures("one_thread")
LAYERS = ["1", "3", "6"]
OPTIONS = ("pred", "lines", "difference", "pair", "auto", "adversarial", 1.0)
"""The Flow and Layer Views' controls at their defaults (url_query's arguments after the unit)."""


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return profiles_session(*tiny_store(tmp_path_factory))


def message(figure: dict) -> str:
    return go.Figure(figure).layout.annotations[0].text.replace("<br>", " ")


def bars(figure: dict) -> dict[str, np.ndarray]:
    go.Figure(figure)
    out = {}
    for trace in figure["data"]:
        key = "edited" if trace["name"].startswith("edited") else trace["name"].split(" (")[0]
        out[key] = np.asarray(decode(trace["y"]), dtype=np.float64)
    return out


def images(session, pair: int) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(a) for a in session.pair_images([pair]))


def loop_top_diverging(session, pair: int, layer: str, k: int) -> list[int]:
    """The k units with the largest Σ_hw |a_adv − a_benign|, by a plain loop over units on maps recorded with the
    test's own forward hook (ties: lower unit first)."""
    benign, adversarial = images(session, pair)
    model = session.model
    recorded = []
    handle = model.net.get_submodule(layer).register_forward_hook(lambda m, i, o: recorded.append(o.detach()))
    try:
        with torch.no_grad():
            for x in (benign, adversarial):
                model.net((x - model.mean) / model.std)
    finally:
        handle.remove()
    b, a = recorded[0][0].double(), recorded[1][0].double()
    scores = [float((a[u] - b[u]).abs().sum()) for u in range(len(a))]
    return sorted(range(len(scores)), key=lambda u: (-scores[u], u))[:k]


def manual_edit(session, pair: int, layer: str, channels, mode: str) -> np.ndarray:
    benign, adversarial = images(session, pair)
    return manual_pair_edit(session.model, benign, adversarial, layer, channels, mode).softmax(1)[0].numpy()


@pytest.mark.parametrize("mode", ["restore", "attack", "zero_adversarial", "zero_benign"])
@pytest.mark.parametrize("layer, k", [("1", 2), ("3", 3), ("3", 10)])
def test_the_top_diverging_units_are_edited_as_a_hooked_forward_edits_them(session, mode, layer, k):
    pair = 2
    info = session.pair_info(pair)
    figure, summary = what_if_view.draw(session, pair, layer, mode, "top", k, None)
    shown = bars(figure)
    np.testing.assert_allclose(shown["original benign"], info["benign_probs"], atol=1e-4)
    np.testing.assert_allclose(shown["original adversarial"], info["adv_probs"], atol=1e-4)
    units = loop_top_diverging(session, pair, layer, k)  # k = 10 > the 6 units of layer "3": all of them
    np.testing.assert_allclose(shown["edited"], manual_edit(session, pair, layer, units, mode), atol=1e-4)
    assert summary.startswith(f"the top {len(units)} diverging units of {layer}: {len(units)} neurons (#{units[0]}")


def test_restoring_every_unit_of_the_last_layer_undoes_the_attack(session):
    """Layer "3" (the last ReLU) alone feeds the head: restoring all its units gives the benign output."""
    info = session.pair_info(2)
    shown = bars(what_if_view.draw(session, 2, "3", "restore", "top", 6, None)[0])
    np.testing.assert_allclose(shown["edited"], info["benign_probs"], atol=1e-4)


def test_the_open_unit_alone_is_edited(session):
    figure, summary = what_if_view.draw(session, 1, "3", "attack", "unit", 10, 4)
    np.testing.assert_allclose(bars(figure)["edited"], manual_edit(session, 1, "3", [4], "attack"), atol=1e-4)
    assert summary.startswith("3 unit 4: 1 neuron (#4) set to adversarial")


def test_empty_states_say_what_to_do(session):
    assert "Pick a pair" in message(what_if_view.draw(session, None, None, "restore", "top", 10, None)[0])
    assert "Click an axis" in message(what_if_view.draw(session, 0, None, "restore", "top", 10, None)[0])
    assert "Click a unit of 3" in message(what_if_view.draw(session, 0, "3", "restore", "unit", 10, None)[0])
    assert "Set k" in message(what_if_view.draw(session, 0, "3", "restore", "top", None, None)[0])


@pytest.mark.parametrize("args, words", [
    ((10 ** 6, "3", "restore", "top", 3, None), "pair"),
    ((0, "nope", "restore", "top", 3, None), "nope"),
    ((0, "3", "restore", "top", "x", None), "k"),
    ((0, "3", "restore", "top", 0, None), "k 0 must be at least 1"),
    ((0, "3", "restore", "unit", 3, 6), "channel 6"),
    ((0, "3", "undo", "top", 3, None), "edit"),
    ((0, "3", "restore", "all", 3, None), "edited units"),
])
def test_bad_ids_from_the_browser_are_refused_with_the_pages_message(session, args, words):
    figure, summary = what_if_view.draw(session, *args)
    assert words in message(figure) and summary == ""


def test_the_edit_is_in_the_url_and_bad_values_are_reported(session):
    query, written = page.url_query(session, 3, LAYERS, "3", None, *OPTIONS, "?pair=3", "zero_benign", "unit", 4)
    assert query == written and "edit=zero_benign" in query and "edit_of=unit" in query and "k=4" in query
    state = state_from_query(session, query)
    assert (state.edit, state.edit_of, state.k, state.problems) == ("zero_benign", "unit", 4, [])
    default = page.url_query(session, 3, LAYERS, "3", None, *OPTIONS, "", "restore", "top", 10)[0]
    assert "edit" not in default and "k=" not in default
    assert page.url_query(session, 3, LAYERS, "3", None, *OPTIONS, "", "restore", "top", -1) == (no_update, no_update)
    tree = page.layout(session, "?pair=0&layer=3&edit=undo&edit_of=all&k=-2")
    problems = next(node for node in walk(tree) if getattr(node, "id", None) == PROBLEMS)
    text = " ".join(str(t) for t in walk(problems) if isinstance(t, str))
    assert "edit='undo'" in text and "edit_of='all'" in text and "k='-2'" in text and "at least 1" in text


def test_the_page_opens_the_panel_in_the_urls_state(session):
    tree = page.layout(session, "?pair=0&layer=3&edit=attack&edit_of=unit&k=2")
    nodes = {node.id: node for node in walk(tree) if isinstance(getattr(node, "id", None), str)}
    assert nodes[what_if_view.IDS.mode].value == "attack"
    assert nodes[what_if_view.SOURCE].value == "unit"
    assert nodes[what_if_view.K].value == 2
