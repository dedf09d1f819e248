"""Attacks in pixel space: budgets, hand-computed steps on a toy model, ART parity, input checks and
precomputed adversarial files. Fast: no real dataset, models are tiny or randomly initialised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advlens.attacks import FGSM, PGD, PrecomputedAttack
from advlens.errors import AttackError

SLACK = 1e-6


# ----------------------------------------------------------------------------------------------- helpers
def tiny_cnn(seed: int = 0) -> nn.Module:
    """A seeded random-init CNN on 1×8×8 pixel images (fast), in eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10),
    ).eval()


def tiny_batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images with some pixels exactly at 0 and 1 (so clipping is exercised), random labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 8, 8, generator=g)
    images[:, :, 0, :] = 0.0
    images[:, :, -1, :] = 1.0
    labels = torch.randint(0, 10, (n,), generator=g)
    return images, labels


# Toy linear model with hand-set weights: Flatten → Linear(4, 3) on a 1×2×2 image.
W = np.array([[1.0, -2.0, 0.5, 3.0], [-1.0, 1.0, 2.0, -0.5], [0.5, 0.5, -1.0, 1.0]])
B = np.array([0.1, -0.2, 0.0])
X = np.array([0.5, 0.4, 0.6, 0.3])  # flattened 1×2×2 image, far enough from 0 and 1 for the steps used


def toy_linear(scale: float = 1.0) -> nn.Module:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor(W * scale, dtype=torch.float32))
        net[1].bias.copy_(torch.tensor(B, dtype=torch.float32))
    return net.eval()


def toy_image() -> torch.Tensor:
    return torch.tensor(X, dtype=torch.float32).view(1, 1, 2, 2)


def hand_gradient(label: int, scale: float = 1.0, x: np.ndarray = X) -> np.ndarray:
    """∂ CE(softmax(Wx + b), label) / ∂x = Wᵀ (softmax(Wx + b) − e_label), computed without autograd."""
    w = W * scale
    z = w @ x + B
    p = np.exp(z - z.max())
    p /= p.sum()
    return w.T @ (p - np.eye(3)[label])


def linf(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).abs().amax(dim=1)


def l2(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1)


# ----------------------------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm,eps,alpha,steps", [("linf", 8 / 255, 2 / 255, 7), ("l2", 0.5, 0.2, 10)],
                         ids=["linf", "l2"])
def test_pgd_stays_within_eps_and_pixel_range(norm, eps, alpha, steps, targeted, random_start):
    model = tiny_cnn()
    images, labels = tiny_batch()
    adversarial = PGD(model, eps=eps, alpha=alpha, steps=steps, norm=norm, targeted=targeted,
                      random_start=random_start, seed=3)(images, labels)
    assert adversarial.shape == images.shape and adversarial.dtype == images.dtype
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    delta = adversarial - images
    size = linf(delta) if norm == "linf" else l2(delta)
    assert torch.all(size <= eps + SLACK), size.max()
    assert torch.all(size > 0.5 * eps)  # the attack moved every image well into the ball (not vacuous)


def test_fgsm_stays_within_eps_and_pixel_range():
    images, labels = tiny_batch()
    adversarial = FGSM(tiny_cnn(), eps=0.05)(images, labels)
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    assert torch.all(linf(adversarial - images) <= 0.05 + SLACK)


def test_attack_leaves_model_mode_and_parameter_gradients_alone():
    model = tiny_cnn().train()
    images, labels = tiny_batch()
    PGD(model, steps=2)(images, labels)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------- hand-set toy linear model
def test_toy_gradient_has_no_zero_component():
    # guards the tests below: a zero component would make the sign (and the expected step) ambiguous
    for label in range(3):
        assert np.all(np.abs(hand_gradient(label)) > 0.1)


@pytest.mark.parametrize("label", [0, 1, 2])
def test_one_linf_step_moves_each_pixel_by_alpha_along_gradient_sign(label):
    alpha = 0.05
    adversarial = PGD(toy_linear(), eps=0.1, alpha=alpha, steps=1, norm="linf")(toy_image(), torch.tensor([label]))
    expected = X + alpha * np.sign(hand_gradient(label))
    np.testing.assert_allclose(adversarial.flatten().numpy(), expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.abs(adversarial.flatten().numpy() - X), alpha, rtol=0, atol=1e-7)


