"""The Datapaths page's what-if panel (issue 13, item 3): the open layer's critical maps of a datapath, or the open
map, edited in the pair's forward pass; the probabilities the panel shows are checked against the test's own forward
hooks on the raw network (``conftest.manual_pair_edit``); the empty states, the refusal of bad ids and the URL state.
On the tiny store with the ``features`` and ``sweep`` stages (gate layers "1" and "3": 4 and 6 maps)."""

from __future__ import annotations

import shutil

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from app_fixtures import texts, tiny_pathways_store, walk
from conftest import manual_pair_edit
from dash import no_update

from advlens.analysis import Session
from advlens.app import datapaths as page
from advlens.app.datapaths import what_if_view
from advlens.app.datapaths.river_figure import ROLE_NAMES
from advlens.app.datapaths.state import query_string, state_from_query
from advlens.app.figures import decode

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A copy of the shared tiny store (the datapaths this module computes are written into its copy only: other
    modules expect the shared store to hold none)."""
    path, model = tiny_pathways_store(tmp_path_factory)
    copy = tmp_path_factory.mktemp("datapaths-what-if") / "store"
    shutil.copytree(path, copy)
    return Session(copy, model=model)


@pytest.fixture(scope="module")
def ready(session) -> int:
    """A pair whose datapaths are computed (the page's READY store then holds its id)."""
    session.pair_datapaths(0)
    return 0


def message(figure: dict) -> str:
    return go.Figure(figure).layout.annotations[0].text.replace("<br>", " ")


def bars(figure: dict) -> dict[str, np.ndarray]:
    go.Figure(figure)  # Plotly validates every property
    out = {}
    for trace in figure["data"]:
        key = "edited" if trace["name"].startswith("edited") else trace["name"].split(" (")[0]
        out[key] = np.asarray(decode(trace["y"]), dtype=np.float64)
    return out


def manual_edit(session: Session, pair: int, layer: str, channels, mode: str) -> np.ndarray:
    benign, adversarial = (torch.from_numpy(a) for a in session.pair_images([pair]))
    return manual_pair_edit(session.model, benign, adversarial, layer, channels, mode).softmax(1)[0].numpy()


def critical(session: Session, pair: int, layer: str, role: str) -> list[int]:
    """The role's critical maps at ``layer``: the stored gates z ≥ τ (the label guard's result, as stored)."""
    paths = session.stored_pair_datapaths(pair)
    return np.flatnonzero(paths.layer_critical(layer)[paths.row(role)]).tolist()


@pytest.mark.parametrize("mode", ["restore", "attack", "zero_adversarial", "zero_benign"])
def test_the_critical_maps_of_the_open_layer_are_edited_as_a_hooked_forward_edits_them(session, ready, mode):
    info = session.pair_info(ready)
    edited_any = False
    for layer in ("1", "3"):
        for role in ("adv", "src", "tar"):
            maps = critical(session, ready, layer, role)
            figure, summary = what_if_view.draw(session, ready, layer, None, mode, role)
            if not maps:
                assert "is critical for the" in message(figure) and summary == ""
                continue
            edited_any = True
            shown = bars(figure)
            np.testing.assert_allclose(shown["original benign"], info["benign_probs"], atol=1e-4)
            np.testing.assert_allclose(shown["original adversarial"], info["adv_probs"], atol=1e-4)
            np.testing.assert_allclose(shown["edited"], manual_edit(session, ready, layer, maps, mode), atol=1e-4)
            assert summary.startswith(f"the {ROLE_NAMES[role]}'s {len(maps)} critical map")
            assert f"{len(maps)} neuron" in summary and f"of {layer}" in summary
    assert edited_any


def test_the_open_map_alone_is_edited(session, ready):
    figure, summary = what_if_view.draw(session, ready, "3", 2, "restore", "map")
    np.testing.assert_allclose(bars(figure)["edited"], manual_edit(session, ready, "3", [2], "restore"), atol=1e-4)
    assert summary.startswith("3 map 2: 1 neuron (#2) restored to benign")
    figure, _ = what_if_view.draw(session, ready, "1", 0, "zero_adversarial", "map")
    np.testing.assert_allclose(bars(figure)["edited"], manual_edit(session, ready, "1", [0], "zero_adversarial"),
                               atol=1e-4)


def test_empty_states_say_what_to_do(session, ready):
    assert "Open a pair" in message(what_if_view.draw(session, None, None, None, "restore", "adv")[0])
    assert "Click a layer" in message(what_if_view.draw(session, ready, None, None, "restore", "adv")[0])
    assert "Click a map of 3" in message(what_if_view.draw(session, ready, "3", None, "restore", "map")[0])


@pytest.mark.parametrize("args, words", [
    ((0, "nope", None, "restore", "adv"), "is not a gate layer"),
    ((0, "3", 6, "restore", "map"), "channel 6 does not exist"),
    ((0, "3", None, "undo", "adv"), "edit"),
    ((0, "3", None, "restore", "everything"), "edited maps"),
    ((10 ** 6, "3", None, "restore", "adv"), "pair"),
])
def test_bad_ids_from_the_browser_are_refused_with_the_pages_message(session, ready, args, words):
    figure, summary = what_if_view.draw(session, *args)
    assert words in message(figure) and summary == ""


def test_the_edit_is_in_the_url_and_bad_values_are_reported(session, ready):
    state = state_from_query(session, "?pair=0&layer=3&edit=zero_benign&edit_of=tar")
    assert (state.edit, state.edit_of, state.problems) == ("zero_benign", "tar", [])
    assert query_string(0, "3", None, [], "activation", "auto", None, "attack", "map") == \
        "?pair=0&layer=3&edit=attack&edit_of=map"
    assert query_string(0, "3", None, [], "activation", "auto", None, "restore", "adv") == "?pair=0&layer=3"
    bad = state_from_query(session, "?pair=0&edit=undo&edit_of=all")
    assert (bad.edit, bad.edit_of) == ("restore", "adv") and len(bad.problems) == 2
    assert "URL parameter edit='undo'" in bad.problems[0]
    query, written = page.url_query(session, "3", None, [], "activation", "auto", 0, "?pair=0", "attack", "src")
    assert query == written == "?pair=0&layer=3&edit=attack&edit_of=src"
    assert page.url_query(session, "3", None, [], "activation", "auto", 0, "?pair=0&layer=3&edit=attack&edit_of=src",
                          "attack", "src") == (no_update, no_update)
    assert page.url_query(session, "3", None, [], "activation", "auto", 0, "", "undo", "src") == (no_update, no_update)


def test_the_page_opens_the_panel_in_the_urls_state(session, ready):
    tree = page.layout(session, "?pair=0&layer=3&edit=zero_adversarial&edit_of=src")
    nodes = {getattr(node, "id", None): node for node in walk(tree)}
    assert nodes[what_if_view.IDS.mode].value == "zero_adversarial"
    assert nodes[what_if_view.SOURCE].value == "src"
    assert "What if" in texts(tree)
