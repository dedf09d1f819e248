"""Image parameterisations for activation maximisation: what the optimiser actually changes.

* :class:`PixelImage` (grey-scale and any non-RGB input): the pixels themselves, projected back to
  [0, 1] after every step, with the regularisers of Yosinski et al. (2015): L2 decay (through the
  optimiser's weight decay) and a light Gaussian blur every few steps.
* :class:`FourierImage` (RGB): a spectrum whose frequencies are scaled by 1/f (natural images' power
  law), turned into pixels by an inverse real FFT, then mapped from a decorrelated colour space to RGB
  and squashed into [0, 1] by a sigmoid (Olah et al., "Feature Visualization", Distill 2017). The
  optimiser then takes steps of equal size on every spatial frequency and colour component, which
  avoids the high-frequency noise pixel-space ascent produces on large images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Square root of ImageNet's RGB colour correlation (its SVD), as used by Lucid; columns scaled to norm ≤ 1.
COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                           [0.27, 0.00, -0.05],
                                           [0.27, -0.09, 0.03]])
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


class PixelImage(nn.Module):
    """Pixels in [0, 1], optimised directly and projected back after each step.

    Args:
        noise: the initial images. blur_every, blur_sigma: every ``blur_every`` calls of
            :meth:`after_step` blur the pixels with a Gaussian of ``blur_sigma`` pixels (0: never).

    Shape:
        noise and ``forward()``: (B, C, H, W) in [0, 1].
    """

    def __init__(self, noise: torch.Tensor, blur_every: int = 4, blur_sigma: float = 0.5) -> None:
        super().__init__()
        self.pixels = nn.Parameter(noise.clamp(0, 1).clone())
        self.blur_every, self.steps = blur_every, 0
        radius = max(1, math.ceil(2 * blur_sigma))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / max(blur_sigma, 1e-6)) ** 2)
        self.register_buffer("kernel", (taps / taps.sum()).to(noise.device), persistent=False)
        self.blur = blur_every > 0 and blur_sigma > 0

    def forward(self) -> torch.Tensor:
        return self.pixels

    @torch.no_grad()
    def after_step(self) -> None:
        """Blur every ``blur_every`` steps, then project onto [0, 1]."""
        self.steps += 1
        if self.blur and self.steps % self.blur_every == 0:
            channels, radius = self.pixels.shape[1], self.kernel.numel() // 2
            rows = self.kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
            blurred = F.conv2d(F.pad(self.pixels, (0, 0, radius, radius), mode="replicate"), rows, groups=channels)
            cols = self.kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
            self.pixels.copy_(F.conv2d(F.pad(blurred, (radius, radius, 0, 0), mode="replicate"), cols,
                                       groups=channels))
        self.pixels.clamp_(0, 1)


def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> torch.Tensor:
    """1/f^decay scale of the real-FFT frequencies of an H×W image (the zero frequency capped at 1/max(H, W)).

    Shape:
        returns (H, W // 2 + 1).
    """
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    frequency = torch.sqrt(fx * fx + fy * fy)
    return 1.0 / frequency.clamp(min=1.0 / max(height, width)) ** decay_power


class FourierImage(nn.Module):
    """RGB images parameterised by a 1/f-scaled spectrum in a decorrelated colour space (Lucid's ``fft_image``).

    Args:
        spectrum: initial real and imaginary parts, (B, 3, H, W // 2 + 1, 2) (small Gaussian noise).
        size: (H, W) of the images.

    Shape:
        ``forward()``: (B, 3, H, W) in (0, 1).
    """

    def __init__(self, spectrum: torch.Tensor, size: tuple[int, int], decay_power: float = 1.0) -> None:
        super().__init__()
        self.size = size
        self.spectrum = nn.Parameter(spectrum.clone())
        self.register_buffer("scale", spectrum_scale(*size, decay_power).to(spectrum.device), persistent=False)
        self.register_buffer("color", COLOR_CORRELATION.to(spectrum.device), persistent=False)

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        decorrelated = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4.0
        rgb = torch.einsum("ij,bjhw->bihw", self.color, decorrelated)
        return torch.sigmoid(rgb)

    def after_step(self) -> None:
        """Nothing to project: the sigmoid keeps the pixels in (0, 1)."""
