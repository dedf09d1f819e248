"""Areas of interest: an AOI on a target map and its corresponding region on an earlier layer's grid.

The corresponding neurons of a source layer are those covering the same image region as the AOI:
each AOI cell (r, c) of an h_t × w_t grid covers rows [r/h_t, (r+1)/h_t) and columns [c/w_t, (c+1)/w_t)
of the image (in relative units); on an h_s × w_s grid that is rows ⌊r·h_s/h_t⌋ … ⌈(r+1)·h_s/h_t⌉ − 1
(rounded outward), likewise for columns (spec-003 §2). An optional margin dilates the region by that
many source cells (a receptive-field margin).
"""

from __future__ import annotations

import math

import torch

from advlens.errors import ConfigError


def check_aoi(aoi: torch.Tensor | None, grid: tuple[int, int]) -> torch.Tensor:
    """The AOI as a bool mask of the target grid (``None``: the whole map). Shape: (h_t, w_t)."""
    if aoi is None:
        return torch.ones(grid, dtype=torch.bool)
    mask = torch.as_tensor(aoi)
    if mask.dtype != torch.bool:
        raise ConfigError(f"the area of interest must be a boolean (h, w) mask, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(grid):
        raise ConfigError(f"the area of interest has shape {tuple(mask.shape)}, the target map is "
                          f"{grid[0]}×{grid[1]}: select neurons on the target map's grid")
    if not bool(mask.any()):
        raise ConfigError("the area of interest selects no neuron: select at least one")
    return mask.cpu()


def source_region(aoi: torch.Tensor, source_grid: tuple[int, int], margin: int = 0) -> torch.Tensor:
    """The cells of a source grid covering the AOI's image region, rounded outward, dilated by ``margin``.

    Shape:
        aoi: (h_t, w_t) bool; result (h_s, w_s) bool.
    """
    if not isinstance(margin, int) or isinstance(margin, bool) or margin < 0:
        raise ConfigError(f"margin must be a non-negative integer of source cells, got {margin!r}")
    h_t, w_t = aoi.shape
    h_s, w_s = source_grid
    region = torch.zeros((h_s, w_s), dtype=torch.bool)
    for r, c in torch.nonzero(aoi).tolist():
        rows = slice(math.floor(r * h_s / h_t), math.ceil((r + 1) * h_s / h_t))
        cols = slice(math.floor(c * w_s / w_t), math.ceil((c + 1) * w_s / w_t))
        region[rows, cols] = True
    if margin:
        dilated = torch.nn.functional.max_pool2d(region[None, None].float(), 2 * margin + 1, 1, margin)
        region = dilated[0, 0] > 0
    return region
