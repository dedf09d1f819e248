"""The `features` stage and its reader: stored arrays against the features package and against plain forward
passes of the tiny net, --limit, resuming a killed stage layer by layer, and FeatureLibrary's id checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from advlens.analysis import SelectionError, Session
from advlens.analysis.features import FeatureLibrary
from advlens.features import dataset_examples_for_layers, feature_visualization
from advlens.pipeline import PrepareConfig, prepare, stages_features

from conftest import tiny_dataset, trained_tiny_model

CONFIG = dict(model="tests:tiny", dataset="tiny", eps=0.2, alpha=0.07, steps=5, batch_size=16, seed=3,
              tsne_perplexity=5.0, feature_steps=2)
LAYERS = {"1": 2, "3": 4}  # the tiny net's ReLUs, as the number of nn.Sequential modules up to them
LEVELS = [0.5, 0.9, 0.95, 0.99]


def _config(**changes) -> PrepareConfig:
    return PrepareConfig(**{**CONFIG, **changes})


@pytest.fixture(scope="module")
def model_and_data():
    data = tiny_dataset()
    return trained_tiny_model(data), data


@pytest.fixture(scope="module")
def store(model_and_data, tmp_path_factory):
    model, data = model_and_data
    return prepare(_config(), tmp_path_factory.mktemp("features") / "store", model=model, data=data)


def _plain_maps(model, images: torch.Tensor, layer: str) -> torch.Tensor:
    """The layer's output from the nn.Sequential itself: no taps, no capture. Shape: (N, K, h, w)."""
    with torch.no_grad():
        return model.net[:LAYERS[layer]](model.normalize(images))


