"""``fashion-cnn``: paper 002's small CNN (§5.2) as a built-in model — architecture, shipped weights,
reproducible training and what ``AnalysedModel`` sees of it."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from advlens.data import load_dataset
from advlens.errors import ConfigError
from advlens.models import fashion_cnn, load_model
from advlens.models.fashion_cnn import FashionCNN
from advlens.models.registry import demo_weights_path
from advlens.training.train_demo import train_demo_model


def stated_accuracy() -> float:
    """The test accuracy the module docstring states (the figure users read)."""
    match = re.search(r"\*\*(\d+\.\d)% test accuracy\*\*", fashion_cnn.__doc__ or "")
    assert match, "fashion_cnn's docstring must state the shipped weights' test accuracy"
    return float(match.group(1)) / 100


def test_architecture_layer_shapes_and_parameter_count() -> None:
    model = load_model("fashion-cnn")
    graph = model.graph
    # 3×3 'same' convolutions keep the size; 2× max-pooling rounds up: 28 → 14 → 7 → 4 → 2
    expected = {"conv1": (4, 28, 28), "pool1": (4, 14, 14), "conv2": (8, 14, 14), "pool2": (8, 7, 7),
                "conv3": (16, 7, 7), "pool3": (16, 4, 4), "conv4": (32, 4, 4), "relu4": (32, 4, 4),
                "pool4": (32, 2, 2), "fc": (10,)}
    for name, shape in expected.items():
        assert tuple(graph[name].shape) == shape, name
    # weights + biases by hand: 3×3 kernels, in·out·9 + out per conv, 32·10 + 10 for the dense layer
    by_hand = (1 * 4 * 9 + 4) + (4 * 8 * 9 + 8) + (8 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 10 + 10)
    assert by_hand == 6474
    assert sum(p.numel() for p in FashionCNN().parameters()) == by_hand


def test_graph_finds_four_convolutions_and_the_dense_head() -> None:
    model = load_model("fashion-cnn")
    assert model.graph.weighted_layers() == ["conv1", "conv2", "conv3", "conv4", "fc"]
    assert [model.graph[name].kind for name in ("conv1", "conv2", "conv3", "conv4")] == ["weighted"] * 4


def test_analysed_layer_is_the_last_conv_activation_and_feeds_the_dense_layer() -> None:
    model = load_model("fashion-cnn")
    assert (model.analysed_layer_name, model.pooling, model.dense_layer_name) == ("relu4", "max", "fc")
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model.activations(images)
        # independent: run the modules by hand and take the spatial max of relu4's maps
        x = model.normalize(images)
        for index in (1, 2, 3):
            x = torch.nn.functional.max_pool2d(torch.relu(getattr(model.net, f"conv{index}")(x)), 2, ceil_mode=True)
        relu4 = torch.relu(model.net.conv4(x))
    torch.testing.assert_close(out.feature_maps, relu4)
    torch.testing.assert_close(out.pooled, relu4.amax(dim=(2, 3)))
    torch.testing.assert_close(out.logits, relu4.amax(dim=(2, 3)) @ model.net.fc.weight.T + model.net.fc.bias)


def test_shipped_weights_reach_the_stated_accuracy() -> None:
    path = demo_weights_path("fashion-cnn")
    assert path.is_file(), f"shipped weights {path} are missing (package data?)"
    assert load_file(str(path)).keys() == FashionCNN().state_dict().keys()
    model = load_model("fashion-cnn")
    test = load_dataset("fashion-mnist", "test")
    with torch.no_grad():
        predictions = model(test.images[:1000]).argmax(1)
    accuracy = (predictions == test.labels[:1000]).float().mean().item()
    assert accuracy >= stated_accuracy() - 0.03, f"{accuracy:.3f} on the first 1,000 test images"
    assert accuracy <= stated_accuracy() + 0.03


@pytest.mark.slow  # ~5 s on a quiet machine (two runs, each loading Fashion-MNIST), 15 s under load
def test_training_is_deterministic_for_a_seed(tmp_path) -> None:
    paths = [tmp_path / f"{name}.safetensors" for name in ("a", "b")]
    for path in paths:
        train_demo_model(path, arch="fashion-cnn", epochs=1, limit=256, seed=5)
    first, second = (load_file(str(p)) for p in paths)
    assert first.keys() == FashionCNN().state_dict().keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    torch.manual_seed(5)
    initial = FashionCNN().state_dict()  # the seed's initial weights: training moved every tensor
    assert not any(torch.equal(first[key], initial[key]) for key in first)


def test_training_refuses_an_unknown_architecture(tmp_path) -> None:
    with pytest.raises(ConfigError, match="fashion-cnn"):
        train_demo_model(tmp_path / "w.safetensors", arch="fashion-mlp")
