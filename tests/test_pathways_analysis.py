"""PathwayAnalysis on the tiny model's store with a strength sweep: importances, groups, edges and influences
against independent computations from the stored arrays and a plain PyTorch loop; the stored graph read back;
bad ids refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from app_fixtures import TINY_COUNT, tiny_core_store, tiny_pathways_store
from conftest import tiny_dataset

from advlens.analysis import Session
from advlens.analysis import pathways as pathways_module
from advlens.analysis import pathways_build
from advlens.analysis.core import SelectionError
from advlens.errors import ConfigError, StoreError
from advlens.store import open_store

K_BENIGN, K_ATTACK = 2, 1
"""Small enough for the tiny layers (4 and 6 channels) to split into several groups."""


@pytest.fixture(scope="module")
def store_and_model(tmp_path_factory):
    return tiny_pathways_store(tmp_path_factory)


@pytest.fixture(scope="module")
def session(store_and_model):
    path, model = store_and_model
    return Session(path, model=model)


@pytest.fixture(scope="module")
def sweep(store_and_model):
    """Every array of the sweep stage, read with zarr directly (not through the analysis)."""
    group = open_store(store_and_model[0]).group("sweep")
    return {name: group[name][...] for name in group.array_keys()}, dict(group.attrs)


@pytest.fixture(scope="module")
def pair(session):
    """b → c: attacked at several strengths, and its benign top-2s differ (so the groups split)."""
    pairs = session.pathway_class_pairs("pgd")
    at = np.flatnonzero((pairs.original == 1) & (pairs.target == 2))[0]
    assert pairs.counts[at, -1] >= 5
    return 1, 2


@pytest.fixture(scope="module")
def graph(session, pair):
    return session.pathway_graph(*pair, "pgd", k_benign=K_BENIGN, k_attack=K_ATTACK)


def hand_importances(sweep, layer: int, original: int, target: int, attack: int = 0):
    arrays, _ = sweep
    benign = arrays[f"benign_max_L{layer:02d}"]
    original_imp = np.median(benign[arrays["benign_label"] == original], axis=0)
    target_imp = np.median(benign[arrays["benign_label"] == target], axis=0)
    attacked = []
    for s in range(arrays["adv_pred"].shape[1]):
        rows = (arrays["sample_label"] == original) & (arrays["adv_pred"][attack, s] == target)
        table = arrays[f"adv_max_L{layer:02d}"][attack, s][rows]
        attacked.append(np.median(table, axis=0) if rows.any() else None)
    return original_imp, target_imp, attacked


def hand_top(values, k: int) -> set[int]:
    order = sorted(range(len(values)), key=lambda c: (-values[c], c))
    return set(order[:k])


def test_class_pairs_count_the_sweep_by_a_plain_loop(session, sweep):
    arrays, attrs = sweep
    pairs = session.pathway_class_pairs("fgsm")
    a = attrs["attacks"].index("fgsm")
    for o, t, counts in zip(pairs.original, pairs.target, pairs.counts):
        expected = [sum(1 for label, pred in zip(arrays["sample_label"], arrays["adv_pred"][a, s])
                        if label == o and pred == t) for s in range(len(attrs["eps"]))]
        assert counts.tolist() == expected
    assert len(pairs.original) == 3 * 2  # every ordered pair of distinct classes
    assert np.all(np.diff(pairs.total) <= 0)  # most attacked first


def test_importances_and_groups_equal_hand_medians_and_top_k(session, sweep, graph, pair):
    original, target = pair
    for layer in range(len(graph.layers)):
        orig_imp, tgt_imp, attacked = hand_importances(sweep, layer, original, target)
        nodes = graph.nodes_of(layer)
        channels = graph.node_channel[nodes]
        np.testing.assert_allclose(graph.importance[0, nodes], orig_imp[channels], rtol=1e-6)
        np.testing.assert_allclose(graph.importance[1, nodes], tgt_imp[channels], rtol=1e-6)
        for s, values in enumerate(attacked):
            if values is None:
                assert np.all(np.isnan(graph.attacked()[s, nodes]))
            else:
                np.testing.assert_allclose(graph.attacked()[s, nodes], values[channels], rtol=1e-6)
        top_o, top_t = hand_top(orig_imp, K_BENIGN), hand_top(tgt_imp, K_BENIGN)
        recruited = set().union(*(hand_top(v, K_ATTACK) for v in attacked if v is not None))
        expected = {"original": top_o - top_t, "both": top_o & top_t, "target": top_t - top_o,
                    "attack": recruited - top_o - top_t}
        for g, name in enumerate(graph.group_names[:4]):
            assert set(graph.node_channel[nodes][graph.node_group[nodes] == g].tolist()) == expected[name], name
    assert len(set(graph.node_group.tolist())) >= 2  # the toy splits into several groups


def test_edges_join_drawn_neurons_of_adjacent_layers_only(graph):
    assert graph.num_edges > 0
    assert np.all(graph.node_layer[graph.edge_target] == graph.node_layer[graph.edge_source] + 1)
    for layer in range(len(graph.layers) - 1):
        sources, targets = graph.nodes_of(layer), graph.nodes_of(layer + 1)
        at = graph.node_layer[graph.edge_source] == layer
        pairs = set(zip(graph.edge_source[at].tolist(), graph.edge_target[at].tolist()))
        assert pairs == {(s, t) for s in sources.tolist() for t in targets.tolist()}


def test_kernel_influence_equals_a_plain_convolution_loop(store_and_model, sweep, graph, pair):
    """Between the tiny model's two ReLUs one conv (stride 2, padding 1): influence of source i on target j for one
    image = max over positions of A_i ⋆ W[j, i]; over a set the median (original set, and attacked at the last
    strength: images rebuilt from the dataset and the stored perturbation)."""
    _, model = store_and_model
    arrays, _ = sweep
    assert graph.layer_method.tolist() == [0]  # kernel
    original, target = pair
    images = tiny_dataset(TINY_COUNT).images
    conv = model.net[2]
    last = arrays["adv_pred"].shape[1] - 1
    attacked_rows = np.flatnonzero((arrays["sample_label"] == original) & (arrays["adv_pred"][0, last] == target))
    sets = {0: images[arrays["benign_index"][arrays["benign_label"] == original]],
            2 + last: (images[arrays["sample_index"][attacked_rows]] +
                       torch.from_numpy(arrays["adv_delta"][0, last][attacked_rows].astype(np.float32))).clamp(0, 1)}
    for row, pixels in sets.items():
        assert 0 < len(pixels) <= graph.max_images
        with torch.no_grad():
            source = model.net[1](model.net[0]((pixels - model.mean) / model.std))
        for edge in range(graph.num_edges):
            i = int(graph.node_channel[graph.edge_source[edge]])
            j = int(graph.node_channel[graph.edge_target[edge]])
            with torch.no_grad():
                per_image = F.conv2d(source[:, i:i + 1], conv.weight[j:j + 1, i:i + 1], stride=2,
                                     padding=1).amax(dim=(1, 2, 3))
            assert graph.influence[row, edge] == pytest.approx(float(np.median(per_image.numpy())), rel=1e-4,
                                                                 abs=1e-5)


def test_excitation_is_attacked_minus_original(graph):
    np.testing.assert_allclose(graph.excitation(), graph.attacked() - graph.importance[0], equal_nan=True)
    np.testing.assert_allclose(graph.edge_excitation(), graph.influence[2:] - graph.influence[0], equal_nan=True)


def test_stored_graph_is_read_back_equal_after_a_restart(store_and_model, graph, pair, monkeypatch):
    path, model = store_and_model
    assert open_store(path).derived(pathways_module.KIND).keys()  # written into the store

    def no_compute(*args, **kwargs):
        raise AssertionError("the stored graph should have been read, not computed")

    monkeypatch.setattr(pathways_build, "set_influences", no_compute)
    again = Session(path, model=model).pathway_graph(*pair, "pgd", k_benign=K_BENIGN, k_attack=K_ATTACK)
    arrays, attrs = graph.to_arrays()
    arrays_again, attrs_again = again.to_arrays()
    assert attrs == attrs_again
    for name, value in arrays.items():
        np.testing.assert_array_equal(arrays_again[name], value, err_msg=name)


def test_pinned_neurons_outside_the_groups_join_the_graph(session, graph, pair):
    drawn = {(int(l), int(c)) for l, c in zip(graph.node_layer, graph.node_channel)}
    outside = next((graph.layers[l], c) for l in range(len(graph.layers)) for c in range(int(graph.channels[l]))
                   if (l, c) not in drawn)
    pinned = session.pathway_graph(*pair, "pgd", k_benign=K_BENIGN, k_attack=K_ATTACK, pinned=[outside])
    node = pinned.node_index(*outside)
    assert node is not None and pinned.node_group[node] == 4
    assert np.any(pinned.edge_source == node) or np.any(pinned.edge_target == node)
    # pinning a neuron that is already drawn changes nothing (same cached graph)
    first = (graph.layers[int(graph.node_layer[0])], int(graph.node_channel[0]))
    assert session.pathway_graph(*pair, "pgd", k_benign=K_BENIGN, k_attack=K_ATTACK, pinned=[first]) is graph


def test_neuron_detail_follows_the_hand_medians(session, sweep, pair):
    original, target = pair
    orig_imp, tgt_imp, attacked = hand_importances(sweep, 1, original, target)
    detail = session.pathway_neuron_detail(session.sweep_info().layers[1], 3, original, target, "pgd")
    assert detail.original_importance == pytest.approx(orig_imp[3])
    assert detail.target_importance == pytest.approx(tgt_imp[3])
    for s, values in enumerate(attacked):
        if values is None:
            assert np.isnan(detail.attacked[s])
        else:
            assert detail.attacked[s] == pytest.approx(values[3])
    assert detail.visualization is not None and detail.examples is not None and len(detail.examples.indices) >= 4


@pytest.mark.parametrize("call, error", [
    (lambda s: s.pathway_graph(7, 0), SelectionError),
    (lambda s: s.pathway_graph(-1, 0), SelectionError),
    (lambda s: s.pathway_graph(1, 1), SelectionError),
    (lambda s: s.pathway_graph(0, 1, "cw"), SelectionError),
    (lambda s: s.pathway_graph(0, 1, pinned=[("nope", 0)]), SelectionError),
    (lambda s: s.pathway_graph(0, 1, pinned=[("3", 6)]), SelectionError),
    (lambda s: s.pathway_graph(0, 1, k_benign=-1), ConfigError),
    (lambda s: s.pathway_graph(0, 1, max_images=0), ConfigError),
    (lambda s: s.pathway_neuron_detail("3", 99, 0, 1), SelectionError),
    (lambda s: s.pathway_neuron_detail("layer9", 0, 0, 1), SelectionError),
    (lambda s: s.pathway_class_pairs("pgd", eps=0.5), SelectionError),
])
def test_bad_ids_are_refused(session, call, error):
    with pytest.raises(error):
        call(session)


def test_a_store_without_sweep_names_the_command(tmp_path_factory):
    path, model = tiny_core_store(tmp_path_factory)
    session = Session(path, model=model)
    assert not session.has_sweep()
    with pytest.raises(StoreError, match="--stages sweep"):
        session.pathway_graph(0, 1)


def test_targeted_graph_reads_the_stored_targeted_sweep(store_and_model, session):
    """Bluff's own setting: the attacked sets come from the class pair's targeted sweep (hand medians of its
    arrays); without one stored the error names the command that computes it."""
    from advlens.pipeline.stages_pathways import targeted_sweep

    path, model = store_and_model
    with pytest.raises(StoreError, match="--targeted"):
        session.pathway_graph(2, 0, targeted=True)
    result, _ = targeted_sweep(open_store(path), model, 2, 0)
    graph = session.pathway_graph(2, 0, targeted=True, k_benign=K_BENIGN, k_attack=K_ATTACK)
    assert graph.targeted
    arrays = result.arrays
    for s in range(arrays["adv_pred"].shape[1]):
        hit = arrays["adv_pred"][0, s] == 0
        assert graph.counts()[s] == hit.sum()
        nodes = graph.nodes_of(1)
        if hit.any():
            expected = np.median(arrays["adv_max_L01"][0, s][hit], axis=0)[graph.node_channel[nodes]]
            np.testing.assert_allclose(graph.attacked()[s, nodes], expected, rtol=1e-6)