def test_stored_arrays_equal_plain_forward_passes(store, model_and_data):
    model, data = model_and_data
    group = store.group("features")
    attrs = group.attrs
    assert attrs["layers"] == ["1", "3"] and attrs["channels"] == [4, 6] and attrs["k"] == 10
    assert attrs["steps"] == 2 and attrs["images"] == 60 and attrs["quantile_levels"] == LEVELS
    for i, layer in enumerate(attrs["layers"]):
        maps = _plain_maps(model, data.images, layer)
        flat = maps.flatten(2)
        maxima, means = flat.amax(2).numpy(), flat.mean(2).numpy()
        np.testing.assert_allclose(group[f"L{i:02d}_max_quantiles"][...], np.quantile(maxima, LEVELS, axis=0),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(group[f"L{i:02d}_mean_quantiles"][...], np.quantile(means, LEVELS, axis=0),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(group[f"L{i:02d}_max_mean"][...], maxima.mean(0), rtol=1e-5, atol=1e-6)
        index, value = group[f"L{i:02d}_example_index"][...], group[f"L{i:02d}_example_value"][...]
        position, window = group[f"L{i:02d}_example_position"][...], group[f"L{i:02d}_example_window"][...]
        width = maps.shape[3]
        for channel in range(maps.shape[1]):
            best = np.argsort(-maxima[:, channel], kind="stable")[:10]  # ties: the earlier image first
            np.testing.assert_array_equal(index[channel], best)
            np.testing.assert_allclose(value[channel], maxima[best, channel], rtol=1e-6)
            for j, image in enumerate(best):
                peak = int(flat[image, channel].argmax())  # the first maximum in row-major order
                assert tuple(position[channel, j]) == (peak // width, peak % width)
        # hand-derived receptive fields: "1" sees 3×3 around its unit, "3" (stride 2) 5×5 around 2·(row, col)
        size, jump = (3, 1) if layer == "1" else (5, 2)
        top = jump * position[..., 0] - size // 2
        left = jump * position[..., 1] - size // 2
        np.testing.assert_array_equal(window, np.stack([top, left, top + size, left + size], axis=-1))
        vis = torch.from_numpy(group[f"L{i:02d}_vis"][...].astype(np.float32))
        on_vis = _plain_maps(model, vis, layer).mean((2, 3)).numpy()
        np.testing.assert_allclose(group[f"L{i:02d}_vis_activation"][...], np.diag(on_vis), rtol=1e-5, atol=1e-6)
        accepted = np.diag(on_vis) > np.quantile(means, 0.95, axis=0)
        assert attrs["layer_acceptance"][i] == pytest.approx(accepted.mean())


def test_stored_arrays_equal_a_direct_call_of_the_features_package(store, model_and_data):
    model, data = model_and_data
    group = store.group("features")
    layers = group.attrs["layers"]
    examples = dataset_examples_for_layers(model, layers, data.images, k=10, batch_size=16)
    for i, layer in enumerate(layers):
        channels = group.attrs["channels"][i]
        vis = feature_visualization(model, layer, list(range(channels)), steps=2, seed=3, lr=0.1)
        np.testing.assert_array_equal(group[f"L{i:02d}_vis"][...], vis.half().numpy())
        found = examples[layer]
        np.testing.assert_array_equal(group[f"L{i:02d}_example_index"][...], found.indices.numpy())
        np.testing.assert_array_equal(group[f"L{i:02d}_example_value"][...], found.values.numpy())
        np.testing.assert_array_equal(group[f"L{i:02d}_example_position"][...], found.positions.numpy())
        np.testing.assert_array_equal(group[f"L{i:02d}_example_window"][...], found.windows.numpy())
        np.testing.assert_array_equal(group[f"L{i:02d}_patches"][...], found.patches.half().numpy())


def test_the_library_reads_each_channel_and_crops_patches_from_the_dataset(store, model_and_data):
    model, data = model_and_data
    library = FeatureLibrary(store)
    assert library.layers() == ["1", "3"] and library.has("3") and not library.has("2")
    assert library.num_channels("3") == 6 and library.k == 10
    group = store.group("features")
    np.testing.assert_array_equal(library.visualizations("3"), group["L01_vis"][...].astype(np.float32))
    np.testing.assert_array_equal(library.visualization("3", 4), group["L01_vis"][4].astype(np.float32))
    assert library.visualization("1", 0).dtype == np.float32 and library.visualization("1", 0).shape == (1, 8, 8)
    padded = np.pad(data.images.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)))  # zeros outside the image
    for layer in library.layers():
        for channel in range(library.num_channels(layer)):
            found = library.examples(layer, channel)
            assert found.layer == layer and found.channel == channel and len(found.indices) == 10
            np.testing.assert_array_equal(found.labels, data.labels.numpy()[found.indices])
            for j, image in enumerate(found.indices):
                top, left, bottom, right = found.windows[j] + 4
                crop = padded[image, :, top:bottom, left:right]
                np.testing.assert_allclose(found.patches[j], crop, atol=1e-3)  # float16 storage
    stats = library.channel_stats("3", 1)
    assert stats.quantile_levels == tuple(LEVELS)
    np.testing.assert_array_equal(stats.max_quantiles, group["L01_max_quantiles"][:, 1])
    assert stats.accepted == (stats.vis_activation > stats.mean_quantiles[2])
    assert library.acceptance("3") == pytest.approx(group.attrs["layer_acceptance"][1])


def test_the_library_refuses_unknown_layers_and_channels(store):
    library = FeatureLibrary(store)
    with pytest.raises(SelectionError, match=r"no features for layer '2'; the store has features of 1, 3"):
        library.visualizations("2")
    for bad in (6, -1, 2.5, "a", None):
        with pytest.raises(SelectionError, match=r"layer '3' channel id"):
            library.examples("3", bad)
    with pytest.raises(SelectionError):
        library.channel_stats(3, 0)  # a layer is named, not numbered
    assert library.examples("3", 2.0).channel == library.examples("3", np.int64(2)).channel == 2


def test_session_features_is_the_library(store, model_and_data):
    model, _ = model_and_data
    session = Session(store, model=model)
    assert isinstance(session.features, FeatureLibrary) and session.features is session.features
    assert session.features.layers() == ["1", "3"]


def test_limit_bounds_the_examined_images_and_k(model_and_data, tmp_path):
    model, data = model_and_data
    store = prepare(_config(limit=25), tmp_path / "s25", model=model, data=data, stages=["features"])
    group = store.group("features")
    assert group.attrs["images"] == 25
    assert group["L01_example_index"][...].max() < 25
    maxima = _plain_maps(model, data.images[:25], "3").flatten(2).amax(2).numpy()
    np.testing.assert_allclose(group["L01_max_quantiles"][...], np.quantile(maxima, LEVELS, axis=0), rtol=1e-5)
    few = prepare(_config(limit=4), tmp_path / "s4", model=model, data=data, stages=["features"])
    assert few.group("features").attrs["k"] == 4 and few.group("features")["L00_example_index"].shape == (4, 4)


def test_a_killed_features_stage_resumes_from_its_finished_layers(store, model_and_data, tmp_path, monkeypatch):
    model, data = model_and_data
    root = tmp_path / "s"
    core = ["predict", "attack", "activations", "statistics", "projections"]
    prepare(_config(), root, model=model, data=data, stages=core)
    original_vis, original_pass = stages_features.layer_visualizations, stages_features.examples_and_statistics
    calls = []

    def dying(model_, layer, settings):
        calls.append(layer)
        if layer == "3":
            raise KeyboardInterrupt("simulated kill in the second layer")
        return original_vis(model_, layer, settings)

    monkeypatch.setattr(stages_features, "layer_visualizations", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare(_config(), root, model=model, data=data)
    assert "features" not in json.loads((root / "manifest.json").read_text())["stages"]
    work = sorted(p.name for p in next(root.glob(".work-features-*")).iterdir())
    assert work == ["L00_vis.npz", "examples.npz"]

    calls.clear()
    monkeypatch.setattr(stages_features, "layer_visualizations",
                        lambda m, layer, s: (calls.append(layer), original_vis(m, layer, s))[1])
    monkeypatch.setattr(stages_features, "examples_and_statistics",
                        lambda *args: (calls.append("data pass"), original_pass(*args))[1])
    resumed = prepare(_config(), root, model=model, data=data)
    assert calls == ["3"], "the data pass and the first layer are not computed again"
    assert not list(root.glob(".work-*")) and not list(root.glob(".partial-*"))
    reference = store.group("features")
    for name in reference.array_keys():
        np.testing.assert_array_equal(resumed.load("features", name), reference[name][...], err_msg=name)
    assert resumed.group("features").attrs["layers"] == reference.attrs["layers"]


def test_other_feature_settings_do_not_reuse_checkpoints(model_and_data, tmp_path, monkeypatch):
    model, data = model_and_data
    root = tmp_path / "s"
    original = stages_features.layer_visualizations

    def dying(model_, layer, settings):
        if layer == "3":
            raise KeyboardInterrupt
        return original(model_, layer, settings)

    monkeypatch.setattr(stages_features, "layer_visualizations", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare(_config(), root, model=model, data=data, stages=["features"])
    monkeypatch.undo()
    store = prepare(_config(feature_steps=3), root, model=model, data=data, stages=["features"])
    vis = feature_visualization(model, "1", list(range(4)), steps=3, seed=3, lr=0.1)
    np.testing.assert_array_equal(store.load("features", "L00_vis"), vis.half().numpy())
    shutil.rmtree(root)


def test_info_shows_the_features_stage(store, capsys):
    from advlens.cli import main

    assert main(["info", str(store.root)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.split()[:1] == ["features"])
    assert '"acceptance":' in line and '"channels_total": 10' in line and '"steps": 2' in line
    assert "not prepared" not in out
