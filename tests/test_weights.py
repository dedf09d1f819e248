"""Weights loading (safetensors / weights_only state dicts) and the model registry."""

from __future__ import annotations

import gzip
import os
import sys
import textwrap
from collections import OrderedDict
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from advlens.data.cifar import CIFAR10_CLASSES
from advlens.data.idx import FASHION_MNIST_CLASSES
from advlens.errors import ModelError
from advlens.models import load_model
from advlens.models.cifar_resnet import CIFAR10_MEAN, CIFAR10_STD, CifarResNet18
from advlens.models.fashion_resnet import FASHION_MNIST_MEAN, FASHION_MNIST_STD, FashionResNet
from advlens.models.registry import demo_weights_path
from advlens.models.weights import load_weights, read_state_dict


def small_net() -> nn.Sequential:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), bn=nn.BatchNorm2d(2),
                                     pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(2, 3)))


def randomized(net: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter and float buffer with seeded values, so a default init cannot pass for a load."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + (0.5 if "running_var" in name else 0.0))
            else:
                tensor.fill_(7)
    return net


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


class EvilPayload:
    """Unpickling this calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class Arbitrary:
    def __init__(self) -> None:
        self.value = 3


# --------------------------------------------------------------------------------------------- weights


def test_safetensors_round_trip_fashion_resnet(tmp_path):
    source = randomized(FashionResNet(), seed=1).eval()
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))
    target = FashionResNet().eval()
    load_weights(target, path)
    assert_same_state(source, target)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(source(x), target(x), rtol=0, atol=1e-6)


def test_torch_save_round_trip_and_wrapped_checkpoint(tmp_path):
    source = randomized(small_net(), seed=2)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    target = small_net()
    load_weights(target, path)
    assert_same_state(source, target)
    for wrapper in ("state_dict", "model_state_dict", "model"):
        torch.save({wrapper: source.state_dict(), "epoch": 3}, path)
        assert read_state_dict(path).keys() == source.state_dict().keys()
        target = small_net()
        load_weights(target, path)
        assert_same_state(source, target)


@pytest.mark.parametrize("prefix", ["module.", "model."])
def test_prefix_is_stripped(tmp_path, prefix):
    source = randomized(small_net(), seed=3)
    path = tmp_path / "w.pt"
    torch.save({prefix + k: v for k, v in source.state_dict().items()}, path)
    target = small_net()
    load_weights(target, path)
    assert_same_state(source, target)


def test_mismatched_keys_listed(tmp_path):
    state = small_net().state_dict()
    state["head.weight"] = state.pop("fc.weight")
    state["extra.bias"] = torch.zeros(2)
    del state["bn.running_mean"]
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    target = small_net()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ModelError) as info:
        load_weights(target, path)
    message = str(info.value)
    assert "missing keys: bn.running_mean, fc.weight" in message
    assert "unexpected keys: extra.bias, head.weight" in message
    assert str(path) in message
    for key, value in target.state_dict().items():  # nothing half-loaded
        assert torch.equal(value, before[key])


def test_shape_mismatch_listed(tmp_path):
    state = small_net().state_dict()
    state["fc.weight"] = torch.zeros(5, 2)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"shape mismatches: fc.weight: file \(5, 2\) vs model \(3, 2\)"):
        load_weights(small_net(), path)


def test_long_key_lists_are_cut(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({f"junk{i:02d}": torch.zeros(1) for i in range(25)}, path)
    with pytest.raises(ModelError, match=r"\(25 in all\)") as info:
        load_weights(small_net(), path)
    assert "junk19" in str(info.value) and "junk20" not in str(info.value)


def test_arbitrary_pickle_refused_without_side_effect(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(3, 2), "payload": EvilPayload(f"touch {marker}")}, path)
    with pytest.raises(ModelError, match="weights_only=True") as info:
        read_state_dict(path)
    assert "trust_pickle" in str(info.value)
    assert not marker.exists()
    with pytest.raises(ModelError):
        load_weights(small_net(), path)
    assert not marker.exists()
    torch.save(Arbitrary(), path)
    with pytest.raises(ModelError, match="weights_only"):
        read_state_dict(path)


def test_trust_pickle_allows_a_whole_module(tmp_path):
    source = randomized(small_net(), seed=4)
    path = tmp_path / "whole.pt"
    torch.save(source, path)
    with pytest.raises(ModelError):
        read_state_dict(path)
    target = small_net()
    load_weights(target, path, trust_pickle=True)
    assert_same_state(source, target)


def test_unreadable_files(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        read_state_dict(tmp_path / "nothing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot read safetensors"):
        read_state_dict(bad)
    garbage = tmp_path / "bad.pt"
    garbage.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot load"):
        read_state_dict(garbage)
    not_tensors = tmp_path / "numbers.pt"
    torch.save({"a": 1, "b": [2]}, not_tensors)
    with pytest.raises(ModelError, match="state dict of tensors"):
        read_state_dict(not_tensors)


# -------------------------------------------------------------------------------------------- registry


def test_unknown_spec():
    with pytest.raises(ModelError, match="unknown model spec 'resnet-1000'") as info:
        load_model("resnet-1000")
    assert "fashion-resnet" in str(info.value) and "cifar-resnet18" in str(info.value)


def test_cifar_resnet18_needs_weights():
    with pytest.raises(ModelError, match="--weights"):
        load_model("cifar-resnet18")


def test_cifar_resnet18_with_saved_state_dict(tmp_path):
    source = CifarResNet18().eval()
    path = tmp_path / "cifar.pt"
    torch.save(source.state_dict(), path)
    model = load_model("cifar-resnet18", path)
    assert model.input_shape == (3, 32, 32)
    assert model.num_classes == 10 and model.class_names == CIFAR10_CLASSES
    assert model.analysed_layer_name == "layer4" and model.dense_layer_name == "linear"
    assert torch.allclose(model.mean.flatten(), torch.tensor(CIFAR10_MEAN))
    assert torch.allclose(model.std.flatten(), torch.tensor(CIFAR10_STD))
    assert not model.training
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        out = model.activations(x)
        by_hand = (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
        torch.testing.assert_close(out.logits, source(by_hand), rtol=0, atol=1e-5)
    assert out.feature_maps.shape == (1, 512, 4, 4) and out.pooled.shape == (1, 512)
    torch.testing.assert_close(out.pooled, out.feature_maps.mean(dim=(2, 3)), rtol=0, atol=1e-5)  # layer4, pooled


def test_cifar_resnet18_rejects_other_weights(tmp_path):
    path = tmp_path / "fashion.safetensors"
    save_file(FashionResNet().state_dict(), str(path))
    with pytest.raises(ModelError, match="do not match"):
        load_model("cifar-resnet18", path)


def test_fashion_resnet_with_given_weights(tmp_path):
    source = randomized(FashionResNet(), seed=5).eval()
    path = tmp_path / "fashion.safetensors"
    save_file(source.state_dict(), str(path))
    model = load_model("fashion-resnet", path)
    assert model.input_shape == (1, 28, 28) and model.class_names == FASHION_MNIST_CLASSES
    assert model.analysed_layer_name == "layer4" and model.dense_layer_name == "fc"
    assert float(model.mean) == pytest.approx(FASHION_MNIST_MEAN[0])
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        out = model.activations(x)
        by_hand = (x - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
        torch.testing.assert_close(out.logits, source(by_hand), rtol=0, atol=1e-5)
    assert out.feature_maps.shape == (2, 256, 7, 7) and out.pooled.shape == (2, 256)
    torch.testing.assert_close(out.pooled, out.feature_maps.mean(dim=(2, 3)), rtol=0, atol=1e-5)
    with pytest.raises(ModelError, match="missing"):
        load_model("fashion-resnet", tmp_path / "absent.safetensors")


def read_fashion_test_split(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` Fashion-MNIST test images and labels, read without advlens (gzip + IDX offsets)."""
    folder = Path("/usr/share/datasets/fashion-mnist")
    images_file, labels_file = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    if not (images_file.is_file() and labels_file.is_file()):
        pytest.fail(f"{folder} lacks the test split: the Debian package dataset-fashion-mnist, which `make setup` "
                    "installs, is not installed", pytrace=False)
    with gzip.open(images_file, "rb") as handle:
        pixels = np.frombuffer(handle.read()[16:16 + count * 784], dtype=np.uint8).reshape(count, 1, 28, 28)
    with gzip.open(labels_file, "rb") as handle:
        labels = np.frombuffer(handle.read()[8:8 + count], dtype=np.uint8)
    return torch.from_numpy(pixels.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


def test_fashion_resnet_shipped_weights():
    path = demo_weights_path()
    if not path.is_file():  # a packaging bug, never a reason to skip
        pytest.fail(f"the shipped demo weights {path} are missing: advlens's package data (weights/*.safetensors "
                    "in pyproject.toml) was not installed", pytrace=False)
    assert path.parent == Path(str(resources.files("advlens"))) / "weights"  # inside the installed package
    model = load_model("fashion-resnet")
    shipped = load_file(str(path))  # the file itself, read by safetensors
    loaded = model.net.state_dict()
    assert loaded.keys() == shipped.keys()
    for key, value in shipped.items():
        assert torch.equal(loaded[key], value), key
    assert model.analysed_layer_name == "layer4" and model.num_classes == 10
    # the demo model of the README: ≈ 92% on the test split (91.6% on all 10 000); chance is 10%
    images, labels = read_fashion_test_split(500)
    with torch.no_grad():
        out = model.activations(images)
    accuracy = float((out.logits.argmax(1) == labels).float().mean())
    assert accuracy >= 0.88, f"the shipped demo weights classify only {accuracy:.1%} of 500 test images"
    # the dense layer's inputs are the analysed layer's channels, globally average-pooled
    assert out.feature_maps.shape == (500, 256, 7, 7)
    torch.testing.assert_close(out.pooled, out.feature_maps.mean(dim=(2, 3)), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.logits, out.pooled @ shipped["fc.weight"].T + shipped["fc.bias"], rtol=0,
                               atol=1e-4)


# ------------------------------------------------------------------------------------ module.path:factory

FACTORY_SOURCE = textwrap.dedent('''
    from collections import OrderedDict
    import torch
    from torch import nn

    def make():
        torch.manual_seed(0)
        net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, padding=1), relu=nn.ReLU(),
                                        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(4, 2)))
        net.class_names = ("cat", "dog")
        net.input_shape = (3, 8, 8)
        return net

    def make_normalized():
        net = make()
        net.mean = (0.5, 0.5, 0.5)
        net.std = (0.25, 0.25, 0.25)
        return net

    def make_bare():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 2))

    def not_a_module():
        return 42

    NOT_CALLABLE = 1
''')


@pytest.fixture
def factory_module(tmp_path, monkeypatch, request):
    name = f"advlens_test_factory_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_factory_spec_picks_up_attributes(factory_module):
    model = load_model(f"{factory_module}:make")
    assert model.class_names == ("cat", "dog") and model.input_shape == (3, 8, 8)
    assert model.spec == f"{factory_module}:make"
    assert model.analysed_layer_name == "relu" and model.dense_layer_name == "fc"
    assert torch.equal(model.mean.flatten(), torch.zeros(3)) and torch.equal(model.std.flatten(), torch.ones(3))
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(model(x), model.net(x))  # mean 0, std 1: no change


def test_factory_spec_mean_std_attributes_and_overrides(factory_module):
    model = load_model(f"{factory_module}:make_normalized")
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(model(x), model.net((x - 0.5) / 0.25))
    # (analysed_layer= overrides are tested with the layer checks in test_model_adapter.py: here only "relu"
    # feeds the pooling, so no other layer could be named)
    model = load_model(f"{factory_module}:make_normalized", class_names=("a", "b"), mean=(0.0, 0.0, 0.0),
                       std=(1.0, 1.0, 1.0))
    assert model.class_names == ("a", "b") and model.analysed_layer_name == "relu"
    assert torch.equal(model(x), model.net(x))


def test_factory_spec_with_weights(factory_module, tmp_path):
    module = __import__(factory_module)
    source = randomized(module.make(), seed=6)
    path = tmp_path / "user.safetensors"
    save_file(source.state_dict(), str(path))
    model = load_model(f"{factory_module}:make", path)
    assert_same_state(source, model.net)


def test_factory_spec_errors(factory_module):
    with pytest.raises(ModelError, match="cannot import 'no_such_module_xyz'"):
        load_model("no_such_module_xyz:make")
    with pytest.raises(ModelError, match="no callable 'missing'"):
        load_model(f"{factory_module}:missing")
    with pytest.raises(ModelError, match="no callable 'NOT_CALLABLE'"):
        load_model(f"{factory_module}:NOT_CALLABLE")
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        load_model(f"{factory_module}:not_a_module")
    with pytest.raises(ModelError, match="class_names and input_shape"):
        load_model(f"{factory_module}:make_bare")
    model = load_model(f"{factory_module}:make_bare", class_names=("x", "y"), input_shape=(3, 6, 6))
    assert model.input_shape == (3, 6, 6) and model.analysed_layer_name == "0"
