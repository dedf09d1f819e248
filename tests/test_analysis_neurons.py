"""analysis.neurons: how the session finds the top-p% vulnerability masks (the search first, the full maps later)."""

from __future__ import annotations

import math

import pytest
import torch
from app_fixtures import tiny_store

from advlens import measures
from advlens.analysis import Session


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory)


class ForwardCounter:
    """Counts the images the model's network runs (a forward hook on ``model.net``)."""

    def __init__(self, model) -> None:
        self.images = 0
        self.handle = model.net.register_forward_hook(self._count)

    def _count(self, _module, inputs, _output) -> None:
        self.images += int(inputs[0].shape[0])


def exhaustive_masks(session: Session, model, pair: int, percent: float):
    """The masks from the full stride-1 maps of the library, computed here, outside the session."""
    benign, adversarial = (torch.from_numpy(a[0]) for a in session.pair_images([pair]))
    info = session.pair_info(pair)
    maps = measures.vulnerability_maps(model, benign, adversarial, info["label"], info["adv_pred"], k=2, stride=1)
    return measures.binarize_top(maps.bmap, percent), measures.binarize_top(maps.amap, percent)


@pytest.mark.parametrize("pair", [0, 3])
def test_masks_equal_the_binarized_full_maps_for_every_p(store, pair):
    root, model = store
    session = Session(root, model=model, device="cpu")
    for percent in (20.0, 35.0, 20.0, 5.0):
        found = session.vulnerability_masks(pair, percent)
        expected = exhaustive_masks(session, model, pair, percent)
        assert torch.equal(found[0], expected[0]) and torch.equal(found[1], expected[1]), percent


def test_the_first_p_is_searched_and_a_second_p_computes_the_maps_once(store):
    root, model = store
    session = Session(root, model=model, device="cpu")
    pair = 1
    height, width = session.rf_size
    counter = ForwardCounter(session.substitution_model)  # Alg. 1's forward passes run on the session's copy
    try:
        session.vulnerability_masks(pair, 20.0)
        first = counter.images
        session.vulnerability_masks(pair, 20.0)  # cached
        again = counter.images - first
        session.vulnerability_masks(pair, 35.0)  # another p: the full maps (one image per position)
        maps = counter.images - first - again
        session.vulnerability_masks(pair, 10.0)  # every further p binarizes the cached maps
        later = counter.images - first - again - maps
    finally:
        counter.handle.remove()
    assert 0 < first and again == 0 and later == 0
    assert maps >= height * width  # the exhaustive maps (every window position): the first p did not compute them


@pytest.mark.parametrize("side, window", [(28, (2, 1)), (32, (4, 2)), (224, (16, 8)), (225, (18, 9))])
def test_the_map_window_keeps_its_share_of_larger_images(store, side, window):
    """k = 2 at stride 1 on 28² (paper 001); larger images: s = ⌈side/28⌉, k = 2s (784 positions at most)."""
    root, model = store
    session = Session(root, model=model, device="cpu")
    session.__dict__["rf_size"] = (side, side)
    assert session.map_window == window
    positions = math.ceil(side / window[1]) ** 2
    assert positions <= 28 * 28


def test_the_maps_default_to_the_map_window(store):
    """The session's maps without k and stride are the library's maps at the session's window (computed here)."""
    root, model = store
    session = Session(root, model=model, device="cpu")
    session.__dict__["map_window"] = (1, 2)
    benign, adversarial = (torch.from_numpy(a[0]) for a in session.pair_images([0]))
    info = session.pair_info(0)
    expected = measures.vulnerability_maps(model, benign, adversarial, info["label"], info["adv_pred"], k=1, stride=2)
    found = session.vulnerability_maps(0)
    # the session runs a copy with its batch norms folded (session.substitution_model): equal up to rounding
    torch.testing.assert_close(found.bmap, expected.bmap.cpu(), rtol=0, atol=1e-6)
    torch.testing.assert_close(found.amap, expected.amap.cpu(), rtol=0, atol=1e-6)
    masks = session.vulnerability_masks(0, 20.0)
    assert torch.equal(masks[0], measures.binarize_top(expected.bmap.cpu(), 20.0))
