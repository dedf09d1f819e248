"""The analysis store and `prepare`: round trip, resume after a crash, version and config checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from advlens.errors import StoreError
from advlens.pipeline import PrepareConfig, prepare, stages
from advlens.store import SCHEMA_VERSION, STAGES, open_store

EPS = 0.2  # fools the tiny model on most, not all, images


def _config(**changes) -> PrepareConfig:
    values = dict(model="tests:tiny", dataset="tiny", eps=EPS, alpha=0.07, steps=5, batch_size=16, seed=3,
                  tsne_perplexity=5.0)
    values.update(changes)
    return PrepareConfig(**values)


def _all_arrays(store_path: Path) -> dict[str, np.ndarray]:
    store = open_store(store_path)
    return {f"{stage}/{name}": store.load(stage, name)
            for stage in STAGES for name in sorted(store.group(stage).array_keys())}


def test_store_round_trips_what_prepare_computed(tmp_path, tiny_model, tiny_data):
    store = prepare(_config(), tmp_path / "s", model=tiny_model, data=tiny_data)
    assert store.complete and store.manifest["schema_version"] == SCHEMA_VERSION
    predict = {k: store.load("predict", k) for k in ("label", "pred", "probs", "true_positive")}
    with torch.no_grad():
        probs = torch.softmax(tiny_model(tiny_data.images), 1).numpy()
    np.testing.assert_allclose(predict["probs"], probs, atol=1e-6)
    np.testing.assert_array_equal(predict["true_positive"], probs.argmax(1) == tiny_data.labels.numpy())

    rows = np.flatnonzero(predict["true_positive"])
    np.testing.assert_array_equal(store.load("attack", "dataset_index"), rows)
    benign, adversarial = store.load("attack", "benign"), store.load("attack", "adversarial")
    np.testing.assert_array_equal(benign, tiny_data.images[rows].numpy())
    assert adversarial.dtype == np.float32 and adversarial.min() >= 0 and adversarial.max() <= 1
    linf = np.abs(adversarial - benign).reshape(len(rows), -1).max(1)
    np.testing.assert_allclose(store.load("attack", "linf"), linf, atol=1e-7)
    assert linf.max() <= EPS + 1e-6
    with torch.no_grad():
        adv_pred = tiny_model(torch.from_numpy(adversarial)).argmax(1).numpy()
    np.testing.assert_array_equal(store.load("attack", "adv_pred"), adv_pred)
    success = store.load("attack", "success")
    np.testing.assert_array_equal(success, adv_pred != tiny_data.labels[rows].numpy())
    assert 4 <= success.sum() < len(success), "the fixture should yield successes and failures"
    assert 0 < len(rows) < len(tiny_data), "the fixture should yield true positives and mistakes"

    pair_rows = store.load("activations", "row")
    np.testing.assert_array_equal(pair_rows, np.flatnonzero(success))
    with torch.no_grad():
        acts = tiny_model.activations(torch.from_numpy(adversarial[pair_rows]))
    np.testing.assert_allclose(store.load("activations", "adv_maps"), acts.feature_maps.numpy(), atol=1e-6)
    np.testing.assert_allclose(store.load("activations", "adv_pooled"), acts.pooled.numpy(), atol=1e-6)
    np.testing.assert_allclose(store.load("activations", "adv_max"),
                               acts.feature_maps.flatten(2).amax(2).numpy(), atol=1e-6)
    b, a = store.pair_images([1, 0])
    np.testing.assert_array_equal(a[1], adversarial[pair_rows[0]])
    np.testing.assert_array_equal(b[0], benign[pair_rows[1]])

    np.testing.assert_array_equal(store.load("statistics", "dense_weight"), tiny_model.dense_weight.numpy())
    assert store.load("projections", "benign_tsne").shape == (len(pair_rows), 2)
    table = store.pair_table()
    np.testing.assert_array_equal(table["dataset_index"], rows[pair_rows])


def test_class_bands_match_a_direct_computation(tmp_path, tiny_model, tiny_data):
    store = prepare(_config(), tmp_path / "s", model=tiny_model, data=tiny_data)
    labels = store.load("attack", "label")
    with torch.no_grad():
        pooled = tiny_model.activations(torch.from_numpy(store.load("attack", "benign"))).pooled.numpy()
    weight = tiny_model.dense_weight.numpy()
    attrs = store.group("statistics").attrs
    levels = attrs["percentile_levels"]
    for c in range(3):
        values = (pooled[labels == c] * weight[c]).astype(np.float64)
        assert store.load("statistics", "class_count")[c] == len(values) >= 10
        np.testing.assert_allclose(store.load("statistics", "class_mean")[c], values.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(store.load("statistics", "class_std")[c], values.std(0, ddof=1), rtol=1e-4,
                                   atol=1e-6)
        # the CI of the class mean, from scipy's t distribution and standard error (not advlens.measures)
        sem = scipy.stats.sem(values, axis=0)
        varied = sem > 0  # a neuron silent on the whole class has the point band [0, 0]
        assert varied.sum() >= 3
        low, high = values.mean(0).copy(), values.mean(0).copy()
        low[varied], high[varied] = scipy.stats.t.interval(attrs["ci_level"], len(values) - 1,
                                                           loc=values.mean(0)[varied], scale=sem[varied])
        np.testing.assert_allclose(store.load("statistics", "class_lower")[c], low, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(store.load("statistics", "class_upper")[c], high, rtol=1e-4, atol=1e-6)
        for i, level in enumerate(levels):  # percentiles of the class distribution, one neuron at a time
            expected = [scipy.stats.scoreatpercentile(values[:, d], level) for d in range(values.shape[1])]
            np.testing.assert_allclose(store.load("statistics", "class_percentiles")[i, c], expected, rtol=1e-5,
                                       atol=1e-6, err_msg=f"class {c}, percentile {level}")
    quantiles = store.load("statistics", "neuron_quantiles")
    assert np.all(np.diff(quantiles, axis=0) >= 0), "quantiles must increase with their level"
    levels = store.group("statistics").attrs["quantile_levels"]
    default = store.group("statistics").attrs["default_quantile"]
    np.testing.assert_array_equal(store.load("statistics", "neuron_threshold"), quantiles[levels.index(default)])


@pytest.mark.parametrize("crash_stage", ["attack", "statistics", "projections"])
def test_interrupted_prepare_resumes_to_the_same_store(tmp_path, tiny_model, tiny_data, monkeypatch, crash_stage):
    reference = _all_arrays(prepare(_config(), tmp_path / "ref", model=tiny_model, data=tiny_data).root)

    original = stages.STAGE_FUNCTIONS[crash_stage]

    def crash(ctx, out):
        original(ctx, out)  # write the whole stage, then die before it is committed
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, crash_stage, crash)
    with pytest.raises(KeyboardInterrupt):
        prepare(_config(), tmp_path / "s", model=tiny_model, data=tiny_data)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert crash_stage not in manifest["stages"]
    assert (tmp_path / "s" / f".partial-{crash_stage}").exists()
    monkeypatch.setitem(stages.STAGE_FUNCTIONS, crash_stage, original)

    calls = []
    for name in STAGES:
        fn = stages.STAGE_FUNCTIONS[name]
        monkeypatch.setitem(stages.STAGE_FUNCTIONS, name,
                            lambda ctx, out, _fn=fn, _name=name: (calls.append(_name), _fn(ctx, out))[1])
    resumed = prepare(_config(), tmp_path / "s", model=tiny_model, data=tiny_data)
    assert calls == list(STAGES[STAGES.index(crash_stage):]), "finished stages must not be recomputed"
    assert not list((tmp_path / "s").glob(".partial-*"))
    arrays = _all_arrays(resumed.root)
    assert arrays.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(arrays[key], reference[key], err_msg=key)


def test_other_schema_version_is_refused(tmp_path, tiny_model, tiny_data):
    path = prepare(_config(), tmp_path / "s", model=tiny_model, data=tiny_data).root
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}.*--overwrite"):
        open_store(path)
    with pytest.raises(StoreError, match="schema version"):
        prepare(_config(), path, model=tiny_model, data=tiny_data)


def test_other_configuration_is_refused_unless_overwrite(tmp_path, tiny_model, tiny_data):
    path = tmp_path / "s"
    prepare(_config(), path, model=tiny_model, data=tiny_data)
    with pytest.raises(StoreError, match=r"another configuration \(differs in: attack\)"):
        prepare(_config(eps=0.1), path, model=tiny_model, data=tiny_data)
    store = prepare(_config(eps=0.1), path, overwrite=True, model=tiny_model, data=tiny_data)
    assert store.config["attack"]["eps"] == 0.1
    assert store.load("attack", "linf").max() <= 0.1 + 1e-6


def test_reading_an_unfinished_stage_says_how_to_resume(tmp_path, tiny_model, tiny_data, monkeypatch):
    def crash(ctx, out):
        raise RuntimeError("boom")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "activations", crash)
    with pytest.raises(RuntimeError):
        prepare(_config(), tmp_path / "s", model=tiny_model, data=tiny_data)
    store = open_store(tmp_path / "s")
    assert store.finished_stages == ["predict", "attack"]
    with pytest.raises(StoreError, match="run `advlens prepare` again"):
        store.group("activations")


def test_open_store_errors_name_the_problem(tmp_path):
    with pytest.raises(StoreError, match="no analysis store"):
        open_store(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no manifest.json"):
        open_store(tmp_path / "empty")


def test_precomputed_adversarial_file_is_analysed(tmp_path, tiny_model, tiny_data):
    """The analysis does not depend on the attack: adversarial images made elsewhere are accepted."""
    flipped = 1.0 - tiny_data.images.numpy()
    indices = np.arange(0, 60, 2)
    np.savez(tmp_path / "adv.npz", adversarial=flipped[indices], indices=indices)
    store = prepare(_config(attack="file", adversarial_file=str(tmp_path / "adv.npz")), tmp_path / "s",
                    model=tiny_model, data=tiny_data)
    dataset_index = store.load("attack", "dataset_index")
    attacked = store.load("attack", "attacked")
    np.testing.assert_array_equal(attacked, dataset_index % 2 == 0)
    adversarial = store.load("attack", "adversarial")
    np.testing.assert_array_equal(adversarial[attacked], flipped[dataset_index[attacked]])
    assert not store.load("attack", "success")[~attacked].any()


@pytest.mark.parametrize("random_start", [False, True])
def test_attack_killed_mid_stage_resumes_from_its_last_batch(tmp_path, tiny_model, tiny_data, monkeypatch,
                                                             random_start):
    config = _config(batch_size=8, random_start=random_start)
    reference = _all_arrays(prepare(config, tmp_path / "ref", model=tiny_model, data=tiny_data).root)

    from advlens.attacks import PGD

    original = PGD.perturb
    calls = []

    def dying(self, images, labels):
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill during the third batch")
        return original(self, images, labels)

    monkeypatch.setattr(PGD, "perturb", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare(config, tmp_path / "s", model=tiny_model, data=tiny_data)
    assert len(list((tmp_path / "s").glob(".work-attack-*/*.npz"))) == 2
    calls.clear()
    monkeypatch.setattr(PGD, "perturb", lambda self, x, y: (calls.append(len(x)), original(self, x, y))[1])
    resumed = prepare(config, tmp_path / "s", model=tiny_model, data=tiny_data)
    batches = -(-len(reference["attack/label"]) // 8)
    assert len(calls) == batches - 2, "the two finished batches must not be attacked again"
    assert not list((tmp_path / "s").glob(".work-*")), "checkpoints are removed once the stage is committed"
    arrays = _all_arrays(resumed.root)
    for key in reference:
        np.testing.assert_array_equal(arrays[key], reference[key], err_msg=key)