def test_linf_step_larger_than_eps_is_projected_to_eps():
    adversarial = PGD(toy_linear(), eps=0.03, alpha=0.05, steps=1)(toy_image(), torch.tensor([0]))
    np.testing.assert_allclose(adversarial.flatten().numpy(), X + 0.03 * np.sign(hand_gradient(0)), atol=1e-7)


def test_linf_step_is_clipped_to_pixel_range():
    image = toy_image().clone()
    image[0, 0, 0, 1] = 1.0  # gradient sign for label 0 at this pixel is +1: the step would leave [0, 1]
    adversarial = PGD(toy_linear(), eps=0.1, alpha=0.05, steps=1)(image, torch.tensor([0]))
    assert adversarial[0, 0, 0, 1].item() == 1.0


@pytest.mark.parametrize("target", [0, 1, 2])
def test_targeted_linf_step_descends_target_loss_and_raises_target_logit(target):
    model, image = toy_linear(), toy_image()
    alpha = 0.05
    adversarial = PGD(model, eps=0.1, alpha=alpha, steps=1, targeted=True)(image, torch.tensor([target]))
    expected = X - alpha * np.sign(hand_gradient(target))
    np.testing.assert_allclose(adversarial.flatten().numpy(), expected, rtol=0, atol=1e-7)
    with torch.no_grad():
        before, after = model(image)[0], model(adversarial)[0]
    assert after[target] > before[target]
    assert torch.softmax(after, 0)[target] > torch.softmax(before, 0)[target]


def test_one_l2_step_moves_alpha_along_normalized_gradient():
    alpha = 0.1
    adversarial = PGD(toy_linear(), eps=1.0, alpha=alpha, steps=1, norm="l2")(toy_image(), torch.tensor([2]))
    g = hand_gradient(2)
    np.testing.assert_allclose(adversarial.flatten().numpy(), X + alpha * g / np.linalg.norm(g), atol=1e-6)


def test_l2_step_has_length_alpha_even_for_small_gradients():
    scale = 1e-6  # W scaled down: ‖∂loss/∂x‖ ≈ 1e-6, a confidently classified image's order of magnitude
    alpha = 0.1
    g = hand_gradient(1, scale)
    assert 1e-7 < np.linalg.norm(g) < 1e-5
    adversarial = PGD(toy_linear(scale), eps=1.0, alpha=alpha, steps=1, norm="l2")(toy_image(), torch.tensor([1]))
    step = adversarial.flatten().double().numpy() - X
    np.testing.assert_allclose(np.linalg.norm(step), alpha, rtol=1e-4)


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_equals_one_step_of_size_eps(targeted):
    model, image, label = toy_linear(), toy_image(), torch.tensor([1])
    eps = 0.04
    fgsm = FGSM(model, eps=eps, targeted=targeted)(image, label)
    pgd = PGD(model, eps=eps, alpha=eps, steps=1, targeted=targeted)(image, label)
    sign = -1.0 if targeted else 1.0
    np.testing.assert_allclose(fgsm.flatten().numpy(), X + sign * eps * np.sign(hand_gradient(1)), atol=1e-7)
    assert torch.equal(fgsm, pgd)


@pytest.mark.parametrize("eps,expected_step", [(1.0, 0.2), (0.15, 0.15)], ids=["inside-ball", "projected"])
def test_two_l2_steps_take_the_gradient_at_the_new_point(eps, expected_step):
    # on the linear toy the L∞ signs do not change between steps, but the L2 direction does
    alpha = 0.1
    x1 = X + alpha * hand_gradient(2) / np.linalg.norm(hand_gradient(2))
    g1 = hand_gradient(2, x=x1)
    x2 = x1 + alpha * g1 / np.linalg.norm(g1)
    delta = x2 - X
    expected = X + delta * min(1.0, eps / np.linalg.norm(delta))  # projection onto the ε-ball
    assert np.linalg.norm(expected - (X + 2 * alpha * hand_gradient(2) / np.linalg.norm(hand_gradient(2)))) > 1e-3
    adversarial = PGD(toy_linear(), eps=eps, alpha=alpha, steps=2, norm="l2")(toy_image(), torch.tensor([2]))
    np.testing.assert_allclose(adversarial.flatten().numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(adversarial.flatten().double().numpy() - X), expected_step, rtol=1e-3)


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_on_a_cnn_is_one_sign_step_of_the_autograd_gradient(targeted):
    model = tiny_cnn()
    images, labels = tiny_batch()
    x = images.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), labels)  # mean or sum: the sign is the same
    (gradient,) = torch.autograd.grad(loss, x)
    direction = -gradient.sign() if targeted else gradient.sign()
    expected = (images + 0.03 * direction).clamp(0, 1)
    adversarial = FGSM(model, eps=0.03, targeted=targeted)(images, labels)
    torch.testing.assert_close(adversarial, expected, rtol=0, atol=1e-7)
    moved = (adversarial - images).abs()
    assert (moved > 0.029).float().mean() > 0.5  # most pixels moved by ε (not those at 0/1 pushed outwards)
    assert torch.equal(PGD(model, eps=0.03, alpha=0.03, steps=1, targeted=targeted)(images, labels), adversarial)


