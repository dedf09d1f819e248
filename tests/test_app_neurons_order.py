"""The Neurons page puts a new pair's three views first: what a pick asks of the server and when.

- The three neuron views (curves, RFs, dendrogram) follow the picked pair itself; the page's secondary parts (the
  what-if panel, the links, the ranking badges' request, the URL) follow ``VIEWS_PAIR``, which the browser sets
  once the dendrogram of the new pair has arrived, so a pick's first requests are the views'.
- A pick starts the pair's vulnerability masks on the server at once, in a thread of lowered priority (its
  forward passes take the cores the views leave idle).
"""

from __future__ import annotations

import os
import sys
import threading

import pytest

from app_fixtures import tiny_store

from advlens.analysis import Session
from advlens.app import create_app
from advlens.app.neurons import receptive_field
from advlens.app.neurons import state as neurons_state


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root, model = tiny_store(tmp_path_factory)
    return create_app(Session(root, model=model, device="cpu"))


def inputs_of(app, output_id: str) -> set[str]:
    """The component ids of the inputs of the callback whose outputs include ``output_id``."""
    for key, callback in app.callback_map.items():
        outputs = [o.strip(".") for o in key.strip(".").split("...")]
        if any(o.split("@")[0].rsplit(".", 1)[0] == output_id for o in outputs):
            return {i["id"] for i in callback["inputs"]}
    raise AssertionError(f"no callback outputs {output_id}")


@pytest.mark.parametrize("view", ["neuron-graph", "rf-benign-img", "dendrogram"])
def test_the_three_views_follow_the_picked_pair(app, view):
    assert neurons_state.PAIR in inputs_of(app, view)
    assert neurons_state.VIEWS_PAIR not in inputs_of(app, view)


@pytest.mark.parametrize("secondary", ["what-if-graph", "neuron-pathways-link", "neuron-pair-links", "badge-request-store",
                                       "url"])
def test_the_secondary_parts_wait_for_the_views(app, secondary):
    inputs = inputs_of(app, secondary)
    assert neurons_state.VIEWS_PAIR in inputs and neurons_state.PAIR not in inputs


def test_the_views_pair_is_set_in_the_browser_when_the_dendrogram_arrives(app):
    key = next(k for k in app.callback_map if k.startswith(neurons_state.VIEWS_PAIR))
    assert {i["id"] for i in app.callback_map[key]["inputs"]} == {"dendrogram", "dendrogram-caption"}
    clientside = [c for c in app._callback_list if c.get("clientside_function")
                  and c["output"].startswith(neurons_state.VIEWS_PAIR)]
    assert len(clientside) == 1  # no request to the server


def nice_of(thread_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, thread_id)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are a Linux feature")
def test_a_background_thread_lowers_its_own_priority_only():
    main_before = nice_of(threading.get_native_id())
    seen = {}

    def work():
        before = nice_of(threading.get_native_id())
        receptive_field.lower_thread_priority()
        seen["thread"] = (before, nice_of(threading.get_native_id()))
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    before, after = seen["thread"]
    assert after == min(19, before + receptive_field.BACKGROUND_NICENESS)
    assert nice_of(threading.get_native_id()) == main_before  # the calling thread only, not the process


def test_the_masks_thread_fills_the_cache_the_maps_callback_reads(tmp_path_factory):
    root, model = tiny_store(tmp_path_factory)
    session = Session(root, model=model, device="cpu")
    thread = receptive_field.start_masks(session, 0, 20.0)
    thread.join()
    counted = []
    handle = session.substitution_model.net.register_forward_hook(lambda *args: counted.append(1))
    try:
        receptive_field.draw_maps(session, 0, 20.0)
    finally:
        handle.remove()
    assert counted == []  # the maps callback found the masks computed
    assert receptive_field.start_masks(session, 0, "x") is None  # a bad p starts nothing


def test_a_hovered_pair_is_checked_and_started_one_at_a_time(tmp_path_factory):
    from advlens.app.neurons import image_grid

    root, model = tiny_store(tmp_path_factory)
    session = Session(root, model=model, device="cpu")
    slot = threading.Lock()
    assert image_grid.prefetch_hovered(session, -1, 20.0, slot) is None  # an id the store does not hold
    assert image_grid.prefetch_hovered(session, "1; drop", 20.0, slot) is None
    assert not slot.locked()
    slot.acquire()  # a hovered pair still computing: the next one waits its turn (nothing started)
    assert image_grid.prefetch_hovered(session, 1, 20.0, slot) is None
    slot.release()
    thread = image_grid.prefetch_hovered(session, 1, 20.0, slot)
    thread.join()
    assert not slot.locked()  # released when the computation ended
    counted = []
    handle = session.substitution_model.net.register_forward_hook(lambda *args: counted.append(1))
    try:
        receptive_field.draw_maps(session, 1, 20.0)  # the click's maps: computed already
    finally:
        handle.remove()
    assert counted == []


def test_the_hover_store_has_a_server_callback_without_outputs(app):
    from advlens.app.neurons import image_grid

    hover = [c for c in app._callback_list if any(i["id"] == image_grid.HOVER for i in c["inputs"])]
    assert len(hover) == 1 and hover[0]["no_output"]
