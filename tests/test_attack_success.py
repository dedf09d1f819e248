"""PGD fools the shipped demo model on real Fashion-MNIST test images.

Attacks the true positives among the first 2000 test images (≈1850 images, 17 PGD steps in all), which
takes minutes on a CPU: marked slow, run with ``pytest -m slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advlens.attacks import PGD

pytestmark = pytest.mark.slow

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
N_IMAGES = 2000
BATCH = 250


@pytest.fixture(scope="module")
def true_positives():
    from advlens.models.registry import demo_weights_path

    # both ship with the project (package data; a Debian package the Makefile installs): missing is a bug
    if not demo_weights_path().is_file():
        pytest.fail(f"the shipped demo weights {demo_weights_path()} are missing: advlens's package data "
                    "(weights/*.safetensors in pyproject.toml) was not installed", pytrace=False)
    if not FASHION_MNIST_DIR.is_dir():
        pytest.fail(f"{FASHION_MNIST_DIR} is missing: the Debian package dataset-fashion-mnist, which `make setup` "
                    "installs, is not installed", pytrace=False)
    from advlens.data import load_dataset
    from advlens.models import load_model

    model = load_model("fashion-resnet")
    dataset = load_dataset("fashion-mnist", "test")
    images, labels = dataset.images[:N_IMAGES], dataset.labels[:N_IMAGES]
    with torch.no_grad():
        predicted = torch.cat([model(images[i:i + BATCH]).argmax(1) for i in range(0, len(images), BATCH)])
    correct = predicted == labels
    assert correct.float().mean() > 0.85, "the demo model should classify most test images correctly"
    return model, images[correct], labels[correct]


@pytest.mark.parametrize("eps,alpha,steps,minimum", [
    (8 / 255, 2 / 255, 7, 0.70),  # the setting of paper 001
    (0.1, 0.025, 10, 0.95),
], ids=["eps8-255", "eps0.1"])
def test_pgd_fools_most_true_positives(true_positives, eps, alpha, steps, minimum):
    model, images, labels = true_positives
    attack = PGD(model, eps=eps, alpha=alpha, steps=steps)
    fooled = []
    for i in range(0, len(images), BATCH):
        x, y = images[i:i + BATCH], labels[i:i + BATCH]
        adversarial = attack(x, y)
        assert (adversarial - x).abs().max() <= eps + 1e-6
        with torch.no_grad():
            fooled.append(model(adversarial).argmax(1) != y)
    rate = torch.cat(fooled).float().mean().item()
    assert rate >= minimum, f"PGD fooled only {rate:.1%} of {len(images)} true positives (expected ≥ {minimum:.0%})"
