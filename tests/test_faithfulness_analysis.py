"""FaithfulnessAnalysis (issue 13, items 1 and 4) on the tiny model's stores, against hooked loops by hand."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from app_fixtures import tiny_core_store, tiny_pathways_store

from advlens.analysis import Session
from advlens.analysis import faithfulness as faithfulness_module
from advlens.analysis.core import SelectionError
from advlens.analysis.neurons import NEURON_MEASURES
from advlens.errors import ConfigError, StoreError

pytestmark = pytest.mark.usefixtures("one_thread")

LAYER = "3"
"""The tiny net's analysed layer: the ReLU after the second convolution (6 channels)."""


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    path, model = tiny_core_store(tmp_path_factory)
    copy = tmp_path_factory.mktemp("faithfulness") / "store"
    shutil.copytree(path, copy)  # this module writes derived results: keep the shared store clean
    return copy, model


def hand_auc(session: Session, pair: int, order: np.ndarray, mode: str) -> float:
    """Mean over k = 1 … K of the clipped share of the attack's effect, from one hooked forward per k."""
    model = session.model
    benign, adversarial = (torch.from_numpy(a[0]) for a in session.pair_images([pair]))
    start, donor = (benign, adversarial) if mode == "insertion" else (adversarial, benign)
    module = model.net[int(LAYER)]
    with torch.no_grad():
        saved = {}
        handle = module.register_forward_hook(lambda _m, _a, out: saved.__setitem__("donor", out.clone()))
        try:
            end_probs = torch.softmax(model.net(model.normalize(donor[None])), 1)[0]
        finally:
            handle.remove()
        probs = []
        for k in range(len(order) + 1):
            def swap(_m, _a, out, _k=k):
                out = out.clone()
                out[:, order[:_k]] = saved["donor"][:, order[:_k]]
                return out
            handle = module.register_forward_hook(swap)
            try:
                probs.append(torch.softmax(model.net(model.normalize(start[None])), 1)[0])
            finally:
                handle.remove()
    tracked = int(end_probs.argmax())
    first, last = float(probs[0][tracked]), float(end_probs[tracked])
    shares = [min(max((float(p[tracked]) - first) / (last - first), 0.0), 1.0) for p in probs[1:]]
    return sum(shares) / len(shares)


@pytest.mark.parametrize("mode", ["insertion", "restoration"])
def test_measure_faithfulness_is_each_rankings_hand_auc(core, mode):
    path, model = core
    session = Session(path, model=model)
    pair = 3
    aucs = session.measure_faithfulness(pair, mode=mode)
    assert list(aucs) == list(NEURON_MEASURES)
    for measure, auc in aucs.items():
        order = session.neuron_ranking(pair, measure)[0]
        assert auc == pytest.approx(hand_auc(session, pair, order, mode), abs=1e-5), measure


def test_badges_are_kept_in_the_store_and_read_back_by_a_new_session(core, monkeypatch):
    path, model = core
    first = Session(path, model=model).measure_faithfulness(5, ["band_gap", "activation_difference"])
    stored = list((path / "derived" / "faithfulness").glob("*.npz"))
    assert len(stored) >= 2

    def refuse(*_args, **_kwargs):
        raise AssertionError("a stored AUC was computed again")
    monkeypatch.setattr(faithfulness_module, "patch_curve", refuse)
    again = Session(path, model=model).measure_faithfulness(5, ["activation_difference", "band_gap"])
    assert again == {name: first[name] for name in ("activation_difference", "band_gap")}


def test_rankings_by_activation_difference_and_divergence_follow_a_plain_loop(core):
    path, model = core
    session = Session(path, model=model)
    pairs = [0, 4]
    benign, adversarial = session.pair_images(pairs)
    with torch.no_grad(), model.tapping([LAYER]) as out:
        model(torch.from_numpy(np.concatenate([benign, adversarial])))
    maps = out[LAYER].numpy()
    for measure in ("activation_difference", "divergence"):
        found = session.faithfulness_rankings(pairs, measure)
        assert found.layer == LAYER and found.valid.all()
        for row in range(2):
            diff = np.abs(maps[2 + row] - maps[row])  # (K, h, w)
            scores = [diff[c].max() if measure == "activation_difference" else diff[c].sum() for c in range(6)]
            assert found.orders[row].tolist() == sorted(range(6), key=lambda c: (-scores[c], c))


def test_patch_curve_of_pair_takes_a_measure_or_an_order(core):
    path, model = core
    session = Session(path, model=model)
    by_name = session.patch_curve_of_pair(2, None, "band_gap", "restoration")
    by_order = session.patch_curve_of_pair(2, LAYER, session.neuron_ranking(2, "band_gap")[0], "restoration")
    torch.testing.assert_close(by_name.probs, by_order.probs)
    assert by_name.ks.tolist() == list(range(7)) and by_name.mode == "restoration"


def test_bad_requests_name_the_problem(core):
    path, model = core
    session = Session(path, model=model)
    with pytest.raises(SelectionError, match="not a ranking"):
        session.measure_faithfulness(0, ["loudness"])
    with pytest.raises(ConfigError, match="mode"):
        session.measure_faithfulness(0, mode="swap")
    with pytest.raises(SelectionError, match="pair id"):
        session.measure_faithfulness(10_000)
    with pytest.raises(ConfigError, match="unknown"):
        session.measure_faithfulness(0, colour="red")
    with pytest.raises(StoreError, match="advlens prepare"):
        session.faithfulness_rankings([0], "excitation")  # no sweep in this store: the message names the command
    with pytest.raises(SelectionError, match="analysed layer"):
        session.faithfulness_rankings([0], "band_gap", layer="1")


def test_excitation_orders_the_pathway_graphs_drawn_nodes_by_their_excitation(tmp_path_factory):
    """Peer: the class pair's pathway graph (Bluff) holds the same excitation for the neurons it draws."""
    path, model = tiny_pathways_store(tmp_path_factory)
    session = Session(path, model=model)
    info = session.sweep_info()
    eps = float(session.store.config["attack"]["eps"])
    candidates = [p for p in range(session.num_pairs)]
    found = session.faithfulness_rankings(candidates, "excitation")
    assert found.layer == LAYER and found.valid.any()
    pair = int(np.flatnonzero(found.valid)[0])
    original, target = int(session.table["label"][pair]), int(session.table["adv_pred"][pair])
    graph = session.pathway_graph(original, target, max_images=4)
    nodes = graph.nodes_of(list(info.layers).index(LAYER))
    excitation = graph.excitation()  # (E, M)
    finite = [s for s in np.argsort(np.abs(info.eps - eps), kind="stable") if np.all(np.isfinite(excitation[s, nodes]))]
    by_graph = excitation[finite[0], nodes]
    rank = {c: i for i, c in enumerate(found.orders[pair].tolist())}
    drawn = graph.node_channel[nodes]
    positions = [rank[int(c)] for c in drawn[np.lexsort((drawn, -by_graph))]]
    assert positions == sorted(positions)


def test_datapath_rankings_are_permutations_of_the_gate_layer(core):
    path, model = core
    session = Session(path, model=model)
    found = session.faithfulness_rankings([0, 1], "datapath", steps=3)
    assert found.layer == LAYER and found.orders.shape == (2, 6)
    assert all(sorted(row) == list(range(6)) for row in found.orders.tolist())
