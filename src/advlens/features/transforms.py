"""Transformation robustness: random jitter, scale and rotation of each image at every step.

An image that excites a channel only at one exact alignment is an adversarial pattern, not a
feature; optimising through small random affine transformations (Mordvintsev et al., 2015; Olah et
al., 2017) keeps the features that survive them. One transformation per image and step, applied with
``torch.nn.functional.affine_grid`` and ``grid_sample`` (bilinear, reflection at the border).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_transforms(generator: torch.Generator, steps: int, jitter: float = 2.0,
                      scale: tuple[float, float] = (0.95, 1.05), rotate: float = 5.0) -> torch.Tensor:
    """Draw ``steps`` transformations: shift (rows, cols) in ±``jitter`` pixels, a scale factor in
    ``scale`` and an angle in ±``rotate`` degrees, uniformly.

    Shape:
        returns (steps, 4): (shift_rows, shift_cols, scale, angle_degrees), float32 on the CPU.
    """
    u = torch.rand(steps, 4, generator=generator)
    low, high = scale
    return torch.stack([(2 * u[:, 0] - 1) * jitter, (2 * u[:, 1] - 1) * jitter,
                        low + (high - low) * u[:, 2], (2 * u[:, 3] - 1) * rotate], dim=1)


def affine_transform(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Shift, scale (about the centre) and rotate each image by its row of ``params``.

    The output pixel at ``p`` (pixel units, origin at the image centre) shows the input at
    ``R(−angle) · p / scale − shift``: the content moves by ``shift``, grows by ``scale`` and turns by
    ``angle`` (clockwise on screen, where rows grow downwards).

    Shape:
        images: (B, C, H, W); params: (B, 4) as from :func:`sample_transforms`; returns (B, C, H, W).
    """
    batch, _, height, width = images.shape
    params = params.to(images.device, images.dtype)
    shift_rows, shift_cols, factor, degrees = params.unbind(1)
    angle = degrees * (math.pi / 180)
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    # affine_grid works in normalized coordinates (x by 2/W, y by 2/H); conjugate the pixel-space map.
    aspect = width / height
    theta = torch.stack([
        torch.stack([cos, sin / aspect, -2 * shift_cols / width], dim=1),
        torch.stack([-sin * aspect, cos, -2 * shift_rows / height], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, [batch, images.shape[1], height, width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
