"""DatapathAnalysis on a copy of the tiny model's store: a pair's datapaths against a plain ``datapath_chain`` call
and hand forward passes of the tiny net, the river distances against a NumPy loop, the adversarialness against the
stored probabilities, the result kept in the store (read back by a new session without recomputing, stale once a
stage it reads is redone), contribution and activation maps, and bad ids and layers refused before any work."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from app_fixtures import tiny_core_store

from advlens.analysis import Session
from advlens.analysis import datapaths_pair
from advlens.analysis.core import SelectionError
from advlens.datapaths import contribution, datapath_chain
from advlens.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

TARGETS = 4
FAST = {"steps": 30}
"""Fewer solver steps than the default 200: the tests check the wiring and the stored data, not the optimum."""


@pytest.fixture(scope="module")
def store_and_model(tmp_path_factory):
    """A private copy of the tiny store with paper 001's stages only: these tests write datapaths into it."""
    path, model = tiny_core_store(tmp_path_factory)
    copy = tmp_path_factory.mktemp("datapaths-analysis") / "store"
    shutil.copytree(path, copy)
    return copy, model


@pytest.fixture(scope="module")
def session(store_and_model):
    path, model = store_and_model
    return Session(path, model=model)


@pytest.fixture(scope="module")
def raw(store_and_model):
    """The stage arrays, read with zarr directly (not through the analysis)."""
    root = store_and_model[0]
    attack, activations = zarr.open_group(str(root / "attack"), mode="r"), zarr.open_group(str(root / "activations"),
                                                                                          mode="r")
    return {"row": activations["row"][...], **{name: attack[name][...] for name in (
        "label", "benign_pred", "adv_pred", "adv_probs", "benign", "adversarial", "dataset_index")}}


@pytest.fixture(scope="module")
def pair(raw):
    """A pair whose adversarial class has at least TARGETS benign true positives."""
    for p, row in enumerate(raw["row"]):
        c = raw["adv_pred"][row]
        if np.sum((raw["label"] == c) & (raw["benign_pred"] == c)) > TARGETS:
            return p
    raise AssertionError("no usable pair in the tiny store")


@pytest.fixture(scope="module")
def paths(session, pair):
    return session.pair_datapaths(pair, targets=TARGETS, **FAST)


def hand_forward(model, images: torch.Tensor, g1: torch.Tensor | None = None, g2: torch.Tensor | None = None):
    """The tiny net by hand (conftest.tiny_net; mean 0.5, std 0.25) with optional gates on both ReLU outputs.
    Returns (logits, relu 1, relu 2)."""
    net = model.net
    a1 = F.relu(net[0]((images - 0.5) / 0.25))
    if g1 is not None:
        a1 = a1 * g1[:, :, None, None]
    a2 = F.relu(net[2](a1))
    if g2 is not None:
        a2 = a2 * g2[:, :, None, None]
    return net[6](a2.mean(dim=(2, 3))), a1, a2


def test_targets_are_seeded_true_positives_of_the_adversarial_class(session, pair, raw, paths):
    rows = paths.target_rows
    c = raw["adv_pred"][raw["row"][pair]]
    assert len(rows) == TARGETS == len(set(rows.tolist()))
    assert raw["row"][pair] not in rows
    assert all(raw["label"][r] == c and raw["benign_pred"][r] == c for r in rows)
    np.testing.assert_array_equal(paths.target_dataset_index, raw["dataset_index"][rows])
    np.testing.assert_array_equal(session.datapath_targets(pair, TARGETS), rows)  # seeded: the same draw again
    pool = np.flatnonzero((raw["label"] == c) & (raw["benign_pred"] == c))
    np.testing.assert_array_equal(session.datapath_targets(pair, 10 ** 4), pool)  # fewer than asked: all of them