# ------------------------------------------------------------------------------------------- ART parity
@pytest.fixture(scope="module")
def fashion_adapter():
    from advlens.models.adapter import AnalysedModel
    from advlens.models.fashion_resnet import FashionResNet

    torch.manual_seed(0)
    return AnalysedModel(FashionResNet(), mean=(0.286,), std=(0.353,), input_shape=(1, 28, 28),
                         class_names=[str(i) for i in range(10)]).eval()


@pytest.fixture(scope="module")
def fashion_batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("norm,eps,alpha", [("linf", 8 / 255, 2 / 255), ("l2", 1.0, 0.25)], ids=["linf", "l2"])
def test_pgd_matches_art_without_random_start(fashion_adapter, fashion_batch, monkeypatch, norm, eps, alpha,
                                               targeted):
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    images, labels = fashion_batch
    steps = 7
    ours = PGD(fashion_adapter, eps=eps, alpha=alpha, steps=steps, norm=norm, targeted=targeted)(images, labels)

    classifier = PyTorchClassifier(model=fashion_adapter, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                   nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    art_attack = ProjectedGradientDescent(classifier, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=alpha,
                                          max_iter=steps, targeted=targeted, num_random_init=0,
                                          batch_size=len(images), verbose=False)
    theirs = art_attack.generate(images.numpy(), labels.numpy())

    # ART averages the loss over the batch, advlens sums it: per-image gradients differ by the factor N, which
    # neither the sign (L∞) nor the per-image normalisation (L2) sees. No sign ties at exactly-zero gradient
    # occur on this batch, so no element is exempted.
    difference = np.abs(ours.numpy() - theirs)
    assert difference.max() <= 1e-5, (difference.max(), int((difference > 1e-5).sum()))
    assert np.abs(ours.numpy() - images.numpy()).max() > 0.5 * alpha  # both actually attacked


# ------------------------------------------------------------------------------ random start and checks
@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)], ids=["linf", "l2"])
def test_random_start_is_reproducible_and_differs_from_plain_start(norm, eps):
    model = tiny_cnn()
    images, labels = tiny_batch()

    def run(**kwargs):
        return PGD(model, eps=eps, alpha=eps / 4, steps=2, norm=norm, **kwargs)(images, labels)

    first, again = run(random_start=True, seed=5), run(random_start=True, seed=5)
    assert torch.equal(first, again)
    assert not torch.allclose(first, run(random_start=False), atol=1e-4)
    assert not torch.allclose(first, run(random_start=True, seed=6), atol=1e-4)


def test_random_start_sequence_is_reproducible_per_instance():
    # the seeded generator advances across calls (each batch gets its own start); a fresh instance with the same
    # seed replays the same sequence
    model = tiny_cnn()
    images, labels = tiny_batch()
    attack = PGD(model, eps=0.1, alpha=0.02, steps=1, random_start=True, seed=5)
    first, second = attack(images, labels), attack(images, labels)
    assert not torch.allclose(first, second, atol=1e-4)
    replay = PGD(model, eps=0.1, alpha=0.02, steps=1, random_start=True, seed=5)
    assert torch.equal(replay(images, labels), first) and torch.equal(replay(images, labels), second)


@pytest.mark.parametrize("kwargs", [
    dict(eps=-0.1), dict(norm="l3"), dict(norm="l1"), dict(alpha=0.0), dict(alpha=-1.0), dict(steps=0),
])
def test_pgd_rejects_invalid_parameters(kwargs):
    with pytest.raises(AttackError):
        PGD(tiny_cnn(), **kwargs)


def test_fgsm_rejects_negative_eps():
    with pytest.raises(AttackError):
        FGSM(tiny_cnn(), eps=-0.01)


