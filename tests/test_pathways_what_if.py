"""The class-level what-if edit of pinned pathway nodes (``advlens.analysis.pathways_what_if``) on the tiny model's
store with a strength sweep: the images, mean probabilities and fractions against a plain loop over the images
(read from the dataset and the stored perturbations, edited one at a time with the test's own hooks); the seeded
sample is the pathway graph's; the session's cache is reused; bad ids are refused before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from app_fixtures import TINY_COUNT, tiny_pathways_store
from conftest import tiny_dataset

from advlens.analysis import Session
from advlens.analysis.core import SelectionError
from advlens.analysis.pathways_build import influence_sets
from advlens.analysis.pathways_what_if import attacked_set, edit_pathway
from advlens.errors import ConfigError, StoreError
from advlens.faithfulness.what_if import EDIT_MODES
from advlens.store import open_store

pytestmark = pytest.mark.usefixtures("one_thread")

ORIGINAL, TARGET = 0, 2
"""a → c: 21 / 30 / 30 of the 30 sampled a images at the three stronger strengths, none at the weakest."""
PINNED = [("3", 4), ("1", 0), ("3", 1)]


@pytest.fixture(scope="module")
def store_and_model(tmp_path_factory):
    return tiny_pathways_store(tmp_path_factory)


@pytest.fixture(scope="module")
def session(store_and_model):
    path, model = store_and_model
    return Session(path, model=model)


@pytest.fixture(scope="module")
def stored(store_and_model):
    """The sweep's and predict stage's arrays, read with zarr directly (not through the analysis)."""
    store = open_store(store_and_model[0])
    sweep = store.group("sweep")
    arrays = {name: sweep[name][...] for name in ("sample_index", "sample_label", "adv_pred", "adv_delta")}
    arrays["dataset_index"] = store.group("predict")["dataset_index"][...]
    return arrays, dict(sweep.attrs)


def plain_images(stored, attack: int, strength: int):
    """Attacked rows and their benign / adversarial images, from the dataset and the stored perturbations."""
    arrays, _ = stored
    rows = np.flatnonzero((arrays["sample_label"] == ORIGINAL) & (arrays["adv_pred"][attack, strength] == TARGET))
    data = tiny_dataset(TINY_COUNT).images
    benign = data[arrays["dataset_index"][arrays["sample_index"][rows]]]
    adversarial = (benign + torch.from_numpy(arrays["adv_delta"][attack, strength][rows])).clamp(0, 1)
    return rows, benign, adversarial


def hooked_probabilities(model, benign, adversarial, mode: str, pinned) -> tuple[np.ndarray, ...]:
    """One image at a time: record both passes with own hooks on the raw tiny net, then the edited pass."""
    net = model.net
    normal = {"benign": (benign - model.mean) / model.std, "adversarial": (adversarial - model.mean) / model.std}
    source, side = {"restore": ("benign", "adversarial"), "attack": ("adversarial", "benign"),
                    "zero_adversarial": (None, "adversarial"), "zero_benign": (None, "benign")}[mode]
    out = {"benign": [], "adversarial": [], "edited": []}
    for i in range(len(benign)):
        recorded: dict = {}
        for which in ("benign", "adversarial"):
            handles = [net[int(layer)].register_forward_hook(
                lambda m, a, o, _k=(which, layer): recorded.__setitem__(_k, o.detach().clone()))
                for layer in {layer for layer, _ in pinned}]
            try:
                with torch.no_grad():
                    out[which].append(torch.softmax(net(normal[which][i:i + 1]), 1)[0].numpy())
            finally:
                for handle in handles:
                    handle.remove()

        def replacer(layer):
            def replace(_m, _a, output):
                output = output.clone()
                for name, channel in pinned:
                    if name == layer:
                        output[:, channel] = 0.0 if source is None else recorded[(source, layer)][:, channel]
                return output
            return replace

        handles = [net[int(layer)].register_forward_hook(replacer(layer)) for layer in {layer for layer, _ in pinned}]
        try:
            with torch.no_grad():
                out["edited"].append(torch.softmax(net(normal[side][i:i + 1]), 1)[0].numpy())
        finally:
            for handle in handles:
                handle.remove()
    return tuple(np.stack(out[k]) for k in ("benign", "adversarial", "edited"))


@pytest.mark.parametrize("mode", EDIT_MODES)
def test_the_class_level_figures_equal_a_plain_loop_over_the_images(session, stored, store_and_model, mode):
    _, attrs = stored
    strength = 2
    rows, benign, adversarial = plain_images(stored, 0, strength)
    assert len(rows) == 30
    edit = session.edit_pathway(ORIGINAL, TARGET, "pgd", attrs["eps"][strength], PINNED, mode, max_images=1000)
    np.testing.assert_array_equal(edit.rows, rows)
    assert edit.available == edit.count == len(rows)
    assert edit.side == ("adversarial" if mode in ("restore", "zero_adversarial") else "benign")
    b, a, e = hooked_probabilities(store_and_model[1], benign, adversarial, mode, PINNED)
    np.testing.assert_allclose(edit.benign, b, atol=1e-5)
    np.testing.assert_allclose(edit.adversarial, a, atol=1e-5)
    np.testing.assert_allclose(edit.edited, e, atol=1e-5)
    np.testing.assert_allclose(edit.mean_benign, b.mean(0), atol=1e-5)
    np.testing.assert_allclose(edit.mean_adversarial, a.mean(0), atol=1e-5)
    np.testing.assert_allclose(edit.mean_edited, e.mean(0), atol=1e-5)
    assert edit.returned == pytest.approx(np.mean(e.argmax(1) == ORIGINAL))
    assert edit.flipped == pytest.approx(np.mean(e.argmax(1) == TARGET))
    assert edit.nodes == tuple(PINNED)
    unedited = a if edit.side == "adversarial" else b  # the tiny model's probabilities saturate: compare logs
    assert not np.allclose(np.log(np.maximum(edit.edited, 1e-35)), np.log(np.maximum(unedited, 1e-35)), atol=1e-2)


def test_restoring_every_channel_of_the_last_layer_undoes_the_attack(session, stored):
    """The layer feeding the head restored in full gives the benign outputs back (all images return)."""
    _, attrs = stored
    edit = session.edit_pathway(ORIGINAL, TARGET, "pgd", attrs["eps"][3], [("3", c) for c in range(6)], "restore")
    np.testing.assert_allclose(edit.edited, edit.benign, atol=1e-6)
    assert edit.returned == 1.0 and edit.flipped == 0.0
    assert edit.unedited_flipped == 1.0


def test_the_sample_is_the_pathway_graphs_attacked_set(session, stored):
    _, attrs = stored
    strength, limit = 1, 8
    edit = session.edit_pathway(ORIGINAL, TARGET, "pgd", attrs["eps"][strength], PINNED, max_images=limit, seed=4)
    sweep = session._sweep(ORIGINAL, TARGET, False)
    expected = influence_sets(sweep, ORIGINAL, TARGET, 0, limit, 4)[2 + strength][1]
    np.testing.assert_array_equal(edit.rows, expected)
    assert edit.count == limit and edit.available == 21


def test_a_strength_without_attacked_images_gives_an_empty_edit(session, stored):
    _, attrs = stored
    edit = session.edit_pathway(ORIGINAL, TARGET, "pgd", attrs["eps"][0], PINNED)
    assert edit.count == 0 and edit.available == 0
    assert np.all(np.isnan(edit.mean_edited)) and np.isnan(edit.returned)


def test_an_edit_reuses_the_cached_set_and_maps(session, stored):
    _, attrs = stored
    eps = attrs["eps"][3]
    session.edit_pathway(ORIGINAL, TARGET, "fgsm", eps, PINNED, "restore")
    misses = session.cache.misses
    session.edit_pathway(ORIGINAL, TARGET, "fgsm", eps, PINNED[:1], "zero_benign")
    assert session.cache.misses == misses, "another mode or fewer pins records nothing again"
    session.edit_pathway(ORIGINAL, TARGET, "fgsm", eps, PINNED, "attack")
    assert session.cache.misses == misses


def test_the_functions_take_a_session(store_and_model, stored):
    """The module's functions work on a plain Session (the app calls them before the mixin lands)."""
    path, model = store_and_model
    plain = Session(path, model=model)
    eps = stored[1]["eps"][2]
    assert attacked_set(plain, ORIGINAL, TARGET, "pgd", eps).available == 30
    assert edit_pathway(plain, ORIGINAL, TARGET, "pgd", eps, PINNED).count == 30


