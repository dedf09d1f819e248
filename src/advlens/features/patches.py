"""Image patches cropped around a unit's theoretical receptive field.

The theoretical receptive field (RF) of a spatial layer comes from the model graph
(``model.graph.receptive_field(layer)``, a :class:`~advlens.models.receptive_field.ReceptiveField`):
unit ``(i, j)`` sees input rows ``start[0] + i·jump[0] … start[0] + i·jump[0] + size[0] − 1`` and
columns likewise (``start`` < 0 where the window reaches into the padding).

A patch is that window reduced, around its centre, to at most the image size: all patches of one
layer have the same shape, and a deep layer whose RF is larger than the image does not yield patches
larger than the image. Pixels of the window outside the image take ``pad_value``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from advlens.errors import ModelError
from advlens.models.receptive_field import ReceptiveField


def _pair(value: Any, what: str) -> tuple[int, int]:
    values = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if len(values) != 2 or any(float(v) != int(v) for v in values):
        raise ModelError(f"receptive field {what} must be an integer or a pair of integers, got {value!r}")
    return int(values[0]), int(values[1])


def as_receptive_field(rf: ReceptiveField | Sequence[Any], input_size: tuple[int, int]) -> ReceptiveField:
    """``rf`` itself, or the field of a ``(size, jump, start)`` triple (each an int or an (h, w) pair)."""
    if isinstance(rf, ReceptiveField):
        field = rf
    elif isinstance(rf, (tuple, list)) and len(rf) == 3:
        size, jump, start = (_pair(v, what) for v, what in zip(rf, ("size", "jump", "start")))
        field = ReceptiveField(size=size, jump=jump, start=start, input_size=tuple(input_size))
    else:
        raise ModelError(f"cannot read a receptive field from {rf!r}: give a ReceptiveField or a (size, jump, start) "
                         "triple")
    if min(field.size) < 1 or min(field.jump) < 1:
        raise ModelError(f"receptive field size and jump must be ≥ 1, got size {field.size}, jump {field.jump}")
    return field


def patch_shape(rf: ReceptiveField, image_size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the patches of a layer with field ``rf`` on images of ``image_size``: the RF, at most the image."""
    return min(rf.size[0], image_size[0]), min(rf.size[1], image_size[1])


def patch_windows(rf: ReceptiveField, rows: torch.Tensor, cols: torch.Tensor,
                  image_size: tuple[int, int]) -> torch.Tensor:
    """Patch windows, in image coordinates, of the units at feature-map positions ``(rows, cols)``.

    Shape:
        rows, cols: (M,) integer; returns (M, 4) int64 ``(top, left, bottom, right)``, bottom and right
        exclusive; a window may extend outside the image.
    """
    height, width = patch_shape(rf, image_size)
    top = rf.start[0] + rows.long() * rf.jump[0] + (rf.size[0] - height) // 2
    left = rf.start[1] + cols.long() * rf.jump[1] + (rf.size[1] - width) // 2
    return torch.stack([top, left, top + height, left + width], dim=1)


def crop_patches(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, rf: ReceptiveField,
                 pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop, from each image, the patch around the RF of the unit at ``(rows[m], cols[m])``.

    Shape:
        images: (M, C, H, W), one image per patch; rows, cols: (M,) feature-map positions.
        Returns patches (M, C, h, w) with ``(h, w) = patch_shape(rf, (H, W))`` and ``pad_value`` outside
        the image, and windows (M, 4) as in :func:`patch_windows`.
    """
    image_size = (images.shape[-2], images.shape[-1])
    windows = patch_windows(rf, rows, cols, image_size).to(images.device)
    height, width = patch_shape(rf, image_size)
    if images.shape[0] == 0:
        return images.new_empty(0, images.shape[1], height, width), windows
    pad_top = max(0, -int(windows[:, 0].min()))
    pad_left = max(0, -int(windows[:, 1].min()))
    pad_bottom = max(0, int(windows[:, 2].max()) - image_size[0])
    pad_right = max(0, int(windows[:, 3].max()) - image_size[1])
    padded = F.pad(images, (pad_left, pad_right, pad_top, pad_bottom), value=pad_value)
    r = (windows[:, 0] + pad_top)[:, None] + torch.arange(height, device=images.device)
    c = (windows[:, 1] + pad_left)[:, None] + torch.arange(width, device=images.device)
    m = torch.arange(images.shape[0], device=images.device)
    patches = padded.permute(0, 2, 3, 1)[m[:, None, None], r[:, :, None], c[:, None, :]]  # (M, h, w, C)
    return patches.permute(0, 3, 1, 2).contiguous(), windows
