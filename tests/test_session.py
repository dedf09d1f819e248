"""analysis.Session: the per-selection computations the app and notebooks share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from advlens import measures
from advlens.analysis import NEURON_MEASURES, Session
from advlens.errors import StoreError
from advlens.pipeline import PrepareConfig, prepare, stages


def _config(**changes) -> PrepareConfig:
    values = dict(model="tests:tiny", dataset="tiny", eps=0.2, alpha=0.07, steps=5, batch_size=16, seed=3,
                  tsne_perplexity=5.0)
    values.update(changes)
    return PrepareConfig(**values)


@pytest.fixture
def session(tmp_path, tiny_model, tiny_data) -> Session:
    store = prepare(_config(), tmp_path / "s", model=tiny_model, data=tiny_data)
    return Session(store, model=tiny_model, device="cpu")


def test_image_space_queries(session):
    table = session.table
    matrix = session.prediction_matrix()
    assert matrix.sum() == session.num_pairs and np.trace(matrix) == 0
    true, adv = np.unravel_index(matrix.argmax(), matrix.shape)
    cell = session.pairs_in_cell(true, adv)
    assert len(cell) == matrix[true, adv]
    assert np.all(table["label"][cell] == true) and np.all(table["adv_pred"][cell] == adv)

    ids = np.arange(session.num_pairs)
    assert np.all(np.diff(table["l2"][session.sort_pairs(ids, "perturbation_asc")]) >= 0)
    assert np.all(np.diff(table["l2"][session.sort_pairs(ids, "perturbation_desc")]) <= 0)
    drop_order = session.sort_pairs(ids, "benign_drop")
    label = table["label"][drop_order]
    drop = table["benign_probs"][drop_order, label] - table["adv_probs"][drop_order, label]
    assert np.all(np.diff(drop) <= 0)
    rise_order = session.sort_pairs(ids, "adversarial_rise")
    target = table["adv_pred"][rise_order]
    rise = table["adv_probs"][rise_order, target] - table["benign_probs"][rise_order, target]
    assert np.all(np.diff(rise) <= 0)
    with pytest.raises(ValueError, match="order must be one of"):
        session.sort_pairs(ids, "random")


def test_receptive_fields_share_the_stored_threshold(session):
    benign_maps, adv_maps = session.feature_maps(0)
    thresholds = torch.from_numpy(session.store.load("statistics", "neuron_threshold"))
    benign, adversarial = session.receptive_fields(0)
    assert benign.shape == (6, 8, 8) and benign.dtype == torch.bool
    expected_b = torch.nn.functional.interpolate(benign_maps[None], size=(8, 8), mode="bilinear")[0]
    expected_a = torch.nn.functional.interpolate(adv_maps[None], size=(8, 8), mode="bilinear")[0]
    assert torch.equal(benign, expected_b > thresholds[:, None, None])
    assert torch.equal(adversarial, expected_a > thresholds[:, None, None])
    loose, _ = session.receptive_fields(0, value=-1.0)
    assert loose.all(), "a threshold below every value puts every pixel in the RF"


def test_neuron_measures_agree_with_the_library(session, tiny_model):
    pair = 0
    info = session.pair_info(pair)
    benign_img, adv_img = (torch.from_numpy(a[0]) for a in session.pair_images([pair]))
    direct = measures.vulnerability_maps(tiny_model, benign_img, adv_img, info["label"], info["adv_pred"])
    maps = session.vulnerability_maps(pair)
    assert torch.allclose(maps.bmap, direct.bmap) and torch.allclose(maps.amap, direct.amap)

    order, scores = session.neuron_ranking(pair, "band_gap")
    assert sorted(order.tolist()) == list(range(6))
    assert np.all(np.diff(scores[order]) <= 1e-7), "band-gap order is signed, largest first"
    for measure in NEURON_MEASURES:
        order, scores = session.neuron_ranking(pair, measure)
        assert np.all(np.diff(scores[order]) <= 1e-7), measure

    benign_pooled, adv_pooled = session.pooled(pair)
    weight = tiny_model.dense_weight
    curves = session.curves(pair)
    assert torch.allclose(curves.benign, benign_pooled * weight[info["label"]])
    assert torch.allclose(curves.adversarial, adv_pooled * weight[info["adv_pred"]])


def test_context_images_are_the_true_top_m(session):
    pairs = np.arange(session.num_pairs)
    top = session.context(2, pairs, m=3, by="activation")
    benign_max = session.store.load("activations", "benign_max")[:, 2]
    assert set(top.benign.tolist()) == set(np.argsort(-benign_max, kind="stable")[:3].tolist())
    assert top.benign_rfs.shape == (3, 8, 8)
    by_conf = session.context(2, pairs[::2], m=2, by="confidence")
    table = session.table
    conf = table["adv_probs"][pairs[::2], table["adv_pred"][pairs[::2]]]
    assert set(by_conf.adversarial.tolist()) == set(pairs[::2][np.argsort(-conf, kind="stable")[:2]].tolist())


def test_results_are_cached_and_bounded(session):
    first = session.receptive_fields(1)
    assert session.receptive_fields(1) is first
    assert session.cache.hits >= 1
    session.cache.max_entries = 2
    for pair in range(min(4, session.num_pairs)):
        session.feature_maps(pair)
    assert len(session.cache) <= 2


def test_bad_pair_ids_and_unfinished_stores(session, tmp_path, tiny_model, tiny_data, monkeypatch):
    with pytest.raises(IndexError, match="pair id"):
        session.receptive_fields(session.num_pairs)

    def crash(ctx, out):
        raise RuntimeError("stop")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "projections", crash)
    with pytest.raises(RuntimeError):
        prepare(_config(), tmp_path / "partial", model=tiny_model, data=tiny_data)
    with pytest.raises(StoreError, match="unfinished"):
        Session(tmp_path / "partial", model=tiny_model)


def test_model_with_other_weights_is_refused(tmp_path, tiny_model, tiny_data, monkeypatch):
    (tmp_path / "tinymodel.py").write_text(
        "from conftest import tiny_net\n\ndef build():\n    net = tiny_net()\n"
        "    net.mean, net.std, net.input_shape = (0.5,), (0.25,), (1, 8, 8)\n    return net\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.net.state_dict().items()}, str(weights))
    from advlens.models import load_model

    model = load_model("tinymodel:build", weights, class_names=tiny_data.class_names)
    store = prepare(_config(model="tinymodel:build", weights=str(weights)), tmp_path / "s", model=model,
                    data=tiny_data)
    assert Session(store).model.spec == "tinymodel:build"  # reloaded from the configuration
    state = {k: v.contiguous() + 0.01 for k, v in tiny_model.net.state_dict().items()}
    save_file(state, str(weights))
    with pytest.raises(StoreError, match="differ from those the store"):
        _ = Session(store).model
