"""The ``profiles`` prepare stage (spec-002 §1.3) on the tiny seeded model and generated images: the store layout
the profiles analysis reads, the seeded background, the fit's quality, the option checks (CLI exit status 2,
nothing written) and the fits of other layer selections kept in ``store.derived``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from advlens.cli import build_parser, main
from advlens.data import ImageDataset
from advlens.errors import ConfigError, StoreError
from advlens.pipeline import PrepareConfig, prepare
from advlens.pipeline.stages_profiles import fit_profiles_selection, stored_profiles_selection
from advlens.store import open_store

from conftest import tiny_dataset, trained_tiny_model

IMAGES = 150
BACKGROUND = 120
CONFIG = dict(model="tests:tiny", dataset="tiny", batch_size=32, seed=5, profiles_background=BACKGROUND)
TINY_LAYERS = ["1", "3", "6"]
"""The tiny net's profile axes by hand: it has no blocks, so the weighted preset — each conv after its ReLU
(modules 1 and 3) — and the logits (module 6)."""


@pytest.fixture(scope="module")
def model_and_data():
    """The tiny model and generated images, every 10th label shifted: misclassified images the background keeps."""
    data = tiny_dataset(IMAGES)
    labels = data.labels.clone()
    labels[::10] = (labels[::10] + 1) % 3
    return trained_tiny_model(data), ImageDataset(data.images, labels, data.class_names, data.name, data.split)


@pytest.fixture(scope="module")
def store_path(model_and_data, tmp_path_factory):
    model, data = model_and_data
    root = tmp_path_factory.mktemp("profiles") / "store"
    prepare(PrepareConfig(**CONFIG), root, model=model, data=data, stages=["profiles"])
    return root


def _copy(root, tmp_path):
    shutil.copytree(root, tmp_path / "store")
    return tmp_path / "store"


def test_the_stage_writes_the_layout_the_analysis_reads(store_path, model_and_data):
    model, data = model_and_data
    store = open_store(store_path)
    assert store.finished_stages == ["predict", "profiles"], "profiles needs only predict"
    group = store.group("profiles")
    attrs = group.attrs
    assert attrs["layers"] == TINY_LAYERS
    assert attrs["dims"] == [4 * 8 * 8, 6 * 4 * 4, 3]  # conv 1→4 at 8², conv 4→6 stride 2 at 4², 3 logits
    assert attrs["background"] == BACKGROUND and attrs["requested_background"] == BACKGROUND
    assert (attrs["n_neighbors"], attrs["min_dist"], attrs["alignment_regularisation"],
            attrs["alignment_window_size"], attrs["random_state"], attrs["n_epochs"]) == (15, 0.1, 0.01, 3, 5, 200)
    for timing in ("fit_seconds", "warmup_seconds", "activation_seconds"):
        assert attrs[timing] >= 0
    rows = group["background_row"][...]
    assert rows.dtype == np.int64 and rows.shape == (BACKGROUND,)
    assert len(np.unique(rows)) == BACKGROUND and np.all(np.diff(rows) > 0) and rows.max() < IMAGES
    assert len(np.setdiff1d(np.arange(IMAGES), rows)) == IMAGES - BACKGROUND
    predict = store.group("predict")
    np.testing.assert_array_equal(group["background_label"][...], data.labels.numpy()[rows])
    np.testing.assert_array_equal(group["background_label"][...], predict["label"][...][rows])
    np.testing.assert_array_equal(group["background_pred"][...], predict["pred"][...][rows])
    assert (group["background_pred"][...] != group["background_label"][...]).any(), "misclassified ones are kept"
    images = group["background_images"][...]
    assert images.dtype == np.float32 and images.shape == (BACKGROUND, 1, 8, 8)
    np.testing.assert_array_equal(images, data.images.numpy()[rows])
    embeddings = group["embeddings"][...]
    assert embeddings.dtype == np.float32 and embeddings.shape == (3, BACKGROUND)
    assert np.isfinite(embeddings).all() and attrs["disconnected"] == [0, 0, 0]


def test_the_logits_axis_separates_the_classes(store_path):
    """Quality invariant: the 5 nearest background images on the last axis (1-D |Δp|, a plain loop) mostly share
    the image's predicted class (the model's view: it separates its generated classes almost perfectly)."""
    group = open_store(store_path).group("profiles")
    position = group["embeddings"][...][-1].tolist()
    labels = group["background_pred"][...].tolist()
    hits = 0
    for i, p in enumerate(position):
        nearest = sorted((abs(p - q), j) for j, q in enumerate(position) if j != i)[:5]
        votes = [labels[j] for _, j in nearest]
        hits += max(set(votes), key=votes.count) == labels[i]
    assert hits / len(position) >= 0.9


def test_a_background_larger_than_the_examined_images_takes_them_all(model_and_data, tmp_path):
    model, data = model_and_data
    store = prepare(PrepareConfig(**{**CONFIG, "profiles_background": 5000}), tmp_path / "s", model=model,
                    data=tiny_dataset(40), stages=["profiles"])
    attrs = store.group("profiles").attrs
    assert attrs["background"] == 40 and attrs["requested_background"] == 5000
    np.testing.assert_array_equal(store.group("profiles")["background_row"][...], np.arange(40))


@pytest.mark.parametrize("options, message", [
    (["--profiles-background", "2"], "--profiles-background must be at least 3"),
    (["--profiles-layers", "layer1,nope"], "no layer named 'nope'"),
    (["--profiles-layers", "layer2,layer1"], "not sequential"),
    (["--profiles-layers", "layer2.conv1,layer2.shortcut"], "not sequential"),  # a branch and its shortcut
])
def test_bad_profiles_options_exit_2_with_nothing_written(options, message, tmp_path, capsys):
    out = tmp_path / "store"
    code = main(["prepare", "--out", str(out), "--limit", "20", "--stages", "profiles", *options])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    if "--profiles-layers" in options:
        assert "layer1,layer2,layer3,layer4,fc" in err, "the valid choice (the default) is named"
    assert not out.exists()


def test_the_cli_passes_the_profiles_options_on(monkeypatch, tmp_path):
    import advlens.pipeline

    seen = {}

    def fake_prepare(config, out, **kwargs):
        seen["config"] = config
        raise ConfigError("stop here")

    monkeypatch.setattr(advlens.pipeline, "prepare", fake_prepare)
    assert main(["prepare", "--out", str(tmp_path / "s"), "--profiles-background", "700",
                 "--profiles-layers", "layer2, layer4,fc"]) == 2
    config = seen["config"]
    assert config.profiles_background == 700
    config.validate()
    assert config.profiles_layers == ("layer2", "layer4", "fc")
    args = build_parser().parse_args(["prepare", "--out", "x", *config.command_line()])
    assert args.profiles_background == 700 and args.profiles_layers == "layer2,layer4,fc"
    assert PrepareConfig().command_line() == [], "the defaults add no arguments"


def test_other_profile_settings_keep_the_finished_stage_and_say_how_to_redo_it(store_path, model_and_data,
                                                                               tmp_path, caplog):
    model, data = model_and_data
    root = _copy(store_path, tmp_path)
    with caplog.at_level("WARNING", logger="advlens.pipeline.prepare"):
        store = prepare(PrepareConfig(**{**CONFIG, "profiles_background": 60}), root, model=model, data=data,
                        stages=["profiles"])
    assert store.group("profiles").attrs["background"] == BACKGROUND
    assert f"a background of {BACKGROUND} images, not 60; `--redo profiles`" in caplog.text


def test_a_new_selection_is_fitted_kept_and_read_back(store_path, model_and_data, tmp_path):
    model, data = model_and_data
    root = _copy(store_path, tmp_path)
    store = open_store(root)
    stage = store.group("profiles")["embeddings"][...]
    np.testing.assert_array_equal(stored_profiles_selection(store, TINY_LAYERS), stage)
    assert stored_profiles_selection(store, ["3", "6"]) is None, "not fitted yet"

    reports = []
    fitted = fit_profiles_selection(store, model, ["3", "6"], progress=lambda f, m: reports.append((f, m)))
    assert fitted.shape == (2, BACKGROUND) and fitted.dtype == np.float32 and np.isfinite(fitted).all()
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any("activations" in m for _, m in reports) and any("warm-up" in m for _, m in reports)
    np.testing.assert_array_equal(stored_profiles_selection(open_store(root), ["3", "6"]), fitted)
    again = fit_profiles_selection(open_store(root), model, ["3", "6"])
    np.testing.assert_array_equal(again, fitted), "a kept fit is read, not refitted"
    # the logits axis of the new fit still groups the classes
    labels = store.group("profiles")["background_pred"][...]
    medians = np.array([np.median(fitted[-1][labels == c]) for c in range(3)])
    assert np.mean(np.argmin(np.abs(fitted[-1][:, None] - medians), axis=1) == labels) >= 0.9

    with pytest.raises(ConfigError, match="not sequential"):
        fit_profiles_selection(store, model, ["6", "3"])
    with pytest.raises(ConfigError, match="no layer named 'nope'"):
        fit_profiles_selection(store, model, ["3", "nope"])

    prepare(PrepareConfig(**{**CONFIG, "profiles_background": 90}), root, model=model, data=data,
            stages=["profiles"], redo="profiles")
    redone = open_store(root)
    assert redone.group("profiles").attrs["background"] == 90
    assert stored_profiles_selection(redone, ["3", "6"]) is None, "a fit of the old background is stale"


def test_a_selection_fit_needs_the_stage(model_and_data, tmp_path):
    model, data = model_and_data
    store = prepare(PrepareConfig(**CONFIG), tmp_path / "s", model=model, data=data, stages=["predict"])
    with pytest.raises(StoreError, match="no profiles stage.*--stages profiles"):
        fit_profiles_selection(store, model, ["3", "6"])
