"""Datapaths on the demo model with Fashion-MNIST (spec-003 §6 A2, A3): slow, run with ``-m slow``."""

from __future__ import annotations

import pytest
import torch

from advlens.attacks import PGD
from advlens.data import load_dataset
from advlens.datapaths import critical_set, extract_datapaths
from advlens.models import load_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # one_thread: tests/conftest.py


@pytest.fixture(scope="module")
def demo():
    return load_model("fashion-resnet")


@pytest.fixture(scope="module")
def pairs(demo):
    """Correctly classified test images whose PGD (ε = 8/255) adversarial is misclassified. Shapes: (N, 1, 28, 28)."""
    data = load_dataset("fashion-mnist", split="test")
    images, labels = data.images[:200], data.labels[:200]
    with torch.no_grad():
        correct = demo(images).argmax(1) == labels
    images, labels = images[correct], labels[correct]
    adversarial = PGD(demo, eps=8 / 255, alpha=2 / 255, steps=10)(images, labels)
    with torch.no_grad():
        fooled = demo(adversarial).argmax(1) != labels
    return images[fooled][:40], adversarial[fooled][:40]


def random_mask_labels(model, images, paths, seed: int = 0) -> torch.Tensor:
    """Predictions with a random binary mask of the same per-layer counts as D at τ = .5 (by hand)."""
    generator = torch.Generator().manual_seed(seed)
    labels = []
    for row in range(len(images)):
        masks = {}
        for layer, z in paths.by_layer().items():
            count = int((z[row] >= 0.5).sum())
            mask = torch.zeros(z.shape[1])
            mask[torch.randperm(z.shape[1], generator=generator)[:count]] = 1
            masks[layer] = mask.view(1, -1, 1, 1)
        replace = {layer: (lambda a, m=m: a * m) for layer, m in masks.items()}
        with torch.no_grad(), model.tapping((), replace):
            labels.append(int(model(images[row:row + 1]).argmax()))
    return torch.tensor(labels)


def test_datapaths_keep_the_prediction(demo, pairs):
    """A2 (40 clean + 40 adversarial, γ̃ = 0): continuous z keeps the label in ≥ 99%; binary τ = .5 in ≥ 90%
    per role, 100% after the guard; a random mask of the same per-layer counts in ≤ 30%."""
    for images in pairs:
        paths = extract_datapaths(demo, images, gamma=0.0)
        assert paths.label_kept.float().mean() >= 0.99
        sets = critical_set(paths, 0.5, model=demo, images=images)
        binary = (sets.tau == 0.5) & sets.label_kept
        assert binary.float().mean() >= 0.9
        assert sets.label_kept.all()
        assert (random_mask_labels(demo, images, paths) == paths.labels).float().mean() <= 0.3


def test_sparsity_is_monotone_in_lambda(demo, pairs):
    """A3: the mean kept fraction strictly decreases over λ̃ ∈ {0.01, 0.03, 0.1, 0.3} (40 clean images)."""
    images = pairs[0]
    kept = [extract_datapaths(demo, images, lam=lam).kept_fraction().mean().item() for lam in (0.01, 0.03, 0.1, 0.3)]
    assert all(a > b for a, b in zip(kept, kept[1:])), kept
