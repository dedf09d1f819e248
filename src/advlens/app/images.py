"""Server-side PNG encoding (Pillow): images of the store, RF and vulnerability-map overlays.

Small images (28×28) are scaled up by an integer factor with nearest-neighbour, so pixels stay crisp.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image

GRID_SIZE = 84
"""Image Grid thumbnails are at least this many pixels on their longer side."""

DETAIL_SIZE = 168
"""Receptive Field View images are at least this many pixels on their longer side."""


def scale_factor(height: int, width: int, target: int) -> int:
    return max(1, math.ceil(target / max(height, width)))


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A (C, H, W) float image in [0, 1] (C = 1 or 3) as (H, W, 3) float."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    elif array.shape[0] != 3:
        raise ValueError(f"expected 1 or 3 channels, got shape {array.shape}")
    return np.clip(array.transpose(1, 2, 0), 0.0, 1.0)


def upscale(array: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of the first two axes."""
    if factor == 1:
        return array
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) float in [0, 1] → PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_png(image: np.ndarray, target: int = GRID_SIZE) -> bytes:
    """A store image (C, H, W) in [0, 1] as PNG, scaled up to about ``target`` pixels."""
    rgb = to_rgb(image)
    return png_bytes(upscale(rgb, scale_factor(*rgb.shape[:2], target)))


def hex_rgb(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` as (r, g, b) in 0 … 255."""
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _color(color: str) -> np.ndarray:
    return np.array(hex_rgb(color), dtype=np.float32) / 255.0


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (inner boundary)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(image) > 127


def _upscaled(rgb: np.ndarray, mask: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """An (H, W, 3) image and a mask (resized to it) scaled up together to about ``target`` pixels."""
    inside = _resize_mask(np.asarray(mask, dtype=bool), rgb.shape[:2])
    factor = scale_factor(*rgb.shape[:2], target)
    return upscale(rgb, factor), upscale(inside, factor)


def rf_overlay(image: np.ndarray, mask: np.ndarray, color: str = "#ffd400", target: int = DETAIL_SIZE,
               dim: float = 0.22) -> bytes:
    """The image masked by a receptive field: outside the RF dimmed, the RF outlined in ``color``."""
    big, inside = _upscaled(to_rgb(image), mask, target)
    out = np.where(inside[..., None], big, big * dim)
    edge = _outline(inside)
    out[edge] = _color(color)
    return png_bytes(out)


def map_overlay(image: np.ndarray, mask: np.ndarray, color: str = "#e4002b", target: int = DETAIL_SIZE,
                alpha: float = 0.55) -> bytes:
    """The image in grey with the binarized vulnerability map tinted in ``color`` and outlined."""
    rgb = to_rgb(image)
    big, inside = _upscaled(rgb.mean(axis=2, keepdims=True).repeat(3, axis=2), mask, target)
    tint = _color(color)
    out = np.where(inside[..., None], (1 - alpha) * big + alpha * tint, big * 0.8)
    out[_outline(inside)] = tint
    return png_bytes(out)


__all__ = ["GRID_SIZE", "DETAIL_SIZE", "image_png", "rf_overlay", "map_overlay", "data_uri", "png_bytes"]
