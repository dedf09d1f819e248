"""Feature visualisation by activation maximisation (Erhan et al., 2009; Yosinski et al., 2015; Olah et
al., "Feature Visualization", Distill 2017).

Starting from random noise, gradient ascent (Adam) on the input raises one channel's *mean* activation
over its feature map. All channels of a call are optimised together, one channel per batch row; each
row draws its initial noise and its transformations from its own generator seeded by ``(seed,
channel)``, so a channel's image does not depend on which other channels share the call. The forward
pass stops at the layer (:func:`~advlens.features.taps.tapped_forward`), and only the input gradient
is computed. The model normalizes its [0, 1] input itself, so the images are in pixel space.

Defaults (spec-002 G-18): Adam lr 0.05, 256 steps, L2 decay 1e-4, jitter ±2 px, scale 0.95–1.05,
rotation ±5°, Gaussian blur σ = 0.5 every 4 steps (pixel parameterisation only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from advlens.errors import ConfigError, ModelError
from advlens.features.parameterization import FourierImage, PixelImage
from advlens.features.taps import tapped_forward
from advlens.features.transforms import affine_transform, sample_transforms
from advlens.models.adapter import AnalysedModel

logger = logging.getLogger(__name__)

Parameterization = Literal["auto", "pixel", "fourier"]


def channel_generator(seed: int, channel: int) -> torch.Generator:
    """The CPU generator of one channel's noise and transformations, seeded by ``(seed, channel)``."""
    state = np.random.SeedSequence([seed, channel]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _channel_list(channels: int | Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(channels, torch.Tensor):
        channels = channels.reshape(-1).tolist()
    elif isinstance(channels, (int, np.integer)):
        channels = [channels]
    values = list(channels)
    if not values:
        raise ModelError("no channels given; pass at least one channel index")
    if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in values):
        raise ModelError(f"channels must be integer indices, got {values[:5]}")
    return [int(c) for c in values]


def _size(size: int | Sequence[int] | None, model: AnalysedModel) -> tuple[int, int]:
    if size is None:
        return int(model.input_shape[1]), int(model.input_shape[2])
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(not isinstance(s, (int, np.integer)) or s < 1 for s in pair):
        raise ConfigError(f"size must be a positive integer or an (H, W) pair, got {size!r}")
    return int(pair[0]), int(pair[1])


def channel_objective(output: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Row b's objective: the mean over space of channel ``channels[b]`` of ``output[b]``.

    Shape:
        output: (B, K, ...) a layer's output; channels: (B,) int64; returns (B,).
    """
    picked = output[torch.arange(output.shape[0], device=output.device), channels]
    return picked.reshape(picked.shape[0], -1).mean(dim=1)


def feature_visualization(model: AnalysedModel, layer: str, channels: int | Sequence[int] | torch.Tensor,
                          size: int | Sequence[int] | None = None, steps: int = 256, seed: int = 0,
                          device: torch.device | str | None = None, *, lr: float = 0.05,
                          jitter: float = 2.0, scale: tuple[float, float] = (0.95, 1.05), rotate: float = 5.0,
                          weight_decay: float = 1e-4, blur_every: int = 4, blur_sigma: float = 0.5,
                          decay_power: float = 1.0, parameterization: Parameterization = "auto") -> torch.Tensor:
    """Images that maximise each channel's mean activation in ``layer``.

    Args:
        model: the analysed model; its ``forward`` takes pixels in [0, 1] and normalizes them.
        layer: layer name (the model graph's name; a dotted module name for a module).
        channels: channel indices of ``layer``, one image each (repeats allowed).
        size: (H, W) or side of the images; default the model's input size.
        steps: optimisation steps. seed: ≥ 0; with ``(seed, channel)`` fixes the result.
        device: where to compute; default the model's (the model must already be there).
        lr: Adam learning rate. jitter: max shift in pixels. scale: (min, max) zoom. rotate: max angle
            in degrees. weight_decay: L2 decay of the parameters. blur_every, blur_sigma: Gaussian
            blur of the pixels every ``blur_every`` steps (pixel parameterisation; 0 disables).
        decay_power: exponent of the 1/f spectrum scale (Fourier parameterisation).
        parameterization: ``pixel``, ``fourier`` (RGB only) or ``auto``: Fourier for 3-channel models,
            pixels otherwise.

    Shape:
        returns (len(channels), C, H, W) float32 in [0, 1] on the CPU, C the model's input channels.
    """
    if not isinstance(model, AnalysedModel):
        raise ModelError(f"model must be an advlens AnalysedModel (see advlens.load_model), got {type(model).__name__}")
    picked = _channel_list(channels)
    height, width = _size(size, model)
    if steps < 1 or lr <= 0 or seed < 0:
        raise ConfigError(f"steps must be ≥ 1, lr > 0 and seed ≥ 0; got steps={steps}, lr={lr}, seed={seed}")
    if scale[0] <= 0 or scale[0] > scale[1] or jitter < 0 or rotate < 0:
        raise ConfigError(f"need 0 < scale[0] ≤ scale[1], jitter ≥ 0 and rotate ≥ 0; got scale={scale}, "
                          f"jitter={jitter}, rotate={rotate}")
    image_channels = model.input_shape[0]
    if parameterization == "auto":
        parameterization = "fourier" if image_channels == 3 else "pixel"
    if parameterization not in ("pixel", "fourier") or (parameterization == "fourier" and image_channels != 3):
        raise ConfigError(f"parameterization must be 'auto', 'pixel' or (for RGB models) 'fourier'; got "
                          f"{parameterization!r} for a {image_channels}-channel model")
    device = torch.device(device) if device is not None else model.device
    if device != model.device:
        raise ConfigError(f"the model is on {model.device}, not {device}; move it first with "
                          f"model.to({str(device)!r})")
    node = model.graph[layer]
    if len(node.shape) < 1 or min(picked) < 0 or max(picked) >= node.channels:
        raise ModelError(f"layer {layer!r} has {node.channels} channels; channels must lie in [0, {node.channels}), "
                         f"got {picked}")

    generators = [channel_generator(seed, c) for c in picked]
    if parameterization == "pixel":
        noise = torch.stack([torch.rand(image_channels, height, width, generator=g) for g in generators])
        image = PixelImage(noise.to(device), blur_every, blur_sigma)
    else:
        spectrum = torch.stack([0.01 * torch.randn(3, height, width // 2 + 1, 2, generator=g)
                                for g in generators])
        image = FourierImage(spectrum.to(device), (height, width), decay_power)
    transforms = torch.stack([sample_transforms(g, steps, jitter, scale, rotate) for g in generators], dim=1)
    transforms = transforms.to(device)
    targets = torch.tensor(picked, device=device)
    optimizer = torch.optim.Adam(image.parameters(), lr=lr, weight_decay=weight_decay)

    with tapped_forward(model, [layer]) as run:
        for step in range(steps):
            output = run(affine_transform(image(), transforms[step]))[layer]
            loss = -channel_objective(output, targets).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=list(image.parameters()))
            optimizer.step()
            image.after_step()
    logger.debug("feature visualisation of %d channels of %s: %d steps", len(picked), layer, steps)
    return image().detach().clamp(0, 1).float().cpu()
