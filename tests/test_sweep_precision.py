"""The sweep's bfloat16 gradient passes (an approximation of the float32 attack): which hardware gets them by
default, and that their attacks stay valid PGD / FGSM results that agree with the plain float32 attack classes
on the shipped demo model and real Fashion-MNIST images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from advlens.attacks import FGSM, PGD
from advlens.errors import AttackError
from advlens.pipeline.sweep import (DEFAULT_SWEEP_EPS, attack_strengths, gradient_model, native_bfloat16,
                                    resolve_precision, sweep)

from conftest import FASHION_DIR, tiny_dataset, trained_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 7


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (read independently of torch)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_auto_precision_is_bfloat16_exactly_on_cpus_with_native_bfloat16():
    native = bool(_cpu_flags() & {"avx512_bf16", "amx_tile"})
    assert native_bfloat16("cpu") == native
    assert resolve_precision("auto", "cpu") == ("bfloat16" if native else "float32")
    assert resolve_precision("float32", "cpu") == "float32" and resolve_precision("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(AttackError, match="must be one of auto, bfloat16, float32, got 'half'"):
        resolve_precision("half", "cpu")


def test_the_bfloat16_gradient_model_computes_the_model_in_bfloat16():
    model = trained_tiny_model(tiny_dataset())
    images = tiny_dataset(16).images
    fast = gradient_model(model, "bfloat16")
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in fast.parameters())
    with torch.no_grad():
        logits, reference = fast(images), model(images)
    assert logits.dtype == torch.float32
    # 8 significant bits: close to the float32 logits, not equal to them
    np.testing.assert_allclose(logits.numpy(), reference.numpy(), atol=0.1 * reference.abs().max().item())
    assert not torch.equal(logits, reference)
    assert next(model.parameters()).dtype == torch.float32, "the model is left alone"


def _check_valid_and_agreeing(model, images: torch.Tensor, labels: torch.Tensor, eps, attack: str, steps: int,
                              delta: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """Assert each stored perturbation lies in its ε-ball and keeps the image in [0, 1]; return how many final
    predictions equal those after the plain float32 attack class on the model, and of how many."""
    delta = torch.from_numpy(delta).float()
    agree = 0
    for e, radius in enumerate(eps):
        # float16 storage: half a ulp of slack
        assert delta[e].abs().max() <= radius * (1 + 2 ** -11), f"{attack} ε = {radius}: outside the ε-ball"
        adversarial = images + delta[e]
        assert adversarial.min() >= -2 ** -12 and adversarial.max() <= 1 + 2 ** -11, f"{attack}: outside [0, 1]"
        runner = PGD(model, radius, radius / 4, steps) if attack == "pgd" else FGSM(model, radius)
        plain = runner(images, labels)
        with torch.no_grad():
            agree += int((pred[e] == model(plain).argmax(1).numpy()).sum())
    return agree, len(eps) * len(images)


def test_a_bfloat16_sweep_of_the_tiny_net_is_valid_and_agrees_with_the_float32_attack_classes():
    model = trained_tiny_model(tiny_dataset())
    data = tiny_dataset(48, seed=4)
    eps = (0.02, 0.1, 0.3)
    arrays = sweep(model, data.images, data.labels, ["1", "3"], eps, steps=STEPS, chunk=16, precision="bfloat16")
    agree, rows = _check_valid_and_agreeing(model, data.images, data.labels, eps, "pgd", STEPS,
                                            arrays["adv_delta"][0], arrays["adv_pred"][0])
    assert agree >= 0.97 * rows, f"pgd: {rows - agree} of {rows} final predictions differ from float32"
    agree, rows = _check_valid_and_agreeing(model, data.images, data.labels, eps, "fgsm", STEPS,
                                            arrays["adv_delta"][1], arrays["adv_pred"][1])
    assert agree == rows, "FGSM's one gradient stays float32: the attack class's result"


@pytest.fixture(scope="module")
def demo_sample():
    """The shipped demo model and 3 seeded true positives of each Fashion-MNIST class (30 images)."""
    from advlens.data import load_dataset
    from advlens.models import load_model
    from advlens.models.registry import demo_weights_path

    if not demo_weights_path().is_file():
        pytest.fail(f"the shipped demo weights {demo_weights_path()} are missing", pytrace=False)
    if not FASHION_DIR.is_dir():
        pytest.fail(f"{FASHION_DIR} is missing: the Debian package dataset-fashion-mnist, which `make setup` "
                    "installs, is not installed", pytrace=False)
    data = load_dataset("fashion-mnist", "test")
    model = load_model("fashion-resnet", class_names=data.class_names)
    generator = np.random.default_rng(8)
    candidates = generator.permutation(len(data.labels))[:200]
    images, labels = data.images[candidates], data.labels[candidates]
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).numpy()
    rows = np.concatenate([np.flatnonzero(correct & (labels.numpy() == c))[:3] for c in range(10)])
    return model, images[rows], labels[rows]


@pytest.mark.slow  # ~10 s of CPU (float32 PGD-7 at 6 strengths on 30 images), minutes on a loaded machine
def test_bfloat16_pgd_is_valid_and_agrees_with_the_float32_attack_class_on_the_demo_model(demo_sample):
    model, images, labels = demo_sample
    result = attack_strengths(model, images, labels, ["layer4"], DEFAULT_SWEEP_EPS, "pgd", STEPS,
                              precision="bfloat16")
    agree, rows = _check_valid_and_agreeing(model, images, labels, DEFAULT_SWEEP_EPS, "pgd", STEPS,
                                            result["delta"], result["pred"])
    assert agree >= 0.97 * rows, f"pgd: {rows - agree} of {rows} final predictions differ from float32"
