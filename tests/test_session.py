"""analysis.Session: the per-selection computations the app and notebooks share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from advlens import measures
from advlens.analysis import NEURON_MEASURES, SelectionError, Session
from advlens.data import ImageDataset
from advlens.errors import ModelError, StoreError
from advlens.models import AnalysedModel
from advlens.pipeline import PrepareConfig, prepare, stages
from conftest import tiny_dataset, trained_tiny_model


def _config(**changes) -> PrepareConfig:
    values = dict(model="tests:tiny", dataset="tiny", eps=0.2, alpha=0.07, steps=5, batch_size=16, seed=3,
                  tsne_perplexity=5.0)
    values.update(changes)
    return PrepareConfig(**values)


@pytest.fixture(scope="module")
def module_model() -> AnalysedModel:
    return trained_tiny_model(tiny_dataset())


@pytest.fixture(scope="module")
def module_data() -> ImageDataset:
    """The tiny images with every 10th label shifted (as conftest's ``tiny_data``)."""
    data = tiny_dataset()
    labels = data.labels.clone()
    labels[::10] = (labels[::10] + 1) % 3
    return ImageDataset(data.images, labels, data.class_names, data.name, data.split)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory, module_model, module_data):
    path = tmp_path_factory.mktemp("session") / "s"
    prepare(_config(), path, model=module_model, data=module_data)
    return path


@pytest.fixture
def session(store_path, module_model) -> Session:
    return Session(store_path, model=module_model, device="cpu")


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


def test_neuron_measures_agree_with_the_library(session, module_model):
    pair = 0
    info = session.pair_info(pair)
    benign_img, adv_img = (torch.from_numpy(a[0]) for a in session.pair_images([pair]))
    direct = measures.vulnerability_maps(module_model, benign_img, adv_img, info["label"], info["adv_pred"])
    maps = session.vulnerability_maps(pair)
    assert torch.allclose(maps.bmap, direct.bmap) and torch.allclose(maps.amap, direct.amap)

    order, scores = session.neuron_ranking(pair, "band_gap")
    assert sorted(order.tolist()) == list(range(6))
    assert np.all(np.diff(scores[order]) <= 1e-7), "band-gap order is signed, largest first"
    for measure in NEURON_MEASURES:
        order, scores = session.neuron_ranking(pair, measure)
        assert np.all(np.diff(scores[order]) <= 1e-7), measure

    benign_pooled, adv_pooled = session.pooled(pair)
    weight = module_model.dense_weight
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


def test_bad_ids_are_refused_not_wrapped(session):
    """Ids come from the browser: -1 must not read as the last item, nor an id past the end as anything."""
    with pytest.raises(SelectionError, match="pair id 7000 is out of range"):
        session.receptive_fields(7000)
    with pytest.raises(IndexError, match="pair id -1"):  # SelectionError is an IndexError too
        session.pair_info(-1)
    with pytest.raises(SelectionError, match="pair ids"):
        session.sort_pairs([0, session.num_pairs])
    with pytest.raises(SelectionError, match="neuron id -1"):
        session.context(-1)
    with pytest.raises(SelectionError, match="neuron id 6 is out of range"):
        session.context(6)
    with pytest.raises(SelectionError, match="neuron ids"):
        session.combined_rf(0, [0, -1])
    with pytest.raises(SelectionError, match="class id 3"):
        session.pairs_in_cell(3, 0)
    with pytest.raises(SelectionError, match="class id -1"):
        session.pairs_in_cell(0, -1)
    with pytest.raises(SelectionError, match="dendrogram node id 11"):  # 6 leaves: nodes 0 … 10
        session.cluster_members(0, [10, 11])
    with pytest.raises(SelectionError, match="must be an integer"):
        session.pair_info("first")
    assert session.cluster_members(0, 10).tolist() == list(range(6))  # the root holds every neuron
    assert session.pair_info(np.int64(1))["pair"] == session.pair_info(1.0)["pair"] == 1


def test_unfinished_stores_are_refused(tmp_path, module_model, module_data, monkeypatch):
    def crash(ctx, out):
        raise RuntimeError("stop")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "projections", crash)
    with pytest.raises(RuntimeError):
        prepare(_config(), tmp_path / "partial", model=module_model, data=module_data)
    with pytest.raises(StoreError, match="unfinished"):
        Session(tmp_path / "partial", model=module_model)


def test_a_callers_model_is_never_moved(store_path, module_model):
    same = Session(store_path, model=module_model)
    assert same.model is module_model and same.device == module_model.device
    elsewhere = Session(store_path, model=module_model, device="meta")
    assert elsewhere.model is not module_model and elsewhere.model.device.type == "meta"
    assert all(p.device.type == "cpu" for p in module_model.parameters())
    assert all(b.device.type == "cpu" for b in module_model.buffers())


@pytest.fixture
def user_model_store(tmp_path, module_model, module_data, monkeypatch):
    """A store of a ``module.path:factory`` model (not built in) and the weights file it recorded."""
    (tmp_path / "tinymodel.py").write_text(
        "from conftest import tiny_net\n\ndef build():\n    net = tiny_net()\n"
        "    net.mean, net.std, net.input_shape = (0.5,), (0.25,), (1, 8, 8)\n    return net\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in module_model.net.state_dict().items()}, str(weights))
    from advlens.models import load_model

    model = load_model("tinymodel:build", weights, class_names=module_data.class_names)
    store = prepare(_config(model="tinymodel:build", weights=str(weights)), tmp_path / "s", model=model,
                    data=module_data)
    return store, weights


def test_store_named_code_runs_only_when_trusted(user_model_store, module_model):
    store, _ = user_model_store
    with pytest.raises(ModelError, match="not built in.*imports the Python module 'tinymodel'.*trust_store_code"):
        Session(store)
    assert Session(store, model=module_model).model is module_model  # the caller's model needs no trust
    assert Session(store, trust_store_code=True).model.spec == "tinymodel:build"  # reloaded from the store


def test_model_with_other_weights_is_refused(user_model_store, module_model, tmp_path, monkeypatch):
    store, _ = user_model_store
    other = {k: v.contiguous() + 0.01 for k, v in module_model.net.state_dict().items()}
    other_file = tmp_path / "other.safetensors"
    save_file(other, str(other_file))
    session = Session(store, trust_store_code=True)
    monkeypatch.setattr(session, "_weights_path", lambda: other_file)
    with pytest.raises(StoreError, match="differ from those the store"):
        _ = session.model
    shifted = trained_tiny_model(tiny_dataset())
    with torch.no_grad():
        shifted.net[0].bias += 0.01
    with pytest.raises(StoreError, match="model passed to Session"):
        Session(store, model=shifted)
