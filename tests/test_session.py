"""analysis.Session: the per-selection computations the app and notebooks share."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy import stats
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist

from advlens import measures
from advlens.analysis import NEURON_MEASURES, SelectionError, Session
from advlens.data import ImageDataset
from advlens.errors import ConfigError, ModelError, StoreError
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


def hand_class_contributions(session: Session, model: AnalysedModel) -> tuple[np.ndarray, np.ndarray]:
    """Activation × own-class weight of every benign true positive, by a manual forward through the tiny
    net's layers (normalization by hand, the Sequential without its Linear) and NumPy.

    Shape: returns (N, D) float64 and labels (N,).
    """
    attack = session.store.group("attack")
    images, labels = torch.from_numpy(attack["benign"][:]), attack["label"][:]
    with torch.no_grad():
        pooled = model.net[:-1]((images - 0.5) / 0.25).double().numpy()
    weight = model.net[-1].weight.detach().double().numpy()
    return pooled * weight[labels], labels


def hand_band_gap(a_low, a_high, b_low, b_high) -> np.ndarray:
    """§5.2.1 with a plain loop."""
    out = []
    for cl_a, cu_a, cl_b, cu_b in zip(a_low, a_high, b_low, b_high):
        out.append(cu_a - cl_b if cl_b > cu_a else cl_a - cu_b if cl_a > cu_b else 0.0)
    return np.array(out)


def test_band_gaps_match_an_independent_computation(session, module_model):
    """Band gaps of every pair, both band kinds, from a manual forward pass, NumPy percentiles and SciPy's t."""
    contributions, labels = hand_class_contributions(session, module_model)
    classes = session.num_classes
    assert classes == 3 and session.band_kind == "percentile" and session.band_level == 0.8  # store defaults
    low = {c: np.percentile(contributions[labels == c], 10, axis=0) for c in range(classes)}
    high = {c: np.percentile(contributions[labels == c], 90, axis=0) for c in range(classes)}
    ci = {}
    for c in range(classes):
        values = contributions[labels == c]
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(0, ddof=1) / np.sqrt(len(values))
        ci[c] = (values.mean(0) - half, values.mean(0) + half)
    nonzero = {"percentile": 0, "ci": 0}
    zero = 0
    for pair in range(session.num_pairs):
        b, a = int(session.table["label"][pair]), int(session.table["adv_pred"][pair])
        expected = hand_band_gap(low[a], high[a], low[b], high[b])
        np.testing.assert_allclose(session.band_gap(pair).numpy(), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(session.band_gap(pair, 0.95, "ci").numpy(),
                                   hand_band_gap(*ci[a], *ci[b]), rtol=1e-4, atol=1e-5)
        nonzero["percentile"] += int(np.count_nonzero(expected))
        nonzero["ci"] += int(np.count_nonzero(hand_band_gap(*ci[a], *ci[b])))
        zero += int(np.sum(expected == 0))
        expected_regions = [(expected > 0).mean(), (expected == 0).mean(), (expected < 0).mean()]
        np.testing.assert_allclose(session.band_regions([pair])[0], expected_regions)
    assert nonzero["percentile"] > 0 and nonzero["ci"] > 0 and zero > 0, "the toy must exercise every region"
    order, scores = session.neuron_ranking(0, "band_gap")
    np.testing.assert_allclose(scores, session.band_gap(0).numpy())


def test_band_kinds_from_the_store_against_numpy(session, module_model):
    contributions, labels = hand_class_contributions(session, module_model)
    stored = set(session.store.group("statistics").attrs["percentile_levels"])
    assert {10.0, 90.0} <= stored  # the default band is stored exactly
    for level, (q_low, q_high) in ((0.5, (25, 75)), (0.8, (10, 90)), (0.9, (5, 95))):
        bands = session.bands(level, "percentile")
        for c in range(3):
            np.testing.assert_allclose(bands.low[c].numpy(), np.percentile(contributions[labels == c], q_low, axis=0),
                                       rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(bands.high[c].numpy(), np.percentile(contributions[labels == c], q_high,
                                                                             axis=0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(session.bands().low, session.bands(0.8, "percentile").low)
    torch.testing.assert_close(session.bands(kind="ci").low, session.bands(0.95, "ci").low)  # the kind's own level
    with pytest.raises(ValueError, match="band kind"):
        session.bands(kind="std")


def test_substitution_matches_a_manual_dense_layer(session, module_model):
    """Direct substitution from the stored pooled vectors and the dense layer's weights, in NumPy."""
    weight = module_model.net[-1].weight.detach().double().numpy()
    bias = module_model.net[-1].bias.detach().double().numpy()
    benign_all = session.store.load("activations", "benign_pooled").astype(np.float64)
    adv_all = session.store.load("activations", "adv_pooled").astype(np.float64)

    def softmax(logits):
        e = np.exp(logits - logits.max())
        return e / e.sum()

    largest = 0.0
    for pair in range(min(5, session.num_pairs)):
        b, a = int(session.table["label"][pair]), int(session.table["adv_pred"][pair])
        base = softmax(weight @ benign_all[pair] + bias)
        drop, rise = [], []
        for d in range(benign_all.shape[1]):
            vector = benign_all[pair].copy()
            vector[d] = adv_all[pair, d]
            probs = softmax(weight @ vector + bias)
            drop.append(base[b] - probs[b])
            rise.append(probs[a] - base[a])
        result = session.substitution(pair)
        np.testing.assert_allclose(result.benign_drop.numpy(), drop, atol=1e-5)
        np.testing.assert_allclose(result.adversarial_rise.numpy(), rise, atol=1e-5)
        order, scores = session.neuron_ranking(pair, "substitution")
        np.testing.assert_allclose(scores, np.array(drop) + np.array(rise), atol=1e-5)
        largest = max(largest, float(np.abs(drop).max()))
    assert largest > 1e-3, "the toy must have neurons whose substitution moves the probabilities"


def test_default_clustering_is_ward_on_rf_images(session):
    """§3.2 + §5.2.2: L2 between the masked images (benign and adversarial), by hand, then SciPy's Ward."""
    pair = 1
    benign_maps, adv_maps = session.feature_maps(pair)
    thresholds = torch.from_numpy(session.store.load("statistics", "neuron_threshold"))[:, None, None]
    benign_img, adv_img = (torch.from_numpy(a[0]) for a in session.pair_images([pair]))  # (1, 8, 8)
    up = torch.nn.functional.interpolate
    benign_mask = up(benign_maps[None], size=(8, 8), mode="bilinear")[0] > thresholds
    adv_mask = up(adv_maps[None], size=(8, 8), mode="bilinear")[0] > thresholds
    features = np.concatenate([(benign_img * benign_mask).reshape(6, -1).numpy(),
                               (adv_img * adv_mask).reshape(6, -1).numpy()], axis=1).astype(np.float64)
    tree = session.clustering(pair)
    np.testing.assert_allclose(tree.distances_, pdist(features), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tree.linkage_, hierarchy.linkage(pdist(features), "ward"), rtol=1e-6, atol=1e-7)
    masks = np.concatenate([benign_mask.reshape(6, -1).numpy(), adv_mask.reshape(6, -1).numpy()], axis=1)
    np.testing.assert_allclose(session.clustering(pair, "mask_l2", "average").linkage_,
                               hierarchy.linkage(pdist(masks.astype(np.float64)), "average"), atol=1e-7)
    assert session.clustering(pair, "rf_iou").method_ == "complete"


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


def test_unknown_or_missing_devices_are_refused_up_front(store_path, module_model):
    with pytest.raises(ConfigError, match="cuda:99"):
        Session(store_path, device="cuda:99")  # no CUDA here, or fewer GPUs
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        Session(store_path, model=module_model, device="gpu0")


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


@pytest.fixture(scope="module")
def user_model_store(tmp_path_factory, module_model, module_data):
    """A store of a ``module.path:factory`` model (not built in) and the weights file it recorded."""
    folder = tmp_path_factory.mktemp("user_model")
    (folder / "tinymodel.py").write_text(
        "from conftest import tiny_net\n\ndef build():\n    net = tiny_net()\n"
        "    net.mean, net.std, net.input_shape = (0.5,), (0.25,), (1, 8, 8)\n    return net\n")
    weights = folder / "w.safetensors"
    save_file({k: v.contiguous() for k, v in module_model.net.state_dict().items()}, str(weights))
    from advlens.models import load_model

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        model = load_model("tinymodel:build", weights, class_names=module_data.class_names)
        store = prepare(_config(model="tinymodel:build", weights=str(weights)), folder / "s", model=model,
                        data=module_data)
        yield store, weights


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
    shifted = copy.deepcopy(module_model)
    with torch.no_grad():
        shifted.net[0].bias += 0.01
    with pytest.raises(StoreError, match="model passed to Session"):
        Session(store, model=shifted)
