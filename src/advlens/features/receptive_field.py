"""A layer's theoretical receptive field and the image patches cropped around it.

The theoretical receptive field (RF) of a unit is the input window that can influence it (Araujo et
al., "Computing receptive fields of convolutional neural networks", Distill 2019). Along one axis it
is fixed by three numbers of the layer: its ``size`` in input pixels, its ``jump`` (the input distance
between two adjacent units, the product of the strides) and its ``start`` (the input coordinate of
the first pixel of unit 0's RF, negative when padding lets it reach outside the image). Unit ``i``
covers the input pixels ``start + i·jump … start + i·jump + size − 1``.

Patches: a patch is a unit's RF window reduced, around its centre, to at most the image size, so that
all patches of one layer have the same shape and a deep layer (RF larger than the image) does not
yield patches larger than the image. Pixels of the window that lie outside the image take
``pad_value``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from advlens.errors import ModelError


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(value, (int, float)):
        value = (value, value)
    values = tuple(value)
    if len(values) != 2 or any(float(v) != int(v) for v in values):
        raise ModelError(f"receptive field {what} must be an integer or a pair of integers, got {value!r}")
    return int(values[0]), int(values[1])


@dataclass(frozen=True)
class RFGeometry:
    """Theoretical receptive field of one layer's units, per axis (rows, columns).

    Attributes:
        size: RF side in input pixels, (h, w).
        jump: input pixels between adjacent units (product of the strides), (h, w).
        start: input coordinate of the first (top, left) pixel of unit (0, 0)'s RF, (h, w); may be < 0.
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _pair(self.size, "size"))
        object.__setattr__(self, "jump", _pair(self.jump, "jump"))
        object.__setattr__(self, "start", _pair(self.start, "start"))
        if min(self.size) < 1 or min(self.jump) < 1:
            raise ModelError(f"receptive field size and jump must be ≥ 1, got size {self.size}, jump {self.jump}")

    @classmethod
    def coerce(cls, rf: Any) -> RFGeometry:
        """An ``RFGeometry`` from itself, a ``(size, jump, start)`` triple or an object with those attributes.

        An object may give ``stride`` for ``jump`` and, instead of ``start``, ``center``: the input
        coordinate of unit 0's RF centre, ``start + (size − 1) / 2``.
        """
        if isinstance(rf, RFGeometry):
            return rf
        if isinstance(rf, (tuple, list)) and len(rf) == 3:
            return cls(*rf)
        size = getattr(rf, "size", None)
        jump = getattr(rf, "jump", getattr(rf, "stride", None))
        start = getattr(rf, "start", None)
        if start is None and getattr(rf, "center", None) is not None and size is not None:
            sizes = _pair(size, "size")
            centers = rf.center if isinstance(rf.center, (tuple, list)) else (rf.center, rf.center)
            start = tuple(round(c - (s - 1) / 2) for c, s in zip(centers, sizes))
        if size is None or jump is None or start is None:
            raise ModelError(
                f"cannot read a receptive field from {rf!r}: give an RFGeometry or a (size, jump, start) triple"
            )
        return cls(size, jump, start)

    def patch_shape(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the patches of this layer on images of ``image_size``: the RF, at most the image."""
        return min(self.size[0], image_size[0]), min(self.size[1], image_size[1])

    def windows(self, rows: torch.Tensor, cols: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Patch windows, in image coordinates, of the units at feature-map positions ``(rows, cols)``.

        Shape:
            rows, cols: (M,) integer; returns (M, 4) int64 ``(top, left, bottom, right)``, bottom and
            right exclusive; the window may extend outside the image.
        """
        height, width = self.patch_shape(image_size)
        top = self.start[0] + rows.long() * self.jump[0] + (self.size[0] - height) // 2
        left = self.start[1] + cols.long() * self.jump[1] + (self.size[1] - width) // 2
        return torch.stack([top, left, top + height, left + width], dim=1)


def crop_patches(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, rf: RFGeometry,
                 pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop, from each image, the patch around the RF of the unit at ``(rows[m], cols[m])``.

    Shape:
        images: (M, C, H, W), one image per patch; rows, cols: (M,) feature-map positions.
        Returns patches (M, C, h, w) with ``(h, w) = rf.patch_shape((H, W))`` and ``pad_value`` outside
        the image, and windows (M, 4) as in :meth:`RFGeometry.windows`.
    """
    image_size = (images.shape[-2], images.shape[-1])
    windows = rf.windows(rows, cols, image_size).to(images.device)
    height, width = rf.patch_shape(image_size)
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