def test_stored_z_is_a_plain_chain_on_the_same_images(session, store_and_model, pair, raw, paths):
    model = store_and_model[1]
    row = raw["row"][pair]
    adv, src = torch.from_numpy(raw["adversarial"][row]), torch.from_numpy(raw["benign"][row])
    targets = torch.from_numpy(raw["benign"][paths.target_rows])
    chain = datapath_chain(model, adv, src, targets, steps=FAST["steps"])
    expected = torch.cat([chain.adv.z, chain.src.z, chain.tar.z]).numpy()
    np.testing.assert_allclose(paths.z, expected, atol=1e-6)
    np.testing.assert_array_equal(paths.critical, torch.cat([chain.adv_set.mask, chain.src_set.mask,
                                                             chain.tar_set.mask]).numpy())
    assert paths.roles == ("adv", "src", "tar", "tar", "tar", "tar")
    assert paths.layers == ("1", "3") and paths.sizes == (4, 6)


def test_predictions_and_activations_equal_hand_forward_passes(store_and_model, pair, raw, paths):
    model = store_and_model[1]
    row = raw["row"][pair]
    images = torch.from_numpy(np.concatenate([raw["adversarial"][[row]], raw["benign"][[row]],
                                              raw["benign"][paths.target_rows]]))
    z = torch.from_numpy(paths.z)
    mask = torch.from_numpy(paths.critical).float()
    with torch.no_grad():
        logits, a1, a2 = hand_forward(model, images)
        gated, _, _ = hand_forward(model, images, z[:, :4], z[:, 4:])
        binary, _, _ = hand_forward(model, images, mask[:, :4], mask[:, 4:])
    np.testing.assert_array_equal(paths.labels, logits.argmax(1).numpy())
    np.testing.assert_allclose(paths.probs, torch.softmax(logits, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(paths.gated_probs, torch.softmax(gated, 1).numpy(), atol=1e-5)
    np.testing.assert_array_equal(paths.binary_pred, binary.argmax(1).numpy())
    np.testing.assert_array_equal(paths.label_kept, paths.binary_pred == paths.labels)
    np.testing.assert_allclose(paths.acti, torch.cat([a1.amax(dim=(2, 3)), a2.amax(dim=(2, 3))], 1).numpy(),
                               atol=1e-5)
    for e in range(len(images)):  # the critical sets are z ≥ τ_e
        np.testing.assert_array_equal(paths.critical[e], paths.z[e] >= paths.tau[e])


def test_river_distances_equal_a_numpy_loop(paths):
    z, bounds = paths.z, [0, 4, 10]

    def dist(a, b, layer):
        total = 0.0
        for k in range(bounds[layer], bounds[layer + 1]):
            total += (float(a[k]) - float(b[k])) ** 2
        return math.sqrt(total)

    for layer in range(2):
        width = bounds[layer + 1] - bounds[layer]
        assert paths.d2[layer] == pytest.approx(dist(z[0], z[1], layer), abs=1e-6)
        assert paths.d2_rms[layer] == pytest.approx(dist(z[0], z[1], layer) / math.sqrt(width), abs=1e-6)
        for t in range(TARGETS):
            assert paths.d1[t, layer] == pytest.approx(dist(z[1], z[2 + t], layer), abs=1e-6)
            assert paths.d3[t, layer] == pytest.approx(dist(z[0], z[2 + t], layer), abs=1e-6)
            assert paths.d3_rms[t, layer] == pytest.approx(dist(z[0], z[2 + t], layer) / math.sqrt(width), abs=1e-6)
    whole = [math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(z[0], z[2 + t]))) for t in range(TARGETS)]
    assert paths.representative == int(np.argmin(whole))
    d1, d2, d3 = paths.river_distances()
    np.testing.assert_array_equal(d1, paths.d1_rms[paths.representative])