@pytest.mark.parametrize("attack", [lambda m: PGD(m, steps=1), lambda m: FGSM(m)], ids=["pgd", "fgsm"])
@pytest.mark.parametrize("low,high", [(-0.1, 1.0), (0.0, 1.5), (-0.4, 2.0)], ids=["below", "above", "normalized"])
def test_attacks_reject_images_outside_pixel_range(attack, low, high):
    images, labels = tiny_batch(2)
    images = images * (high - low) + low
    with pytest.raises(AttackError, match=r"\[0, 1\]"):
        attack(tiny_cnn())(images, labels)


def test_attacks_reject_bad_shapes():
    images, labels = tiny_batch(2)
    with pytest.raises(AttackError):
        PGD(tiny_cnn())(images[0], labels)
    with pytest.raises(AttackError):
        PGD(tiny_cnn())(images, labels[:1])


def test_pgd_config_records_parameters():
    config = PGD(tiny_cnn(), eps=0.1, alpha=0.02, steps=3, norm="L2", random_start=True, seed=9).config()
    assert config == {"name": "pgd", "eps": 0.1, "alpha": 0.02, "steps": 3, "norm": "l2", "random_start": True,
                      "targeted": False, "seed": 9}


# ---------------------------------------------------------------------------------------- precomputed
@pytest.fixture
def adversarial_rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((3, 1, 4, 4), dtype=np.float32)


def test_precomputed_with_indices_looks_rows_up_by_dataset_index(tmp_path, adversarial_rows):
    path = tmp_path / "adv.npz"
    np.savez(path, adversarial=adversarial_rows, indices=np.array([10, 2, 7]))
    attack = PrecomputedAttack(path, (1, 4, 4))
    images, found = attack.lookup(np.array([2, 5, 10, 7, 0]))
    assert found.tolist() == [True, False, True, True, False]
    assert images.shape == (5, 1, 4, 4) and images.dtype == torch.float32
    np.testing.assert_array_equal(images[0].numpy(), adversarial_rows[1])
    np.testing.assert_array_equal(images[2].numpy(), adversarial_rows[0])
    np.testing.assert_array_equal(images[3].numpy(), adversarial_rows[2])
    assert torch.all(images[[1, 4]] == 0)
    assert attack.config()["name"] == "file" and len(attack.config()["sha256"]) == 64


def test_precomputed_without_indices_aligns_rows_to_dataset_order(tmp_path, adversarial_rows):
    path = tmp_path / "adv.npz"
    np.savez(path, adversarial=adversarial_rows)
    images, found = PrecomputedAttack(path, (1, 4, 4)).lookup(np.array([2, 0, 3]))
    assert found.tolist() == [True, True, False]
    np.testing.assert_array_equal(images[0].numpy(), adversarial_rows[2])
    np.testing.assert_array_equal(images[1].numpy(), adversarial_rows[0])


def test_precomputed_accepts_uint8_channels_last(tmp_path):
    rows = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    path = tmp_path / "adv.npz"
    np.savez(path, adversarial=rows)
    images, found = PrecomputedAttack(path, (3, 4, 4)).lookup(np.array([1]))
    assert found.tolist() == [True]
    np.testing.assert_allclose(images[0].numpy(), rows[1].transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_precomputed_wrong_image_shape_names_the_file(tmp_path, adversarial_rows):
    path = tmp_path / "wrong_shape.npz"
    np.savez(path, adversarial=adversarial_rows)
    with pytest.raises(AttackError, match="wrong_shape.npz"):
        PrecomputedAttack(path, (1, 28, 28))


def test_precomputed_missing_adversarial_array_names_the_file(tmp_path, adversarial_rows):
    path = tmp_path / "no_adv.npz"
    np.savez(path, images=adversarial_rows)
    with pytest.raises(AttackError, match="no_adv.npz.*adversarial"):
        PrecomputedAttack(path, (1, 4, 4))


def test_precomputed_rejects_missing_file_misaligned_indices_and_out_of_range(tmp_path, adversarial_rows):
    with pytest.raises(AttackError, match="missing.npz"):
        PrecomputedAttack(tmp_path / "missing.npz", (1, 4, 4))
    misaligned = tmp_path / "misaligned.npz"
    np.savez(misaligned, adversarial=adversarial_rows, indices=np.array([0, 1]))
    with pytest.raises(AttackError, match="misaligned.npz"):
        PrecomputedAttack(misaligned, (1, 4, 4))
    out_of_range = tmp_path / "out_of_range.npz"
    np.savez(out_of_range, adversarial=adversarial_rows * 3)
    with pytest.raises(AttackError, match="out_of_range.npz"):
        PrecomputedAttack(out_of_range, (1, 4, 4))
