"""Feature visualisation: the acceptance criterion on the demo model, reproducibility, and its parts
(affine transforms, blur, Fourier parameterisation) against independent computations."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import DEMO_WEIGHTS, FASHION_DIR
from scipy import ndimage
from torch import nn

import advlens
from advlens.errors import ConfigError, ModelError
from advlens.features import feature_visualization
from advlens.features.parameterization import COLOR_CORRELATION, FourierImage, PixelImage, spectrum_scale
from advlens.features.transforms import affine_transform
from advlens.models import AnalysedModel
from advlens.models.adapter import find_module


def rgb_model() -> AnalysedModel:
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 5, 3, padding=1), relu=nn.ReLU(), conv2=nn.Conv2d(5, 4, 3),
                                    pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(4, 2)))
    return AnalysedModel(net, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), (3, 16, 16), ("a", "b"))


def grey_model() -> AnalysedModel:
    torch.manual_seed(1)
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 6, 3, padding=1), relu=nn.ReLU(),
                                    pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(6, 3)))
    return AnalysedModel(net, (0.3,), (0.3,), (1, 12, 12), ("a", "b", "c"))


def mean_activations(model: AnalysedModel, layers: list[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Spatial mean of every channel of some modules' outputs, by plain forward hooks; a name ending in
    ``.relu`` is a block's inner ``torch.relu(bn1(…))``, computed from ``bn1``'s output. Shape: (N, K) each."""
    store: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    handles = []
    for layer in layers:
        functional = layer.endswith(".relu")
        module = find_module(model.net, layer.removesuffix(".relu") + ".bn1" if functional else layer)

        def hook(_m, _a, out, layer=layer, functional=functional):
            store[layer].append((torch.relu(out) if functional else out).mean(dim=(2, 3)))
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for batch in images.split(500):
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {layer: torch.cat(values) for layer, values in store.items()}


def mean_activation(model: AnalysedModel, layer: str, images: torch.Tensor) -> torch.Tensor:
    return mean_activations(model, [layer], images)[layer]


# ------------------------------------------------------------------------------------- acceptance


def test_demo_channels_beat_the_95th_percentile_of_1000_test_images():
    assert DEMO_WEIGHTS.is_file() and FASHION_DIR.is_dir(), "demo weights and dataset-fashion-mnist are shipped"
    model = advlens.load_model("fashion-resnet")
    background = advlens.load_dataset("fashion-mnist", split="test").images[:1000]
    layers = {"layer2.relu": [0, 31, 63], "layer4": [3, 128, 250]}  # a functional ReLU and a block output
    background_means = mean_activations(model, list(layers), background)
    p95 = {layer: means.quantile(0.95, dim=0) for layer, means in background_means.items()}
    later_calls = []
    handle = model.net.layer3.conv1.register_forward_pre_hook(lambda *_: later_calls.append(1))
    try:
        images = feature_visualization(model, "layer2.relu", [0], steps=2)
    finally:
        handle.remove()
    assert not later_calls, "the forward pass went beyond the visualised layer"
    for layer, channels in layers.items():
        images = feature_visualization(model, layer, channels, steps=32, lr=0.1)  # fast settings
        assert images.shape == (3, 1, 28, 28) and images.dtype == torch.float32
        assert images.min() >= 0 and images.max() <= 1
        reached = mean_activation(model, layer, images)[torch.arange(3), channels]
        assert (reached > p95[layer][channels]).all(), f"{layer}: {reached.tolist()} vs {p95[layer][channels].tolist()}"


# ------------------------------------------------------------------------------------ reproducibility


def test_seeded_identity_and_independence_from_the_other_channels():
    model = grey_model()
    first = feature_visualization(model, "relu", [1, 4, 5], steps=12)
    assert torch.equal(first, feature_visualization(model, "relu", [1, 4, 5], steps=12))
    assert not torch.allclose(first, feature_visualization(model, "relu", [1, 4, 5], steps=12, seed=1))
    alone = feature_visualization(model, "relu", [4], steps=12)
    torch.testing.assert_close(alone[0], first[1], rtol=0, atol=1e-5)
    assert not torch.allclose(first[0], first[1])