@pytest.mark.parametrize("nodes, message", [
    ([("2", 0)], "not a pathway layer"),
    ([("3", 6)], "out of range"),
    ([("3", -1)], "out of range"),
    ([("3", 1), ("3", 1)], "pinned twice"),
    ([("3",)], "not \\(layer, channel\\)"),
    ("3:1", "list of \\(layer, channel\\)"),
])
def test_bad_pinned_neurons_are_refused(session, stored, nodes, message):
    with pytest.raises(SelectionError, match=message):
        session.edit_pathway(ORIGINAL, TARGET, "pgd", stored[1]["eps"][2], nodes)


def test_bad_settings_are_refused(session, stored):
    eps = stored[1]["eps"][2]
    with pytest.raises(SelectionError, match="no attacked images"):
        session.edit_pathway(ORIGINAL, TARGET, "pgd", 0, PINNED)
    with pytest.raises(SelectionError, match="not in the sweep"):
        session.edit_pathway(ORIGINAL, TARGET, "pgd", 0.15, PINNED)
    with pytest.raises(SelectionError, match="attack"):
        session.edit_pathway(ORIGINAL, TARGET, "cw", eps, PINNED)
    with pytest.raises(SelectionError, match="two different classes"):
        session.edit_pathway(1, 1, "pgd", eps, PINNED)
    with pytest.raises(ConfigError, match="edit mode"):
        session.edit_pathway(ORIGINAL, TARGET, "pgd", eps, PINNED, "flip")
    with pytest.raises(ConfigError, match="max_images"):
        session.edit_pathway(ORIGINAL, TARGET, "pgd", eps, PINNED, max_images=0)


