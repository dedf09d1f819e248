"""Receptive fields of the analysed layer's neurons (paper 001, §3.2; Zhou et al.'s approximation).

A neuron's RF on an image is its feature map upsampled to the RF size and binarized with a
*per-neuron* threshold; the RF image is the (resized) input masked by it. The threshold depends on
the neuron only, never on the image, so the benign and the adversarial image of a pair share it by
construction and an attack that weakens a neuron shrinks its RF.

Choices:
    * Upsampling is bilinear (``torch.nn.functional.interpolate``, ``align_corners=False``), the
      interpolation Network Dissection uses; a pixel belongs to the RF when its upsampled value is
      *strictly* greater than the threshold, so an all-zero (dead) neuron never has an RF.
    * The default threshold of a neuron is its :data:`DEFAULT_RF_LEVEL` quantile of feature-map
      values (at feature-map resolution) over the benign true-positive images, read from the store.
      Override with another quantile ``level`` or an absolute ``value``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from advlens.measures._tensors import ArrayLike, as_numpy, as_tensor, interpolate_level
from advlens.models.adapter import AnalysedModel

logger = logging.getLogger(__name__)

DEFAULT_RF_LEVEL = 0.9
"""Default quantile level of a neuron's dataset-wide feature-map values used as its RF threshold.

Judged on the demo model (ReLU maps, 56% zeros, 7×7 upsampled to 28×28; PGD pairs, neurons picked by
band gap): at 0.9 those neurons show localized parts (mean RF 10% of the image, 25–45% of RFs
empty) and the attack visibly grows or shrinks them; at 0.95 half to two thirds of them are empty;
0.99 leaves specks. The price: a neuron's top-activating images get RFs covering most of the garment
(median 41% of the image). Network Dissection's 0.995 suits 224×224 inputs, not 7×7 maps."""

DEFAULT_MAX_ELEMENTS = 1 << 25
"""Upsampled values held at once (128 MiB of float32) when computing masks."""

Size = int | tuple[int, int] | Sequence[int]


def _pair(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(s) for s in size)
    return height, width


def feature_map_quantiles(feature_maps: ArrayLike, levels: Sequence[float]) -> torch.Tensor:
    """Per-neuron quantiles of feature-map values over a set of images (linear interpolation).

    The statistic the analysis store holds as ``neuron_quantiles``, here for small in-memory sets
    (tests, notebooks without a store).

    Shape:
        feature_maps: (N, K, h, w); levels: (Q,) in [0, 1]; returns float32 (Q, K) on the CPU.
    """
    maps = as_numpy(feature_maps)
    if maps.ndim != 4:
        raise ValueError(f"feature_maps must be N×K×h×w, got shape {maps.shape}")
    values = np.moveaxis(maps, 1, 0).reshape(maps.shape[1], -1)
    return torch.from_numpy(np.quantile(values, np.asarray(levels, dtype=np.float64), axis=1).astype(np.float32))