def test_rgb_model_uses_the_fourier_image_and_raises_its_channels():
    model = rgb_model()
    channels = [0, 2, 3]
    images = feature_visualization(model, "conv2", channels, steps=40, lr=0.05)
    assert images.shape == (3, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    start = feature_visualization(model, "conv2", channels, steps=1, lr=1e-6)  # ≈ the initial image
    assert (start - 0.5).abs().max() < 0.05, "the Fourier start is grey with faint noise"
    reached = mean_activation(model, "conv2", images)[:, channels]
    assert (reached.diagonal() > mean_activation(model, "conv2", start)[:, channels].diagonal()).all()
    # each image excites its own channel more than the other channels' images do, and beyond noise
    off_diagonal = reached.masked_fill(torch.eye(3, dtype=torch.bool), -torch.inf)
    assert (reached.diagonal() > off_diagonal.max(dim=0).values).all()
    noise = torch.rand(500, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert (reached.diagonal() > mean_activation(model, "conv2", noise)[:, channels].quantile(0.95, dim=0)).all()


def test_larger_canvas_and_bad_arguments():
    model = grey_model()
    assert feature_visualization(model, "relu", 2, size=(20, 16), steps=2).shape == (1, 1, 20, 16)
    with pytest.raises(ModelError, match=r"channels must lie in \[0, 6\)"):
        feature_visualization(model, "relu", [0, 6], steps=2)
    with pytest.raises(ModelError, match="no layer named"):
        feature_visualization(model, "nope", [0], steps=2)
    with pytest.raises(ModelError, match="no channels"):
        feature_visualization(model, "relu", [], steps=2)
    with pytest.raises(ConfigError, match="steps must be ≥ 1"):
        feature_visualization(model, "relu", [0], steps=0)
    with pytest.raises(ConfigError, match="fourier"):
        feature_visualization(model, "relu", [0], steps=2, parameterization="fourier")
    for name, sub in model.named_modules():
        assert not sub._forward_hooks and not sub._forward_pre_hooks, f"hook left on {name or 'root'}"


# ------------------------------------------------------------------------------------------- parts


def test_affine_shift_and_rotation_match_plain_array_operations():
    image = torch.rand(1, 2, 9, 9)
    identity = affine_transform(image, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    torch.testing.assert_close(identity, image, rtol=0, atol=1e-5)
    shifted = affine_transform(image, torch.tensor([[1.0, -2.0, 1.0, 0.0]]))  # content 1 down, 2 left
    torch.testing.assert_close(shifted[..., 1:, :-2], image[..., :-1, 2:], rtol=0, atol=1e-5)
    # +90° turns the content clockwise on screen (rows grow downwards): numpy's rot90 with k=−1.
    rotated = affine_transform(image, torch.tensor([[0.0, 0.0, 1.0, 90.0]]))
    expected = torch.from_numpy(np.rot90(image.numpy(), k=-1, axes=(2, 3)).copy())
    torch.testing.assert_close(rotated, expected, rtol=0, atol=1e-5)
    zoomed = affine_transform(image, torch.tensor([[0.0, 0.0, 3.0, 0.0]]))  # 3× about the centre pixel (4, 4)
    grid = torch.tensor([1, 4, 7])  # output pixels 4 ± 3 show input pixels 4 ± 1
    torch.testing.assert_close(zoomed[..., grid[:, None], grid], image[..., 3:6, 3:6], rtol=0, atol=1e-5)


def test_pixel_blur_matches_scipy_gaussian_filter():
    noise = torch.rand(2, 1, 10, 10)
    image = PixelImage(noise, blur_every=1, blur_sigma=0.5)
    image.after_step()
    expected = np.stack([ndimage.gaussian_filter(n[0], sigma=0.5, mode="nearest", truncate=2.0) for n in noise.numpy()])
    np.testing.assert_allclose(image().detach().numpy()[:, 0], np.clip(expected, 0, 1), atol=1e-6)


def test_fourier_image_matches_numpy_irfft_with_decorrelated_colour():
    generator = torch.Generator().manual_seed(0)
    spectrum = torch.randn(2, 3, 6, 4, 2, generator=generator)
    image = FourierImage(spectrum, (6, 7))()
    fy, fx = np.fft.fftfreq(6)[:, None], np.fft.rfftfreq(7)[None, :]
    scale = 1 / np.maximum(np.sqrt(fx ** 2 + fy ** 2), 1 / 7)
    np.testing.assert_allclose(spectrum_scale(6, 7).numpy(), scale, rtol=1e-6)
    complex_spectrum = (spectrum[..., 0].numpy() + 1j * spectrum[..., 1].numpy()) * scale
    decorrelated = np.fft.irfft2(complex_spectrum, s=(6, 7), norm="ortho") / 4
    rgb = np.einsum("ij,bjhw->bihw", COLOR_CORRELATION.numpy(), decorrelated)
    np.testing.assert_allclose(image.detach().numpy(), 1 / (1 + np.exp(-rgb)), atol=1e-5)