def test_a_store_without_the_sweep_names_the_command(tmp_path_factory):
    from app_fixtures import tiny_core_store
    path, model = tiny_core_store(tmp_path_factory)
    with pytest.raises(StoreError, match="advlens prepare"):
        Session(path, model=model).edit_pathway(0, 2, "pgd", 0.1, [("3", 0)])


def test_the_layers_a_set_lacks_are_recorded_in_one_pass(store_and_model, stored):
    """A fresh session: pins at two layers cost one recording pass (both images) and one edit pass; another mode one
    pass; a pin at no new layer one pass. Counted by the test's own hook on the first convolution."""
    path, model = store_and_model
    fresh = Session(path, model=model)
    eps = stored[1]["eps"][2]
    rows: list[int] = []
    handle = model.net[0].register_forward_pre_hook(lambda m, args: rows.append(len(args[0])))
    try:
        fresh.edit_pathway(ORIGINAL, TARGET, "pgd", eps, [("1", 0), ("3", 2)], "restore")
        assert rows == [60, 30], "one pass of both images of the 30, one edit pass"
        fresh.edit_pathway(ORIGINAL, TARGET, "pgd", eps, [("3", 2), ("1", 3)], "attack")
        assert rows == [60, 30, 30]
        fresh.edit_pathway(ORIGINAL, TARGET, "pgd", eps, [("3", 5)], "zero_benign")
        assert rows == [60, 30, 30, 30]
    finally:
        handle.remove()