def neuron_thresholds(neuron_quantiles: ArrayLike | None = None, quantile_levels: ArrayLike | None = None,
                      level: float = DEFAULT_RF_LEVEL, *, value: float | ArrayLike | None = None,
                      num_neurons: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Per-neuron RF thresholds: a quantile level of the stored statistics, or absolute values.

    With ``value`` (a number, or one number per neuron) the thresholds are those values. Otherwise
    they are the quantile at ``level`` of each neuron's stored feature-map values: the stored
    quantile when ``level`` is one of ``quantile_levels``, else linearly interpolated between the two
    nearest stored levels (``level`` outside their range raises ``ValueError``).

    Shape:
        neuron_quantiles: (Q, K); quantile_levels: (Q,) increasing; value: scalar or (K,);
        returns float32 (K,).
    """
    if value is not None:
        thresholds = as_tensor(value, device, torch.float32)
        if thresholds.ndim == 0:
            if num_neurons is None and neuron_quantiles is None:
                raise ValueError("a scalar value needs num_neurons (or neuron_quantiles) to know K")
            k = num_neurons if num_neurons is not None else as_numpy(neuron_quantiles).shape[1]
            thresholds = thresholds.expand(k).clone()
        return thresholds
    if neuron_quantiles is None or quantile_levels is None:
        raise ValueError("pass neuron_quantiles and quantile_levels (from the store) or an absolute value")
    table = as_numpy(neuron_quantiles)
    if table.ndim != 2:
        raise ValueError(f"neuron_quantiles must be (Q, K), got shape {table.shape}")
    row = interpolate_level(table, quantile_levels, level, what="quantile level")
    return torch.as_tensor(row, dtype=torch.float32, device=device)


def upsample_maps(feature_maps: torch.Tensor, size: Size) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=False``) of feature maps to the RF size.

    Shape:
        feature_maps: (N, K, h, w); returns float (N, K, H, W).
    """
    return F.interpolate(feature_maps.float(), size=_pair(size), mode="bilinear", align_corners=False)


def rf_masks(feature_maps: ArrayLike, thresholds: float | ArrayLike, size: Size, *,
             max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """Binarized upsampled feature maps: the RF masks of all neurons of all images.

    A pixel is in a neuron's RF when the bilinearly upsampled map is strictly above the neuron's
    threshold. Computed in chunks of at most ``max_elements`` upsampled values.

    Shape:
        feature_maps: (N, K, h, w) or (K, h, w); thresholds: scalar or (K,);
        returns bool (N, K, H, W) or (K, H, W), on the device of ``feature_maps``.
    """
    maps = as_tensor(feature_maps)
    single = maps.ndim == 3
    if single:
        maps = maps.unsqueeze(0)
    if maps.ndim != 4:
        raise ValueError(f"feature_maps must be (N, K, h, w) or (K, h, w), got {tuple(maps.shape)}")
    n, k = maps.shape[:2]
    height, width = _pair(size)
    limit = as_tensor(thresholds, maps.device, torch.float32).reshape(-1)
    if limit.numel() not in (1, k):
        raise ValueError(f"expected one threshold or {k} (one per neuron), got {limit.numel()}")
    limit = limit.expand(k).reshape(1, k, 1, 1)
    flat = maps.reshape(n * k, 1, *maps.shape[2:])
    limits = limit.expand(n, k, 1, 1).reshape(n * k, 1, 1, 1)
    out = torch.empty(n * k, 1, height, width, dtype=torch.bool, device=maps.device)
    step = max(1, max_elements // (height * width))
    for start in range(0, n * k, step):
        stop = start + step
        out[start:stop] = upsample_maps(flat[start:stop], (height, width)) > limits[start:stop]
    out = out.reshape(n, k, height, width)
    return out[0] if single else out


@torch.no_grad()
def receptive_fields(model: AnalysedModel, images: torch.Tensor, thresholds: float | ArrayLike,
                     size: Size | None = None, *, device: torch.device | str | None = None,
                     max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """RF masks of every neuron of the analysed layer, one forward pass for all images.

    Pass a benign image and its adversarial counterpart together (or one after the other): the
    per-neuron ``thresholds`` (see :func:`neuron_thresholds`) are shared by both.

    Args:
        model: the analysed model (pixels in [0, 1]).
        images: one image or a batch.
        thresholds: per-neuron thresholds, or one absolute value for all neurons.
        size: RF size (H, W) or an int; default: the model's input size.
        device: where to compute; default: the model's device.

    Shape:
        images: (C, H_in, W_in) or (N, C, H_in, W_in) in [0, 1]; thresholds: scalar or (K,);
        returns bool (K, H, W) or (N, K, H, W).
    """
    device = torch.device(device) if device is not None else model.device
    batch = images.unsqueeze(0) if images.ndim == 3 else images
    maps = model.activations(batch.to(device, torch.float32), feature_maps=True).feature_maps
    rf_size = size if size is not None else model.input_shape[1:]
    masks = rf_masks(maps, as_tensor(thresholds, device, torch.float32), rf_size, max_elements=max_elements)
    return masks[0] if images.ndim == 3 else masks


def apply_receptive_field(image: ArrayLike, masks: ArrayLike, mode: str = "mask", dim: float = 0.25) -> torch.Tensor:
    """Show RFs on an image: ``"mask"`` multiplies the image by the mask (paper 001, step 4);
    ``"overlay"`` keeps the RF and darkens the rest to ``dim`` × its value.

    The image is resized bilinearly to the RF size first when the sizes differ (paper step 1).

    Shape:
        image: (C, H_in, W_in) in [0, 1]; masks: (..., H, W) bool; returns float (..., C, H, W).
    """
    if mode not in ("mask", "overlay"):
        raise ValueError(f"mode must be 'mask' or 'overlay', got {mode!r}")
    picture = as_tensor(image).float()
    mask = as_tensor(masks, picture.device)
    if picture.ndim != 3:
        raise ValueError(f"image must be C×H×W, got shape {tuple(picture.shape)}")
    if tuple(picture.shape[1:]) != tuple(mask.shape[-2:]):
        picture = F.interpolate(picture.unsqueeze(0), size=tuple(mask.shape[-2:]), mode="bilinear",
                                align_corners=False)[0]
    weight = mask.unsqueeze(-3).float()
    if mode == "overlay":
        weight = weight + (1.0 - weight) * dim
    return picture * weight
