"""Shared fixtures: a tiny seeded CNN and a small generated dataset, so pipeline tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from advlens.data import ImageDataset
from advlens.models import AnalysedModel

ROOT = Path(__file__).resolve().parents[1]
DEMO_WEIGHTS = ROOT / "src" / "advlens" / "weights" / "fashion_resnet.safetensors"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def tiny_net(classes: int = 3, seed: int = 0) -> nn.Module:
    """Conv(1→4) → ReLU → Conv(4→6) → ReLU → global average pool → Linear(6→classes), seeded."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, classes),
    )


def tiny_dataset(count: int = 60, seed: int = 1) -> ImageDataset:
    """Three classes of noisy 8×8 images: bright top half, bright bottom half, bright left half."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 3
    images = 0.3 * torch.rand(count, 1, 8, 8, generator=generator)
    images[labels == 0, :, :4, :] += 0.5
    images[labels == 1, :, 4:, :] += 0.5
    images[labels == 2, :, :, :4] += 0.5
    return ImageDataset(images.clamp(0, 1), labels, ("a", "b", "c"), "tiny", "test")


def trained_tiny_model(data: ImageDataset, steps: int = 60) -> AnalysedModel:
    """The tiny net fitted for a few full-batch Adam steps, on one thread whatever the caller's setting, so that
    every module gets the same weights (a store built by one module's fixture is reused by another's, and the
    store checks the weights' fingerprint)."""
    model = AnalysedModel(tiny_net(), mean=(0.5,), std=(0.25,), input_shape=(1, 8, 8),
                          class_names=data.class_names, spec="tests:tiny")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(data.images), data.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: small nets gain nothing from more, and on a shared 2-core machine two
    threads only oversubscribe it (a module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model() -> AnalysedModel:
    return trained_tiny_model(tiny_dataset())


@pytest.fixture
def tiny_data() -> ImageDataset:
    """The training images with every 10th label shifted, so not every image is a true positive."""
    data = tiny_dataset()
    labels = data.labels.clone()
    labels[::10] = (labels[::10] + 1) % 3
    return ImageDataset(data.images, labels, data.class_names, data.name, data.split)


def write_npz_dataset(path: Path, data: ImageDataset) -> Path:
    np.savez(path, images=data.images.numpy(), labels=data.labels.numpy(), class_names=np.array(data.class_names))
    return path


def manual_pair_edit(model: AnalysedModel, benign, adversarial, module_name: str, channels, mode: str) -> torch.Tensor:
    """The edit with the test's own forward hooks on the raw network (a plain loop over channels)."""
    net = model.net
    module = net.get_submodule(module_name)
    normal = {side: (images - model.mean) / model.std for side, images in
              (("benign", benign), ("adversarial", adversarial))}
    recorded = {}
    for side in ("benign", "adversarial"):
        handle = module.register_forward_hook(lambda m, i, o, _s=side: recorded.__setitem__(_s, o.detach().clone()))
        try:
            with torch.no_grad():
                net(normal[side])
        finally:
            handle.remove()
    source, target = {"restore": ("benign", "adversarial"), "attack": ("adversarial", "benign"),
                      "zero_adversarial": (None, "adversarial"), "zero_benign": (None, "benign")}[mode]

    def replace(_m, _i, output):
        output = output.clone()
        for c in channels:
            output[:, c] = 0.0 if source is None else recorded[source][:, c]
        return output

    handle = module.register_forward_hook(replace)
    try:
        with torch.no_grad():
            return net(normal[target])
    finally:
        handle.remove()


USER_MODEL_MODULE = '''
import torch
from torch import nn

def build():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )
    net.mean, net.std = (0.5,), (0.25,)
    return net
'''
"""A user model module (``module:build`` spec) of the tiny net's architecture: tests write it to a folder on sys.path
and load the tiny model's weights into it."""