def test_adversarialness_is_one_minus_the_margin_of_the_stored_probabilities(session, raw):
    examples = session.datapath_examples(targets=TARGETS, **FAST)
    assert len(examples.pair) == len(raw["row"])
    for p, row in enumerate(raw["row"]):
        probs = sorted(raw["adv_probs"][row].tolist(), reverse=True)
        assert raw["adv_probs"][row][raw["adv_pred"][row]] == probs[0]
        assert examples.adversarialness[p] == pytest.approx(1 - (probs[0] - probs[1]), abs=1e-6)
        assert (examples.label[p], examples.adv_pred[p]) == (raw["label"][row], raw["adv_pred"][row])
    middle = np.median(examples.adversarialness)
    chosen = examples.medium(5)
    others = np.setdiff1d(examples.pair, chosen)
    assert np.abs(examples.adversarialness[chosen] - middle).max() <= np.abs(examples.adversarialness[others]
                                                                            - middle).min()


def test_stored_result_is_read_back_by_a_new_session_without_computing(store_and_model, pair, paths, monkeypatch):
    calls = []
    real = datapaths_pair.compute_pair_datapaths
    monkeypatch.setattr(datapaths_pair, "compute_pair_datapaths", lambda *a, **k: calls.append(1) or real(*a, **k))
    path, model = store_and_model
    fresh = Session(path, model=model)
    assert fresh.datapath_examples(targets=TARGETS, **FAST).stored[pair]
    assert fresh.datapath_examples(targets=TARGETS).stored.sum() == 0  # other settings: nothing stored
    again = fresh.stored_pair_datapaths(pair, targets=TARGETS, **FAST)
    assert again is not None and calls == []
    np.testing.assert_array_equal(again.z, paths.z)
    np.testing.assert_array_equal(again.acti, paths.acti)
    assert again.seconds == paths.seconds and again.layers == paths.layers
    assert fresh.pair_datapaths(pair, targets=TARGETS, **FAST) is again and calls == []
    other = (pair + 1) % fresh.num_pairs
    assert fresh.stored_pair_datapaths(other, targets=TARGETS, **FAST) is None and calls == []


def test_a_stored_lookup_does_not_wait_for_a_running_computation(store_and_model, pair, monkeypatch):
    """The app polls stored_pair_datapaths while its job computes the same pair in another thread."""
    path, model = store_and_model
    started, release = threading.Event(), threading.Event()
    real = datapaths_pair.compute_pair_datapaths

    def slow(*args, **kwargs):
        started.set()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(datapaths_pair, "compute_pair_datapaths", slow)
    session = Session(path, model=model)
    job = threading.Thread(target=session.pair_datapaths, args=(pair,), kwargs={"targets": 3, **FAST})
    job.start()
    try:
        assert started.wait(30)
        begun = time.perf_counter()
        assert session.stored_pair_datapaths(pair, targets=3, **FAST) is None
        assert time.perf_counter() - begun < 5
    finally:
        release.set()
        job.join(60)
    found = session.stored_pair_datapaths(pair, targets=3, **FAST)
    assert found is not None and found is session.pair_datapaths(pair, targets=3, **FAST)


def test_result_goes_stale_when_a_stage_it_reads_is_redone(store_and_model, pair, paths, monkeypatch, tmp_path):
    path, model = store_and_model
    copy = tmp_path / "store"
    shutil.copytree(path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())  # as a redo of the attack stage with other data
    manifest["stages"]["attack"]["arrays"]["success"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    calls = []
    real = datapaths_pair.compute_pair_datapaths
    monkeypatch.setattr(datapaths_pair, "compute_pair_datapaths", lambda *a, **k: calls.append(1) or real(*a, **k))
    stale = Session(copy, model=model)
    assert not stale.datapath_examples(targets=TARGETS, **FAST).stored.any()
    assert stale.stored_pair_datapaths(pair, targets=TARGETS, **FAST) is None
    stale.pair_datapaths(pair, targets=TARGETS, **FAST)
    assert calls == [1]
    assert stale.datapath_examples(targets=TARGETS, **FAST).stored[pair]


def test_progress_is_reported_during_the_solver(store_and_model, pair):
    path, model = store_and_model
    reports = []
    Session(path, model=model).pair_datapaths(pair, targets=2, steps=20, progress=lambda f, m: reports.append((f, m)))
    fractions = [f for f, _ in reports]
    assert len(reports) == 7  # every 10 steps of 3 phases, then done
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0 < fractions[0] < 0.5
    assert all(isinstance(m, str) and m for _, m in reports)


def test_layers_name_their_groups_and_columns(session):
    layers = session.datapath_layers()
    assert [(g.name, g.channels, g.start, g.stop, g.grid) for g in layers] == [("1", 4, 0, 4, (8, 8)),
                                                                                ("3", 6, 4, 10, (4, 4))]


def test_contribution_is_a_plain_contribution_call_seen_from_a_role(session, store_and_model, pair, raw, paths):
    model = store_and_model[1]
    row = raw["row"][pair]
    t = paths.representative
    images = torch.from_numpy(np.concatenate([raw["adversarial"][[row]], raw["benign"][[row]],
                                              raw["benign"][paths.target_rows[[t]]]]))
    expected = contribution(model, images, "3", 0, "1", method="fast")  # map 0: active, the three rows differ
    assert not np.allclose(expected.z[0], expected.z[1], atol=1e-3) and not expected.silent.any()
    for i, role in enumerate(("adv", "src", "tar")):
        got = session.datapath_contribution(pair, "3", 0, "1", role=role, method="fast", targets=TARGETS, **FAST)
        np.testing.assert_allclose(got.values, expected.z[i].numpy(), atol=1e-6)
        assert got.order.tolist() == expected.ranking(i)
        np.testing.assert_array_equal(got.in_datapath, paths.critical[paths.row(role), :4])
    aoi = np.zeros((4, 4), dtype=bool)
    aoi[1:3, 1:3] = True
    cells = session.datapath_contribution(pair, "3", 0, "1", aoi=[[1, 1], [1, 2], [2, 1], [2, 2]], method="fast",
                                          targets=TARGETS, **FAST)
    masked = session.datapath_contribution(pair, "3", 0, "1", aoi=aoi, method="fast", targets=TARGETS, **FAST)
    np.testing.assert_array_equal(cells.contribution.aoi.numpy(), aoi)
    assert cells.contribution is masked.contribution  # the same question, cached once


def test_activation_maps_equal_a_hand_forward(session, store_and_model, pair, raw, paths):
    row = raw["row"][pair]
    images = torch.from_numpy(np.concatenate([raw["adversarial"][[row]], raw["benign"][[row]],
                                              raw["benign"][paths.target_rows[[paths.representative]]]]))
    with torch.no_grad():
        _, a1, a2 = hand_forward(store_and_model[1], images)
    maps = session.datapath_activation_maps(pair, "3", 5, targets=TARGETS, **FAST)
    np.testing.assert_allclose(maps.maps, a2[:, 5].numpy(), atol=1e-5)
    assert maps.vmax == pytest.approx(float(a2[:, 5].max()), abs=1e-5)
    np.testing.assert_array_equal(maps.images, images.numpy())
    first = session.datapath_activation_maps(pair, "1", 0, targets=TARGETS, target=0, **FAST)
    assert first.target == 0 and first.maps.shape == (3, 8, 8)


def test_features_say_when_the_store_has_none(session):
    found = session.datapath_features("1", 0)
    assert found.visualization is None and "features" in found.problem


@pytest.mark.parametrize("call, error, words", [
    (lambda s, p: s.pair_datapaths(-1), SelectionError, "pair id -1"),
    (lambda s, p: s.pair_datapaths(10 ** 6), SelectionError, "out of range"),
    (lambda s, p: s.pair_datapaths(p, targets=0), ConfigError, "targets"),
    (lambda s, p: s.pair_datapaths(p, steps=-3), ConfigError, "steps"),
    (lambda s, p: s.pair_datapaths(p, lamda=0.2), ConfigError, "unknown datapath setting"),
    (lambda s, p: s.stored_pair_datapaths(1.5), SelectionError, "integer"),
    (lambda s, p: s.datapath_contribution(p, "conv9", 0, "1"), ConfigError, "use one of 1, 3"),
    (lambda s, p: s.datapath_contribution(p, "3", 6, "1"), SelectionError, "map id 6"),
    (lambda s, p: s.datapath_contribution(p, "1", 0, "3"), ConfigError, "does not come before"),
    (lambda s, p: s.datapath_contribution(p, "3", 0, "3"), ConfigError, "does not come before"),
    (lambda s, p: s.datapath_contribution(p, "3", 0, "1", role="target"), ConfigError, "unknown role"),
    (lambda s, p: s.datapath_contribution(p, "3", 0, "1", method="exact"), ConfigError, "unknown method"),
    (lambda s, p: s.datapath_contribution(p, "3", 0, "1", aoi=np.ones((8, 8), bool)), ConfigError, "4×4"),
    (lambda s, p: s.datapath_contribution(p, "3", 0, "1", aoi=[[4, 0]]), ConfigError, "outside"),
    (lambda s, p: s.datapath_activation_maps(p, "3", 0, target=TARGETS, targets=TARGETS, **FAST), SelectionError,
     "target id"),
    (lambda s, p: s.datapath_features("fc", 0), ConfigError, "not a gate layer"),
])
def test_bad_input_is_refused_before_any_work(session, pair, paths, call, error, words, monkeypatch):
    monkeypatch.setattr(datapaths_pair, "compute_pair_datapaths",
                        lambda *a, **k: pytest.fail("computed datapaths for bad input"))
    with pytest.raises(error, match=words):
        call(session, pair)


@pytest.mark.slow
def test_table_benchmark_small_version_prints_scores_within_0_and_k(tmp_path_factory, capsys):
    """Spec-003 A9's CI version (10 adversarials × 5 targets, T = 100) on the 200-image Fashion-MNIST store."""
    import importlib.util

    from app_fixtures import small_store_path

    root = small_store_path(tmp_path_factory)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "datapaths_table.py"
    spec = importlib.util.spec_from_file_location("datapaths_table", script)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    assert table.main(["--store", str(root), "--small", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith(("| U |", "| chain |"))]
    assert len(rows) == 2
    for row in rows:
        for cell in (row[2], row[3]):  # top-1/3/5, raw and RMS
            scores = [float(v) for v in cell.strip().split("/")]
            assert all(0 <= s <= k for s, k in zip(scores, (1, 3, 5))) and scores == sorted(scores)


def test_a_class_without_images_is_told_apart_from_one_the_model_gets_wrong(store_and_model, raw, monkeypatch):
    """No target image: the message says whether the examined images hold none of the class (and what to do)
    or the model misclassifies every one of them (with their number, counted here from the raw labels)."""
    from advlens.errors import StoreError

    path, model = store_and_model
    fresh = Session(path, model=model)
    pair = 0
    adversarial = int(raw["adv_pred"][pair])
    examined = zarr.open_group(str(path / "predict"), mode="r")["label"][...]
    count = int(sum(1 for label in examined.tolist() if label == adversarial))
    assert count > 0
    labels, preds = raw["label"].copy(), raw["benign_pred"].copy()
    preds[labels == adversarial] = (adversarial + 1) % fresh.num_classes  # every image of the class is now wrong
    monkeypatch.setattr(fresh, "_datapath_attack_labels", lambda: (labels, preds))
    with pytest.raises(StoreError, match=rf"misclassifies all {count} examined images of it"):
        fresh.datapath_targets(pair)
    fresh.cache.clear()
    fresh._cached(("examined-class-counts",), lambda: np.zeros(fresh.num_classes, dtype=np.int64))
    with pytest.raises(StoreError, match=r"holds no image of class .*--target-class N"):
        fresh.datapath_targets(pair)
